# SPDX-License-Identifier: Apache-2.0
"""Gradient norms per loss term and backbone block (monai_cover.metrics.gradients) on hand-computable cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from monai_cover.metrics import backbone_blocks, gradient_shares, term_block_gradient_norms


def two_scalar_blocks():
    """h = 2 x, y = 3 h at x = 1: dy/dw_a = w_b x = 3, dy/dw_b = h = 2; dh/dw_a = 1, dh/dw_b = 0."""
    a, b = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        a.weight.fill_(2.0), b.weight.fill_(3.0)
    h = a(torch.ones(1, 1))
    return {"a": a, "b": b}, {"y": b(h).sum(), "h": h.sum()}


def test_norms_and_shares_by_hand():
    blocks, terms = two_scalar_blocks()
    norms = term_block_gradient_norms(terms, blocks)
    def close(got, expected):
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key] == pytest.approx(expected[key])

    close(norms, {"y": {"a": 3.0, "b": 2.0}, "h": {"a": 1.0, "b": 0.0}})
    close(gradient_shares(norms), {"y": {"a": 0.6, "b": 0.4}, "h": {"a": 1.0, "b": 0.0}})
    close(gradient_shares(norms, over="terms"), {"a": {"y": 0.75, "h": 0.25}, "b": {"y": 1.0, "h": 0.0}})
    assert all(p.grad is None for m in blocks.values() for p in m.parameters())  # .grad left alone


def test_zero_gradient_gives_nan_share_and_errors():
    assert math.isnan(gradient_shares({"t": {"a": 0.0}})["t"]["a"])
    with pytest.raises(ValueError, match="over"):
        gradient_shares({}, over="levels")
    blocks, terms = two_scalar_blocks()
    with pytest.raises(ValueError, match="scalar"):
        term_block_gradient_norms({"v": torch.ones(2, requires_grad=True) * 2}, blocks)


def test_backbone_blocks_of_a_feature_pyramid():
    from monai.networks.nets import BasicUNet

    from monai_cover.networks import FeaturePyramid

    blocks = backbone_blocks(FeaturePyramid(BasicUNet(2, 1, 1, features=(4, 4, 4, 4, 4, 4))))
    assert list(blocks) == ["conv_0", "down_1", "down_2", "down_3", "down_4", "upcat_4", "upcat_3", "upcat_2",
                            "upcat_1", "final_conv"]
