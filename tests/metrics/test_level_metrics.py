# SPDX-License-Identifier: Apache-2.0
"""The per-level EPE split of COVER's head (monai_cover.metrics.levels) on constructed fields with a known split."""

from __future__ import annotations

import math

import pytest
import torch

from monai_cover.metrics import (
    DDFEndPointErrorMetric,
    LevelEPEMetric,
    epe_gain_shares,
    level_corrections,
    level_end_point_errors,
    oracle_level_fields,
    reachable_end_point_errors,
)
from monai_cover.networks import CoverHead

SHIFT = torch.tensor([3.0, -2.0])


def constant_case(fractions, sizes=((8, 8), (16, 16), (32, 32)), batch=2):
    """True field: a constant shift of (3, -2) pixels on 32x32. Level l's field recovers ``fractions[l]`` of it, in
    its own voxels (a level of size s holds ``fraction * shift * s / 32``), so its EPE/zero is ``1 - fraction``."""
    true = SHIFT.view(1, 2, 1, 1).expand(batch, 2, 32, 32).clone()
    target = {"ddf": true, "overlap": torch.ones(batch, 1, 32, 32)}
    fields = [(f * SHIFT * s[0] / 32).view(1, 2, 1, 1).expand(batch, 2, *s).clone() for f, s in zip(fractions, sizes)]
    return fields, target


def test_gain_shares_of_known_ratios():
    torch.testing.assert_close(epe_gain_shares([0.6, 0.5, 0.4, 0.2]),
                               torch.tensor([0.5, 0.125, 0.125, 0.25], dtype=torch.float64))
    assert torch.isnan(epe_gain_shares([0.9, 1.1])).all()  # no gain to share


def test_constructed_fields_give_the_known_split():
    fields, target = constant_case((0.5, 0.75, 0.9))
    metric = LevelEPEMetric()
    metric({"fields": fields}, target)
    torch.testing.assert_close(metric.aggregate(), torch.tensor([0.5, 0.25, 0.1], dtype=torch.float64))
    # gains 0.5, 0.25, 0.15 of a total 0.9: the two finest levels carry 0.4 / 0.9
    torch.testing.assert_close(metric.gain_shares(), torch.tensor([5 / 9, 2.5 / 9, 1.5 / 9], dtype=torch.float64))


def test_units_are_rescaled_per_level():
    """A coarse field holding the full-resolution numbers (not divided by its voxel size) overshoots: 0.5 of an
    8x8 level read as full-resolution voxels is 2x the shift, an EPE/zero of 1, not 0.5."""
    fields, target = constant_case((0.5,), sizes=((8, 8),))
    wrong = [fields[0] * 4]
    errors, zero = level_end_point_errors(wrong, target)
    assert math.isclose(float(errors.sum() / zero.sum()), 1.0, rel_tol=1e-6)


def test_metric_accumulates_over_batches_and_matches_the_relative_epe():
    fields_1, target_1 = constant_case((0.5, 0.5, 0.5), batch=1)
    fields_2, target_2 = constant_case((0.5, 0.75, 1.0), batch=3)
    metric, relative = LevelEPEMetric(), DDFEndPointErrorMetric(relative=True)
    for fields, target in ((fields_1, target_1), (fields_2, target_2)):
        metric({"fields": fields}, target)
        relative({"ddf": fields[-1]}, target)
    # every sample has the same |true|, so the ratio is the mean over the 4 samples
    expected = torch.tensor([0.5, (0.5 + 3 * 0.25) / 4, 0.5 / 4], dtype=torch.float64)
    torch.testing.assert_close(metric.aggregate(), expected)
    assert math.isclose(float(metric.aggregate()[-1]), float(relative.aggregate()), rel_tol=1e-9)


def test_missing_fields_and_empty_metric():
    with pytest.raises(KeyError, match="return_fields"):
        LevelEPEMetric()({"ddf": torch.zeros(1, 2, 4, 4)}, constant_case((1.0,))[1])
    assert torch.isnan(LevelEPEMetric().aggregate()).all()


