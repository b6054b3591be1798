# SPDX-License-Identifier: Apache-2.0
"""The fine-level options of CoverHead/CoverNet: per-level fields, a feature projector, teacher-forced residuals;
all off by default, leaving the head's output and weights as they were."""

from __future__ import annotations

import pytest
import torch

from monai_cover.ddf import warp
from monai_cover.engines import CoverPrepareBatch
from monai_cover.networks import CoverHead, CoverNet


def small_net(**kwargs):
    torch.manual_seed(0)
    return CoverNet(_backbone(), levels=3, **kwargs)


def _backbone():
    from monai.networks.nets import BasicUNet

    from monai_cover.networks import FeaturePyramid

    return FeaturePyramid(BasicUNet(2, 1, 1, features=(4, 4, 8, 8, 16, 4)))


def test_defaults_unchanged_and_fields_on_request():
    views = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    plain = small_net()
    out = plain(*views)
    assert sorted(out) == ["ddf", "features_a", "features_b"]
    assert plain.head.feature_projector is None and plain.head.teacher_forced_levels == 0
    assert not any("feature_projector" in k for k in plain.state_dict())
    with_fields = small_net(return_fields=True)
    with_fields.load_state_dict(plain.state_dict())
    again = with_fields(*views)
    assert torch.equal(again["ddf"], out["ddf"]) and torch.equal(again["fields"][-1], out["ddf"])
    assert [tuple(f.shape[2:]) for f in again["fields"]] == [(8, 8), (16, 16), (32, 32)]
    # a true ddf passed to a head without teacher forcing changes nothing
    assert sorted(plain(*views, ddf=torch.zeros(2, 2, 32, 32))) == sorted(out)


def test_feature_projector_outputs_and_weights():
    net = small_net(feature_projector=(16, 8))
    out = net(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))
    assert out["projected_a"].shape == (2, 8, 32, 32) and out["projected_b"].shape == (2, 8, 32, 32)
    assert torch.equal(out["projected_a"], net.head.feature_projector(out["features_a"]))
    assert any(k.startswith("head.feature_projector.") for k in net.state_dict())
    assert not any("projector" in k for k in net.backbone_state_dict())  # pretrained weights: the backbone alone


def test_teacher_forced_level_reads_the_residual():
    """Sharp identity-projected features, view B = view A moved by (2, -1): the teacher-forced level must read the
    drawn residual delta (about 0.3 of its size in error here), not -delta or zero."""
    torch.manual_seed(0)
    channels = 32
    head = CoverHead(2, [channels], head_dim=channels, num_heads=1, teacher_forced_levels=1)
    with torch.no_grad():
        head.projections[0][0].weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
        head.projections[0][0].bias.zero_()
    fa = torch.randn(2, channels, 24, 24)
    shift = torch.tensor([2.0, -1.0]).view(1, 2, 1, 1).expand(2, 2, 24, 24)
    pred, target, mask = head.teacher_forced([fa], [warp(fa, shift)], shift,
                                             generator=torch.Generator().manual_seed(3))
    assert len(pred) == 1 and pred[0].shape == target[0].shape == (2, 2, 24, 24) and mask[0].shape == (2, 1, 24, 24)
    assert float(target[0].abs().max()) <= head.max_residual == 1.0
    assert torch.equal(target[0], target[0][..., :1, :1].expand_as(target[0]))  # one residual per sample

    def error(estimate):
        return float(((estimate - target[0]).abs() * mask[0]).sum() / mask[0].sum())

    assert error(pred[0]) < 0.4 * error(torch.zeros_like(pred[0]))
    assert error(pred[0]) < 0.2 * error(-target[0])


