# SPDX-License-Identifier: Apache-2.0
"""2-D data intake: folder search, the 2-D demo lists, and the data check's rules for 2-D runs (volumes to slice, a
volume among pictures, RGB pictures, single-frame DICOM)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from monai_cover.data import DataCheckError, check_datalist, get_datalist, image_readers_2d


def _folder(tmp_path, volume: bool = False, rgb: bool = False):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((30, 40)) * 255).astype(np.uint8)).save(tmp_path / f"img{i}.png")
    if rgb:
        Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "colour.png")
    if volume:
        nib.save(nib.Nifti1Image(rng.random((20, 22, 12)).astype(np.float32), np.eye(4)), str(tmp_path / "vol.nii.gz"))
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    return tmp_path


def _check(dl, **kw):
    args = dict(readers=image_readers_2d(), spatial_dims=2, spacing=None, axcodes=None, verbose=False)
    return check_datalist(dl, **{**args, **kw})


def test_find_images_2d(tmp_path):
    dl = get_datalist(str(_folder(tmp_path, volume=True)), val_fraction=0.25, spatial_dims=2)
    names = sorted(p["image"].rsplit("/", 1)[-1] for p in dl["training"] + dl["validation"])
    assert names == ["img0.png", "img1.png", "img2.png", "vol.nii.gz"]
    assert len(dl["validation"]) == 1
    assert [i["path"].rsplit("/", 1)[-1] for i in dl["info"]["ignored"]] == ["notes.txt"]


def test_volume_among_pictures_is_named(tmp_path):
    dl = get_datalist(str(_folder(tmp_path, volume=True)), val_fraction=0.0, spatial_dims=2)
    with pytest.raises(DataCheckError, match=r"vol\.nii\.gz: volume_among_images: a 3-D volume \(20x22x12\)"):
        _check(dl)
    report = _check(dl, slice_volumes="always")
    assert len(report.datalist["training"]) == 4
    assert [n["code"] for it in report.items for n in it["notes"]] == ["sliced"]
    with pytest.raises(DataCheckError, match="not_2d.*--slice_volumes never"):
        _check(dl, slice_volumes="never")
    only_volume = {"training": [{"image": str(tmp_path / "vol.nii.gz")}], "validation": []}
    assert len(_check(only_volume).datalist["training"]) == 1  # a folder of volumes is sliced


def test_rgb_picture_converted_or_refused(tmp_path):
    dl = get_datalist(str(_folder(tmp_path, rgb=True)), val_fraction=0.0, spatial_dims=2)
    report = _check(dl, to_gray=True)
    notes = {it["name"]: [n["code"] for n in it["notes"]] for it in report.items}
    assert notes["colour.png"] == ["to_gray"] and len(report.datalist["training"]) == 4
    with pytest.raises(DataCheckError, match="colour.png: channels: 3 channels"):
        _check(dl, to_gray=False)


def test_single_frame_dicom_is_2d(tmp_path):
    spec = importlib.util.spec_from_file_location("dicom_helpers", Path(__file__).parents[1] / "dicom_helpers.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    path = helpers.write_dicom(tmp_path / "cr.dcm", np.full((20, 30), 7, np.uint16))
    report = _check({"training": [{"image": str(path)}], "validation": []})
    (item,) = report.items
    assert item["status"] == "ok" and item["files"]["image"]["spatial_shape"] == [30, 20, 1]
    assert item["files"]["image"]["reader"] == "SimpleITKReader(nifti=False)"


def test_demo_2d_lists(tmp_path):
    pytest.importorskip("nilearn")
    pytest.importorskip("data_store")
    pre = get_datalist("", cache_dir=str(tmp_path), spatial_dims=2)
    names = [(it["name"], it.get("slice_range")) for it in pre["training"] + pre["validation"]]
    assert names == [("chest_cr", None), ("mni152_t1_2mm", [0.0, 0.55]), ("chest_ct", None), ("epi_example4d", None),
                     ("extremity_cr", None), ("mni152_t1_2mm", [0.65, 1.0])]  # fmt: skip
    assert pre["training"][0]["modality"] == "CR" and pre["training"][0]["image"].endswith("RG1_UNCR.dcm")
    seg = get_datalist("", cache_dir=str(tmp_path), labels=True, spatial_dims=2)
    z_train = [int(it["name"][-3:]) for it in seg["training"]]
    z_val = [int(it["name"][-3:]) for it in seg["validation"]]
    assert len(z_train) == 26 and len(z_val) == 31 and max(z_train) + 2 * 2 < min(z_val)  # >= 4 mm apart
    assert seg["info"]["labels"] == {"0": "background", "1": "other", "2": "grey matter", "3": "white matter"}
    img = nib.load(seg["training"][0]["image"])
    lab = nib.load(seg["training"][0]["label"])
    assert img.shape == lab.shape == (99, 117) and set(np.unique(np.asarray(lab.dataobj))) <= {0, 1, 2, 3}