def test_head_fields_match_its_output():
    torch.manual_seed(0)
    head = CoverHead(2, (16, 8, 8), head_dim=4, num_heads=(2, 1, 1))
    fa = [torch.randn(2, c, s, s) for c, s in zip((16, 8, 8), (8, 16, 32))]
    fb = [torch.randn_like(f) for f in fa]
    ddf = head(fa, fb)
    again, fields = head(fa, fb, return_fields=True)
    assert torch.equal(ddf, again) and torch.equal(fields[-1], ddf)
    assert [tuple(f.shape) for f in fields] == [(2, 2, 8, 8), (2, 2, 16, 16), (2, 2, 32, 32)]
    # the last ratio of the split is the relative EPE of the head's output
    true = torch.randn(2, 2, 32, 32)
    target = {"ddf": true, "overlap": torch.ones(2, 1, 32, 32)}
    metric, relative = LevelEPEMetric(), DDFEndPointErrorMetric(relative=True)
    metric({"fields": fields}, target), relative({"ddf": ddf}, target)
    assert math.isclose(float(metric.aggregate()[-1]), float(relative.aggregate()), rel_tol=1e-9)


def test_reach_bound_of_a_known_residual():
    # before the finest level 0.5 of the (3, -2) shift is left: e = (1.5, -1); a reach of 1 voxel per axis can
    # remove (1, -1) of it, leaving |(0.5, 0)| = 0.5 of |true| = sqrt(13)
    fields, target = constant_case((0.5, 0.5, 0.6))
    metric = LevelEPEMetric(reach=1.0, reach_levels=1)
    metric({"fields": fields}, target)
    torch.testing.assert_close(metric.aggregate(), torch.tensor([0.5, 0.5, 0.4], dtype=torch.float64))  # unchanged
    best = 0.5 / math.sqrt(13)
    assert metric.reach_bound() == pytest.approx((0.5 - best) / (1 - best))
    assert float(metric.gain_shares()[-1]) == pytest.approx(0.1 / 0.6)  # what the finest level did: below the bound
    # a level that finds matches only inside its window: (1.5, -1) is outside a 1-voxel window, nothing to gain;
    # inside a 2-voxel one, all of it
    assert metric.reach_bound(in_window=True) == pytest.approx(0.0)
    wide = LevelEPEMetric(reach=2.0, reach_levels=1)
    wide({"fields": fields}, target)
    assert wide.reach_bound(in_window=True) == pytest.approx(0.5) and wide.reach_bound() == pytest.approx(0.5)
    no_reach = reachable_end_point_errors(fields[1], target, 0.0) / level_end_point_errors(fields, target)[1]
    torch.testing.assert_close(no_reach, torch.full((2, 1), 0.5, dtype=torch.float64))  # the field's own error
    # unbounded reach: the finest levels could take all that is left, r_{L-n-1} of a total gain of 1
    two = LevelEPEMetric(reach=100.0, reach_levels=2)
    two({"fields": fields}, target)
    assert two.reach_bound() == pytest.approx(0.5)


def test_reach_bound_errors():
    fields, target = constant_case((0.5, 0.75))
    with pytest.raises(RuntimeError, match="reach="):
        LevelEPEMetric().reach_bound()
    with pytest.raises(ValueError, match="reach_levels=2 needs a head with more levels"):
        LevelEPEMetric(reach=2.0, reach_levels=2)({"fields": fields}, target)
    with pytest.raises(ValueError, match="reach must be >= 0"):
        reachable_end_point_errors(fields[0], target, -1.0)
    with pytest.raises(ValueError, match="reach_levels must be >= 1"):
        LevelEPEMetric(reach=1.0, reach_levels=0)
    assert math.isnan(LevelEPEMetric(reach=1.0).reach_bound())  # nothing accumulated


def _agreement(sums):
    total = sums.sum(0)  # over the batch: (L - 1, 3)
    return total[:, 0] / (total[:, 1] * total[:, 2]).sqrt(), total[:, 0] / total[:, 2]


