# SPDX-License-Identifier: Apache-2.0
"""Paired bootstrap over seeds: identical runs give [0, 0], a constant shift gives that shift, noise an interval
around the mean that narrows with more seeds."""

from __future__ import annotations

import numpy as np
import pytest

from monai_cover.metrics import paired_bootstrap


def test_identical_seeds_give_zero():
    a = [0.61, 0.58, 0.66, 0.7, 0.52]
    assert paired_bootstrap(a, a) == {"mean": 0.0, "low": 0.0, "high": 0.0, "ahead": 0, "n": 5}


def test_constant_shift_gives_the_shift():
    a = np.array([0.61, 0.58, 0.66, 0.7, 0.52, 0.49, 0.8, 0.55, 0.6, 0.63])
    out = paired_bootstrap(a + 0.03, a)
    assert out["mean"] == pytest.approx(0.03, abs=1e-12)
    assert out["low"] == pytest.approx(0.03, abs=1e-12) and out["high"] == pytest.approx(0.03, abs=1e-12)
    assert (out["ahead"], out["n"]) == (10, 10)


def test_interval_holds_the_mean_and_narrows_with_seeds():
    rng = np.random.default_rng(0)
    few = rng.normal(0.02, 0.05, 5)
    many = np.tile(few, 16)  # the same spread, 16 times the seeds: about a quarter of the width
    small, large = paired_bootstrap(few, np.zeros(5)), paired_bootstrap(many, np.zeros(80))
    for out in (small, large):
        assert out["low"] < out["mean"] < out["high"]
    assert 0.15 < (large["high"] - large["low"]) / (small["high"] - small["low"]) < 0.4
    normal = 2 * 1.96 * many.std() / np.sqrt(many.size)  # many seeds: close to the normal approximation
    assert 0.85 < (large["high"] - large["low"]) / normal < 1.15
    assert paired_bootstrap(few, np.zeros(5), seed=3) != paired_bootstrap(few, np.zeros(5), seed=4)  # seeded draw
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap([1.0], [1.0], level=1.0)
