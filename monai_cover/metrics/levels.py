# SPDX-License-Identifier: Apache-2.0
"""Where in the head's pyramid COVER's displacement accuracy comes from: the end-point error after each level.

:py:class:`~monai_cover.networks.nets.CoverHead` refines its field coarse to fine; with ``return_fields=True``
(``CoverNet(return_fields=True)``) it returns the cumulative field after every level. Each is brought to the full
grid (values rescaled to full-resolution voxels) and scored against the true field over the overlap::

    r_l  = sum_eps |up(field_l) - ddf_true|_2 / sum_eps |ddf_true|_2      (EPE relative to predicting zero)
    gain_l = (r_{l-1} - r_l) / (1 - r_{L-1}),  r_{-1} = 1                (share of the total EPE gain, sums to 1)

``r_{L-1}`` is the ratio of the head's output. A share is negative where a level makes the field worse, and the
shares are not defined (NaN) when the head does no better than zero (``r_{L-1} >= 1``).

How large can the finest levels' share be, given the coarse levels as they are? The ``n`` finest levels of a head of
radius ``R`` can move the field by at most ``R * (2**n - 1)`` full-resolution voxels per axis
(:py:func:`monai_cover.ddf.capture_range`). Their best possible work on the residual ``e = ddf_true - up(field)``
left after the coarser levels is to remove ``clamp(e, -reach, reach)`` per axis (corrections taken as adding up,
the small-displacement view of composing them), leaving ``r* = sum |e - clamp(e)|_2 / sum |ddf_true|_2``; their share
could then be at most ``(r_{L-n-1} - r*) / (1 - r*)`` (:py:meth:`LevelEPEMetric.reach_bound`).

What does the pyramid's geometry alone give each level? :py:func:`oracle_level_fields` builds the fields of a head
whose every level matched perfectly within its reach: the true field clamped to the reach of the levels so far and
sampled on each level's grid. Their split (:py:class:`LevelEPEMetric` on them) is the split of a perfect head on those
pairs; for affine views (a linear field, which a coarse grid holds exactly) it leaves the finest levels almost nothing.

Why a level falls short of that, :py:func:`level_corrections`: compare the correction a level applied,
``a_l = up(field_l) - up(field_{l-1})``, with the best one within its reach, ``c_l = clamp(ddf_true -
up(field_{l-1}), -R * s_l, R * s_l)`` (``s_l`` its voxel size in full-resolution voxels), over the overlap:
``cosine = <a, c> / (|a| |c|)`` (is it pointing the right way?) and ``scale = <a, c> / |c|^2`` (how much of the best
correction it makes, 1: all of it). A high cosine and a low scale is a correction in the right direction shrunk
toward zero; a low cosine, a level that does not find the match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric

from monai_cover.ddf import upsample_ddf
from monai_cover.metrics.ddf import _check_target, _on_grid, _plain, _weighted

__all__ = [
    "level_end_point_errors",
    "reachable_end_point_errors",
    "level_corrections",
    "oracle_level_fields",
    "epe_gain_shares",
    "LevelEPEMetric",
]


def level_end_point_errors(
    fields: Sequence[torch.Tensor], target: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample overlap sums of the end-point error of every level's field, and of predicting zero.

    Args:
        fields: ``L`` fields coarse to fine, ``fields[l]`` ``(B, d, *S_l)`` in level ``l``'s voxels (any grid; each is
            resampled to the true field's grid with its values rescaled per axis by the size ratio).
        target: ``{"ddf": (B, d, *S), "overlap": (B, 1, *S)}`` (voxels of ``S``).

    Returns:
        ``(errors, zero)``: ``(B, L)`` sums of ``|up(field_l) - ddf|_2`` and ``(B, 1)`` sums of ``|ddf|_2`` over the
        overlap, float64 (voxels); ``errors[:, l] / zero`` is ``r_l`` per sample.
    """
    true, overlap = _check_target(target, "level_end_point_errors")
    if isinstance(fields, torch.Tensor) or len(fields) < 1:
        raise ValueError("level_end_point_errors: fields must be a non-empty sequence of (B, d, *S_l) tensors.")
    errors = []
    for level, field in enumerate(fields):
        est = _plain(field)
        if est.ndim != true.ndim or est.shape[:2] != true.shape[:2]:
            raise ValueError(
                f"level_end_point_errors: field {level} {tuple(est.shape)} does not match the true ddf "
                f"{tuple(true.shape)} in batch size or spatial dims."
            )
        total, _ = _weighted(torch.linalg.vector_norm(_on_grid(est, true.shape[2:]) - true, dim=1, keepdim=True),
                             overlap)
        errors.append(total)
    zero, _ = _weighted(torch.linalg.vector_norm(true, dim=1, keepdim=True), overlap)
    return torch.cat(errors, dim=1), zero


