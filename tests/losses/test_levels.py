# SPDX-License-Identifier: Apache-2.0
"""Deep supervision of the head (monai_cover.losses.levels) and the fine-level options of CoverLoss."""

from __future__ import annotations

import math

import pytest
import torch

from monai_cover.ddf import identity_grid
from monai_cover.losses import CoverLoss
from monai_cover.losses.levels import LevelVectorRegressionLoss, ddf_on_level

SIZES = ((8, 8), (16, 16), (32, 32))
SHIFT = torch.tensor([3.0, -2.0])


def shift_target(batch=2):
    true = SHIFT.view(1, 2, 1, 1).expand(batch, 2, 32, 32).clone()
    return true, torch.ones(batch, 1, 32, 32)


def affine_field(batch=2, size=32, full=32):
    """A rotation-and-shift field, linear in the position, on a ``size`` grid in that grid's voxels: voxel ``i`` sits
    at full-resolution position ``i (full - 1) / (size - 1)`` (corners aligned) and one voxel is ``full / size``
    full-resolution voxels."""
    p = identity_grid((size, size))[None].expand(batch, -1, -1, -1) * (full - 1) / (size - 1) - (full - 1) / 2
    a = torch.tensor([[-0.02, -0.1], [0.1, -0.02]])
    field = torch.einsum("ij,bjhw->bihw", a, p) + torch.tensor([1.5, -0.5]).view(1, 2, 1, 1)
    return field * size / full


def test_true_field_at_every_level_gives_zero():
    true = affine_field()
    assert torch.allclose(ddf_on_level(true, (8, 8)), affine_field(size=8), atol=1e-5)
    fields = [affine_field(size=s[0]) for s in SIZES]
    assert float(LevelVectorRegressionLoss()(fields, true)) < 1e-5
    # a constant shift is shift / 2**k on a level k halvings down
    true, mask = shift_target()
    fields = [(SHIFT / (32 / s[0])).view(1, 2, 1, 1).expand(2, 2, *s) for s in SIZES]
    assert float(LevelVectorRegressionLoss()(fields, true, mask)) < 1e-6
    # and a level's field that forgets the division costs its error
    assert float(LevelVectorRegressionLoss()([true[..., ::4, ::4]], true, mask)) == pytest.approx(5.0 * 3 / 4)


def test_errors_are_in_each_levels_voxels_with_per_level_weights():
    true, mask = shift_target()
    # full-resolution numbers on every level: level k is off by |shift| (1 - 2**-k) per component, L1 over 2 axes
    fields = [SHIFT.view(1, 2, 1, 1).expand(2, 2, *s) for s in SIZES]
    per_level = LevelVectorRegressionLoss().per_level(fields, true, mask)
    expected = [5.0 * (1 - 1 / 4), 5.0 * (1 - 1 / 2), 0.0]
    assert [float(v) for v in per_level] == pytest.approx(expected)
    value = LevelVectorRegressionLoss(weights=(1.0, 0.0, 2.0))(fields, true, mask)
    assert float(value) == pytest.approx(expected[0] + 2 * expected[2])
    assert LevelVectorRegressionLoss(weights=(1.0, 0.0, 2.0)).per_level(fields, true, mask)[1] is None
    with pytest.raises(ValueError, match="one weight per level"):
        LevelVectorRegressionLoss(weights=(1.0, 1.0))(fields, true, mask)
    with pytest.raises(ValueError, match=">= 0"):
        LevelVectorRegressionLoss(weights=-1.0)


def test_level_mask_leaves_out_coarse_voxels_that_leave_the_grid():
    true, _ = shift_target(batch=1)
    true[:, 0] = 6.0  # six rows down: on the 8x8 level 1.5 rows, so rows 0..5 of 8 stay inside
    fields = [torch.zeros(1, 2, *s) for s in SIZES[:1]]
    value = LevelVectorRegressionLoss().per_level(fields, true)[0]
    assert float(value) == pytest.approx(1.5 + 0.5)  # |1.5| + |-2 / 4| on the voxels inside


def test_cover_loss_options_terms_and_formula():
    assert CoverLoss().formula == "L_vec + L_con + L_spread"
    assert CoverLoss.paper().formula == "L_vec + L_con"
    loss = CoverLoss(level_weights=1.0, residual_weight=0.5)
    assert loss.formula == "L_vec + L_levels + L_con + L_spread + 0.5*L_residual"
    assert CoverLoss(consistency_weight=0, spread_weight=0, infonce_weight=1.0).formula == "L_vec + L_infonce"
    true, mask = shift_target()
    out = {"ddf": torch.zeros(2, 2, 32, 32), "features_a": torch.randn(2, 4, 32, 32),
           "features_b": torch.randn(2, 4, 32, 32)}
    with pytest.raises(KeyError, match="return_fields"):
        CoverLoss(level_weights=1.0)(out, {"ddf": true, "overlap": mask})
    with pytest.raises(KeyError, match="teacher_forced_levels"):
        CoverLoss(residual_weight=1.0)(out, {"ddf": true, "overlap": mask})
    with pytest.raises(ValueError, match="reduction"):
        CoverLoss(infonce_weight=1.0, reduction="none")
    with pytest.raises(ValueError, match="no parameters"):
        CoverLoss(infonce_weight=1.0, infonce_kwargs={"in_channels": 4})
    out["fields"] = [torch.zeros(2, 2, *s) for s in SIZES]
    terms = CoverLoss(level_weights=1.0, consistency_weight=0.0, spread_weight=0.0).terms(
        out, {"ddf": true, "overlap": mask})
    assert sorted(terms) == ["levels", "vector"]
    assert float(terms["levels"]) == pytest.approx(5.0 / 4 + 5.0 / 2 + 5.0)
    assert float(terms["vector"]) == pytest.approx(5.0)


def test_hybrid_infonce_term():
    torch.manual_seed(0)
    true, mask = shift_target()
    true[:] = 0.0
    features = torch.randn(2, 8, 32, 32)
    loss = CoverLoss(consistency_weight=0.0, spread_weight=0.0, infonce_weight=1.0,
                     infonce_kwargs={"num_samples": 64})
    out = {"ddf": torch.zeros(2, 2, 32, 32), "features_a": features, "features_b": features.clone()}
    terms = loss.terms(out, {"ddf": true, "overlap": mask})
    assert sorted(terms) == ["infonce", "vector"] and float(terms["vector"]) == 0.0
    # identical views with random features: the positive is the best pair, so far below chance log(2 * 128 - 1)
    assert 0 < float(terms["infonce"]) < 0.5 * math.log(255)
    shuffled = {**out, "features_b": features[:, torch.randperm(8)]}
    assert float(loss.terms(shuffled, {"ddf": true, "overlap": mask})["infonce"]) > float(terms["infonce"])


def test_residual_term_is_the_mean_over_levels():
    true, mask = shift_target()
    out = {"ddf": true.clone(), "residuals": [torch.zeros(2, 2, 16, 16), torch.ones(2, 2, 32, 32)],
           "residual_targets": [torch.ones(2, 2, 16, 16), torch.ones(2, 2, 32, 32)],
           "residual_masks": [torch.ones(2, 1, 16, 16), torch.ones(2, 1, 32, 32)]}
    loss = CoverLoss(consistency_weight=0.0, spread_weight=0.0, residual_weight=2.0)
    terms = loss.terms(out, {"ddf": true, "overlap": mask})
    assert float(terms["residual"]) == pytest.approx((2.0 + 0.0) / 2)
    assert float(loss(out, {"ddf": true, "overlap": mask})) == pytest.approx(2.0 * 1.0)
