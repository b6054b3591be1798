# SPDX-License-Identifier: Apache-2.0
"""Deprecated alias of :py:mod:`monai_cover.baselines` and :py:mod:`monai_cover.methods` (the old home of the
baseline pretext tasks and of ``build_method``). Kept so that bundle configs written before the move still run."""

from __future__ import annotations

import warnings

from monai_cover.baselines import *  # noqa: F401,F403
from monai_cover.baselines import __all__ as _baselines_all
from monai_cover.engines import KeysPrepareBatch as PretextPrepareBatch
from monai_cover.methods import METHODS, PretrainMethod, build_method, build_method_transform
from monai_cover.networks.utils import as_pyramid, global_pool, run_backbone_on_views

__all__ = [
    *_baselines_all,
    "PretextPrepareBatch",
    "METHODS",
    "PretrainMethod",
    "build_method",
    "build_method_transform",
    "as_pyramid",
    "global_pool",
    "run_backbone_on_views",
]

warnings.warn(
    "monai_cover.pretext is deprecated: the baselines moved to monai_cover.baselines, build_method to "
    "monai_cover.methods, as_pyramid/global_pool/run_backbone_on_views to monai_cover.networks.utils and "
    "PretextPrepareBatch to monai_cover.engines.KeysPrepareBatch.",
    DeprecationWarning,
    stacklevel=2,
)
