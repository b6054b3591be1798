# SPDX-License-Identifier: Apache-2.0
"""Data helpers for the bundles: a SimpleITK image reader for MONAI's ``LoadImage``, datalist
discovery for ``dataset_dir``, per-modality intensity scaling, and the embedded real demo volumes."""

from __future__ import annotations

from .datalist import VOLUME_SUFFIXES, find_volumes, get_datalist, split_datalist
from .demo import (
    DEMO_VOLUMES,
    chest_ct_label_names,
    demo_available,
    demo_pretrain_datalist,
    demo_segmentation_datalist,
)
from .intensity import INTENSITY_MODES, ScaleIntensityByModalityd
from .readers import SITK_SUFFIXES, SimpleITKReader

__all__ = [
    "DEMO_VOLUMES",
    "INTENSITY_MODES",
    "SITK_SUFFIXES",
    "VOLUME_SUFFIXES",
    "ScaleIntensityByModalityd",
    "SimpleITKReader",
    "chest_ct_label_names",
    "demo_available",
    "demo_pretrain_datalist",
    "demo_segmentation_datalist",
    "find_volumes",
    "get_datalist",
    "split_datalist",
]
