# SPDX-License-Identifier: Apache-2.0
"""The cover_finetune_3d bundle: fine-tune a stock BasicUNet from the pretraining run's model.pt on the
embedded labelled chest CT (real CLI in a subprocess), then evaluate.json; every backbone key must load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import FINETUNE, TINY_FEATURES, bundle_run, verify_net
from monai.networks.nets import BasicUNet

import monai_cover

CONFIG = FINETUNE / "configs" / "train.json"
META = FINETUNE / "configs" / "metadata.json"
TINY_FINETUNE = [
    "--patch_size",
    "[32,32,32]",
    "--features",
    TINY_FEATURES,
    "--spacing",
    "[6.0,6.0,6.0]",
    "--batch_size",
    "1",
    "--num_samples",
    "1",
    "--num_workers",
    "0",
    "--val_interval",
    "1",
    "--epochs",
    "1",
]


def test_finetune_from_pretrained_then_evaluate(pretrain_run, tmp_path):
    pytest.importorskip("slicerio")
    assert pretrain_run["second"].returncode == 0, pretrain_run["second"].stdout[-3000:]
    out = tmp_path / "cover_finetune_3d"
    proc = bundle_run([CONFIG], FINETUNE, out, *TINY_FINETUNE, "--pretrained_dir", str(pretrain_run["output_dir"]))
    assert proc.returncode == 0, proc.stdout[-4000:]

    report = json.loads((out / "pretrained_load_report.json").read_text(encoding="utf-8"))
    assert report["source"].endswith("model.pt")
    assert report["missing"] == [] and report["unexpected"] == [] and report["mismatched"] == {}
    assert sorted(report["excluded"]) == ["final_conv.bias", "final_conv.weight"]
    # every backbone key except the class-specific final convolution was loaded
    assert report["num_loaded"] == report["num_network_keys"] - len(report["excluded"])
    pretrained = torch.load(pretrain_run["output_dir"] / "models" / "model.pt", weights_only=True)
    assert set(report["loaded"]) == {k for k in pretrained if not k.startswith("final_conv.")}

    for rel in ("models/model.pt", "models/model_final.pt", "loss_summary.txt", "checkpoints/checkpoint_epoch=1.pt"):
        assert (out / rel).is_file(), rel
    assert "val_mean_dice" in proc.stdout
    # model.safetensors holds model.pt's weights (the best by validation), and load_pretrained reads it
    best = torch.load(out / "models" / "model.pt", weights_only=True)
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=8, features=json.loads(TINY_FEATURES))
    loaded = monai_cover.load_pretrained(net, out / "models" / "model.safetensors", strict=True)
    assert sorted(loaded.loaded) == sorted(best) and all(torch.equal(net.state_dict()[k], best[k]) for k in best)

    evaluate = FINETUNE / "configs" / "evaluate.json"
    proc = bundle_run([CONFIG, evaluate], FINETUNE, out, *TINY_FINETUNE, "--pretrained", "false")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert (out / "eval" / "metrics.csv").is_file()
    assert "val_mean_dice" in (out / "eval" / "metrics.csv").read_text(encoding="utf-8")
    # per class, under the class names (the demo's segment names), not class0..class6
    rows = (out / "eval" / "val_mean_dice_per_class.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == ("filename,ribs,cervical vertebral column,thoracic vertebral column,lumbar vertebral column,"
                       "right lung,left lung,tissue")  # fmt: skip
    assert rows[1].startswith(str(_chest_ct())) and rows[-1].startswith("mean,")
    assert "val_mean_dice per class: ribs " in proc.stdout and "class0" not in proc.stdout

    # inference.json on its own: segmentations of a folder (or datalist), in the input's own grid, with the class
    # names; everything that defines the model (widths, classes, spacing, patch) read from the run's record
    infer = FINETUNE / "configs" / "inference.json"
    proc = bundle_run([infer], FINETUNE, out)
    assert proc.returncode == 0, proc.stdout[-4000:]
    _assert_segmentation(out / "segmentations" / "CTChest4_seg.nii.gz", _chest_ct())
    names = json.loads((out / "segmentations" / "classes.json").read_text(encoding="utf-8"))
    assert names["0"] == "background" and names["5"] == "right lung" and len(names) == 8


def _chest_ct():
    import slicerio

    return Path(slicerio.__file__).parent / "data" / "CTChest4.nrrd"


def _assert_segmentation(seg_path: Path, image_path: Path) -> None:
    """``seg_path`` is a label map of ``image_path``'s shape and affine (spacing and orientation restored)."""
    import warnings

    import nibabel as nib
    import numpy as np
    from monai.transforms import LoadImage

    from monai_cover.data import volume_readers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = LoadImage(reader=volume_readers(), image_only=True)(str(image_path))
    seg = nib.load(str(seg_path))
    assert seg.shape == tuple(image.shape), (seg.shape, image.shape)
    np.testing.assert_allclose(seg.affine, np.asarray(image.affine), atol=1e-3)
    values = np.unique(np.asarray(seg.dataobj))
    assert values.dtype == np.uint8 and set(values.tolist()) <= set(range(8))


def test_finetune_refuses_incomplete_pretrained_weights(pretrain_run, tmp_path):
    from monai.networks.nets import BasicUNet

    from monai_cover.bundle import load_backbone_weights

    # another backbone definition (wider first level): shapes differ, so loading must fail loudly
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=(6, 4, 8, 8, 16, 8))
    with pytest.raises(RuntimeError, match="did not load completely"):
        load_backbone_weights(net, pretrain_run["output_dir"], exclude="^final_conv\\.")
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=json.loads(TINY_FEATURES))
    report = load_backbone_weights(net, pretrain_run["output_dir"], exclude="^final_conv\\.")
    assert len(report.loaded) == len(net.state_dict()) - 2


def test_finetune_metadata_and_net_in_out():
    verify_net("network_def", META, CONFIG, features=json.loads(TINY_FEATURES))
    meta = json.loads(META.read_text(encoding="utf-8"))
    assert (
        meta["network_data_format"]["outputs"]["pred"]["num_channels"]
        == json.loads(CONFIG.read_text(encoding="utf-8"))["num_classes"]
    )
    assert "monai_cover" in meta["required_packages_version"]
