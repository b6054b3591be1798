# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

from .mixture_of_vectors import MixtureOfVectors, mixture_of_vectors

__all__ = ["MixtureOfVectors", "mixture_of_vectors"]
