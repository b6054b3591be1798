# SPDX-License-Identifier: Apache-2.0
"""Validation metrics for COVER pretraining, as Ignite metrics (summed over batches, DDP-reduced).

Both read an evaluator's output ``{"pred": CoverNet output, "label": {"ddf", "overlap"}}`` (what
``SupervisedEvaluator`` stores with ``monai_cover.engines.CoverPrepareBatch``) and average over
the voxels where the two views overlap, weighted by ``overlap``.

- :py:class:`DDFEndPointError`: mean Euclidean distance between the predicted and the true
  displacement, in voxels (lower is better);
- :py:class:`OverlapCosine`: mean cosine similarity between view B's finest features and view A's
  finest features warped by the **true** DDF (the consistency that COVER's ``L_con`` trains for;
  higher is better, 1 = perfectly equivariant features).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from monai_cover.ddf import upsample_ddf, warp

__all__ = ["DDFEndPointError", "OverlapCosine", "cover_output_transform"]


def cover_output_transform(output: Any) -> tuple[Mapping, Mapping]:
    """``(pred, target)`` from an evaluator's output (a dict, or a one-item decollated list)."""
    if isinstance(output, (list, tuple)) and len(output) > 0 and isinstance(output[0], Mapping):
        if len(output) != 1:
            raise ValueError("COVER metrics need decollate=False on the evaluator (got a decollated batch).")
        output = output[0]
    return output["pred"], output["label"]


def _ddf_at(ddf: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """``ddf`` (B, D, *S') on the grid ``spatial`` (values rescaled to that grid's voxels)."""
    if tuple(ddf.shape[2:]) == tuple(spatial):
        return ddf
    return upsample_ddf(ddf, spatial, scale=spatial[0] / ddf.shape[2])


def _mask_at(overlap: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    if tuple(overlap.shape[2:]) == tuple(spatial):
        return overlap
    return (F.interpolate(overlap.float(), size=tuple(spatial), mode="nearest") > 0.5).to(overlap.dtype)


class _OverlapMean(Metric):
    """Overlap-weighted mean of a per-voxel value, reduced across processes."""

    def __init__(self, output_transform: Callable = cover_output_transform, device: str | torch.device = "cpu"):
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.tensor(0.0, dtype=torch.float64, device=self._device)
        self._weight = torch.tensor(0.0, dtype=torch.float64, device=self._device)

    def _values(self, pred: Mapping, target: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @reinit__is_reduced
    def update(self, output: tuple[Mapping, Mapping]) -> None:
        pred, target = output
        with torch.no_grad():
            value, weight = self._values(pred, target)
            self._sum += (value.double() * weight.double()).sum().to(self._device)
            self._weight += weight.double().sum().to(self._device)

    @sync_all_reduce("_sum", "_weight")
    def compute(self) -> float:
        if self._weight.item() <= 0:
            return float("nan")
        return (self._sum / self._weight).item()


class DDFEndPointError(_OverlapMean):
    """Mean end-point error ``|ddf_pred - ddf_true|_2`` in voxels over the overlap (lower is better).

    ``pred["ddf"]`` is brought to the true field's grid first if it is coarser.
    """

    def _values(self, pred, target):
        true, overlap = target["ddf"].float(), target["overlap"].float()
        est = _ddf_at(pred["ddf"].float(), true.shape[2:])
        return torch.linalg.vector_norm(est - true, dim=1, keepdim=True), overlap


class OverlapCosine(_OverlapMean):
    """Mean cosine similarity of ``features_b`` and ``warp(features_a, ddf_true)`` over the overlap
    (higher is better), on the finest feature maps (the last of each pyramid list).

    Args:
        level: index into the feature lists (default ``-1``: the finest).
    """

    def __init__(self, level: int = -1, output_transform: Callable = cover_output_transform, device="cpu"):
        self.level = int(level)
        super().__init__(output_transform=output_transform, device=device)

    def _values(self, pred, target):
        fa, fb = pred["features_a"], pred["features_b"]
        fa = (fa[self.level] if isinstance(fa, (list, tuple)) else fa).float()
        fb = (fb[self.level] if isinstance(fb, (list, tuple)) else fb).float()
        spatial = fb.shape[2:]
        ddf = _ddf_at(target["ddf"].float(), spatial)
        overlap = _mask_at(target["overlap"].float(), spatial)
        aligned = warp(fa, ddf)
        return F.cosine_similarity(aligned, fb, dim=1, eps=1e-6).unsqueeze(1), overlap
