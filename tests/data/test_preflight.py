# SPDX-License-Identifier: Apache-2.0
"""Data intake without the CLI: the bundles' reader order (a truncated ``.nii.gz`` raises), the NaN guard, the
pre-flight check's rules (padding on request, NaN replacement, labels, reuse, the split redone after skipping, the
dataset type from the size estimate), the switch to an on-disk dataset in the bundle config, and the small helpers
(datalists, modality, class names)."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import NibabelReader
from monai.transforms import Compose, LoadImaged

from monai_cover.data import (
    CheckFinited,
    DataCheckError,
    SimpleITKReader,
    check_datalist,
    choose_dataset_type,
    class_names,
    get_datalist,
    inference_datalist,
    normalize_modality,
    volume_readers,
    write_class_names,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundles"))
from conftest import PRETRAIN, TINY_FEATURES, write_bad_files, write_volumes  # noqa: E402

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _save(path: Path, array, affine=AFFINE) -> str:
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine), str(path))
    return str(path)


@pytest.fixture()
def folder(tmp_path):
    data = write_volumes(tmp_path / "data", n=2)  # vol0.nii.gz, vol1.nrrd
    return data, write_bad_files(data, data / "vol0.nii.gz")


def _load(path, readers, nonfinite=None):
    steps = [LoadImaged("image", reader=readers, image_only=True, ensure_channel_first=True)]
    if nonfinite:
        steps.append(CheckFinited("image", nonfinite=nonfinite))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Compose(steps)({"image": str(path)})["image"]


def test_truncated_nifti_raises_with_the_bundle_readers(folder):
    _, bad = folder
    with pytest.raises(Exception) as info:
        _load(bad["truncated"], volume_readers())
    chain, exc = [], info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, EOFError) for e in chain), [type(e) for e in chain]
    # the old order [NibabelReader(), SimpleITKReader()]: MONAI tries SimpleITK first, which zero-fills the missing part
    silent = _load(bad["truncated"], [NibabelReader(), SimpleITKReader()])
    assert float((silent == 0).float().mean()) > 0.5


def test_each_format_goes_to_its_reader(folder):
    data, _ = folder
    readers = volume_readers()
    assert [type(r).__name__ for r in readers] == ["SimpleITKReader", "NibabelReader"]  # the LAST is tried first
    nii, nrrd = _load(data / "vol0.nii.gz", readers), _load(data / "vol1.nrrd", readers)
    assert tuple(nii.shape) == tuple(nrrd.shape) == (1, 40, 44, 36)
    with pytest.raises(ValueError, match="leaves NIfTI to nibabel"):
        SimpleITKReader(nifti=False).read(str(data / "vol0.nii.gz"))
    assert not SimpleITKReader(nifti=False).verify_suffix("a.nii.gz") and SimpleITKReader().verify_suffix("a.nii.gz")


def test_nan_is_an_error_naming_the_file_or_replaced(folder, caplog):
    _, bad = folder
    with pytest.raises(Exception) as info:  # in a Compose: MONAI's "applying transform" error, ours as the cause
        _load(bad["nan"], volume_readers(), nonfinite="error")
    assert isinstance(info.value.__cause__, ValueError)
    assert str(info.value.__cause__).startswith(f"{bad['nan']} ('image'): 1 NaN and 0 infinite voxel(s) of 63360.")
    assert torch.isnan(_load(bad["nan"], volume_readers())).sum() == 1  # nibabel keeps the NaN (SimpleITK too)
    fixed = _load(bad["nan"], volume_readers(), nonfinite="replace")
    assert bool(torch.isfinite(fixed).all()) and "replaced 1 non-finite voxel(s)" in caplog.text
    assert float(fixed[0, 5, 6, 7]) == float(fixed.min())


def _check(datalist, tmp_path, **kwargs):
    kwargs = {"spacing": [2.0, 2.0, 2.0], "patch_size": [32, 32, 32], "crop_size": [48, 48, 48],
              "output_dir": tmp_path / "report", **kwargs}  # fmt: skip
    return check_datalist(datalist, **kwargs)


def test_check_policies(folder, tmp_path):
    data, bad = folder
    datalist = get_datalist(data)
    with pytest.raises(DataCheckError) as info:
        _check(datalist, tmp_path)
    text = str(info.value)
    for name in ("truncated.nii.gz", "nan.nii.gz", "flat2d.nii.gz", "tiny.nii.gz"):
        assert name in text
    assert "vol0.nii.gz" not in text and "photo.png" not in text
    report = json.loads((tmp_path / "report" / "data_report.json").read_text(encoding="utf-8"))
    assert report["counts"]["bad"] == 4 and report["summary"].startswith("found 6, 4 bad")
    # asked for: padding and NaN replacement make those two usable, and the report says so
    report = _check(datalist, tmp_path, on_bad_file="skip", pad_small=True, nonfinite="replace")
    notes = {Path(it["files"]["image"]["path"]).name: [n["code"] for n in it["notes"]] for it in report.items}
    assert "padded" in notes["tiny.nii.gz"] and "nonfinite_replaced" in notes["nan.nii.gz"]
    padded = next(it for it in report.items if it["files"]["image"]["path"].endswith("tiny.nii.gz"))
    assert "99.1% of each 48x48x48 crop zeros" in padded["notes"][0]["message"]
    assert report.summary.startswith("found 6, training on 3, validating on 1, skipped 2")
    # the previous report's results are reused for unchanged files
    assert report.reused == 6
    assert report.to_dict()["reused_from_previous_report"] == 6


def test_skipping_redoes_the_split_over_the_usable_volumes(tmp_path):
    data = write_volumes(tmp_path / "data", n=3)
    _save(data / "zz_tiny.nii.gz", np.ones((8, 8, 8)))  # sorted last: it would have been the validation volume
    datalist = get_datalist(data)
    assert [Path(it["image"]).name for it in datalist["validation"]] == ["zz_tiny.nii.gz"]
    report = _check(datalist, tmp_path, on_bad_file="skip")
    assert [Path(it["image"]).name for it in report.datalist["validation"]] == ["vol2.nrrd"]
    assert "the last 1 of the 3 usable volume(s) held out" in report.split
    assert all("pad" not in it for it in report.datalist["training"])
    with pytest.raises(DataCheckError, match="no usable volume left"):
        _check({"training": [{"image": str(data / "zz_tiny.nii.gz")}], "validation": []}, tmp_path, on_bad_file="skip")


def test_labels_are_checked_against_classes_and_the_image_grid(tmp_path):
    image = _save(tmp_path / "img.nii.gz", np.random.default_rng(0).random((40, 40, 40)))
    good = _save(tmp_path / "good.nii.gz", np.arange(40 * 40 * 40).reshape(40, 40, 40) % 3)
    wrong_values = _save(tmp_path / "values.nii.gz", np.full((40, 40, 40), 12.0))
    wrong_grid = _save(tmp_path / "grid.nii.gz", np.zeros((40, 40, 38)))
    items = [{"image": image, "label": lab} for lab in (good, wrong_values, wrong_grid)]
    report = _check({"training": items, "validation": []}, tmp_path, label_key="label", num_classes=3,
                    crop_size=[32, 32, 32], on_bad_file="skip")  # fmt: skip
    codes = [[r["code"] for r in it["reasons"]] for it in report.items]
    assert codes == [[], ["label_values"], ["label_grid"]]
    assert ("1 of its 1 distinct label values are not class indices 0..2 (--num_classes 3): 12; values in the file: "
            "min 12, max 12") in report.items[1]["reasons"][0]["message"]


def test_dataset_type_from_the_size_estimate():
    gb = 1024**3
    assert choose_dataset_type(2 * gb, "auto", memory_budget_gb=4)[0] == "cache"
    kind, why = choose_dataset_type(2 * gb, "auto", memory_budget_gb=1)
    assert kind == "persistent" and "more than the memory budget of 1 GB (--memory_budget_gb 1)" in why
    assert choose_dataset_type(2 * gb, "auto", memory_budget_gb=1, cache_rate=0.25)[0] == "cache"
    assert choose_dataset_type(100 * gb, "cache")[0] == "cache"  # explicit wins
    assert choose_dataset_type(1, "persistent")[0] == "persistent"
    with pytest.raises(ValueError, match="dataset_type"):
        choose_dataset_type(1, "disk")


def test_bundle_switches_to_the_on_disk_dataset_beyond_the_memory_budget(tmp_path):
    """Many small volumes and a tiny memory budget: the pretraining config builds a PersistentDataset under
    output_dir/cache and says why; with room enough, the CacheDataset."""
    from monai.bundle import ConfigParser
    from monai.data import CacheDataset, PersistentDataset

    data = write_volumes(tmp_path / "data", n=12, shape=(36, 36, 36))

    def parser(out, budget):
        p = ConfigParser()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p.read_config(str(PRETRAIN / "configs" / "train.json"))
        p.update({"bundle_root": str(PRETRAIN), "output_dir": str(out), "dataset_dir": str(data), "num_workers": 0,
                  "features": json.loads(TINY_FEATURES), "memory_budget_gb": budget})  # fmt: skip
        return p

    p = parser(tmp_path / "small", 0.0005)  # 0.5 MB; 11 volumes of 48^3 float32 after padding take ~4.6 MB
    dataset = p.get_parsed_content("train#dataset")
    report = p.get_parsed_content("data_report")
    assert isinstance(dataset, PersistentDataset) and report.dataset_type == "persistent"
    assert report.dataset_reason.startswith("PersistentDataset (on disk)")
    assert "--memory_budget_gb 0.0005" in report.dataset_reason
    assert math.isclose(report.estimated_bytes, 12 * 48**3 * 4)
    written = json.loads((tmp_path / "small" / "data_report.json").read_text(encoding="utf-8"))
    assert written["dataset"]["type"] == "persistent"
    dataset[0]  # preprocessed once, written to disk
    assert len(list((tmp_path / "small" / "cache" / "persistent").glob("*.pt"))) == 1
    assert isinstance(p.get_parsed_content("validate#dataset"), PersistentDataset)
    roomy = parser(tmp_path / "roomy", 1.0)
    assert isinstance(roomy.get_parsed_content("train#dataset"), CacheDataset)


def test_datalist_helpers(tmp_path, folder):
    data, _ = folder
    dl = get_datalist(data)
    assert {Path(i["path"]).name for i in dl["info"]["ignored"]} == {"photo.png", "notes.txt"}
    assert dl["info"]["split_kind"] == "val_fraction" and "held out for validation" in dl["info"]["split"]
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps({"training": [{"image": "data/vol0.nii.gz"}], "validation": [],
                                  "testing": [{"image": "data/vol1.nrrd"}]}), encoding="utf-8")  # fmt: skip
    dl = get_datalist(listed, modality="mri")
    assert dl["validation"] == [] and dl["training"][0]["modality"] == "MR"
    assert "validating on nothing" in dl["info"]["split"]
    assert [Path(i["image"]).name for i in inference_datalist(listed)["testing"]] == ["vol1.nrrd"]
    assert [Path(i["image"]).name for i in inference_datalist(data)["testing"]] == [
        "flat2d.nii.gz", "nan.nii.gz", "tiny.nii.gz", "truncated.nii.gz", "vol0.nii.gz", "vol1.nrrd"]  # fmt: skip
    assert normalize_modality("ct") == "CT" and normalize_modality("MRI") == "MR" and normalize_modality("") == ""
    with pytest.raises(ValueError, match=r"--modality: unknown modality 'PET'; accepted: CT, MR"):
        get_datalist(data, modality="PET")
    listed.write_text(json.dumps({"training": [{"image": "data/vol0.nii.gz", "modality": "US"}]}), encoding="utf-8")
    with pytest.raises(ValueError, match="datalist item .*vol0.nii.gz.*unknown modality 'US'"):
        get_datalist(listed)


def test_class_names(tmp_path):
    assert class_names([], 3) == ["background", "class1", "class2"]
    assert class_names(None, 3, {"labels": {"0": "background", "1": "liver"}}) == ["background", "liver", "class2"]
    assert class_names(["bg", "a", "b"], 3) == ["bg", "a", "b"]
    with pytest.raises(ValueError, match="--class_names has 2 name"):
        class_names(["bg", "a"], 3)
    path = write_class_names(["background", "liver"], tmp_path / "seg")
    assert json.loads(Path(path).read_text(encoding="utf-8")) == {"0": "background", "1": "liver"}
    assert os.path.basename(path) == "classes.json"
