# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

from .feature_projector import FeatureProjector
from .mixture_of_vectors import MixtureOfVectors, mixture_of_vectors, select_backend
from .neighbourhood import neighbourhood_log_softmax, neighbourhood_offsets, offset_distribution
from .projection import CoverProjection
from .upsample import resize_linear, upsample_linear_2x

__all__ = [
    "MixtureOfVectors", "mixture_of_vectors", "select_backend", "CoverProjection", "resize_linear",
    "upsample_linear_2x", "FeatureProjector", "neighbourhood_log_softmax", "neighbourhood_offsets",
    "offset_distribution",
]
