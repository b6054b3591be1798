# SPDX-License-Identifier: Apache-2.0
"""Pretext metrics: how well a network solves COVER's task (displacement error, feature consistency) and how its
features are spread (over-dispersion, effective rank). MONAI metric classes and plain functions; the Ignite
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
]
