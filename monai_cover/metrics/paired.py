# SPDX-License-Identifier: Apache-2.0
"""Paired differences over seeds with a percentile bootstrap interval: is method A ahead of method B when both ran
with the same seeds (the same labelled patches, probe voxels, initialisations)?"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["paired_bootstrap"]


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], level: float = 0.95, num_resamples: int = 10_000, seed: int = 0
) -> dict[str, float | int]:
    """Mean of the paired differences ``a[i] - b[i]`` (one pair per seed) and its percentile bootstrap interval.

    The seeds are resampled with replacement ``num_resamples`` times (seeded ``seed``); the interval holds the
    central ``level`` of the resampled means. With ``n`` seeds there are at most ``C(2n - 1, n)`` distinct
    resamples (10 for 3 seeds): few seeds give coarse intervals.

    Returns:
        ``{"mean", "low", "high", "ahead", "n"}``: mean difference, interval, seeds where ``a > b``, seeds.
    """
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"paired_bootstrap: a and b must be non-empty and paired (same length), got {x.size}, "
                         f"{y.size}.")
    if not 0 < float(level) < 1:
        raise ValueError(f"paired_bootstrap: level must be in (0, 1), got {level}.")
    diff = x - y
    rng = np.random.default_rng(int(seed))
    means = diff[rng.integers(0, diff.size, size=(int(num_resamples), diff.size))].mean(axis=1)
    tail = 100 * (1 - float(level)) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high), "ahead": int((diff > 0).sum()),
            "n": int(diff.size)}
