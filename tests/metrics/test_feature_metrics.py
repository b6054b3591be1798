# SPDX-License-Identifier: Apache-2.0
"""Correspondence accuracy and collapse statistics on constructed features with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from monai_cover.ddf import identity_grid
from monai_cover.metrics import (
    CorrespondenceAccuracyMetric,
    FeatureCollapseMetric,
    correspondence_accuracy,
    effective_rank,
    mean_pairwise_cosine,
)


def _coordinate_features(spatial):
    """Features that name their voxel: a one-hot code of the flat index (every voxel has a unique best match)."""
    n = math.prod(spatial)
    return torch.eye(n).T.reshape(1, n, *spatial)


def _target(spatial, shift):
    ddf = torch.zeros(1, len(spatial), *spatial)
    for i, s in enumerate(shift):
        ddf[:, i] = s
    grid = identity_grid(spatial)[None] + ddf
    upper = torch.tensor([s - 1 for s in spatial]).view(1, -1, *([1] * len(spatial)))
    overlap = ((grid >= 0) & (grid <= upper)).all(1, keepdim=True).float()
    return {"ddf": ddf, "overlap": overlap}


def test_perfect_features_find_every_true_match():
    spatial = (6, 5)
    fa = _coordinate_features(spatial)
    # view B at p shows view A at p + (2, 0): its feature is A's feature of that voxel
    fb = torch.zeros_like(fa)
    fb[:, :, :-2] = fa[:, :, 2:]
    target = _target(spatial, (2.0, 0.0))
    hits, count = correspondence_accuracy(fa, fb, target, num_samples=1000, tolerance=0.0)
    assert count.item() == 4 * 5 and hits.item() == count.item()
    # unshifted features point to p, two voxels from the true match: misses at tolerance 1, hits at tolerance 2
    hits, _ = correspondence_accuracy(fa, fa, target, num_samples=1000, tolerance=1.0)
    assert hits.item() == 0
    hits, _ = correspondence_accuracy(fa, fa, target, num_samples=1000, tolerance=2.0)
    assert hits.item() == 20


def test_window_searches_only_near_the_true_match():
    spatial = (7, 6)
    fa = _coordinate_features(spatial)
    target = _target(spatial, (2.0, 0.0))
    fb = torch.zeros_like(fa)
    fb[:, :, :-2] = fa[:, :, 2:]  # perfect: every window size finds the match, also at the image border
    for window in (0, 1, 3):
        hits, count = correspondence_accuracy(fa, fb, target, num_samples=1000, tolerance=0.0, window=window)
        assert count.item() == 5 * 6 and hits.item() == count.item()
    # a decoy: B's voxel p also resembles A's voxel p + 2 with its column c mirrored to 5 - c, more than its match;
    # the global search always takes the decoy (never the match: 5 - c != c), a window of 1 sees it only in the
    # middle columns 2 and 3 (mirrored one column away), 2 x 5 of the 30 voxels
    decoy = torch.zeros_like(fa)
    decoy[:, :, :-2] = fa[:, :, 2:].flip(-1)
    features_b = 0.9 * fb + decoy
    far = correspondence_accuracy(fa, features_b, target, num_samples=1000, tolerance=0.0)[0].item()
    local = correspondence_accuracy(fa, features_b, target, num_samples=1000, tolerance=0.0, window=1)[0].item()
    assert far == 0 and local == 20
    metric = CorrespondenceAccuracyMetric(num_samples=1000, tolerance=0.0, window=1)
    metric({"features_a": fa, "features_b": features_b}, target)
    assert metric.aggregate().item() == pytest.approx(20 / 30)
    with pytest.raises(ValueError, match="window"):
        CorrespondenceAccuracyMetric(window=-1)



def test_levels_concat_matches_the_hypercolumn_of_pyramids():
    spatial = (6, 5)
    fa = _coordinate_features(spatial)
    fb = torch.zeros_like(fa)
    fb[:, :, :-2] = fa[:, :, 2:]
    target = _target(spatial, (2.0, 0.0))
    # the voxels are told apart by the middle level only; the finest level is constant, the coarse one too
    coarse, constant = torch.ones(1, 2, 3, 3), torch.ones(1, 3, *spatial)
    pred = {"features_a": [coarse, fa, constant], "features_b": [coarse, fb, constant]}
    finest = CorrespondenceAccuracyMetric(num_samples=1000, tolerance=0.0)
    finest(pred, target)
    reference = CorrespondenceAccuracyMetric(num_samples=1000, tolerance=0.0)
    reference({"features_a": constant, "features_b": constant}, target)
    assert finest.aggregate().item() == reference.aggregate().item() < 0.1  # default: the finest level, as before
    concat = CorrespondenceAccuracyMetric(num_samples=1000, tolerance=0.0, levels="concat")
    concat(pred, target)
    assert concat.aggregate().item() == 1.0
    single = CorrespondenceAccuracyMetric(num_samples=1000, tolerance=0.0, levels="concat")
    single({"features_a": fa, "features_b": fb}, target)  # one tensor: read as it is
    assert single.aggregate().item() == 1.0
    with pytest.raises(ValueError, match="levels"):
        CorrespondenceAccuracyMetric(levels="all")

def test_constant_features_match_one_voxel_and_the_metric_accumulates():
    spatial = (8, 8)
    constant = torch.ones(1, 3, *spatial)
    target = _target(spatial, (0.0, 0.0))
    metric = CorrespondenceAccuracyMetric(num_samples=64, tolerance=0.0, chunk_size=7)
    metric({"features_a": constant, "features_b": constant}, target)
    metric({"features_a": _coordinate_features(spatial), "features_b": _coordinate_features(spatial)}, target)
    # constant features all pick the first voxel: 1 hit of 64; unique features: 64 of 64
    assert metric.aggregate().item() == pytest.approx(65 / 128)
    with pytest.raises(KeyError, match="features_a"):
        metric({"ddf": target["ddf"]}, target)


def test_mean_cosine_and_rank_of_collapsed_and_spread_features():
    same = torch.ones(50, 4)
    assert mean_pairwise_cosine(same) == pytest.approx(1.0)
    assert mean_pairwise_cosine(torch.eye(6)) == pytest.approx(0.0)
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert mean_pairwise_cosine(opposite) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="N >= 2"):
        mean_pairwise_cosine(torch.ones(1, 3))
    assert effective_rank(torch.eye(5)) == pytest.approx(4.0, rel=1e-6)  # centred: one direction is lost


def test_collapse_metric_over_batches():
    spatial = (4, 4)
    target = {"ddf": torch.zeros(2, 2, *spatial), "overlap": torch.ones(2, 1, *spatial)}
    collapsed = torch.ones(2, 3, *spatial)
    cosine = FeatureCollapseMetric("mean_cosine", num_samples=8)
    cosine({"features_a": collapsed, "features_b": collapsed}, target)
    assert cosine.aggregate().item() == pytest.approx(1.0)
    rank = FeatureCollapseMetric("effective_rank", num_samples=16)
    gen = torch.Generator().manual_seed(0)
    spread = torch.randn(2, 8, *spatial, generator=gen)
    rank({"features_a": spread, "features_b": spread}, target)
    assert rank.aggregate().item() > 6.0
    rank.reset()
    rank({"features_a": collapsed, "features_b": collapsed}, target)
    assert rank.aggregate().item() == 0.0  # constant rows: nothing left after centring
    # non-finite vectors (a bf16 overflow) are left out with a warning, instead of failing the SVD and the run
    rank.reset()
    broken = spread.clone()
    broken[0, :, 0, 0] = float("inf")
    rank({"features_a": broken, "features_b": spread}, target)
    with pytest.warns(RuntimeWarning, match="1 of 64 sampled feature vectors are not finite"):
        value = rank.aggregate().item()
    assert 6.0 < value < 8.0
    rank.reset()
    rank({"features_a": torch.full_like(spread, float("nan")), "features_b": torch.full_like(spread, float("nan"))},
         target)
    with pytest.warns(RuntimeWarning, match="64 of 64"):
        assert torch.isnan(rank.aggregate())
    with pytest.raises(ValueError, match="statistic"):
        FeatureCollapseMetric("variance")
