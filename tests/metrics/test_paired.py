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


def test_groups_keep_the_variance_between_pretrainings():
    # 3 pretrainings x 10 probe seeds: each pretraining shifts all of its probes alike (0, 0.04, 0.08), no probe noise
    shift = np.repeat([0.0, 0.04, 0.08], 10)
    groups = np.repeat([0, 1, 2], 10)
    flat, nested = paired_bootstrap(shift, np.zeros(30)), paired_bootstrap(shift, np.zeros(30), groups=groups)
    assert flat["mean"] == pytest.approx(0.04) and nested["mean"] == pytest.approx(0.04)
    # 30 pairs taken as independent: about 0.04 +- 1.96 * 0.033 / sqrt(30)
    assert 0.025 < flat["low"] < 0.035 and 0.045 < flat["high"] < 0.055
    # only 3 pretrainings: all three drawn from the first (or the last) has probability 1/27 > 2.5 %
    assert nested["low"] == pytest.approx(0.0, abs=1e-12) and nested["high"] == pytest.approx(0.08, abs=1e-12)
    assert (nested["groups"], nested["groups_ahead"], nested["ahead"], nested["n"]) == (3, 2, 20, 30)
    assert "groups" not in flat


def test_groups_of_one_match_the_flat_bootstrap():
    rng = np.random.default_rng(1)
    diff = rng.normal(0.01, 0.05, 40)
    flat = paired_bootstrap(diff, np.zeros(40))
    singletons = paired_bootstrap(diff, np.zeros(40), groups=[f"s{i}" for i in range(40)])
    assert singletons["mean"] == pytest.approx(flat["mean"])
    assert singletons["high"] - singletons["low"] == pytest.approx(flat["high"] - flat["low"], rel=0.1)
    assert singletons["groups_ahead"] == singletons["ahead"] == flat["ahead"]


def test_unequal_groups_and_bad_labels():
    diff = np.array([0.1, 0.1, 0.1, -0.2])  # group "a" has three pairs, "b" one
    out = paired_bootstrap(diff, np.zeros(4), groups=["a", "a", "a", "b"])
    assert out["mean"] == pytest.approx(0.025)  # every pair weighs alike, as without groups
    assert (out["groups"], out["groups_ahead"]) == (2, 1)
    assert out["low"] == pytest.approx(-0.2) and out["high"] == pytest.approx(0.1)  # "b" twice / "a" twice
    with pytest.raises(ValueError, match="one label per pair"):
        paired_bootstrap(diff, np.zeros(4), groups=["a", "b"])
