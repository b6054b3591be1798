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
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[0] == "4 of 6 data item(s) cannot be trained on (--on_bad_file error):"
    for name in ("truncated.nii.gz", "nan.nii.gz", "flat2d.nii.gz", "tiny.nii.gz"):
        assert name in proc.stderr
    assert "data check | ignored             " in proc.stdout and "photo.png" in proc.stdout
    report = json.loads((out / "data_report.json").read_text())
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
    report = json.loads((out / "data_report.json").read_text())
    notes = {it["name"]: [n["code"] for n in it["notes"]] for it in report["items"]}
    assert notes == {"p0.png": [], "p1.png": [], "rgb.png": ["to_gray"], "vol.nii.gz": ["sliced"]}
