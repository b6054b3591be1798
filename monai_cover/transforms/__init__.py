# SPDX-License-Identifier: Apache-2.0
"""COVER paired-view transforms (MONAI conventions; displacement convention in :py:mod:`monai_cover.ddf`).

- :py:class:`RandCoverPair` (array) / :py:class:`RandCoverPaird` (dictionary, aliases ``RandCoverPairD``,
  ``RandCoverPairDict``): one image -> ``view_a``, ``view_b``, ``ddf``, ``overlap``.
- :py:class:`RandCoverAppearance`: the appearance augmentation alone.
- :py:class:`ScaleIntensityByModalityd`: a CT HU window or MRI percentiles, per modality.
- :py:mod:`.image2d`: 2-D inputs: :py:class:`RandSliced` (slices of volumes with enough foreground),
  :py:class:`InvertMonochrome1d`, :py:class:`ToGrayscaled`, :py:class:`SqueezeSpatiald`,
  :py:class:`ApplyBySpatialDimsd`.
- :py:mod:`.spatial`: deterministic spatial field and resampling given :py:class:`SpatialParams`.
"""

from __future__ import annotations

from .appearance import AppearanceParams, RandCoverAppearance, apply_appearance
from .array import CoverPair, RandCoverPair, check_cover_image
from .dictionary import RandCoverPairD, RandCoverPaird, RandCoverPairDict
from .image2d import (
    MONOCHROME1_HANDLED,
    ApplyBySpatialDimsd,
    InvertMonochrome1,
    InvertMonochrome1d,
    RandSlice,
    RandSliced,
    SqueezeSpatial,
    SqueezeSpatiald,
    ToGrayscale,
    ToGrayscaled,
    foreground_slices,
    photometric_interpretation,
)
from .intensity import INTENSITY_MODES, ScaleIntensityByModalityd, looks_like_ct
from .spatial import (
    DEFAULT_MAX_DISPLACEMENT,
    SpatialParams,
    SpatialRanges,
    default_spatial_ranges,
    max_abs_displacement,
    resample_crop,
    sample_spatial_params,
    spatial_ddf,
)

__all__ = [
    "AppearanceParams",
    "RandCoverAppearance",
    "apply_appearance",
    "CoverPair",
    "RandCoverPair",
    "check_cover_image",
    "RandCoverPaird",
    "RandCoverPairD",
    "RandCoverPairDict",
    "MONOCHROME1_HANDLED",
    "ApplyBySpatialDimsd",
    "InvertMonochrome1",
    "InvertMonochrome1d",
    "RandSlice",
    "RandSliced",
    "SqueezeSpatial",
    "SqueezeSpatiald",
    "ToGrayscale",
    "ToGrayscaled",
    "foreground_slices",
    "photometric_interpretation",
    "INTENSITY_MODES",
    "ScaleIntensityByModalityd",
    "looks_like_ct",
    "DEFAULT_MAX_DISPLACEMENT",
    "SpatialParams",
    "SpatialRanges",
    "default_spatial_ranges",
    "max_abs_displacement",
    "resample_crop",
    "sample_spatial_params",
    "spatial_ddf",
]
