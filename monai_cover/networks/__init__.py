# SPDX-License-Identifier: Apache-2.0
"""COVER networks: the mixture-of-vectors and projection blocks, the reference backbone, the head, the pretraining
wrapper, and the adapter that turns a stock MONAI network into a feature-pyramid backbone."""

from __future__ import annotations

from .adapters import FeaturePyramid, default_pyramid_layers
from .blocks import CoverProjection, MixtureOfVectors, mixture_of_vectors
from .nets import CoverHead, CoverNet, PyramidUNet, TwoViewFeatures, crop_pyramid, default_num_heads, pad_to_divisible

__all__ = [
    "TwoViewFeatures",
    "FeaturePyramid",
    "default_pyramid_layers",
    "CoverProjection",
    "MixtureOfVectors",
    "mixture_of_vectors",
    "CoverHead",
    "CoverNet",
    "PyramidUNet",
    "crop_pyramid",
    "default_num_heads",
    "pad_to_divisible",
]
