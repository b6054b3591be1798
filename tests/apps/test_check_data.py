# SPDX-License-Identifier: Apache-2.0
"""python -m monai_cover.apps.check_data: the pre-flight check as a command, on a folder with real bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundles"))
from conftest import REPO, subprocess_env, write_bad_files, write_volumes  # noqa: E402

from monai_cover.apps.check_data import main  # noqa: E402


def test_check_data_command(tmp_path, capsys):
    data = write_volumes(tmp_path / "data", n=2)
    write_bad_files(data, data / "vol0.nii.gz")
    out = tmp_path / "report"
    # the real command line: exit status 1, every bad file named, the report written
    proc = subprocess.run(
        [sys.executable, "-m", "monai_cover.apps.check_data", str(data), "--output_dir", str(out)],
        cwd=str(REPO), env=subprocess_env(), capture_output=True, text=True, timeout=600,
            encoding="utf-8", errors="replace",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[0] == "4 of 6 data item(s) cannot be trained on (--on_bad_file error):"
    for name in ("truncated.nii.gz", "nan.nii.gz", "flat2d.nii.gz", "tiny.nii.gz"):
        assert name in proc.stderr
    assert "data check | ignored             " in proc.stdout and "photo.png" in proc.stdout
    report = json.loads((out / "data_report.json").read_text(encoding="utf-8"))
    assert report["counts"]["bad"] == 4 and (out / "data_report.md").is_file()
    # skip: exit status 0, the last line of the table is the summary
    assert main([str(data), "--output_dir", str(out), "--on_bad_file", "skip", "--patch_size", "[8,8,8]"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2] == ("data check | found 6, training on 2, validating on 1, skipped 3 (1 nonfinite, 1 not_3d, "
                           "1 unreadable); 2 other file(s) ignored (not volumes)")  # fmt: skip
    assert printed[-1].startswith("report: ")
    assert main(["/no/such/folder"]) == 2


def test_check_data_2d(tmp_path, capsys):
    """``--spatial_dims 2``: pictures and a volume among them, as the 2-D bundles check them."""
    import nibabel as nib
    import numpy as np
    from PIL import Image

    data = tmp_path / "pictures"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((30, 40)) * 255).astype(np.uint8)).save(data / f"p{i}.png")
    Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(data / "rgb.png")
    nib.save(nib.Nifti1Image(rng.random((20, 22, 12)).astype(np.float32), np.eye(4)), str(data / "vol.nii.gz"))
    out = tmp_path / "report"
    assert main([str(data), "--output_dir", str(out), "--spatial_dims", "2"]) == 1
    assert "vol.nii.gz: volume_among_images" in capsys.readouterr().err
    assert main([str(data), "--output_dir", str(out), "--spatial_dims", "2", "--slice_volumes", "always"]) == 0
    report = json.loads((out / "data_report.json").read_text(encoding="utf-8"))
    notes = {it["name"]: [n["code"] for n in it["notes"]] for it in report["items"]}
    assert notes == {"p0.png": [], "p1.png": [], "rgb.png": ["to_gray"], "vol.nii.gz": ["sliced"]}


def _run_check_data(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai_cover.apps.check_data", *args], cwd=str(REPO),
                          env=subprocess_env(), capture_output=True, encoding="utf-8", errors="replace",
                          timeout=600)  # fmt: skip


def test_label_values_the_whole_picture(tmp_path):
    """A 117-value region map (0..116) against 16 classes: one message naming the label file, how many values are
    outside, the first few with an ellipsis, min, max and count; the summary counts every reason; without
    --num_classes the check uses the fine-tuning bundle's default (8), as the bundle would."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    image = rng.random((24, 24, 24)).astype(np.float32)
    regions = (np.arange(24**3) % 117).reshape(24, 24, 24).astype(np.int16)  # every value 0..116
    for name, arr in (("img0.nii.gz", image), ("img1.nii.gz", image), ("lab1.nii.gz", regions % 3)):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / name))
    nib.save(nib.Nifti1Image(regions[:20], np.eye(4)), str(tmp_path / "lab0.nii.gz"))  # other grid too
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": "img0.nii.gz", "label": "lab0.nii.gz"},
                                                 {"image": "img1.nii.gz", "label": "lab1.nii.gz"}]}), encoding="utf-8")
    common = [str(datalist), "--labels", "--val_fraction", "0", "--patch_size", "[16,16,16]", "--spacing",
              "[1,1,1]", "--output_dir", str(tmp_path / "report")]  # fmt: skip

    proc = _run_check_data(*common, "--num_classes", "16")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = next(x for x in proc.stderr.splitlines() if "label_values" in x)
    assert line.startswith(f"  {tmp_path / 'lab0.nii.gz'}: ")  # the label file, not the image
    assert ("101 of its 117 distinct label values are not class indices 0..15 (--num_classes 16): 16, 17, 18, 19, "
            "20, 21, 22, 23, ..., 116; values in the file: min 0, max 116, 117 distinct: 0, 1, 2, 3, 4, 5, 6, 7, ..., "
            "116. Set --num_classes 117") in line  # fmt: skip

    skip = _run_check_data(*common, "--num_classes", "16", "--on_bad_file", "skip")
    assert skip.returncode == 0, skip.stdout[-2000:] + skip.stderr[-2000:]
    summary = next(x for x in skip.stdout.splitlines() if "data check | found 2" in x)
    assert "skipped 1 (" in summary and "label_values" in summary and "grid" in summary, summary

    default = _run_check_data(*common)  # no --num_classes: the bundle's 8, so 109 values outside
    assert default.returncode == 1
    assert "label values checked against num_classes 8 (cover_finetune_3d's default" in default.stdout
    assert "109 of its 117 distinct label values are not class indices 0..7" in default.stderr


