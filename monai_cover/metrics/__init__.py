# SPDX-License-Identifier: Apache-2.0
"""Pretext metrics: how well a network solves COVER's task (displacement error, feature consistency) and how its
features are spread (over-dispersion, effective rank), and where it learns (the EPE after each level of the head,
the gradient of each loss term in each backbone block), and where a method puts its information downstream
(frozen-feature probes on the finest level or the hypercolumn, label propagation through a predicted field or
through soft nearest neighbours of features, paired bootstrap intervals over seeds). MONAI metric classes and plain
functions; the Ignite handlers in :py:mod:`monai_cover.handlers` wrap them."""

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
from .hypercolumn import hypercolumn, pyramid_at
from .label_dice import DiceCounts, label_dice
from .levels import (
    LevelEPEMetric,
    epe_gain_shares,
    level_corrections,
    level_end_point_errors,
    oracle_level_fields,
    reachable_end_point_errors,
)
from .paired import paired_bootstrap
from .probes import (
    LinearProbe,
    extract_pyramids,
    fit_linear_probe,
    knn_dice,
    knn_predict,
    linear_probe_dice,
    sample_voxels,
)
from .propagation import dice_vs_distance, propagate_labels_with_ddf, propagate_labels_with_features

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
    "level_corrections",
    "oracle_level_fields",
    "level_end_point_errors",
    "reachable_end_point_errors",
    "backbone_blocks",
    "gradient_shares",
    "term_block_gradient_norms",
    "hypercolumn",
    "pyramid_at",
    "DiceCounts",
    "label_dice",
    "paired_bootstrap",
    "LinearProbe",
    "extract_pyramids",
    "fit_linear_probe",
    "knn_dice",
    "knn_predict",
    "linear_probe_dice",
    "sample_voxels",
    "dice_vs_distance",
    "propagate_labels_with_ddf",
    "propagate_labels_with_features",
]