def reachable_end_point_errors(
    field: torch.Tensor, target: Mapping[str, torch.Tensor], reach: float, in_window: bool = False
) -> torch.Tensor:
    """Per-sample overlap sums of the end-point error left if ``field`` were corrected by the best displacement of at
    most ``reach`` voxels per axis: ``|e - clamp(e, -reach, reach)|_2`` with ``e = ddf_true - up(field)``.

    Args:
        field: ``(B, d, *S_l)`` in its own voxels (resampled and rescaled to the true field's grid).
        target: ``{"ddf": (B, d, *S), "overlap": (B, 1, *S)}``.
        reach: full-resolution voxels per axis, ``>= 0`` (0: the field's own error).
        in_window: only the voxels whose match lies within ``reach`` on every axis are corrected (to 0), the others
            keep their error: what a level could do that finds a match only inside its window, and cannot tell
            the direction of one outside it. ``False``: every voxel moves by the clamped residual (an upper bound).

    Returns:
        ``(B, 1)`` float64 sums (voxels).
    """
    if not float(reach) >= 0:
        raise ValueError(f"reachable_end_point_errors: reach must be >= 0 voxels, got {reach!r}.")
    true, overlap = _check_target(target, "reachable_end_point_errors")
    est = _plain(field)
    if est.ndim != true.ndim or est.shape[:2] != true.shape[:2]:
        raise ValueError(f"reachable_end_point_errors: field {tuple(est.shape)} does not match the true ddf "
                         f"{tuple(true.shape)} in batch size or spatial dims.")
    residual = true - _on_grid(est, true.shape[2:])
    if in_window:
        inside = (residual.abs() <= float(reach)).all(dim=1, keepdim=True)
        left = residual * (~inside)
    else:
        left = residual - residual.clamp(-float(reach), float(reach))
    total, _ = _weighted(torch.linalg.vector_norm(left, dim=1, keepdim=True), overlap)
    return total


def level_corrections(
    fields: Sequence[torch.Tensor], target: Mapping[str, torch.Tensor], radius: int = 2
) -> torch.Tensor:
    """Overlap sums comparing each level's applied correction with the best one within its reach (module
    docstring), for levels 1..L-1 (level 0 has no field before it).

    Args:
        fields: ``L >= 2`` cumulative fields coarse to fine, ``fields[l]`` ``(B, d, *S_l)`` in level ``l``'s voxels.
        target: ``{"ddf": (B, d, *S), "overlap": (B, 1, *S)}``.
        radius: the head's search radius (level voxels per axis).

    Returns:
        ``(B, L - 1, 3)`` float64: per sample and level, the sums of ``<a, c>``, ``|a|^2`` and ``|c|^2`` over the
        overlap (full-resolution voxels); ``cosine = s0 / sqrt(s1 s2)``, ``scale = s0 / s2``.
    """
    true, overlap = _check_target(target, "level_corrections")
    if isinstance(fields, torch.Tensor) or len(fields) < 2:
        raise ValueError("level_corrections: fields must be a sequence of at least two (B, d, *S_l) tensors.")
    if int(radius) < 1:
        raise ValueError(f"level_corrections: radius must be >= 1, got {radius!r}.")
    full = true.shape[2:]
    on_full = [_on_grid(_plain(f), full) for f in fields]
    sums = []
    for level in range(1, len(fields)):
        voxel = [n / s for n, s in zip(full, fields[level].shape[2:])]  # full-resolution voxels per level voxel
        reach = torch.tensor([int(radius) * v for v in voxel], dtype=true.dtype, device=true.device)
        reach = reach.view(1, -1, *([1] * len(full)))
        applied = on_full[level] - on_full[level - 1]
        best = (true - on_full[level - 1]).clamp(-reach, reach)
        terms = [(applied * best).sum(1, keepdim=True), (applied * applied).sum(1, keepdim=True),
                 (best * best).sum(1, keepdim=True)]
        sums.append(torch.cat([_weighted(t, overlap)[0] for t in terms], dim=1))
    return torch.stack(sums, dim=1)


