# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

from .cover_head import CoverHead, Coverhead, coverhead, default_num_heads
from .cover_net import CoverNet, Covernet, TwoViewFeatures, covernet
from .pyramid_unet import PyramidUNet, Pyramidunet, pyramidunet

__all__ = [
    "TwoViewFeatures",
    "CoverHead",
    "Coverhead",
    "coverhead",
    "default_num_heads",
    "CoverNet",
    "Covernet",
    "covernet",
    "PyramidUNet",
    "Pyramidunet",
    "pyramidunet",
]