def test_level_corrections_against_the_best_within_reach():
    # fractions of the (3, -2) shift recovered after each level: 0.5, 0.75, 0.9 (sizes 8, 16, 32 of 32)
    fields, target = constant_case((0.5, 0.75, 0.9))
    cosine, scale = _agreement(level_corrections(fields, target, radius=2))
    # level 1 applies 0.25 of the shift where 0.5 was left (reach 2 * 2 = 4 px: all of it): half the best correction;
    # level 2 applies 0.15 where 0.25 was left (reach 2 px): 0.6 of it; both in the right direction
    torch.testing.assert_close(cosine, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(scale, torch.tensor([0.5, 0.6], dtype=torch.float64), atol=1e-6, rtol=1e-6)
    # radius 1 at the finest level: 1 px per axis, the best correction of (1.5, -1) left is (1, -1)
    fields, target = constant_case((0.5, 0.5, 0.75))
    cosine, scale = _agreement(level_corrections(fields, target, radius=1))
    applied, best = torch.tensor([0.75, -0.5]), torch.tensor([1.0, -1.0])
    assert float(scale[1]) == pytest.approx(float(applied @ best / (best @ best)))  # 0.625
    assert float(cosine[1]) == pytest.approx(float(applied @ best / (applied.norm() * best.norm())))
    # a level that moves the wrong way
    fields, target = constant_case((0.5, 0.5, 0.25))
    cosine, scale = _agreement(level_corrections(fields, target))
    assert float(cosine[1]) == pytest.approx(-1.0) and float(scale[1]) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="at least two"):
        level_corrections(fields[:1], target)
    with pytest.raises(ValueError, match="radius"):
        level_corrections(fields, target, radius=0)


def test_oracle_fields_of_an_affine_field_leave_the_fine_levels_nothing():
    """A linear field within the coarsest level's reach is held exactly by the coarsest grid (corners aligned), so a
    perfect head's first level carries the whole gain and the others none."""
    grid = torch.stack(torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij"))
    true = (0.1 * (grid - 15.5) + torch.tensor([1.0, -0.5]).view(2, 1, 1))[None]  # 10 % scale + shift, |u| <= 2.1 px
    target = {"ddf": true, "overlap": torch.ones(1, 1, 32, 32)}
    fields = oracle_level_fields(true, [(8, 8), (16, 16), (32, 32)], radius=2)
    assert [tuple(f.shape) for f in fields] == [(1, 2, 8, 8), (1, 2, 16, 16), (1, 2, 32, 32)]
    metric = LevelEPEMetric()
    metric({"fields": fields}, target)
    torch.testing.assert_close(metric.aggregate(), torch.zeros(3, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(fields[0][0, :, 0, 0], true[0, :, 0, 0] / 4)  # in the 8x8 level's voxels


def test_oracle_fields_follow_the_reach_of_the_levels_so_far():
    """A shift of (20, -6) px on 96x96 and a radius-2 head at 1/8, 1/4, 1/2, 1/1: the levels reach 16, 24, 28 and 30 px
    per axis in turn, so after the coarsest level (16, -6) is held (EPE 4 of |(20, -6)|) and the 1/4 level holds all
    of it: shares (1 - r0, r0, 0, 0)."""
    shift = torch.tensor([20.0, -6.0])
    true = shift.view(1, 2, 1, 1).expand(2, 2, 96, 96).clone()
    target = {"ddf": true, "overlap": torch.ones(2, 1, 96, 96)}
    fields = oracle_level_fields(true, [(12, 12), (24, 24), (48, 48), (96, 96)], radius=2)
    torch.testing.assert_close(fields[0][:, :, 3, 5], torch.tensor([[2.0, -0.75]] * 2))  # (16, -6) / 8
    metric = LevelEPEMetric()
    metric({"fields": fields}, target)
    r0 = 4.0 / float(shift.norm())
    torch.testing.assert_close(metric.aggregate(), torch.tensor([r0, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(metric.gain_shares(), torch.tensor([1 - r0, r0, 0, 0], dtype=torch.float64))
    # radius 1: reaches 8, 12, 14, 15 px; the finest levels now carry part of the shift (14 -> 15 px on axis 0)
    metric = LevelEPEMetric()
    metric({"fields": oracle_level_fields(true, [(12, 12), (24, 24), (48, 48), (96, 96)], radius=1)}, target)
    expected = torch.tensor([(12.0 ** 2 + 0.0) ** 0.5, 8.0, 6.0, 5.0], dtype=torch.float64) / float(shift.norm())
    torch.testing.assert_close(metric.aggregate(), expected)


def test_oracle_fields_errors():
    true = torch.zeros(1, 2, 16, 16)
    with pytest.raises(ValueError, match="spatial_dims"):
        oracle_level_fields(torch.zeros(1, 3, 16, 16), [(8, 8)])
    with pytest.raises(ValueError, match="radius"):
        oracle_level_fields(true, [(8, 8)], radius=0)
    with pytest.raises(ValueError, match="level_shapes"):
        oracle_level_fields(true, [(32, 32)])
    with pytest.raises(ValueError, match="level_shapes"):
        oracle_level_fields(true, [])
