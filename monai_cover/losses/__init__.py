# SPDX-License-Identifier: Apache-2.0
"""COVER's losses (:py:mod:`.cover`) and the baseline objectives it is compared with, each a MONAI
``_Loss`` that plugs into the same trainer."""

from __future__ import annotations

from .cover import CoverLoss, FeatureConsistencyLoss, VectorRegressionLoss
from .matching import OffsetCrossEntropyLoss
from .pcrlv2 import PCRLv2Loss, cosine_beta, simsiam_similarity
from .spread import FeatureSpreadLoss
from .voco import VoCoLoss, VoCoProjection
from .voxel_infonce import VoxelInfoNCELoss, VoxelProjectionHead, sample_overlap_voxels, voxel_nt_xent

__all__ = [
    "CoverLoss",
    "FeatureConsistencyLoss",
    "VectorRegressionLoss",
    "OffsetCrossEntropyLoss",
    "FeatureSpreadLoss",
    "VoxelInfoNCELoss",
    "VoxelProjectionHead",
    "sample_overlap_voxels",
    "voxel_nt_xent",
    "PCRLv2Loss",
    "cosine_beta",
    "simsiam_similarity",
    "VoCoLoss",
    "VoCoProjection",
]