def oracle_level_fields(
    ddf: torch.Tensor, level_shapes: Sequence[Sequence[int]], radius: int = 2
) -> list[torch.Tensor]:
    """The cumulative fields of a head of ``radius`` whose every level found its match exactly: after level ``l``, the
    true field clamped per axis to the reach of levels ``0..l`` (``radius`` times the sum of their voxel sizes, in
    full-resolution voxels) and sampled on level ``l``'s grid (linear, corners aligned, as the head upsamples).

    Fed to :py:class:`LevelEPEMetric` (``{"fields": ...}``) they give the split of the EPE gain that the pyramid's
    geometry alone assigns to each level on these pairs: a level's share there comes from what the coarser grids
    cannot hold (their reach, the field's fine detail), not from learning.

    Args:
        ddf: the true field ``(B, d, *S)`` in full-resolution voxels.
        level_shapes: the levels' spatial shapes, coarse to fine, each at most ``S`` per axis (e.g. the shapes of
            ``CoverNet(..., return_fields=True)``'s ``"fields"``).
        radius: the head's search radius (level voxels per axis).

    Returns:
        One ``(B, d, *S_l)`` field per level, in level ``l``'s voxels.
    """
    true = _plain(ddf)
    if true.ndim < 4 or true.shape[1] != true.ndim - 2:
        raise ValueError(f"oracle_level_fields: ddf must be (B, spatial_dims, *S), got {tuple(true.shape)}.")
    if int(radius) < 1:
        raise ValueError(f"oracle_level_fields: radius must be >= 1, got {radius!r}.")
    full = [int(n) for n in true.shape[2:]]
    shapes = [[int(s) for s in shape] for shape in level_shapes]
    if not shapes or any(len(s) != len(full) or min(s) < 2 or any(a > n for a, n in zip(s, full)) for s in shapes):
        raise ValueError(f"oracle_level_fields: level_shapes must be a non-empty list of {len(full)}-d shapes of at "
                         f"least 2 and at most {tuple(full)} voxels per axis, coarse to fine, got {level_shapes}.")
    fields, reach = [], torch.zeros(len(full), dtype=true.dtype, device=true.device)
    for shape in shapes:
        reach = reach + int(radius) * torch.tensor([n / s for n, s in zip(full, shape)], dtype=true.dtype,
                                                   device=true.device)
        bound = reach.view(1, -1, *([1] * len(full)))
        fields.append(upsample_ddf(true.clamp(-bound, bound), shape, scale=None))  # to the level's grid and voxels
    return fields


