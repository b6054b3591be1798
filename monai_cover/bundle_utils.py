# SPDX-License-Identifier: Apache-2.0
"""Deprecated: the bundle helpers moved to :py:mod:`monai_cover.bundle` and ``FeatureLevel`` to
:py:mod:`monai_cover.networks`. This alias module keeps old bundle configs working and will be removed."""

from __future__ import annotations

import warnings

from monai_cover.bundle import bundle_path, bundles_dir, export_bundle, is_rank_zero, load_backbone_weights
from monai_cover.networks import FeatureLevel

__all__ = ["bundles_dir", "bundle_path", "export_bundle", "FeatureLevel", "is_rank_zero", "load_backbone_weights"]

warnings.warn(
    "monai_cover.bundle_utils is deprecated: use monai_cover.bundle (bundles_dir, bundle_path, export_bundle, "
    "is_rank_zero, load_backbone_weights) and monai_cover.networks.FeatureLevel.",
    DeprecationWarning,
    stacklevel=2,
)
