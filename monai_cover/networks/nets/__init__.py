# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

from .cover_head import CoverHead, Coverhead, coverhead, default_num_heads, levels_for_size, min_level_size
from .cover_net import CoverNet, Covernet, TwoViewFeatures, covernet
from .pyramid_unet import PyramidUNet, Pyramidunet, pyramidunet

__all__ = [
    "TwoViewFeatures",
    "CoverHead",
    "Coverhead",
    "coverhead",
    "default_num_heads",
    "levels_for_size",
    "min_level_size",
    "CoverNet",
    "Covernet",
    "covernet",
    "PyramidUNet",
    "Pyramidunet",
    "pyramidunet",
]