def epe_gain_shares(ratios: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Share of the total EPE gain (``1 - r_{L-1}``) that each level contributes: ``(r_{l-1} - r_l) / (1 - r_{L-1})``
    with ``r_{-1} = 1``, float64 ``(L,)`` summing to 1 (NaN when ``r_{L-1} >= 1``: no gain to share).

    Example: ratios ``(0.6, 0.5, 0.4, 0.2)`` give shares ``(0.5, 0.125, 0.125, 0.25)``.
    """
    r = torch.as_tensor(ratios, dtype=torch.float64).flatten()
    if r.numel() < 1:
        raise ValueError("epe_gain_shares: needs at least one ratio.")
    total = 1.0 - r[-1]
    before = torch.cat([r.new_ones(1), r[:-1]])
    if not bool(total > 0):
        return torch.full_like(r, float("nan"))
    return (before - r) / total


class LevelEPEMetric(CumulativeIterationMetric):
    """EPE relative to predicting zero after each level of the head, accumulated over batches (all overlap voxels of
    every sample seen, as :py:class:`~monai_cover.metrics.DDFEndPointErrorMetric`). Called as
    ``metric(pred_dict, target_dict)`` with ``pred_dict[key]`` the list of per-level fields (``CoverNet(...,
    return_fields=True)``).

    ``aggregate()`` gives the ratios ``r_l``, float64 ``(L,)`` coarse to fine (the last one is the head's
    :py:class:`~monai_cover.metrics.DDFEndPointErrorMetric` with ``relative=True``); :py:meth:`gain_shares` the share
    of the EPE gain of each level (:py:func:`epe_gain_shares`).

    Args:
        key: the key of the per-level fields in the prediction dict.
        reach: with ``reach_levels``, also accumulate what the ``reach_levels`` finest levels could at best leave
            (:py:func:`reachable_end_point_errors` of the field before them, ``reach`` full-resolution voxels per
            axis, e.g. ``capture_range(radius, reach_levels)``) for :py:meth:`reach_bound`; ``None``: not measured.
        reach_levels: how many of the finest levels ``reach`` covers (>= 1, fewer than the head's levels).
    """

    def __init__(self, key: str = "fields", reach: float | None = None, reach_levels: int = 2) -> None:
        super().__init__()
        if int(reach_levels) < 1:
            raise ValueError(f"LevelEPEMetric: reach_levels must be >= 1, got {reach_levels!r}.")
        self.key, self.reach, self.reach_levels = key, reach, int(reach_levels)

    def __call__(self, y_pred: Mapping[str, Any], y: Mapping[str, torch.Tensor] | None = None, **kwargs: Any):
        if not isinstance(y_pred, Mapping) or self.key not in y_pred:
            keys = sorted(y_pred) if isinstance(y_pred, Mapping) else type(y_pred).__name__
            raise KeyError(
                f"LevelEPEMetric: the prediction has no {self.key!r} (build the network with "
                f"CoverNet(..., return_fields=True)); got {keys}."
            )
        fields = y_pred[self.key]
        with torch.no_grad():
            errors, zero = level_end_point_errors(fields, y)
            if self.reach is not None:
                if len(fields) <= self.reach_levels:
                    raise ValueError(f"LevelEPEMetric: reach_levels={self.reach_levels} needs a head with more "
                                     f"levels, got {len(fields)} fields.")
                before = fields[-self.reach_levels - 1]
                errors = torch.cat([errors, reachable_end_point_errors(before, y, self.reach),
                                    reachable_end_point_errors(before, y, self.reach, in_window=True)], dim=1)
        self.extend(errors, zero)
        return errors / zero.clamp_min(1e-12)

    def _compute_tensor(self, y_pred, y=None):  # pragma: no cover
        raise NotImplementedError("LevelEPEMetric is called with dicts, see __call__.")

    def aggregate(self) -> torch.Tensor:
        buffer = self.get_buffer()
        errors, zero = buffer if isinstance(buffer, (list, tuple)) else (None, None)
        if errors is None or not bool(zero.sum() > 0):
            levels = 1 if errors is None else errors.shape[1] - 2 * (self.reach is not None)
            return torch.full((levels,), float("nan"), dtype=torch.float64)
        ratios = errors.sum(0) / zero.sum()
        return ratios[:-2] if self.reach is not None else ratios

    def gain_shares(self) -> torch.Tensor:
        """:py:func:`epe_gain_shares` of :py:meth:`aggregate`, ``(L,)``."""
        return epe_gain_shares(self.aggregate())

    def reach_bound(self, in_window: bool = False) -> float:
        """The largest share of the EPE gain the ``reach_levels`` finest levels could carry on top of the coarser
        levels as they are: ``(r_{L-n-1} - r*) / (1 - r*)`` with ``r*`` the ratio left by their best correction
        (module docstring); NaN when nothing was accumulated or ``r* >= 1``. ``in_window``: correcting only the
        voxels whose match is within their reach (:py:func:`reachable_end_point_errors`), a tighter bound.

        Raises:
            RuntimeError: the metric was built without ``reach``.
        """
        if self.reach is None:
            raise RuntimeError("LevelEPEMetric.reach_bound needs LevelEPEMetric(reach=...).")
        buffer = self.get_buffer()
        errors, zero = buffer if isinstance(buffer, (list, tuple)) else (None, None)
        if errors is None or not bool(zero.sum() > 0):
            return float("nan")
        ratios = errors.sum(0) / zero.sum()
        before, best = float(ratios[-self.reach_levels - 3]), float(ratios[-1 if in_window else -2])
        return (before - best) / (1.0 - best) if best < 1.0 else float("nan")
