# SPDX-License-Identifier: Apache-2.0
"""Weights for nnUNetv2_train -pretrained_weights: loaded by nnunetv2's own load_pretrained_weights, and the check
command agreeing with that loader, including on a mismatching plan."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from nnunet_helpers import fixture_nnunet_dataset, fixture_preprocessed  # noqa: F401 (fixtures)

from monai_cover.networks import FeaturePyramid
from monai_cover.nnunet import (
    NnUNetPlan,
    check_nnunet_weights,
    read_nnunet_weights,
    save_nnunet_pretrained,
)


@pytest.fixture(scope="module")
def pretrained(preprocessed, tmp_path_factory):
    """A plan network with weights changed away from their initialisation, saved through its FeaturePyramid."""
    plan = NnUNetPlan.load(preprocessed, "3d_fullres")
    torch.manual_seed(3)
    pyramid = FeaturePyramid.from_network(plan.build_network())
    with torch.no_grad():
        for p in pyramid.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path_factory.mktemp("weights") / "nnunet_pretrained.pth"
    save_nnunet_pretrained(pyramid, path, {"method": "cover"})
    return plan, pyramid.network, path


def _nnunet_network(plan, heads=3):
    """The network nnU-Net's trainer builds for the plan (deep supervision on, as in training; another class count)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    return nnUNetTrainer.build_network_architecture(plan.plans_manager, plan.configuration_manager,
                                                    plan.num_input_channels, heads, True)


def test_nnunet_loads_every_non_segmentation_key(pretrained):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    plan, network, path = pretrained
    target = _nnunet_network(plan)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    load_pretrained_weights(target, str(path))
    ours, loaded = network.state_dict(), target.state_dict()
    seg = [k for k in loaded if ".seg_layers." in k]
    rest = [k for k in loaded if ".seg_layers." not in k]
    assert seg and len(rest) > 100
    for k in rest:
        assert torch.equal(loaded[k], ours[k]), k
    for k in seg:  # another class count: nnU-Net keeps its own segmentation layers
        assert torch.equal(loaded[k], before[k]), k
    assert torch.load(str(path), weights_only=True).keys() == {"network_weights"}
    assert json.loads(path.with_suffix(".json").read_text(encoding="utf-8")) == {"method": "cover"}


def test_check_agrees_with_nnunets_loader(pretrained, preprocessed, tmp_path):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    plan, network, path = pretrained
    check = check_nnunet_weights(path, preprocessed, "3d_fullres")
    assert check.ok and not check.missing and not check.mismatched and not check.unused
    assert len(check.transferred) == len([k for k in network.state_dict() if ".seg_layers." not in k])
    assert check.skipped == [k for k in network.state_dict() if ".seg_layers." in k]
    assert "compatible: nnU-Net will load" in str(check)

    # another feature count: the check names the first differing keys with both shapes, and nnU-Net refuses it
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text(encoding="utf-8"))
    arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [16, 32, 64, 128]
    other = tmp_path / "nnUNetPlans.json"
    other.write_text(json.dumps(plans), encoding="utf-8")
    (tmp_path / "dataset.json").write_text((preprocessed / "dataset.json").read_text(encoding="utf-8"),
                                           encoding="utf-8")
    bad = check_nnunet_weights(path, tmp_path, "3d_fullres")
    assert not bad.ok
    first = "encoder.stages.0.0.convs.0.conv.weight"
    assert list(bad.mismatched)[0] == first and bad.mismatched[first] == ((32, 1, 3, 3, 3), (16, 1, 3, 3, 3))
    text = str(bad)
    assert "NOT compatible" in text and f"{first}: [32, 1, 3, 3, 3] vs [16, 1, 3, 3, 3]" in text
    refused = NnUNetPlan.load(other, "3d_fullres")
    with pytest.raises(AssertionError, match="not the same"):
        load_pretrained_weights(_nnunet_network(refused), str(path))

    # one stage more: keys the file lacks
    arch.update(n_stages=5, features_per_stage=[32, 64, 128, 256, 320], strides=arch["strides"] + [[2, 2, 2]],
                kernel_sizes=arch["kernel_sizes"] + [[3, 3, 3]], n_conv_per_stage=[2] * 5,
                n_conv_per_stage_decoder=[2] * 4)
    plans["configurations"]["3d_fullres"]["patch_size"] = [64, 64, 64]
    other.write_text(json.dumps(plans), encoding="utf-8")
    deeper = check_nnunet_weights(path, tmp_path, "3d_fullres")
    assert not deeper.ok and "encoder.stages.4.0.convs.0.conv.weight" in deeper.missing
    assert "network key(s) not in the file" in str(deeper)


