# SPDX-License-Identifier: Apache-2.0
"""Data as nnU-Net sees it: NnUNetPreprocessd against nnUNetv2_preprocess's own output, and where cases are found."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from nnunet_helpers import DATASET, fixture_nnunet_dataset, fixture_preprocessed, make_case, write_volume  # noqa: F401 (fixtures)

from monai_cover.nnunet import NnUNetDataError, NnUNetPlan, NnUNetPreprocessd, check_nnunet_data, nnunet_cases


@pytest.fixture(scope="module")
def plan(preprocessed):
    return NnUNetPlan.load(preprocessed, "3d_fullres")


def test_preprocessing_equals_nnunets_own_output(plan, nnunet_dataset):
    raw = nnunet_dataset / "raw" / DATASET / "imagesTr" / "case_001_0000.nii.gz"
    stored = plan.preprocessed_folder / "case_001.b2nd"
    ours = NnUNetPreprocessd("image", plan)({"image": [str(raw)]})["image"]
    theirs = NnUNetPreprocessd("image", plan)({"image": str(stored)})["image"]
    # nnU-Net transposes to its axis order: the 1.5 mm axis (the file's last) comes first
    assert ours.shape == theirs.shape == (1, 36, 40, 40)
    assert ours.dtype == theirs.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5)
    # z-score normalisation: mean 0, std 1 over the image
    assert abs(float(ours.mean())) < 1e-3 and abs(float(ours.std()) - 1.0) < 1e-2
    assert ours.meta["filename_or_obj"] == str(raw)
    assert ours.pixdim.tolist() == pytest.approx([1.5, 1.0, 1.0])
    assert torch.allclose(ours.affine, torch.diag(torch.tensor([1.5, 1.0, 1.0, 1.0], dtype=torch.float64)))


def test_preprocessing_errors_name_the_files(plan, tmp_path):
    bad = tmp_path / "bad_0000.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(NnUNetDataError, match="bad_0000.nii.gz"):
        NnUNetPreprocessd("image", plan)({"image": [str(bad)]})
    with pytest.raises(NnUNetDataError, match="2 file\\(s\\).*1 channel"):
        NnUNetPreprocessd("image", plan)({"image": [str(bad), str(bad)]})
    with pytest.raises(NnUNetDataError, match="missing.b2nd"):
        NnUNetPreprocessd("image", plan)({"image": str(tmp_path / "missing.b2nd")})
    with pytest.raises(TypeError, match="NnUNetPlan"):
        NnUNetPreprocessd("image", "plans.json")


def test_cases_are_found_where_nnunet_keeps_them(plan, nnunet_dataset, tmp_path):
    cases, source = nnunet_cases(plan)  # default: the preprocessed folder, no *_seg files
    assert [c.rsplit("/", 1)[1] for c in cases] == [f"case_{i:03d}.b2nd" for i in range(4)]
    assert "preprocessed folder" in source
    raw = nnunet_dataset / "raw" / DATASET
    cases, source = nnunet_cases(plan, raw)  # the raw dataset: imagesTr, one list of channel files per case
    assert cases == [[str(raw / "imagesTr" / f"case_{i:03d}_0000.nii.gz")] for i in range(4)]
    assert "imagesTr" in source
    plain = tmp_path / "unlabelled"  # any names, one channel: each file a case
    plain.mkdir()
    for name in ("ct_b.nii.gz", "ct_a.nii.gz"):
        shutil.copy(raw / "imagesTr" / "case_000_0000.nii.gz", plain / name)
    (plain / "notes.txt").write_text("ignored", encoding="utf-8")
    cases, _ = nnunet_cases(plan, plain)
    assert cases == [[str(plain / "ct_a.nii.gz")], [str(plain / "ct_b.nii.gz")]]


def test_cases_errors(plan, preprocessed, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NnUNetDataError, match="no cases found in .*empty.*'.nii.gz'"):
        nnunet_cases(plan, empty)
    with pytest.raises(NnUNetDataError, match="is not a folder"):
        nnunet_cases(plan, tmp_path / "nowhere")
    gap = tmp_path / "gap"
    gap.mkdir()
    image, _ = make_case(np.random.default_rng(1))
    write_volume(gap / "c_0001.nii.gz", image)
    with pytest.raises(NnUNetDataError, match="case 'c'.*\\[1\\].*channels 0..0"):
        nnunet_cases(plan, gap)
    # a two-channel plan refuses files that do not name their channel
    ds = json.loads((preprocessed / "dataset.json").read_text(encoding="utf-8"))
    ds["channel_names"] = {"0": "T1", "1": "T2"}
    (tmp_path / "dataset.json").write_text(json.dumps(ds), encoding="utf-8")
    two = NnUNetPlan.load(preprocessed / "nnUNetPlans.json", "3d_fullres", tmp_path / "dataset.json")
    plain = tmp_path / "plain"
    plain.mkdir()
    write_volume(plain / "scan.nii.gz", image)
    with pytest.raises(NnUNetDataError, match="2 channels.*<case>_<XXXX>.nii.gz.*scan.nii.gz"):
        nnunet_cases(two, plain)


def test_check_data_splits_and_reports(plan, tmp_path):
    report = check_nnunet_data(plan, "", val_fraction=0.25, output_dir=tmp_path)
    assert len(report.datalist["training"]) == 3 and len(report.datalist["validation"]) == 1
    assert report.datalist["validation"][0]["image"].endswith("case_003.b2nd")
    written = json.loads((tmp_path / "data_report.json").read_text(encoding="utf-8"))
    assert written["training"] == [c["image"] for c in report.datalist["training"]]
    assert written["plan"]["configuration"] == "3d_fullres"
    assert len(check_nnunet_data(plan, "", val_fraction=0.0).datalist["validation"]) == 0
    with pytest.raises(NnUNetDataError, match="val_fraction must be in \\[0, 1\\)"):
        check_nnunet_data(plan, "", val_fraction=1.0)
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "zero.nii.gz").write_bytes(b"")
    with pytest.raises(NnUNetDataError, match="zero.nii.gz: empty file"):
        check_nnunet_data(plan, folder)


def test_demo_dataset_command(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "monai_cover.nnunet", "demo-dataset", str(tmp_path), "--cases", "2"],
                          capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "Dataset501_Tiny"
    assert proc.stdout.strip() == str(folder)
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["case_000_0000.nii.gz", "case_001_0000.nii.gz"]
    assert json.loads((folder / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 2
    again = subprocess.run([sys.executable, "-m", "monai_cover.nnunet", "demo-dataset", str(tmp_path)],
                           capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert again.returncode == 2 and "exists already" in again.stderr
