# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

from .mixture_of_vectors import MixtureOfVectors, mixture_of_vectors
from .projection import CoverProjection

__all__ = ["MixtureOfVectors", "mixture_of_vectors", "CoverProjection"]
