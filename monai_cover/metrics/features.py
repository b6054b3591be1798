# SPDX-License-Identifier: Apache-2.0
"""Dense-feature quality on view pairs, as MONAI metrics: do voxel features find their true match, and are they
collapsing?

- :py:func:`correspondence_accuracy` / :py:class:`CorrespondenceAccuracyMetric`: for voxels ``p`` sampled in
  the overlap of view B, the nearest neighbour (cosine) of ``f_B(p)`` among **all** voxels of view A is a hit
  when it lies within ``tolerance`` voxels of the true match ``p + ddf(p)``. Chance level is about the volume of
  the tolerance ball over the number of voxels. With ``window=r`` the search is local: only the view-A voxels
  within ``r`` voxels (per axis) of the true match compete, which scores how sharply features single out their
  match among their neighbours (chance about the tolerance ball over ``(2r+1)^d``).
  With ``levels="concat"`` the metric matches the hypercolumn of pyramid predictions instead of one level.
- :py:func:`mean_pairwise_cosine` and :py:func:`~monai_cover.metrics.dispersion.effective_rank` on sampled
  voxel features, through :py:class:`FeatureCollapseMetric`: collapsed features have a mean cosine near 1 and
  an effective rank near 1; features of a random network sit near 0.3 and near full rank.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric
from monai.utils import convert_to_tensor

from monai_cover.ddf import identity_grid
from monai_cover.metrics.ddf import _check_target
from monai_cover.metrics.dispersion import effective_rank
from monai_cover.metrics.hypercolumn import LEVEL_MODES, hypercolumn

__all__ = [
    "correspondence_accuracy",
    "mean_pairwise_cosine",
    "CorrespondenceAccuracyMetric",
    "FeatureCollapseMetric",
]


def _finest(features: Any, level: int = -1) -> torch.Tensor:
    feature = features[level] if isinstance(features, (list, tuple)) else features
    return convert_to_tensor(feature, track_meta=False).float()


def _sample(weights: torch.Tensor, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """Indices of up to ``count`` voxels where ``weights`` (flat) is non-zero, without replacement."""
    candidates = torch.nonzero(weights > 0).flatten()
    if candidates.numel() <= count:
        return candidates
    order = torch.randperm(candidates.numel(), generator=generator, device="cpu")[:count]
    return candidates[order.to(candidates.device)]


def _best_in_window(
    query: torch.Tensor, keys: torch.Tensor, expected: torch.Tensor, spatial: tuple[int, ...], radius: int
) -> torch.Tensor:
    """Flat index of the best-matching key among the in-image voxels within ``radius`` per axis of ``expected``.

    Args:
        query: ``(n, C)`` unit query vectors; keys: ``(C, N)`` unit key vectors of the flattened grid ``spatial``.
        expected: ``(d, n)`` true match positions (voxels); the window is centred on them rounded.
    """
    if radius < 0:
        raise ValueError(f"correspondence_accuracy: window must be >= 0, got {radius}.")
    device = keys.device
    centre = expected.round().long()  # (d, n)
    axes = [torch.arange(-radius, radius + 1, device=device)] * len(spatial)
    offsets = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).flatten(1)  # (d, K)
    cand = centre[:, :, None] + offsets[:, None, :]  # (d, n, K)
    upper = torch.tensor(spatial, device=device).view(-1, 1, 1)
    inside = ((cand >= 0) & (cand < upper)).all(dim=0)  # (n, K)
    cand = torch.minimum(cand.clamp_min(0), upper - 1)
    strides = [1] * len(spatial)
    for i in range(len(spatial) - 2, -1, -1):
        strides[i] = strides[i + 1] * int(spatial[i + 1])
    flat = sum(cand[i] * strides[i] for i in range(len(spatial)))  # (n, K)
    scores = torch.einsum("nc,cnk->nk", query, keys[:, flat])
    scores = torch.where(inside, scores, torch.full_like(scores, -float("inf")))
    best = scores.argmax(dim=1)
    return flat.gather(1, best[:, None])[:, 0]


def correspondence_accuracy(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    target: Mapping[str, torch.Tensor],
    num_samples: int = 512,
    tolerance: float = 2.0,
    generator: torch.Generator | None = None,
    chunk_size: int = 16384,
    window: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(hits, samples)`` of nearest-neighbour matching of dense features, ``(B, 1)`` float64 each.

    Args:
        features_a, features_b: ``(B, C, *S)`` features of view A and view B on the grid of ``target``.
        target: ``{"ddf": (B, d, *S), "overlap": (B, 1, *S)}``; view B's voxel ``p`` shows view A's ``p + ddf(p)``.
        num_samples: voxels of view B drawn per sample from the overlap (all of them when fewer).
        tolerance: a match within this Euclidean distance (voxels) of the true position is a hit.
        generator: for the voxel draw (CPU generator).
        chunk_size: view A voxels compared per step (bounds the memory to ``num_samples * chunk_size``).
        window: ``None`` (default): the nearest neighbour among all view-A voxels; an int ``r >= 0``: among the
            view-A voxels inside the image within ``r`` voxels per axis (a ``(2r+1)^d`` cube) of the true match
            rounded to the nearest voxel.
    """
    true, overlap = _check_target(target, "correspondence_accuracy")
    fa, fb = _finest(features_a), _finest(features_b)
    if fa.shape != fb.shape or tuple(fa.shape[2:]) != tuple(true.shape[2:]) or fa.shape[0] != true.shape[0]:
        raise ValueError(
            f"correspondence_accuracy: features_a {tuple(fa.shape)} and features_b {tuple(fb.shape)} must be equal "
            f"and on the true ddf's grid {tuple(true.shape)}."
        )
    spatial = tuple(fa.shape[2:])
    grid = identity_grid(spatial, device=fa.device).flatten(1)  # (d, N)
    hits, counts = [], []
    for b in range(fa.shape[0]):
        picked = _sample(overlap[b, 0].flatten(), int(num_samples), generator)
        if picked.numel() == 0:
            hits.append(0.0), counts.append(0.0)
            continue
        query = torch.nn.functional.normalize(fb[b].flatten(1)[:, picked].T, dim=1, eps=1e-8)  # (n, C)
        keys = torch.nn.functional.normalize(fa[b].flatten(1), dim=0, eps=1e-8)  # (C, N)
        expected = grid[:, picked] + true[b].flatten(1)[:, picked]
        if window is not None:
            where = _best_in_window(query, keys, expected, spatial, int(window))
            distance = torch.linalg.vector_norm(grid[:, where] - expected, dim=0)
            hits.append(float((distance <= float(tolerance)).sum())), counts.append(float(picked.numel()))
            continue
        best = torch.full((picked.numel(),), -float("inf"), device=fa.device)
        where = torch.zeros(picked.numel(), dtype=torch.long, device=fa.device)
        for start in range(0, keys.shape[1], int(chunk_size)):
            value, index = (query @ keys[:, start:start + int(chunk_size)]).max(dim=1)
            better = value > best
            best = torch.where(better, value, best)
            where = torch.where(better, index + start, where)
        distance = torch.linalg.vector_norm(grid[:, where] - expected, dim=0)
        hits.append(float((distance <= float(tolerance)).sum())), counts.append(float(picked.numel()))
    as_column = lambda v: torch.tensor(v, dtype=torch.float64).view(-1, 1)  # noqa: E731
    return as_column(hits), as_column(counts)


