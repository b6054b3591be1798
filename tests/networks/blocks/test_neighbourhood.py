# SPDX-License-Identifier: Apache-2.0
"""The mixture of vectors' attention as log-probabilities, and the offset distribution of a sub-voxel displacement."""

from __future__ import annotations

import pytest
import torch

from monai_cover.networks.blocks import (
    mixture_of_vectors,
    neighbourhood_log_softmax,
    neighbourhood_offsets,
    offset_distribution,
)


def _expected_offset(log_probs: torch.Tensor, radius: int) -> torch.Tensor:
    d = log_probs.ndim - 3
    offsets = torch.tensor(neighbourhood_offsets(radius, d), dtype=log_probs.dtype)  # (K, d)
    probs = log_probs.exp()  # (B, H, K, *S)
    return torch.einsum("bhk...,kd->bhd...", probs, offsets).mean(1)


@pytest.mark.parametrize("shape, heads, radius", [((2, 8, 9, 11), 2, 2), ((1, 4, 6, 5, 7), 1, 2), ((1, 6, 7, 8), 3, 1)])
def test_attention_has_the_mixture_of_vectors_as_its_mean(shape, heads, radius):
    g = torch.Generator().manual_seed(0)
    query = 3 * torch.randn(shape, generator=g, dtype=torch.float64)
    key = 3 * torch.randn(shape, generator=g, dtype=torch.float64)
    log_probs = neighbourhood_log_softmax(query, key, radius, heads)
    k = (2 * radius + 1) ** (len(shape) - 2)
    assert log_probs.shape == (shape[0], heads, k, *shape[2:]) and log_probs.dtype == torch.float64
    torch.testing.assert_close(log_probs.exp().sum(2), torch.ones(shape[0], heads, *shape[2:], dtype=torch.float64))
    torch.testing.assert_close(_expected_offset(log_probs, radius),
                               mixture_of_vectors(query, key, radius, heads, backend="torch"))


def test_offsets_outside_the_image_are_left_out():
    log_probs = neighbourhood_log_softmax(torch.randn(1, 4, 5, 6), torch.randn(1, 4, 5, 6), radius=2)
    offsets = neighbourhood_offsets(2, 2)
    corner = log_probs[0, 0, :, 0, 0]  # voxel (0, 0): only offsets with both components >= 0 are inside
    for i, o in enumerate(offsets):
        assert torch.isfinite(corner[i]) == (o[0] >= 0 and o[1] >= 0), o
    assert torch.isfinite(log_probs[:, :, offsets.index((0, 0))]).all()


def test_peaked_features_put_the_attention_on_the_true_offset():
    """key(p + (1, -2)) == query(p) with random features of equal norm: the attention's argmax is that offset."""
    g = torch.Generator().manual_seed(1)
    key = 4 * torch.nn.functional.normalize(torch.randn(1, 16, 12, 12, generator=g), dim=1)
    query = torch.roll(key, shifts=(-1, 2), dims=(2, 3))  # query(p) = key(p + (1, -2))
    log_probs = neighbourhood_log_softmax(query, key, radius=2)
    best = log_probs[0, 0].argmax(0)[2:-2, 2:-2]  # away from the border and the roll's wrap-around
    assert (best == neighbourhood_offsets(2, 2).index((1, -2))).all()


def test_offset_distribution_interpolates_the_displacement():
    u = torch.tensor([[0.4, -1.0], [2.0, -0.3], [0.0, 0.0]])
    t = offset_distribution(u, radius=2)
    offsets = torch.tensor(neighbourhood_offsets(2, 2), dtype=torch.float32)
    assert t.shape == (3, 25) and (t >= 0).all()
    torch.testing.assert_close(t.sum(1), torch.ones(3))
    torch.testing.assert_close(t @ offsets, u)
    assert (t[0] > 0).sum() == 2 and (t[1] > 0).sum() == 2  # one axis on an integer: two offsets
    assert t[2, neighbourhood_offsets(2, 2).index((0, 0))] == 1
    field = u[:2].view(2, 2, 1, 1).expand(2, 2, 3, 4)  # a field gives one distribution per voxel
    torch.testing.assert_close(offset_distribution(field, 2), t[:2].view(2, 25, 1, 1).expand(2, 25, 3, 4))
    t3 = offset_distribution(torch.tensor([[0.5, 0.5, 0.5]]), radius=1)
    assert t3.shape == (1, 27) and torch.allclose(t3[t3 > 0], torch.full((8,), 0.125))


@pytest.mark.parametrize("call, match", [
    (lambda: neighbourhood_log_softmax(torch.zeros(1, 4, 5, 5), torch.zeros(1, 4, 5, 6)), "same"),
    (lambda: neighbourhood_log_softmax(torch.zeros(1, 5, 5, 5), torch.zeros(1, 5, 5, 5), num_heads=2), "divisible"),
    (lambda: offset_distribution(torch.tensor([[2.5, 0.0]]), radius=2), "radius=2"),
    (lambda: offset_distribution(torch.zeros(2, 4), radius=2), r"\(B, d\)"),
    (lambda: neighbourhood_offsets(0, 2), "radius"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
