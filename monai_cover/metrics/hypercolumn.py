# SPDX-License-Identifier: Apache-2.0
"""Pyramid features read at full resolution: the finest level, or the *hypercolumn* (every level brought to the
finest grid and concatenated along channels), densely or at chosen voxels.

A coarse level's voxel ``i`` summarises the fine voxels it was pooled from, so its centre sits at fine coordinate
``(i + 0.5) * f - 0.5`` with ``f = S_fine / S_level`` per axis: levels are resampled linearly with that alignment
(PyTorch's ``align_corners=False``, clamped at the border). :py:func:`hypercolumn` (dense) and
:py:func:`pyramid_at` (at voxels) give the same values, so a probe fitted on sampled voxels can be applied densely.

``levels``: ``"finest"`` reads the last level of the pyramid only; ``"concat"`` reads all of them, coarse to fine.
With ``normalize_levels`` every level's voxel vectors are scaled to unit length before concatenation, so that each
level weighs the same in a cosine similarity (otherwise the level with the largest activations dominates).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from monai_cover.ddf import sample_at

__all__ = ["LEVEL_MODES", "hypercolumn", "pyramid_at", "select_levels"]

#: the ways of reading a pyramid at full resolution
LEVEL_MODES = ("finest", "concat")


def select_levels(pyramid: torch.Tensor | Sequence[torch.Tensor], levels: str = "finest") -> list[torch.Tensor]:
    """The maps of ``pyramid`` (a list coarse to fine, or one tensor) that ``levels`` reads: the finest one
    (``"finest"``) or all of them (``"concat"``)."""
    if levels not in LEVEL_MODES:
        raise ValueError(f"levels must be one of {LEVEL_MODES}, got {levels!r}.")
    maps = [pyramid] if isinstance(pyramid, torch.Tensor) else list(pyramid)
    if not maps or not all(isinstance(m, torch.Tensor) for m in maps):
        raise TypeError("the pyramid must be a tensor or a non-empty list of tensors (coarse to fine).")
    return maps[-1:] if levels == "finest" else maps


def _unit(x: torch.Tensor, dim: int) -> torch.Tensor:
    return F.normalize(x.float(), dim=dim, eps=1e-8)


def hypercolumn(
    pyramid: torch.Tensor | Sequence[torch.Tensor],
    levels: str = "concat",
    normalize_levels: bool = False,
    spatial_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Dense full-resolution features of a batched pyramid.

    Args:
        pyramid: maps ``(B, C_l, *S_l)`` coarse to fine (2 or 3 spatial dims), or one ``(B, C, *S)`` tensor.
        levels: ``"concat"`` (every level, the hypercolumn) or ``"finest"``.
        normalize_levels: scale each level's voxel vectors to unit length first.
        spatial_size: the output grid (default: the finest level's).

    Returns:
        ``(B, sum_l C_l, *spatial_size)`` float32, levels in pyramid order.
    """
    maps = select_levels(pyramid, levels)
    size = tuple(int(s) for s in (spatial_size or maps[-1].shape[2:]))
    out = []
    for m in maps:
        m = _unit(m, 1) if normalize_levels else m.float()
        if tuple(m.shape[2:]) != size:
            m = F.interpolate(m, size=size, mode="bilinear" if len(size) == 2 else "trilinear", align_corners=False)
        out.append(m)
    return torch.cat(out, dim=1)


def pyramid_at(
    pyramid: torch.Tensor | Sequence[torch.Tensor],
    points: torch.Tensor,
    levels: str = "concat",
    normalize_levels: bool = False,
) -> torch.Tensor:
    """Features of one (unbatched) pyramid at voxels of its finest grid: the rows of :py:func:`hypercolumn` there.

    Args:
        pyramid: maps ``(C_l, *S_l)`` coarse to fine, or one ``(C, *S)`` tensor.
        points: ``(spatial_dims, N)`` voxel coordinates on the finest grid (integers or not).
        levels, normalize_levels: as in :py:func:`hypercolumn`.

    Returns:
        ``(N, sum_l C_l)`` float32.
    """
    maps = select_levels(pyramid, levels)
    fine = maps[-1].shape[1:]
    d = len(fine)
    if points.ndim != 2 or points.shape[0] != d:
        raise ValueError(f"pyramid_at: points must be ({d}, N) voxel coordinates, got {tuple(points.shape)}.")
    pts = points.to(maps[-1].device, torch.float32)
    rows = []
    for m in maps:
        m = _unit(m, 0) if normalize_levels else m.float()
        factor = torch.tensor([f / s for f, s in zip(fine, m.shape[1:])], device=pts.device).view(d, 1)
        upper = torch.tensor([s - 1 for s in m.shape[1:]], device=pts.device, dtype=torch.float32).view(d, 1)
        coords = torch.minimum(((pts + 0.5) / factor - 0.5).clamp_min(0), upper)  # align_corners=False, clamped
        rows.append(sample_at(m, coords.view(d, -1, *([1] * (d - 1))), mode="bilinear", padding_mode="border")
                    .reshape(m.shape[0], -1).T)
    return torch.cat(rows, dim=1)
