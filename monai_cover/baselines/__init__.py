# SPDX-License-Identifier: Apache-2.0
"""The baseline pretext tasks COVER is compared with (PCRLv2-style, VoCo-style): their crop transforms, backbone
wrappers and the registry that assembles each with its loss.

Their losses live in :py:mod:`monai_cover.losses` (``PCRLv2Loss``, ``VoCoLoss``); the voxel InfoNCE
baseline needs no pretext data of its own (it uses COVER's ``RandCoverPaird`` pairs). To select any
method by name, use :py:func:`monai_cover.methods.build_method`.
"""

from __future__ import annotations

from .pcrlv2 import PCRLv2CropD, PCRLv2Cropd, PCRLv2CropDict, PCRLv2Net, default_corruption
from .registry import PRETEXT_TASKS, PretextTask, build_pretext
from .utils import box_intersection, box_iou, crop_resize
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
    "box_intersection",
    "box_iou",
    "crop_resize",
    "PRETEXT_TASKS",
    "PretextTask",
    "build_pretext",
]
