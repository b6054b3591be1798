# SPDX-License-Identifier: Apache-2.0
"""Ignite handlers and metrics that the bundles' configs reference."""

from __future__ import annotations

from .checkpoints import (
    AtomicCheckpointSaver,
    DiskFullError,
    RandomStates,
    ResumableSchedule,
    TrainingCheckpoints,
    save_checkpoint_file,
)
from .class_metrics import ClassMetricsHandler
from .diagnostics import GradientShareHandler, LevelEPEHandler
from .export import SafetensorsExportHandler
from .images import PANELS, CoverImageHandler
from .inference import CoverPairSaver
from .loss_summary import LossSummaryHandler, read_loss_summary
from .metrics import CorrespondenceAccuracy, DDFEndPointError, FeatureCollapse, OverlapCosine, cover_output_transform
from .training import (
    CheckpointRetentionHandler,
    GradientClipHandler,
    ProgressBarHandler,
    TransformSeedHandler,
    ValidateAtEndHandler,
    find_latest_checkpoint,
)

__all__ = [
    "PANELS",
    "AtomicCheckpointSaver",
    "CheckpointRetentionHandler",
    "ClassMetricsHandler",
    "CorrespondenceAccuracy",
    "CoverImageHandler",
    "CoverPairSaver",
    "DiskFullError",
    "DDFEndPointError",
    "FeatureCollapse",
    "GradientClipHandler",
    "GradientShareHandler",
    "LevelEPEHandler",
    "LossSummaryHandler",
    "OverlapCosine",
    "ProgressBarHandler",
    "RandomStates",
    "ResumableSchedule",
    "SafetensorsExportHandler",
    "TrainingCheckpoints",
    "TransformSeedHandler",
    "ValidateAtEndHandler",
    "cover_output_transform",
    "find_latest_checkpoint",
    "read_loss_summary",
    "save_checkpoint_file",
]
