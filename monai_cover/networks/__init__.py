# SPDX-License-Identifier: Apache-2.0
"""COVER networks: the mixture-of-vectors and projection blocks, the reference backbone, the head, the pretraining
wrapper, and the adapter that turns a stock MONAI network into a feature-pyramid backbone."""

from __future__ import annotations

from .adapters import FeatureLevel, FeaturePyramid, default_pyramid_layers
from .backbones import BACKBONE_LEVELS, BACKBONES, build_backbone
from .blocks import CoverProjection, MixtureOfVectors, mixture_of_vectors
from .export import Bypassed, finest_level_network, task_head_name
from .nets import CoverHead, CoverNet, PyramidUNet, TwoViewFeatures, default_num_heads, levels_for_size, min_level_size
from .utils import as_pyramid, crop_pyramid, global_pool, pad_to_divisible, run_backbone_on_views

__all__ = [
    "BACKBONES",
    "BACKBONE_LEVELS",
    "Bypassed",
    "build_backbone",
    "finest_level_network",
    "task_head_name",
    "TwoViewFeatures",
    "FeatureLevel",
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
    "levels_for_size",
    "min_level_size",
    "pad_to_divisible",
    "as_pyramid",
    "global_pool",
    "run_backbone_on_views",
]
