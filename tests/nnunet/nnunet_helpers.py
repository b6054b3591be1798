# SPDX-License-Identifier: Apache-2.0
"""Helpers of the nnU-Net tests: a tiny dataset in nnU-Net's raw layout (four 40x40x36 MR-like volumes with a sphere
label), nnU-Net's own command line with its folders set, and the session fixtures that plan and preprocess the
dataset with it (imported by each test module: a conftest.py here would shadow tests/bundles/conftest.py, which
the bundle tests import by the name ``conftest``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="the [nnunet] extra (CI installs it)")

DATASET = "Dataset501_Tiny"
SHAPE = (40, 40, 36)
SPACING = (1.0, 1.0, 1.5)
_PLANNED: dict[str, Path] = {}


def nnunet_env(root: Path) -> dict:
    env = dict(os.environ)
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_n_proc_DA="1", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    return env


def nnunet_command(name: str) -> str:
    """nnU-Net's console script ``name`` of this Python's environment."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found beside {sys.executable}: is nnunetv2 installed?")
    return found


def write_volume(path: Path, array: np.ndarray) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.diag([*SPACING, 1.0])), str(path))


def make_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    from monai_cover.nnunet.demo import _case

    return _case(rng)


def make_raw_dataset(root: Path, cases: int = 4, seed: int = 0) -> Path:
    from monai_cover.nnunet import write_demo_dataset

    return write_demo_dataset(root / "raw", cases=cases, seed=seed, name=DATASET)


def run_nnunet(root: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([nnunet_command(args[0]), *args[1:]], env=nnunet_env(root), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, encoding="utf-8", errors="replace", timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc


@pytest.fixture(scope="session", name="nnunet_dataset")
def fixture_nnunet_dataset(tmp_path_factory) -> Path:
    """nnU-Net's folders (``raw/``, ``preprocessed/``, ``results/``) with the tiny dataset planned (``nnUNetPlans``:
    2d and 3d_fullres, 3d_fullres preprocessed; ``nnUNetResEncUNetMPlans``: planned only)."""
    if "root" not in _PLANNED:  # each test module imports this fixture: plan once per session all the same
        root = tmp_path_factory.mktemp("nnunet")
        make_raw_dataset(root)
        run_nnunet(root, "nnUNetv2_plan_and_preprocess", "-d", "501", "-c", "3d_fullres", "-np", "1", "-npfp", "1")
        run_nnunet(root, "nnUNetv2_plan_experiment", "-d", "501", "-pl", "nnUNetPlannerResEncM")
        _PLANNED["root"] = root
    return _PLANNED["root"]


@pytest.fixture(scope="session", name="preprocessed")
def fixture_preprocessed(nnunet_dataset) -> Path:
    return nnunet_dataset / "preprocessed" / DATASET
