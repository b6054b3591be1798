# SPDX-License-Identifier: Apache-2.0
"""``--backbone NAME``: the pretraining bundle pretrains stock MONAI networks other than BasicUNet through the real
``python -m monai.bundle run``, and ``load_pretrained`` puts every backbone key into the stock network built for a
task (only its class-dependent output layer left out)."""

from __future__ import annotations

import pytest
import torch
from conftest import PRETRAIN, TINY_PRETRAIN, bundle_run, write_volumes
from monai.networks.nets import UNETR, SegResNet, UNet

import monai_cover

CASES = {
    # backbone: (extra overrides, the stock network for a 3-class task, its output layer)
    "unet": ([], lambda: UNet(3, 1, 3, channels=(4, 8, 8, 16, 16), strides=(2, 2, 2, 2), num_res_units=2),
             r"^model\.2\."),
    # SegResNet's group norms take 8 groups: init_filters (features[0]) must be a multiple of 8
    "segresnet": (["--features", "[8,8,16,16,32,8]"],
                  lambda: SegResNet(spatial_dims=3, in_channels=1, out_channels=3, init_filters=8),
                  r"^conv_final\.2\."),
    "unetr": (["--network_def#hidden_size", "48", "--network_def#mlp_dim", "96", "--network_def#num_heads", "4"],
              lambda: UNETR(in_channels=1, out_channels=3, img_size=(32, 32, 32), feature_size=2, hidden_size=48,
                            mlp_dim=96, num_heads=4), r"^out\."),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_volumes(tmp_path_factory.mktemp("backbones") / "data")


@pytest.mark.parametrize("backbone", sorted(CASES))
def test_pretrain_backbone_and_load_into_stock_network(backbone, data, tmp_path):
    extra, stock, head = CASES[backbone]
    out = tmp_path / backbone
    proc = bundle_run([PRETRAIN / "configs" / "train.json"], PRETRAIN, out, *TINY_PRETRAIN, "--dataset_dir",
                      str(data), "--epochs", "1", "--backbone", backbone, *extra)
    assert proc.returncode == 0, proc.stdout[-3000:]
    saved = torch.load(str(out / "models" / "model.pt"), weights_only=True)
    net = stock()
    report = monai_cover.load_pretrained(net, out, exclude=head)
    keys = list(net.state_dict())
    excluded = [k for k in keys if k in report.excluded]
    assert excluded and all(k.startswith(head.strip("^").replace("\\", "")) for k in excluded)
    assert sorted(report.loaded) == sorted(k for k in keys if k not in excluded)  # every backbone key
    assert not report.missing and not report.mismatched
    for k in report.loaded:
        assert torch.equal(net.state_dict()[k], saved[k]), k
    summary = (out / "loss_summary.txt").read_text(encoding="utf-8")
    assert "nan" not in summary.lower()


def test_unknown_backbone_is_refused_before_anything_runs(tmp_path):
    proc = bundle_run([PRETRAIN / "configs" / "train.json"], PRETRAIN, tmp_path / "run", "--backbone", "vnet")
    assert proc.returncode != 0
    assert "--backbone 'vnet': accepted values are" in proc.stdout and "'segresnet'" in proc.stdout
    assert not (tmp_path / "run").exists()