def test_teacher_forced_offsets_give_the_attention_and_the_residual_distribution():
    """The same residuals as the displacement target, returned as the level's attention (whose mean is the
    displacement the level would return) and the residual's offset distribution (whose mean is the residual)."""
    from monai_cover.losses import OffsetCrossEntropyLoss
    from monai_cover.networks.blocks import neighbourhood_offsets

    torch.manual_seed(0)
    channels = 16
    kwargs = dict(head_dim=channels, num_heads=1, teacher_forced_levels=1)
    displacement = CoverHead(2, [channels], **kwargs)
    offsets = CoverHead(2, [channels], teacher_forced_target="offsets", **kwargs)
    offsets.load_state_dict(displacement.state_dict())
    fa = torch.randn(2, channels, 20, 20)
    shift = torch.tensor([1.0, -2.0]).view(1, 2, 1, 1).expand(2, 2, 20, 20)
    fb = warp(fa, shift)
    w, delta, mask = displacement.teacher_forced([fa], [fb], shift, generator=torch.Generator().manual_seed(3))
    log_probs, dist, mask_o = offsets.teacher_forced([fa], [fb], shift, generator=torch.Generator().manual_seed(3))
    assert log_probs[0].shape == (2, 1, 25, 20, 20) and dist[0].shape == (2, 25, 20, 20)
    assert torch.equal(mask_o[0], mask[0])
    table = torch.tensor(neighbourhood_offsets(2, 2), dtype=torch.float32)
    torch.testing.assert_close(torch.einsum("bk...,kd->bd...", dist[0], table), delta[0])
    torch.testing.assert_close(torch.einsum("bhk...,kd->bhd...", log_probs[0].exp(), table)[:, 0], w[0],
                               atol=1e-5, rtol=1e-5)
    assert float(OffsetCrossEntropyLoss()(log_probs[0], dist[0], mask_o[0])) > 0


def test_teacher_forced_through_the_net_and_prepare_batch():
    net = small_net(teacher_forced_levels=2)
    batch = {"view_a": torch.rand(2, 1, 32, 32), "view_b": torch.rand(2, 1, 32, 32), "ddf": torch.zeros(2, 2, 32, 32),
             "overlap": torch.ones(2, 1, 32, 32)}
    inputs, targets, args, kwargs = CoverPrepareBatch(network_ddf=True)(batch)
    assert torch.equal(kwargs["ddf"], batch["ddf"]) and CoverPrepareBatch()(batch)[3] == {}
    out = net(inputs, *args, **kwargs)
    assert [tuple(r.shape[2:]) for r in out["residuals"]] == [(16, 16), (32, 32)]
    assert len(out["residual_targets"]) == len(out["residual_masks"]) == 2
    assert "residuals" not in net(inputs, *args)  # no true field, no teacher forcing (e.g. at inference)


@pytest.mark.parametrize("kwargs, match", [
    (dict(teacher_forced_levels=4), "teacher_forced_levels"),
    (dict(teacher_forced_levels=1, max_residual=3.0), "max_residual"),
    (dict(feature_projector=()), "channels"),
    (dict(teacher_forced_levels=1, teacher_forced_target="logits"), "teacher_forced_target"),
])
def test_option_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CoverHead(2, (8, 8, 8), **kwargs)


@pytest.mark.parametrize("num_heads, rank", [(None, 8), (2, 16)])
def test_displacement_gradient_spans_only_the_finest_projection(num_heads, rank):
    """The finest backbone features reach the displacement only through the finest level's 1x1 projection, so its
    gradient there lies in that projection's row space: 8 of 16 channels with the reference's single 8-wide head,
    all 16 with two heads (``num_heads``), which is why the bundles' variant study measures wider fine heads."""
    torch.manual_seed(0)
    head = CoverHead(2, (16, 16), num_heads=num_heads)
    g = torch.Generator().manual_seed(1)
    coarse_a, coarse_b = (torch.randn(1, 16, 8, 8, generator=g) for _ in range(2))
    fine_a, fine_b = (torch.randn(1, 16, 16, 16, generator=g).requires_grad_() for _ in range(2))
    ddf = head([coarse_a, fine_a], [coarse_b, fine_b])
    (ddf * torch.randn(ddf.shape, generator=g)).sum().backward()
    for grad in (fine_a.grad, fine_b.grad):
        singular = torch.linalg.svdvals(grad.reshape(16, -1).double())
        assert int((singular > 1e-6 * singular[0]).sum()) == rank
