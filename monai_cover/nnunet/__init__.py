# SPDX-License-Identifier: Apache-2.0
"""nnU-Net hand-off (the ``[nnunet]`` extra): pretrain the network an nnU-Net plan describes with COVER, on data
preprocessed as nnU-Net preprocesses it, and give ``nnUNetv2_train -pretrained_weights`` a file it loads.

Everything nnU-Net-specific is done by nnunetv2's own code (plans, network building, preprocessing, dataset
classes); nothing else in monai_cover imports this package. ``python -m monai_cover.nnunet check WEIGHTS PLANS
CONFIG`` says whether a weights file fits the network of a plan.
"""

from __future__ import annotations

try:
    import nnunetv2  # noqa: F401
except ImportError as e:  # pragma: no cover - the extra is installed in CI
    raise ImportError("monai_cover.nnunet needs nnU-Net: pip install 'monai_cover[nnunet]' (nnunetv2 and "
                      "dynamic-network-architectures).") from e

from .data import NnUNetDataError, NnUNetDataReport, NnUNetPreprocessd, check_nnunet_data, nnunet_cases
from .demo import DEMO_DATASET, write_demo_dataset
from .plans import NnUNetPlan, NnUNetPlanError, find_plans_file
from .pretraining import NnUNetWeightsSaver, capture_range_for_plan, levels_for_plan
from .weights import (
    NNUNET_SKIPPED,
    NnUNetWeightsCheck,
    check_nnunet_weights,
    compare_with_plan,
    read_nnunet_weights,
    save_nnunet_pretrained,
)

__all__ = [
    "DEMO_DATASET",
    "NNUNET_SKIPPED",
    "NnUNetDataError",
    "NnUNetDataReport",
    "NnUNetPlan",
    "NnUNetPlanError",
    "NnUNetPreprocessd",
    "NnUNetWeightsCheck",
    "NnUNetWeightsSaver",
    "capture_range_for_plan",
    "check_nnunet_data",
    "check_nnunet_weights",
    "compare_with_plan",
    "find_plans_file",
    "levels_for_plan",
    "nnunet_cases",
    "read_nnunet_weights",
    "save_nnunet_pretrained",
    "write_demo_dataset",
]