def test_check_command_line(pretrained, preprocessed, tmp_path):
    _, _, path = pretrained

    def run(*args):
        return subprocess.run([sys.executable, "-m", "monai_cover.nnunet", "check", *map(str, args)],
                              capture_output=True, encoding="utf-8", errors="replace", timeout=300)

    good = run(path, preprocessed, "3d_fullres")
    assert good.returncode == 0, good.stderr
    assert "compatible: nnU-Net will load" in good.stdout
    wrong = run(path, preprocessed, "2d")  # 3D weights against the 2D network
    assert wrong.returncode == 1
    assert "encoder.stages.0.0.convs.0.conv.weight: [32, 1, 3, 3, 3] vs [32, 1, 3, 3]" in wrong.stdout
    missing = run(tmp_path / "none.pth", preprocessed, "3d_fullres")
    assert missing.returncode == 2 and "ERROR: " in missing.stderr and "none.pth: no such file" in missing.stderr
    torch.save({"model": {}}, tmp_path / "monai.pt")
    layout = run(tmp_path / "monai.pt", preprocessed, "3d_fullres")
    assert layout.returncode == 2 and "no 'network_weights'" in layout.stderr and "['model']" in layout.stderr
    config = run(path, preprocessed, "3d_cascade")
    assert config.returncode == 2 and "no configuration '3d_cascade'" in config.stderr


def test_read_refuses_pickled_code(tmp_path):
    import argparse  # any class outside torch's weights-only allowlist

    torch.save({"network_weights": {"w": torch.zeros(1)}, "extra": argparse.Namespace(a=1)}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="pickled.pth: not a weights file that loads without running pickled code"):
        read_nnunet_weights(tmp_path / "pickled.pth")


def test_save_is_atomic(pretrained, tmp_path, monkeypatch):
    plan, network, _ = pretrained
    path = tmp_path / "w.pth"
    save_nnunet_pretrained(network, path)
    good = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_nnunet_pretrained(network, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["w.pth"]  # no temporary file left


def test_saver_refuses_a_network_that_is_not_the_plans(preprocessed, tmp_path):
    from ignite.engine import Engine

    from monai_cover.nnunet import NnUNetPlanError, NnUNetWeightsSaver

    plan = NnUNetPlan.load(preprocessed, "3d_fullres")
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text(encoding="utf-8"))
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [8, 16, 32, 64]
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(plans),
                                               encoding="utf-8")
    shutil.copyfile(preprocessed / "dataset.json", tmp_path / "dataset.json")
    narrow = NnUNetPlan.load(tmp_path, "3d_fullres").build_network()  # e.g. a --network_def override
    path = tmp_path / "nnunet_pretrained.pth"
    shapes = "\\[8, 1, 3, 3, 3\\] vs \\[32, 1, 3, 3, 3\\]"
    with pytest.raises(NnUNetPlanError, match=f"(?s)not the plan's.*nothing written.*{shapes}"):
        NnUNetWeightsSaver(narrow, path, plan).attach(Engine(lambda e, b: None))
    assert not path.exists()

    engine = Engine(lambda e, b: None)
    saver = NnUNetWeightsSaver(plan.build_network(), path, plan, method="cover", data="here", interval=2)
    saver.attach(engine)
    engine.run([0, 1, 2], max_epochs=3)
    record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert (record["epochs"], record["iterations"], record["data"]) == (3, 9, "here")  # the final write
    assert check_nnunet_weights(path, preprocessed, "3d_fullres").ok