def mean_pairwise_cosine(features: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs ``i != j`` of the rows of ``features`` ``(N, C)`` (exact, ``O(N C)``:
    ``(|Σ ẑ|^2 - N) / (N (N - 1))`` with ``ẑ`` the unit rows; zero rows count as cosine 0)."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"mean_pairwise_cosine: features must be (N, C) with N >= 2, got {tuple(features.shape)}.")
    unit = torch.nn.functional.normalize(features.detach().double(), dim=1, eps=1e-12)
    n = unit.shape[0]
    nonzero = float((unit.abs().sum(1) > 0).sum())
    return float((unit.sum(0).pow(2).sum() - nonzero) / (n * (n - 1)))


class CorrespondenceAccuracyMetric(CumulativeIterationMetric):
    """:py:func:`correspondence_accuracy` accumulated over batches: ``aggregate()`` is the fraction of sampled
    view-B voxels whose nearest view-A feature is within ``tolerance`` voxels of the true match. Called as
    ``metric(pred_dict, target_dict)`` with ``features_a``/``features_b`` on the target's grid.

    Args:
        num_samples, tolerance, chunk_size, window: see :py:func:`correspondence_accuracy` (``window=r``: local
            matching among the voxels within ``r`` per axis of the true match).
        seed: seed of the voxel draw (the same voxels at every validation).
        level: index into the feature lists when the prediction holds pyramids (default the finest).
        levels: ``"finest"`` (default): the features at ``level``; ``"concat"``: the hypercolumn of pyramid
            predictions (lists ``(B, C_l, *S_l)`` coarse to fine, every level at unit length, resampled to the
            finest grid and concatenated, see :py:func:`~monai_cover.metrics.hypercolumn.hypercolumn`), so that
            every level weighs the same in the cosine; a prediction that is one tensor is read as it is.
    """

    def __init__(self, num_samples: int = 512, tolerance: float = 2.0, seed: int = 0, level: int = -1,
                 chunk_size: int = 16384, window: int | None = None, levels: str = "finest") -> None:
        self.num_samples, self.tolerance, self.seed = int(num_samples), float(tolerance), int(seed)
        self.level, self.chunk_size = int(level), int(chunk_size)
        if levels not in LEVEL_MODES:
            raise ValueError(f"CorrespondenceAccuracyMetric: levels must be one of {LEVEL_MODES}, got {levels!r}.")
        self.levels = levels
        if window is not None and int(window) < 0:
            raise ValueError(f"CorrespondenceAccuracyMetric: window must be None or >= 0, got {window}.")
        self.window = None if window is None else int(window)
        super().__init__()  # calls reset(), which seeds the voxel draw

    def reset(self) -> None:
        super().reset()
        self._generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, y_pred: Mapping[str, Any], y: Mapping[str, torch.Tensor] | None = None, **kwargs: Any):
        missing = [k for k in ("features_a", "features_b") if not isinstance(y_pred, Mapping) or k not in y_pred]
        if missing:
            raise KeyError(f"CorrespondenceAccuracyMetric: the prediction needs {missing} (a CoverNet output dict).")
        with torch.no_grad():
            hits, counts = correspondence_accuracy(
                self._read(y_pred["features_a"]), self._read(y_pred["features_b"]), y,
                self.num_samples, self.tolerance, self._generator, self.chunk_size, self.window,
            )  # fmt: skip
        self.extend(hits, counts)
        return hits / counts.clamp_min(1)

    def _read(self, features: Any) -> torch.Tensor:
        """The features the metric matches: the pyramid's ``level`` or its hypercolumn (``levels``)."""
        if self.levels == "finest" or not isinstance(features, (list, tuple)):
            return _finest(features, self.level)
        return hypercolumn([convert_to_tensor(f, track_meta=False) for f in features], normalize_levels=True)

    def _compute_tensor(self, y_pred, y=None):  # pragma: no cover
        raise NotImplementedError("CorrespondenceAccuracyMetric is called with dicts, see __call__.")

    def aggregate(self) -> torch.Tensor:
        hits, counts = self.get_buffer()
        total = counts.sum()
        return hits.sum() / total if total > 0 else torch.tensor(float("nan"), dtype=torch.float64)


