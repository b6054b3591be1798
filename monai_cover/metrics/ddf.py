# SPDX-License-Identifier: Apache-2.0
"""Pretext metrics of a COVER network on view pairs, as MONAI metrics.

Every metric reads a prediction dict (what :py:class:`~monai_cover.networks.nets.CoverNet` returns: ``ddf``
``(B, d, *S)`` in voxels, ``features_a``/``features_b`` ``(B, C, *S_f)`` or pyramids of them) and a target dict
(``ddf`` ``(B, d, *S)`` in voxels, ``overlap`` ``(B, 1, *S)`` in {0, 1}), and averages a per-voxel value over the
voxels where the views overlap. Per batch it stores, per sample, the overlap-weighted **sum** and the
**weight**; ``aggregate()`` divides the totals, so the result is a mean over all overlap voxels of every sample
seen (all processes, in DDP), not a mean of per-batch means.

- :py:class:`DDFEndPointErrorMetric`: mean ``|ddf_pred - ddf_true|_2`` in voxels (lower is better); with
  ``relative=True`` divided by the same mean for predicting zero, ``mean |ddf_true|_2`` (1 = no better than
  predicting no motion);
- :py:class:`OverlapCosineMetric`: mean cosine of view B's features and view A's features warped by the
  **true** field (what COVER's ``L_con`` trains for; 1 = perfectly equivariant features).

The functional forms (:py:func:`ddf_end_point_error`, :py:func:`overlap_cosine`) return the per-sample
``(sum, weight)`` pairs, ``(B, 1)`` each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.metrics import CumulativeIterationMetric
from monai.utils import convert_to_tensor

from monai_cover.ddf import upsample_ddf, warp

__all__ = [
    "ddf_end_point_error",
    "overlap_cosine",
    "DDFEndPointErrorMetric",
    "OverlapCosineMetric",
]


def _plain(x: torch.Tensor) -> torch.Tensor:
    return convert_to_tensor(x, track_meta=False).float()


def _on_grid(ddf: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """``ddf`` ``(B, d, *S')`` on the grid ``spatial``, values rescaled per axis to that grid's voxels."""
    return ddf if tuple(ddf.shape[2:]) == tuple(spatial) else upsample_ddf(ddf, spatial, scale=None)


def _mask_on_grid(overlap: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    if tuple(overlap.shape[2:]) == tuple(spatial):
        return overlap
    return (F.interpolate(overlap, size=tuple(spatial), mode="nearest") > 0.5).to(overlap.dtype)


def _check_target(target: Mapping[str, torch.Tensor], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(target, Mapping) or "ddf" not in target or "overlap" not in target:
        keys = sorted(target) if isinstance(target, Mapping) else type(target).__name__
        raise KeyError(f"{name}: the target must be a dict with 'ddf' and 'overlap', got {keys}.")
    true, overlap = _plain(target["ddf"]), _plain(target["overlap"])
    if true.ndim not in (4, 5) or true.shape[1] != true.ndim - 2:
        raise ValueError(f"{name}: target 'ddf' must be (B, spatial_dims, *S), got {tuple(true.shape)}.")
    if overlap.shape != (true.shape[0], 1, *true.shape[2:]):
        raise ValueError(
            f"{name}: target 'overlap' must be {(true.shape[0], 1, *true.shape[2:])} to match 'ddf', "
            f"got {tuple(overlap.shape)}."
        )
    return true, overlap


def _weighted(value: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(Σ value·weight, Σ weight)``, each ``(B, 1)`` float64."""
    value, weight = value.double(), weight.double()
    return (value * weight).flatten(1).sum(1, keepdim=True), weight.flatten(1).sum(1, keepdim=True)


def ddf_end_point_error(
    pred_ddf: torch.Tensor, target: Mapping[str, torch.Tensor], relative: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample overlap sums of the end-point error ``|pred - true|_2`` (voxels), and their weights.

    Args:
        pred_ddf: ``(B, d, *S_p)``; a coarser field is brought to the true field's grid first.
        target: ``{"ddf": (B, d, *S), "overlap": (B, 1, *S)}``.
        relative: return ``(Σ EPE, Σ |true|_2)`` instead of ``(Σ EPE, Σ 1)``, so that their quotient is the
            error relative to predicting zero.

    Returns:
        ``(sum, weight)``, ``(B, 1)`` float64 each.
    """
    true, overlap = _check_target(target, "ddf_end_point_error")
    est = _plain(pred_ddf)
    if est.shape[:2] != true.shape[:2]:
        raise ValueError(
            f"ddf_end_point_error: predicted ddf {tuple(est.shape)} does not match the true ddf {tuple(true.shape)} "
            "in batch size or number of components."
        )
    est = _on_grid(est, true.shape[2:])
    error_sum, count = _weighted(torch.linalg.vector_norm(est - true, dim=1, keepdim=True), overlap)
    if not relative:
        return error_sum, count
    zero_sum, _ = _weighted(torch.linalg.vector_norm(true, dim=1, keepdim=True), overlap)
    return error_sum, zero_sum


def overlap_cosine(
    features_a: torch.Tensor, features_b: torch.Tensor, target: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample overlap sums of ``cos(features_b, warp(features_a, ddf_true))`` and their weights.

    Args:
        features_a, features_b: ``(B, C, *S_f)``; the true field and mask are brought to ``S_f``.
        target: ``{"ddf": (B, d, *S), "overlap": (B, 1, *S)}``.
    """
    true, overlap = _check_target(target, "overlap_cosine")
    fa, fb = _plain(features_a), _plain(features_b)
    if fa.shape != fb.shape or fa.shape[0] != true.shape[0] or fa.ndim != true.ndim:
        raise ValueError(
            f"overlap_cosine: features_a {tuple(fa.shape)} and features_b {tuple(fb.shape)} must be equal and "
            f"(B, C, *S) with the true ddf's batch size and spatial dims ({tuple(true.shape)})."
        )
    spatial = fb.shape[2:]
    aligned = warp(fa, _on_grid(true, spatial))
    cosine = F.cosine_similarity(aligned, fb, dim=1, eps=1e-6).unsqueeze(1)
    return _weighted(cosine, _mask_on_grid(overlap, spatial))


class _OverlapMeanMetric(CumulativeIterationMetric):
    """Accumulates per-sample ``(sum, weight)`` pairs; ``aggregate()`` is ``Σ sum / Σ weight`` (NaN with no
    weight). Called as ``metric(pred_dict, target_dict)``."""

    def _pairs(self, pred: Mapping[str, Any], target: Mapping[str, torch.Tensor]):
        raise NotImplementedError

    def __call__(self, y_pred: Mapping[str, Any], y: Mapping[str, torch.Tensor] | None = None, **kwargs: Any):
        if not isinstance(y_pred, Mapping):
            raise TypeError(
                f"{type(self).__name__}: y_pred must be the network's output dict, got {type(y_pred).__name__}."
            )
        with torch.no_grad():
            total, weight = self._pairs(y_pred, y)
        self.extend(total, weight)
        return total / weight.clamp_min(1e-12)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None):  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} is called with dicts, see __call__.")

    def aggregate(self) -> torch.Tensor:
        total, weight = self.get_buffer()
        weight = weight.sum()
        if weight <= 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return total.sum() / weight


