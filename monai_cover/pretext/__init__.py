# SPDX-License-Identifier: Apache-2.0
"""Data and backbone wrappers of the baseline pretext tasks (PCRLv2-style, VoCo-style).

Their losses live in :py:mod:`monai_cover.losses` (``PCRLv2Loss``, ``VoCoLoss``); the voxel InfoNCE
baseline needs no pretext data of its own (it uses COVER's ``RandCoverPaird`` pairs).
"""

from __future__ import annotations

from .methods import METHODS, PretrainMethod, build_method, build_method_transform
from .pcrlv2 import PCRLv2CropD, PCRLv2Cropd, PCRLv2CropDict, PCRLv2Net, default_corruption
from .registry import PRETEXT_TASKS, PretextPrepareBatch, PretextTask, build_pretext
from .utils import as_pyramid, box_intersection, box_iou, crop_resize, global_pool, run_backbone_on_views
from .voco import VoCoCropD, VoCoCropd, VoCoCropDict, VoCoNet, voco_position_labels

__all__ = [
    "PCRLv2Cropd",
    "PCRLv2CropD",
    "PCRLv2CropDict",
    "PCRLv2Net",
    "default_corruption",
    "VoCoCropd",
    "VoCoCropD",
    "VoCoCropDict",
    "VoCoNet",
    "voco_position_labels",
    "as_pyramid",
    "box_intersection",
    "box_iou",
    "crop_resize",
    "global_pool",
    "run_backbone_on_views",
    "PRETEXT_TASKS",
    "PretextPrepareBatch",
    "PretextTask",
    "build_pretext",
    "METHODS",
    "PretrainMethod",
    "build_method",
    "build_method_transform",
]
