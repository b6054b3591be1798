# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

from .mixture_of_vectors import MixtureOfVectors, mixture_of_vectors, select_backend
from .projection import CoverProjection

__all__ = ["MixtureOfVectors", "mixture_of_vectors", "select_backend", "CoverProjection"]
