# SPDX-License-Identifier: Apache-2.0
"""Paired differences over seeds with a percentile bootstrap interval: is method A ahead of method B when both ran
with the same seeds (the same labelled patches, probe voxels, initialisations)?"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["paired_bootstrap"]


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    level: float = 0.95,
    num_resamples: int = 10_000,
    seed: int = 0,
    groups: Sequence | None = None,
) -> dict[str, float | int]:
    """Mean of the paired differences ``a[i] - b[i]`` (one pair per seed) and its percentile bootstrap interval.

    The seeds are resampled with replacement ``num_resamples`` times (seeded ``seed``); the interval holds the
    central ``level`` of the resampled means. With ``n`` seeds there are at most ``C(2n - 1, n)`` distinct
    resamples (10 for 3 seeds): few seeds give coarse intervals.

    ``groups`` (one label per pair) makes it a two-stage bootstrap for nested seeds, e.g. 10 probe seeds on each of 3
    pretrainings: each resample draws the groups with replacement, then the pairs within each drawn group with
    replacement. Pairs that share a pretraining are not independent; treating them as such narrows the interval
    to the probe noise alone and hides the pretraining's variance, which the first stage keeps.

    Returns:
        ``{"mean", "low", "high", "ahead", "n"}``: mean difference, interval, seeds where ``a > b``, seeds; with
        ``groups`` also ``"groups"`` and ``"groups_ahead"`` (groups whose mean difference is above 0).
    """
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"paired_bootstrap: a and b must be non-empty and paired (same length), got {x.size}, "
                         f"{y.size}.")
    if not 0 < float(level) < 1:
        raise ValueError(f"paired_bootstrap: level must be in (0, 1), got {level}.")
    diff = x - y
    rng = np.random.default_rng(int(seed))
    if groups is None:
        means = diff[rng.integers(0, diff.size, size=(int(num_resamples), diff.size))].mean(axis=1)
        extra = {}
    else:
        members = _group_members(groups, diff.size)
        means = _two_stage_means(diff, members, int(num_resamples), rng)
        extra = {"groups": len(members), "groups_ahead": int(sum(diff[m].mean() > 0 for m in members))}
    tail = 100 * (1 - float(level)) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high), "ahead": int((diff > 0).sum()),
            "n": int(diff.size), **extra}


def _group_members(groups: Sequence, n: int) -> list[np.ndarray]:
    """Indices of the pairs of each group, in order of first appearance."""
    labels = list(groups)
    if len(labels) != n:
        raise ValueError(f"paired_bootstrap: groups must give one label per pair ({n}), got {len(labels)}.")
    order: dict = {}
    for i, label in enumerate(labels):
        order.setdefault(label, []).append(i)
    return [np.asarray(v) for v in order.values()]


def _two_stage_means(diff: np.ndarray, members: list[np.ndarray], num_resamples: int, rng) -> np.ndarray:
    """Mean of each resample: groups drawn with replacement, then, for every draw of a group (a group drawn twice
    is resampled twice, independently), its pairs with replacement."""
    picks = rng.integers(0, len(members), size=(num_resamples, len(members)))
    sums, counts = np.zeros(num_resamples), np.zeros(num_resamples)
    for slot in range(len(members)):
        for g, idx in enumerate(members):
            rows = np.flatnonzero(picks[:, slot] == g)
            drawn = idx[rng.integers(0, idx.size, size=(rows.size, idx.size))]
            sums[rows] += diff[drawn].sum(axis=1)
            counts[rows] += idx.size
    return sums / counts
