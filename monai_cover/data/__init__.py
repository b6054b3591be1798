# SPDX-License-Identifier: Apache-2.0
"""Data helpers for the bundles: a SimpleITK image reader for MONAI's ``LoadImage``, datalist
discovery for ``dataset_dir``, and the embedded real demo volumes. (Per-modality intensity scaling is a
transform: :py:class:`monai_cover.transforms.ScaleIntensityByModalityd`.)"""

from __future__ import annotations

from .datalist import VOLUME_SUFFIXES, find_volumes, get_datalist, split_datalist
from .demo import (
    DEMO_VOLUMES,
    chest_ct_label_names,
    demo_available,
    demo_pretrain_datalist,
    demo_segmentation_datalist,
)
from .readers import SITK_SUFFIXES, SimpleITKReader

__all__ = [
    "DEMO_VOLUMES",
    "SITK_SUFFIXES",
    "VOLUME_SUFFIXES",
    "SimpleITKReader",
    "chest_ct_label_names",
    "demo_available",
    "demo_pretrain_datalist",
    "demo_segmentation_datalist",
    "find_volumes",
    "get_datalist",
    "split_datalist",
]


def __getattr__(name: str):
    if name in ("ScaleIntensityByModalityd", "INTENSITY_MODES"):
        import warnings

        from monai_cover import transforms

        warnings.warn(f"monai_cover.data.{name} moved to monai_cover.transforms.{name}.", DeprecationWarning, stacklevel=2)
        return getattr(transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
