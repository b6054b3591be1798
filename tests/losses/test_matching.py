# SPDX-License-Identifier: Apache-2.0
"""OffsetCrossEntropyLoss: a matching loss on the attention, which an L1 loss on its mean is not."""

from __future__ import annotations

import math

import pytest
import torch

from monai_cover.losses import CoverLoss, OffsetCrossEntropyLoss, VectorRegressionLoss
from monai_cover.networks.blocks import neighbourhood_offsets, offset_distribution

OFFSETS = neighbourhood_offsets(2, 2)


def _log_probs(probs: torch.Tensor, size=(3, 4)) -> torch.Tensor:
    """(B, K) probabilities -> (B, 1, K, *size) log-probabilities, the same at every voxel."""
    return probs.log().view(*probs.shape[:1], 1, probs.shape[1], 1, 1).expand(-1, -1, -1, *size)


def _target(u: torch.Tensor, size=(3, 4)) -> torch.Tensor:
    t = offset_distribution(u, 2)
    return t.view(*t.shape, 1, 1).expand(-1, -1, *size)


def test_flat_attention_with_the_right_mean_is_not_a_minimum():
    """For a zero residual a uniform attention has the right mean (0): L1 on the mean is 0 for it and for a
    peaked one, the cross-entropy is log(25) for the first and about 0 for the second."""
    uniform = torch.full((1, 25), 1 / 25)
    peaked = torch.full((1, 25), 1e-6)
    peaked[0, OFFSETS.index((0, 0))] = 1 - 24e-6
    offsets = torch.tensor(OFFSETS, dtype=torch.float32)
    for probs in (uniform, peaked):
        mean = (probs @ offsets).view(1, 2, 1, 1).expand(1, 2, 3, 4)
        assert float(VectorRegressionLoss()(mean, torch.zeros(1, 2, 3, 4))) < 1e-5
    target = _target(torch.zeros(1, 2))
    loss = OffsetCrossEntropyLoss()
    assert float(loss(_log_probs(uniform), target)) == pytest.approx(math.log(25), rel=1e-5)
    assert float(loss(_log_probs(peaked), target)) < 1e-4


def test_sub_voxel_target_and_heads_and_mask():
    u = torch.tensor([[0.25, -1.0]])
    target = _target(u)
    exact = _log_probs(offset_distribution(u, 2).clamp_min(1e-12) / offset_distribution(u, 2).clamp_min(1e-12).sum())
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    loss = OffsetCrossEntropyLoss()
    assert float(loss(exact, target)) == pytest.approx(entropy, abs=1e-6)  # the minimum is the target's entropy
    wrong = _log_probs(torch.full((1, 25), 1 / 25))
    two_heads = torch.cat([exact, wrong], 1)
    assert float(loss(two_heads, target)) == pytest.approx((entropy + math.log(25)) / 2, abs=1e-5)  # mean of heads
    mask = torch.zeros(1, 1, 3, 4)
    mask[..., 0, 0] = 1
    mixed = exact.clone()
    mixed[..., 1:, :] = wrong[..., 1:, :]  # wrong everywhere but row 0, masked out
    assert float(loss(mixed, target, mask)) == pytest.approx(entropy, abs=1e-6)
    assert OffsetCrossEntropyLoss(reduction="none")(two_heads, target).shape == (1,)


def test_left_out_offsets_give_finite_loss_and_gradient():
    logits = torch.randn(1, 1, 25, 3, 4, requires_grad=True)
    outside = torch.zeros(25, dtype=torch.bool)
    outside[[i for i, o in enumerate(OFFSETS) if o[0] < 0]] = True  # as on the image's first row
    log_probs = torch.log_softmax(logits.masked_fill(outside.view(1, 1, 25, 1, 1), float("-inf")), 2)
    value = OffsetCrossEntropyLoss()(log_probs, _target(torch.tensor([[0.5, 1.5]])))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_cover_loss_scores_attentions_with_the_cross_entropy():
    """The residual term dispatches on what the head returned: attentions (one more axis) -> cross-entropy."""
    target = _target(torch.zeros(2, 2))
    uniform = _log_probs(torch.full((2, 25), 1 / 25))
    out = {"ddf": torch.zeros(2, 2, 3, 4), "residuals": [uniform], "residual_targets": [target],
           "residual_masks": [torch.ones(2, 1, 3, 4)]}
    loss = CoverLoss(consistency_weight=0.0, spread_weight=0.0, residual_weight=2.0)
    terms = loss.terms(out, {"ddf": torch.zeros(2, 2, 3, 4)})
    assert float(terms["residual"]) == pytest.approx(math.log(25), rel=1e-5)
    assert float(loss(out, {"ddf": torch.zeros(2, 2, 3, 4)})) == pytest.approx(2 * math.log(25), rel=1e-5)


def test_shape_errors():
    loss = OffsetCrossEntropyLoss()
    with pytest.raises(ValueError, match=r"\(B, heads, K, \*S\)"):
        loss(torch.zeros(1, 25, 3, 4), torch.zeros(1, 25, 3, 4))
    with pytest.raises(ValueError, match="mask"):
        loss(torch.zeros(1, 1, 25, 3, 4), torch.zeros(1, 25, 3, 4), torch.ones(1, 1, 3, 5))
