# SPDX-License-Identifier: Apache-2.0
"""The tiny nnU-Net dataset on disk, planned and preprocessed by nnunetv2's own command line (CPU, seconds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from nnunet_helpers import DATASET, make_raw_dataset, run_nnunet

if importlib.util.find_spec("nnunetv2") is None:  # the [nnunet] extra is not installed (CI installs it)
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def nnunet_dataset(tmp_path_factory) -> Path:
    """nnU-Net's folders (``raw/``, ``preprocessed/``, ``results/``) with the tiny dataset planned (``nnUNetPlans``:
    2d and 3d_fullres, 3d_fullres preprocessed; ``nnUNetResEncUNetMPlans``: planned only)."""
    root = tmp_path_factory.mktemp("nnunet")
    make_raw_dataset(root)
    run_nnunet(root, "nnUNetv2_plan_and_preprocess", "-d", "501", "-c", "3d_fullres", "-np", "1", "-npfp", "1")
    run_nnunet(root, "nnUNetv2_plan_experiment", "-d", "501", "-pl", "nnUNetPlannerResEncM")
    return root


@pytest.fixture(scope="session")
def preprocessed(nnunet_dataset) -> Path:
    return nnunet_dataset / "preprocessed" / DATASET
