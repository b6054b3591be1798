# SPDX-License-Identifier: Apache-2.0
"""The nnU-Net route of the pretraining bundle, through the real ``python -m monai.bundle run`` command line: the
planned network is pretrained with COVER on the tiny dataset, and nnunetv2's own loader takes the result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from nnunet_helpers import DATASET, fixture_nnunet_dataset, fixture_preprocessed, nnunet_env  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "cover_pretrain_3d" / "configs"


def bundle_run(root: Path, output_dir: Path, config_files: list[Path], *overrides: str) -> subprocess.CompletedProcess:
    env = nnunet_env(root)
    env["PYTHONPATH"] = str(REPO)
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str([str(c) for c in config_files]),
            "--bundle_root", str(CONFIGS.parent), "--output_dir", str(output_dir), *overrides]
    return subprocess.run(args, cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          encoding="utf-8", errors="replace", timeout=900)


def test_pretrain_plan_network_and_load_it_in_nnunet(nnunet_dataset, preprocessed, tmp_path):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from monai_cover.nnunet import NnUNetPlan

    out = tmp_path / "run"
    raw = nnunet_dataset / "raw" / DATASET
    proc = bundle_run(nnunet_dataset, out, [CONFIGS / "train.json", CONFIGS / "nnunet.json"],
                      "--backbone", "nnunet", "--nnunet_plans", str(preprocessed / "nnUNetPlans.json"),
                      "--nnunet_configuration", "3d_fullres", "--dataset_dir", str(raw), "--epochs", "2",
                      "--val_interval", "1", "--num_samples", "1", "--val_num_samples", "1", "--val_fraction", "0.25")
    assert proc.returncode == 0, proc.stdout[-4000:]
    weights = out / "nnunet_pretrained.pth"
    record = json.loads((out / "nnunet_pretrained.json").read_text(encoding="utf-8"))
    assert record["plans_identifier"] == "nnUNetPlans" and record["configuration"] == "3d_fullres"
    assert record["spacing"] == [1.5, 1.0, 1.0] and record["normalization_schemes"] == ["ZScoreNormalization"]
    assert record["patch_size"] == record["pretraining_patch_size"] == [40, 40, 40]
    assert record["method"] == "cover" and record["epochs"] == 2
    assert record["iterations"] == 2 * 3  # 3 training cases, batch 1
    assert "imagesTr" in record["data"]
    report = json.loads((out / "data_report.json").read_text(encoding="utf-8"))
    assert len(report["training"]) == 3 and len(report["validation"]) == 1

    plan = NnUNetPlan.load(preprocessed, "3d_fullres")
    target = nnUNetTrainer.build_network_architecture(plan.plans_manager, plan.configuration_manager, 1, 2, True)
    initial = {k: v.clone() for k, v in target.state_dict().items()}
    load_pretrained_weights(target, str(weights))
    pretrained = torch.load(str(weights), weights_only=True)["network_weights"]
    monai_model = torch.load(str(out / "models" / "model.pt"), weights_only=True)  # the bundle's own final model
    loaded = target.state_dict()
    non_seg = [k for k in loaded if ".seg_layers." not in k]
    assert len(non_seg) == len(loaded) - 6 == 182
    for k in non_seg:
        assert torch.equal(loaded[k], pretrained[k]) and torch.equal(pretrained[k], monai_model[k]), k
    changed = [k for k in non_seg if k.endswith("conv.weight") and not torch.equal(loaded[k], initial[k])]
    assert len(changed) == len([k for k in non_seg if k.endswith("conv.weight")])  # trained, not nnU-Net's init

    check = subprocess.run([sys.executable, "-m", "monai_cover.nnunet", "check", str(weights), str(preprocessed),
                            "3d_fullres"], capture_output=True, encoding="utf-8", errors="replace", timeout=300,
                           cwd=str(REPO))
    assert check.returncode == 0 and "nnU-Net will load 182 tensors" in check.stdout


def test_nnunet_backbone_without_its_override_file(nnunet_dataset, tmp_path):
    proc = bundle_run(nnunet_dataset, tmp_path / "run", [CONFIGS / "train.json"], "--backbone", "nnunet")
    assert proc.returncode != 0
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("ERROR: --backbone nnunet needs the override file") and "nnunet.json" in last, last
    assert not (tmp_path / "run" / "models").exists()


def test_missing_plans_is_one_clear_error(nnunet_dataset, tmp_path):
    proc = bundle_run(nnunet_dataset, tmp_path / "run", [CONFIGS / "train.json", CONFIGS / "nnunet.json"])
    assert proc.returncode != 0
    assert proc.stdout.strip().splitlines()[-1].startswith("ERROR: nnunet_plans: no plans file given"), \
        proc.stdout[-2000:]


def test_override_file_fixes_the_backbone(nnunet_dataset, preprocessed, tmp_path):
    proc = bundle_run(nnunet_dataset, tmp_path / "run", [CONFIGS / "train.json", CONFIGS / "nnunet.json"],
                      "--backbone", "basic_unet", "--nnunet_plans", str(preprocessed))
    assert proc.returncode != 0
    assert "ERROR: 1 command-line override(s) rejected:\n  --backbone 'basic_unet': accepted values are 'nnunet'." \
        in proc.stdout, proc.stdout[-2000:]
