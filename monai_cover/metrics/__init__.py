# SPDX-License-Identifier: Apache-2.0
"""Pretext metrics: how well a network solves COVER's task (displacement error, feature consistency) and how its
features are spread (over-dispersion, effective rank), and where it learns (the EPE after each level of the head,
the gradient of each loss term in each backbone block). MONAI metric classes and plain functions; the Ignite
handlers in :py:mod:`monai_cover.handlers` wrap them."""

from __future__ import annotations

from .ddf import DDFEndPointErrorMetric, OverlapCosineMetric, ddf_end_point_error, overlap_cosine
from .dispersion import dispersion_report, effective_rank, extract_features, feature_dispersion, format_dispersion
from .features import (
    CorrespondenceAccuracyMetric,
    FeatureCollapseMetric,
    correspondence_accuracy,
    mean_pairwise_cosine,
)
from .gradients import backbone_blocks, gradient_shares, term_block_gradient_norms
from .levels import LevelEPEMetric, epe_gain_shares, level_end_point_errors

__all__ = [
    "DDFEndPointErrorMetric",
    "OverlapCosineMetric",
    "ddf_end_point_error",
    "overlap_cosine",
    "CorrespondenceAccuracyMetric",
    "FeatureCollapseMetric",
    "correspondence_accuracy",
    "mean_pairwise_cosine",
    "dispersion_report",
    "effective_rank",
    "extract_features",
    "feature_dispersion",
    "format_dispersion",
    "LevelEPEMetric",
    "epe_gain_shares",
    "level_end_point_errors",
    "backbone_blocks",
    "gradient_shares",
    "term_block_gradient_norms",
]