class FeatureCollapseMetric(CumulativeIterationMetric):
    """Feature collapse of the finest features of both views, on ``num_samples`` voxels drawn per sample from the
    overlap: ``aggregate()`` is the ``statistic`` of all drawn voxels together.

    Args:
        statistic: ``"effective_rank"`` (1 = collapsed to one direction, ``C`` = full rank) or ``"mean_cosine"``
            (mean pairwise cosine; 1 = collapsed).
        num_samples: voxels per sample and view.
        seed: seed of the voxel draw.
        level: index into the feature lists when the prediction holds pyramids (default the finest).
    """

    STATISTICS = ("effective_rank", "mean_cosine")

    def __init__(self, statistic: str = "effective_rank", num_samples: int = 256, seed: int = 0,
                 level: int = -1) -> None:
        if statistic not in self.STATISTICS:
            raise ValueError(f"FeatureCollapseMetric: statistic must be one of {self.STATISTICS}, got {statistic!r}.")
        self.statistic, self.num_samples, self.seed, self.level = statistic, int(num_samples), int(seed), int(level)
        super().__init__()  # calls reset(), which seeds the voxel draw

    def reset(self) -> None:
        super().reset()
        self._generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, y_pred: Mapping[str, Any], y: Mapping[str, torch.Tensor] | None = None, **kwargs: Any):
        if not isinstance(y_pred, Mapping) or "features_a" not in y_pred or "features_b" not in y_pred:
            raise KeyError("FeatureCollapseMetric: the prediction needs 'features_a' and 'features_b'.")
        _, overlap = _check_target(y, "FeatureCollapseMetric")
        rows = []
        with torch.no_grad():
            for key in ("features_a", "features_b"):
                feats = _finest(y_pred[key], self.level)
                if tuple(feats.shape[2:]) != tuple(overlap.shape[2:]):
                    raise ValueError(f"FeatureCollapseMetric: {key} {tuple(feats.shape)} is not on the overlap's "
                                     f"grid {tuple(overlap.shape)}.")
                for b in range(feats.shape[0]):
                    picked = _sample(overlap[b, 0].flatten(), self.num_samples, self._generator)
                    rows.append(feats[b].flatten(1)[:, picked].T.double().cpu())
        sampled = torch.cat(rows)
        self.extend(sampled)
        return sampled

    def _compute_tensor(self, y_pred, y=None):  # pragma: no cover
        raise NotImplementedError("FeatureCollapseMetric is called with dicts, see __call__.")

    def aggregate(self) -> torch.Tensor:
        features = self.get_buffer()
        if features is not None:
            finite = torch.isfinite(features).all(dim=1)
            if not bool(finite.all()):
                warnings.warn(
                    f"FeatureCollapseMetric: {int((~finite).sum())} of {features.shape[0]} sampled feature vectors are "
                    "not finite (overflow under low precision, or a diverged network); the statistic is computed on "
                    "the finite ones (NaN when fewer than 2).", RuntimeWarning, stacklevel=2,
                )
                features = features[finite]
        if features is None or features.shape[0] < 2:
            return torch.tensor(float("nan"), dtype=torch.float64)
        if self.statistic == "effective_rank":
            return torch.tensor(effective_rank(features), dtype=torch.float64)
        return torch.tensor(mean_pairwise_cosine(features), dtype=torch.float64)