class DDFEndPointErrorMetric(_OverlapMeanMetric):
    """Mean end-point error of the predicted field over the overlap, in voxels (lower is better).

    Args:
        relative: divide by the mean ``|ddf_true|_2`` over the same voxels, i.e. report the error relative to
            predicting zero displacement (``< 1``: better than no motion).
        key: the predicted field's key in the prediction dict.
    """

    def __init__(self, relative: bool = False, key: str = "ddf") -> None:
        super().__init__()
        self.relative = bool(relative)
        self.key = key

    def _pairs(self, pred, target):
        if self.key not in pred:
            raise KeyError(f"DDFEndPointErrorMetric: the prediction has no {self.key!r}, keys {sorted(pred)}.")
        return ddf_end_point_error(pred[self.key], target, relative=self.relative)


class OverlapCosineMetric(_OverlapMeanMetric):
    """Mean cosine similarity of ``features_b`` and ``warp(features_a, ddf_true)`` over the overlap (higher is
    better).

    Args:
        level: index into the feature lists when the prediction holds pyramids (default ``-1``: the finest).
    """

    def __init__(self, level: int = -1) -> None:
        super().__init__()
        self.level = int(level)

    def _pairs(self, pred, target):
        missing = [k for k in ("features_a", "features_b") if k not in pred]
        if missing:
            raise KeyError(f"OverlapCosineMetric: the prediction has no {missing}, keys {sorted(pred)}.")
        fa, fb = (pred[k][self.level] if isinstance(pred[k], (list, tuple)) else pred[k]
                  for k in ("features_a", "features_b"))
        return overlap_cosine(fa, fb, target)
