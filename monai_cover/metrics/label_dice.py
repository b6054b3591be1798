# SPDX-License-Identifier: Apache-2.0
"""Dice per class of integer label maps, accumulated over images or chunks of voxels (the probes and the label
propagation score many images as one set, like a stack)."""

from __future__ import annotations

import torch

__all__ = ["DiceCounts", "label_dice"]


class DiceCounts:
    """Running per-class counts of ``|P ∩ G|``, ``|P|`` and ``|G|`` for integer label maps.

    Args:
        num_classes: labels are ``0 .. num_classes - 1``; class 0 is the background.
    """

    def __init__(self, num_classes: int) -> None:
        if int(num_classes) < 2:
            raise ValueError(f"DiceCounts: num_classes must be >= 2, got {num_classes}.")
        self.num_classes = int(num_classes)
        self.intersection = torch.zeros(self.num_classes, dtype=torch.float64)
        self.predicted = torch.zeros(self.num_classes, dtype=torch.float64)
        self.truth = torch.zeros(self.num_classes, dtype=torch.float64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> DiceCounts:
        """Add the voxels of ``pred`` and ``target``, integer labels of one shape (any)."""
        if pred.shape != target.shape:
            raise ValueError(f"DiceCounts: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ.")
        p, g, n = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu(), self.num_classes
        self.predicted += torch.bincount(p, minlength=n)[:n].double()
        self.truth += torch.bincount(g, minlength=n)[:n].double()
        self.intersection += torch.bincount(g[p == g], minlength=n)[:n].double()
        return self

    def dice(self, include_background: bool = False) -> torch.Tensor:
        """``2 |P ∩ G| / (|P| + |G|)`` per class, float64 ``(num_classes - 1,)`` (``(num_classes,)`` with the
        background); a class absent from both prediction and truth scores 1."""
        total = self.predicted + self.truth
        score = torch.where(total > 0, 2 * self.intersection / total.clamp_min(1), torch.ones_like(total))
        return score if include_background else score[1:]


def label_dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
               include_background: bool = False) -> torch.Tensor:
    """Dice per class of integer label maps ``pred`` and ``target`` (same shape, all voxels pooled): float64
    ``(num_classes - 1,)``, the background left out unless ``include_background``; see :py:class:`DiceCounts`."""
    return DiceCounts(num_classes).update(pred, target).dice(include_background)
