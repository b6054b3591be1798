# SPDX-License-Identifier: Apache-2.0
"""Deep supervision of COVER's head: ``L_vec`` on the cumulative field after every level, on that level's grid.

With ``fields[l]`` ``(B, d, *S_l)`` the head's field after level ``l`` in level ``l``'s voxels
(``CoverNet(return_fields=True)``), ``psi_l`` the true field brought to ``S_l`` (values divided by the level's voxel
size, ``2 ** k`` full-resolution voxels for a level ``k`` halvings down) and ``eps_l`` the overlap on that grid::

    L_levels = sum_l w_l * sum_{eps_l} sum_i |psi_l,i - fields[l]_i| / sum_{eps_l} 1

Each level's error is in its own voxels, so an error of one coarse voxel costs as much as one fine voxel on the
finest level: the coarse levels are not drowned out by the larger numbers of the full grid, and the finest levels
get a signal of their own instead of only the remainder of the composed field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import LossReduction, convert_to_tensor
from torch.nn.modules.loss import _Loss

from monai_cover.ddf import overlap_mask, upsample_ddf

__all__ = ["ddf_on_level", "mask_on_level", "LevelVectorRegressionLoss"]


def ddf_on_level(ddf: torch.Tensor, spatial_size: Sequence[int]) -> torch.Tensor:
    """A full-resolution field ``(B, d, *S)`` on a pyramid level's grid ``spatial_size``, in that level's voxels.

    The voxel-size ratio per axis is the nearest power of two of the size ratio (the convention of
    :py:class:`~monai_cover.networks.nets.CoverHead`, exact for a halving pyramid); the values are resampled with
    corner-aligned linear interpolation (:py:func:`monai_cover.ddf.upsample_ddf`), so that ``upsample_ddf`` back
    to ``S`` returns a linear field unchanged.
    """
    spatial = tuple(int(s) for s in ddf.shape[2:])
    size = tuple(int(s) for s in spatial_size)
    if len(size) != len(spatial):
        raise ValueError(f"ddf_on_level: spatial_size {size} must have {len(spatial)} entries.")
    scale = [float(2.0 ** round(math.log2(n / s))) for n, s in zip(size, spatial)]
    return upsample_ddf(ddf, size, scale=scale)


def mask_on_level(mask: torch.Tensor, level_ddf: torch.Tensor) -> torch.Tensor:
    """The overlap on a level's grid: where the level's true field ``level_ddf`` ``(B, d, *S_l)`` stays inside the
    level's grid (:py:func:`monai_cover.ddf.overlap_mask`) and the full-resolution ``mask`` ``(B, 1, *S)``, sampled
    at the level's voxel centres (corners aligned), is at least 0.5."""
    size = tuple(level_ddf.shape[2:])
    inside = overlap_mask(level_ddf.detach())
    if tuple(mask.shape[2:]) != size:
        mode = "bilinear" if len(size) == 2 else "trilinear"
        mask = F.interpolate(mask.to(inside.dtype), size=size, mode=mode, align_corners=True)
    return inside * (mask >= 0.5).to(inside.dtype)


class LevelVectorRegressionLoss(_Loss):
    """``L_levels = sum_l w_l L_vec(fields[l], psi_l; eps_l)`` (see the module docstring).

    Args:
        weights: one weight for every level, or one per level coarse to fine (must match the number of fields;
            a level of weight 0 is skipped).
        reduction: ``"mean"`` (default): each level's masked mean over the whole batch; ``"sum"``: masked sums;
            ``"none"``: per sample ``(B,)``.

    Examples::

        loss = LevelVectorRegressionLoss(weights=(1.0, 1.0, 1.0, 1.0))
        out = CoverNet(backbone, return_fields=True)(view_a, view_b)
        loss(out["fields"], true_ddf, overlap)   # scalar, voxels of each level
        loss.per_level(out["fields"], true_ddf, overlap)  # [L_vec of level 0, ...] unweighted
    """

    def __init__(
        self, weights: float | Sequence[float] = 1.0, reduction: LossReduction | str = LossReduction.MEAN
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        values = (float(weights),) if isinstance(weights, (int, float)) else tuple(float(w) for w in weights)
        if not values or any(not w >= 0 for w in values):
            raise ValueError(f"LevelVectorRegressionLoss: weights must be numbers >= 0, got {weights!r}.")
        self.weights = values
        self._broadcast = isinstance(weights, (int, float))

    def level_weights(self, levels: int) -> tuple[float, ...]:
        """The weight of each of ``levels`` levels, coarse to fine."""
        if self._broadcast:
            return self.weights * int(levels)
        if len(self.weights) != int(levels):
            raise ValueError(
                f"LevelVectorRegressionLoss: {len(self.weights)} weights {self.weights} for {levels} levels of "
                "fields (one weight per level, coarse to fine)."
            )
        return self.weights

    def per_level(
        self, fields: Sequence[torch.Tensor], target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> list[torch.Tensor | None]:
        """Unweighted ``L_vec`` of each level (``None`` for levels of weight 0), in that level's voxels."""
        from monai_cover.losses.cover import VectorRegressionLoss  # the one masked L1 of the package

        if isinstance(fields, torch.Tensor) or len(fields) < 1:
            raise ValueError("LevelVectorRegressionLoss: fields must be a non-empty list of (B, d, *S_l) tensors.")
        target = convert_to_tensor(target, track_meta=False)
        if mask is None:
            mask = overlap_mask(target.detach())
        mask = convert_to_tensor(mask, track_meta=False)
        if mask.ndim == target.ndim - 1:
            mask = mask.unsqueeze(1)
        l1 = VectorRegressionLoss(reduction=self.reduction)
        values: list[torch.Tensor | None] = []
        for w, field in zip(self.level_weights(len(fields)), fields):
            if w == 0:
                values.append(None)
                continue
            if field.ndim != target.ndim or field.shape[:2] != target.shape[:2]:
                raise ValueError(
                    f"LevelVectorRegressionLoss: field {tuple(field.shape)} does not match the true ddf "
                    f"{tuple(target.shape)} in batch size or spatial dims."
                )
            with torch.autocast(device_type=target.device.type, enabled=False):
                level_true = ddf_on_level(target.float() if target.dtype != torch.float64 else target,
                                          field.shape[2:])
                values.append(l1(field, level_true, mask_on_level(mask, level_true)))
        return values

    def forward(
        self, fields: Sequence[torch.Tensor], target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            fields: the head's field after each level, coarse to fine, ``(B, d, *S_l)`` in level voxels.
            target: the true field ``(B, d, *S)`` in full-resolution voxels.
            mask: the overlap ``(B, 1, *S)`` (``None``: computed from ``target``).
        """
        weights = self.level_weights(len(fields))
        values = self.per_level(fields, target, mask)
        terms = [w * v for w, v in zip(weights, values) if v is not None]
        if not terms:
            return sum(f.sum() for f in fields) * 0.0
        return sum(terms[1:], terms[0])