def _write_dicom_series(folder: Path, vol) -> None:
    import numpy as np
    import SimpleITK as sitk

    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(vol.shape[2]):
        sl = sitk.GetImageFromArray(np.ascontiguousarray(vol[:, :, k].T))
        sl.SetSpacing((2.0, 2.0))
        for tag, value in (("0020|000e", "1.2.826.0.1.3680043.2.1125.7"), ("0020|0013", str(k + 1)),
                           ("0020|0032", f"0\\0\\{2.0 * k}"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0028|0030", "2\\2"), ("0018|0050", "2"), ("0008|0060", "CT"),
                           ("0008|0018", f"1.2.826.0.1.3680043.2.1125.7.{k + 1}")):  # fmt: skip
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)


def test_a_dicom_series_folder_given_directly_is_one_volume(tmp_path):
    import numpy as np

    vol = (np.random.default_rng(0).random((40, 36, 34)) * 1000 - 500).astype(np.int16)
    series = tmp_path / "series"
    _write_dicom_series(series, vol)
    proc = _run_check_data(str(series), "--val_fraction", "0", "--output_dir", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "data check | found 1, training on 1" in proc.stdout
    report = json.loads((tmp_path / "report" / "data_report.json").read_text(encoding="utf-8"))
    files = report["items"][0]["files"]["image"]
    assert files["path"] == str(series) and files["spatial_shape"] == [40, 36, 34]


def test_the_report_says_which_scaling_each_file_gets(tmp_path):
    """A mixed folder without --modality: the CT (HU range) gets the HU window, the MR percentiles; the report says
    which and why, and the bundles' transform does the same."""
    import nibabel as nib
    import numpy as np
    import torch

    from monai_cover.transforms import ScaleIntensityByModalityd

    rng = np.random.default_rng(0)
    ct = (rng.random((36, 36, 36)) * 2500 - 1024).astype(np.float32)  # -1024 .. 1476 HU
    mr = (rng.random((36, 36, 36)) * 800).astype(np.float32)
    data = tmp_path / "mixed"
    data.mkdir()
    nib.save(nib.Nifti1Image(ct, np.diag([2.0, 2.0, 2.0, 1.0])), str(data / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(mr, np.diag([2.0, 2.0, 2.0, 1.0])), str(data / "mr.nii.gz"))
    proc = _run_check_data(str(data), "--val_fraction", "0", "--output_dir", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "data_report.json").read_text(encoding="utf-8"))
    scaling = {Path(it["files"]["image"]["path"]).name: it["files"]["image"]["scaling"] for it in report["items"]}
    assert scaling["ct.nii.gz"].startswith("CT HU window (no modality; -1024..1476 looks like HU)")
    assert scaling["mr.nii.gz"].startswith("percentiles (no modality; ")
    assert "| CT HU window (no modality;" in (tmp_path / "report" / "data_report.md").read_text(encoding="utf-8")

    scale = ScaleIntensityByModalityd("image", mode="auto", hu_window=(-1000.0, 1000.0))
    out = scale({"image": torch.from_numpy(ct)[None], "modality": "unknown"})["image"]
    hu = torch.from_numpy(ct)[None].clamp(-1000, 1000)
    assert torch.allclose(out, (hu + 1000) / 2000, atol=1e-6)  # the HU window, not percentiles
    out = scale({"image": torch.from_numpy(mr)[None], "modality": "unknown"})["image"]
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0 and float((out == 1).float().mean()) > 0.001
    labelled = scale({"image": torch.from_numpy(ct)[None], "modality": "MR"})["image"]  # a named modality wins
    assert not torch.allclose(labelled, (hu + 1000) / 2000, atol=1e-3)
