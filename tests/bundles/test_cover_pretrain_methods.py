# SPDX-License-Identifier: Apache-2.0
"""The cover_pretrain_3d bundle with ``--method voxel_infonce|pcrlv2|voco``: the real
``python -m monai.bundle run`` command line, 1 tiny epoch each; ``models/model.pt`` is still the stock
BasicUNet's state dict."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import PRETRAIN, TINY_FEATURES, TINY_PRETRAIN, bundle_run, write_volumes

from monai_cover.handlers import read_loss_summary

CONFIG = PRETRAIN / "configs" / "train.json"


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    return write_volumes(tmp_path_factory.mktemp("methods_data") / "data")


@pytest.mark.parametrize("method", ["voxel_infonce", "pcrlv2", "voco"])
def test_pretrain_method_override(method, volumes, tmp_path):
    from monai.networks.nets import BasicUNet

    out = tmp_path / f"pretrain_{method}"
    proc = bundle_run(
        [CONFIG], PRETRAIN, out, *TINY_PRETRAIN, "--dataset_dir", str(volumes), "--epochs", "1",
        "--method", method, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=1, features=json.loads(TINY_FEATURES))
    net.load_state_dict(state)  # strict: exactly the stock BasicUNet keys
    rows = read_loss_summary(out / "loss_summary.txt")
    assert [r["epoch"] for r in rows] == [1]
    assert method in (out / "loss_summary.txt").read_text(encoding="utf-8")
    # validation (DDF end-point error) and the CoverNet file only make sense for COVER
    assert not (out / "models" / "cover_net.pt").exists() and not (out / "models" / "model_best.pt").exists()
    ckpt = torch.load(out / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=True)
    assert set(ckpt) == {"model", "optimizer", "lr_scheduler", "trainer", "rng"}  # rng: the random states
    assert any(k.startswith("loss.") for k in ckpt["model"]), "the loss's heads are not checkpointed"
    if method == "voxel_infonce":  # the features alone: no COVER head is built or trained
        assert not any(k.startswith("network.head.") for k in ckpt["model"]), sorted(ckpt["model"])[:5]
        assert any(k.startswith("network.backbone.") for k in ckpt["model"])
