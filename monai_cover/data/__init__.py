# SPDX-License-Identifier: Apache-2.0
"""Data helpers for the bundles: image readers for MONAI's ``LoadImage`` (nibabel for NIfTI, SimpleITK for the
rest), datalist discovery for ``dataset_dir``, the pre-flight check of every file (:py:func:`check_datalist`), the
NaN/inf guard of the loader, and the embedded real demo volumes. (Per-modality intensity scaling is a transform:
:py:class:`monai_cover.transforms.ScaleIntensityByModalityd`.)"""

from __future__ import annotations

from .classes import class_names, write_class_names
from .datalist import (
    MODALITIES,
    VOLUME_SUFFIXES,
    DatalistError,
    DatasetNotFoundError,
    find_images,
    find_volumes,
    get_datalist,
    inference_datalist,
    normalize_modality,
    split_datalist,
)
from .datasets import make_dataset
from .demo import (
    DEMO_RADIOGRAPHS,
    DEMO_VOLUMES,
    chest_ct_label_names,
    demo_available,
    demo_pretrain_2d_datalist,
    demo_pretrain_datalist,
    demo_radiograph,
    demo_segmentation_2d_datalist,
    demo_segmentation_datalist,
)
from .finite import NONFINITE_POLICIES, CheckFinited, replace_nonfinite
from .preflight import (
    DATASET_TYPES,
    ON_BAD_FILE,
    SLICE_VOLUMES,
    DataCheckError,
    DataReport,
    check_datalist,
    choose_dataset_type,
    physical_memory_bytes,
)
from .readers import (
    IMAGE_2D_SUFFIXES,
    NIFTI_SUFFIXES,
    PICTURE_SUFFIXES,
    SITK_SUFFIXES,
    PictureReader,
    SimpleITKReader,
    image_readers_2d,
    volume_readers,
)

__all__ = [
    "DatalistError",
    "DatasetNotFoundError",
    "DATASET_TYPES",
    "DEMO_VOLUMES",
    "MODALITIES",
    "IMAGE_2D_SUFFIXES",
    "NIFTI_SUFFIXES",
    "NONFINITE_POLICIES",
    "ON_BAD_FILE",
    "SLICE_VOLUMES",
    "SITK_SUFFIXES",
    "VOLUME_SUFFIXES",
    "CheckFinited",
    "DataCheckError",
    "DataReport",
    "PICTURE_SUFFIXES",
    "PictureReader",
    "SimpleITKReader",
    "check_datalist",
    "make_dataset",
    "class_names",
    "chest_ct_label_names",
    "choose_dataset_type",
    "DEMO_RADIOGRAPHS",
    "demo_available",
    "demo_pretrain_2d_datalist",
    "demo_radiograph",
    "demo_segmentation_2d_datalist",
    "demo_pretrain_datalist",
    "demo_segmentation_datalist",
    "find_images",
    "find_volumes",
    "get_datalist",
    "inference_datalist",
    "normalize_modality",
    "physical_memory_bytes",
    "replace_nonfinite",
    "split_datalist",
    "image_readers_2d",
    "volume_readers",
    "write_class_names",
]

