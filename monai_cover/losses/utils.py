# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the losses."""

from __future__ import annotations

import torch
from monai.utils import LossReduction

__all__ = ["reduce_per_sample"]


def reduce_per_sample(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply a MONAI ``LossReduction`` to per-sample (or per-anchor) loss values ``(B,)``."""
    if reduction == LossReduction.MEAN.value:
        return values.mean()
    if reduction == LossReduction.SUM.value:
        return values.sum()
    return values
