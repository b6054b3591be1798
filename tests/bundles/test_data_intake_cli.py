# SPDX-License-Identifier: Apache-2.0
"""What a new user's data and command lines do to the pretraining bundle, through the real CLI
(``python -m monai.bundle run`` in a subprocess) on real files written here:

- a folder with a truncated ``.nii.gz``, a NaN volume, a 2-D NIfTI, a 10^3 volume, a PNG and a ``.txt`` next to
  two good volumes: with the default ``--on_bad_file error`` one message names every bad file and why, before any
  training; with ``skip`` they are left out and listed, the PNG and the ``.txt`` are listed as ignored, and the run
  trains on the one good training volume (the other is held out, and the report says so);
- a datalist with ``"validation": []``, ``--amp false`` and a lock left by a killed run: validated on nothing,
  ``amp`` read as ``False``, the lock taken over;
- typo'd and ill-typed overrides: one error naming each key (and the closest one), before anything is written.

The bad-data runs stop before training, so they are fast; the others train one tiny epoch.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import PRETRAIN, TINY_PRETRAIN, bundle_run, write_bad_files, write_stale_lock, write_volumes

CONFIG = PRETRAIN / "configs" / "train.json"
ONE_EPOCH = [*TINY_PRETRAIN, "--epochs", "1"]


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
    """Two good volumes (``vol0.nii.gz``, ``vol1.nrrd``) and the six bad or foreign files of :func:`write_bad_files`."""
    folder = write_volumes(tmp_path_factory.mktemp("messy") / "data", n=2)
    return folder, write_bad_files(folder, folder / "vol0.nii.gz")


@pytest.fixture(scope="module")
def error_run(messy_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("error_run") / "out"
    proc = bundle_run([CONFIG], PRETRAIN, out, *ONE_EPOCH, "--dataset_dir", str(messy_folder[0]), "--modality", "CT")
    return proc, out


@pytest.fixture(scope="module")
def skip_run(messy_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("skip_run") / "out"
    proc = bundle_run(
        [CONFIG], PRETRAIN, out, *ONE_EPOCH, "--dataset_dir", str(messy_folder[0]), "--modality", "CT",
        "--on_bad_file", "skip",
    )  # fmt: skip
    return proc, out


def _error_text(proc) -> str:
    """The message after the last ``ERROR:`` (the CLI ends with it)."""
    assert "\nERROR: " in proc.stdout, proc.stdout[-3000:]
    return proc.stdout.rsplit("\nERROR: ", 1)[1]


def _report(out) -> dict:
    return json.loads((out / "data_report.json").read_text(encoding="utf-8"))


def _item(report: dict, name: str) -> dict:
    return next(it for it in report["items"] if it["files"]["image"]["path"].endswith(name))


def _no_training(proc) -> None:
    assert not re.search(r"Epoch: \d+/\d+, Iter:", proc.stdout), proc.stdout[-3000:]
    assert "Engine run" not in proc.stdout


def test_truncated_gzip_is_an_error_naming_the_file_before_training(error_run):
    proc, out = error_run
    assert proc.returncode != 0
    _no_training(proc)
    error = _error_text(proc)
    assert error.startswith("4 of 6 data item(s) cannot be trained on (--on_bad_file error):")
    line = next(x for x in error.splitlines() if "truncated.nii.gz" in x)
    # nibabel (not SimpleITK, which would zero-fill) read it and failed on the missing data
    assert "unreadable: NibabelReader could not read the voxels: EOFError" in line and "truncated or corrupt" in line
    assert _item(_report(out), "truncated.nii.gz")["reasons"][0]["code"] == "unreadable"
    assert "truncated.nii.gz" in (out / "data_report.md").read_text(encoding="utf-8")


def test_nan_volume_is_an_error_naming_the_file(error_run):
    line = next(x for x in _error_text(error_run[0]).splitlines() if "nan.nii.gz" in x)
    assert "nonfinite: 1 NaN and 0 infinite voxel(s); fix the file, or pass --nonfinite replace" in line
    assert _item(_report(error_run[1]), "nan.nii.gz")["files"]["image"]["nan"] == 1


def test_2d_nifti_is_an_error_naming_the_file(error_run):
    line = next(x for x in _error_text(error_run[0]).splitlines() if "flat2d.nii.gz" in x)
    assert "not_3d: 2-D image of shape 40x44" in line and "needs 3-D volumes" in line


def test_tiny_volume_is_an_error_with_both_sizes(error_run):
    line = next(x for x in _error_text(error_run[0]).splitlines() if "tiny.nii.gz" in x)
    assert "too_small: 10x10x10 voxels after resampling to 2x2x2 mm" in line
    assert "smaller than the patch 32x32x32" in line and "--pad_small true" in line
    # the error message ends with what to do
    assert "pass --on_bad_file skip to train without them" in _error_text(error_run[0])


def test_png_and_txt_are_listed_as_ignored(error_run, skip_run):
    for _, out in (error_run, skip_run):
        ignored = {p["path"].rsplit("/", 1)[-1]: p["reason"] for p in _report(out)["ignored"]}
        assert set(ignored) == {"photo.png", "notes.txt"}
        assert "2-D picture format (.png)" in ignored["photo.png"] and "not a volume file (.txt" in ignored["notes.txt"]
    assert "photo.png: a 2-D picture format (.png), not a medical volume" in skip_run[0].stdout


def test_skip_trains_on_the_good_volumes_only_and_says_so(skip_run):
    proc, out = skip_run
    assert proc.returncode == 0, proc.stdout[-4000:]
    report = _report(out)
    summary = ("found 6, training on 1, validating on 1, skipped 4 (1 nonfinite, 1 not_3d, 1 too_small, 1 unreadable); "
               "2 other file(s) ignored (not volumes)")  # fmt: skip
    assert report["summary"] == summary and f"data check | {summary}" in proc.stdout
    assert [p.rsplit("/", 1)[-1] for p in report["training"]] == ["vol0.nii.gz"]
    assert [p.rsplit("/", 1)[-1] for p in report["validation"]] == ["vol1.nrrd"]
    skipped = {it["files"]["image"]["path"].rsplit("/", 1)[-1] for it in report["items"] if it["status"] == "skipped"}
    assert skipped == {"truncated.nii.gz", "nan.nii.gz", "flat2d.nii.gz", "tiny.nii.gz"}
    # one epoch of exactly one iteration: the one good training volume, no bad file reached the trainer
    assert re.findall(r"Epoch: 1/1, Iter: (\d+)/(\d+)", proc.stdout) == [("1", "1")]
    assert "val_ddf_epe" in proc.stdout


def test_default_split_of_two_volumes_is_announced(skip_run):
    proc, out = skip_run
    split = ("no validation list: the last 1 of the 2 usable volume(s) held out for validation (val_fraction 0.2; "
             "--val_fraction 0 trains on all)")  # fmt: skip
    assert _report(out)["split"] == split and f"data check | split: {split}" in proc.stdout


def test_empty_validation_list_amp_false_and_a_stale_lock(tmp_path):
    data = write_volumes(tmp_path / "data", n=2)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": "data/vol0.nii.gz"}, {"image": "data/vol1.nrrd"}],
                                    "validation": []}), encoding="utf-8")  # fmt: skip
    out = tmp_path / "out"
    pid = write_stale_lock(out)
    proc = bundle_run([CONFIG], PRETRAIN, out, *ONE_EPOCH, "--dataset_dir", str(datalist), "--amp", "false")
    assert proc.returncode == 0, proc.stdout[-4000:]
    # the empty list is the user's choice: both volumes train, nothing is held out, no validation runs
    report = json.loads((out / "data_report.json").read_text(encoding="utf-8"))
    assert report["summary"] == "found 2, training on 2, validating on 0, skipped 0"
    assert report["split"] == f"validation list of {str(datalist)!r} (0 item(s); validating on nothing)"
    assert re.findall(r"Epoch: 1/1, Iter: (\d+)/(\d+)", proc.stdout) == [("1", "2"), ("2", "2")]
    assert "val_ddf_epe" not in proc.stdout
    # --amp false is False, not the truthy string 'false'
    assert "amp='false' (read as False)" in proc.stdout
    # the lock of the killed run was taken over, naming it, and released at the end
    assert f"took over the lock left by a run that is no longer running (pid {pid} on host" in proc.stdout
    assert (out / ".monai_cover.lock").read_text(encoding="utf-8") == ""
    assert str(data)  # the datalist's paths are relative to its folder


def test_typos_and_bad_values_are_refused_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    proc = bundle_run(
        [CONFIG], PRETRAIN, out, "--epoch", "2", "--modality", "PET", "--amp", "flase", "--patch_size", "32",
        "--train#trainer#max_epoch", "2", "--method_loss_kwargs#num_samples", "512", "--network_def#features",
        "[4,4,8,8,16,8]", "--logging_file", str(PRETRAIN / "configs" / "logging.conf"),
    )  # fmt: skip
    assert proc.returncode != 0
    error = _error_text(proc)
    lines = error.splitlines()
    assert lines[0] == "5 command-line override(s) rejected:"
    assert "  --epoch: the config has no key 'epoch' (did you mean --epochs?)." in lines
    assert "  --modality 'PET': accepted values are '', 'CT', 'MR', 'MRI'." in lines
    assert "  --amp 'flase': expected a boolean (true/false/True/False/1/0)." in lines
    assert "  --patch_size 32: expected a list, e.g. \"[1,2,3]\"." in lines  # default by device: not shown
    assert ("  --train#trainer#max_epoch: monai.engines.SupervisedTrainer takes no argument 'max_epoch' (did you mean "
            "--train#trainer#max_epochs?).") in lines
    assert "docs/README.md" in lines[-1] and "--strict_overrides false" in lines[-1]
    # nested keys into a kwargs dict or a component, and MONAI's own run arguments, are fine
    assert not any("method_loss_kwargs" in x or "network_def" in x or "logging_file" in x for x in lines)
    # nothing ran: no lock, no data read, no folder made
    assert not out.exists() and "data check" not in proc.stdout
