# SPDX-License-Identifier: Apache-2.0
"""CoverProjection: the 1x1 conv + one-group GroupNorm, and ``pair``, which warps the projection of the key instead
of the key itself (the same values, since the warp is linear per channel with zeros outside)."""

from __future__ import annotations

import pytest
import torch

from monai_cover.ddf import warp
from monai_cover.networks.blocks import CoverProjection


def random_projection(dims: int, cin: int, cout: int, norm=("group", {"num_groups": 1})) -> CoverProjection:
    torch.manual_seed(0)
    proj = CoverProjection(dims, cin, cout, norm=norm).double()
    with torch.no_grad():  # non-trivial bias and affine norm, so that their order against the warp matters
        for p in proj.parameters():
            p.normal_()
    return proj


@pytest.mark.parametrize("dims, spatial", [(2, (7, 10)), (3, (5, 8, 6))])
@pytest.mark.parametrize("norm", [("group", {"num_groups": 1}), None])
def test_pair_equals_projecting_the_warped_key(dims, spatial, norm):
    proj = random_projection(dims, 12, 5, norm)
    g = torch.Generator().manual_seed(1)
    query = torch.randn(2, 12, *spatial, dtype=torch.float64, generator=g, requires_grad=True)
    key = torch.randn(2, 12, *spatial, dtype=torch.float64, generator=g, requires_grad=True)
    # up to 4 voxels: many samples fall outside the image, where the key is zero but its projection is not
    ddf = (4 * torch.randn(2, dims, *spatial, dtype=torch.float64, generator=g)).requires_grad_()
    got_q, got_k = proj.pair(query, key, ddf)
    expected = proj(torch.cat([query, warp(key, ddf)]))
    torch.testing.assert_close(got_q, expected[:2], rtol=0, atol=1e-12)
    torch.testing.assert_close(got_k, expected[2:], rtol=0, atol=1e-12)
    w = torch.randn(expected.shape, dtype=torch.float64, generator=g)
    grads = torch.autograd.grad((torch.cat([got_q, got_k]) * w).sum(), (query, key, ddf, *proj.parameters()))
    grads_ref = torch.autograd.grad((expected * w).sum(), (query, key, ddf, *proj.parameters()))
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_pair_without_ddf_is_the_batched_projection():
    proj = random_projection(3, 6, 4)
    query, key = torch.randn(1, 6, 4, 5, 3, dtype=torch.float64), torch.randn(1, 6, 4, 5, 3, dtype=torch.float64)
    got_q, got_k = proj.pair(query, key)
    torch.testing.assert_close(got_q, proj(query), rtol=0, atol=1e-12)
    torch.testing.assert_close(got_k, proj(key), rtol=0, atol=1e-12)


def test_pair_under_autocast_is_float32_and_close_to_fp32():
    proj = random_projection(3, 16, 8).float()
    g = torch.Generator().manual_seed(2)
    query, key = torch.randn(1, 16, 6, 7, 5, generator=g), torch.randn(1, 16, 6, 7, 5, generator=g)
    ddf = 2 * torch.randn(1, 3, 6, 7, 5, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got_q, got_k = proj.pair(query.bfloat16(), key.bfloat16(), ddf)
    assert got_q.dtype == got_k.dtype == torch.float32
    ref_q, ref_k = proj(query), proj(warp(key, ddf))
    # normalised outputs of unit scale; bf16 keeps about 3 significant digits
    assert (got_q - ref_q).abs().max() < 0.1 and (got_k - ref_k).abs().max() < 0.1


def test_errors_name_the_shapes():
    proj = CoverProjection(3, 8, 4)
    good = torch.randn(1, 8, 4, 4, 4)
    with pytest.raises(ValueError, match=r"\(1, 7, 4, 4, 4\)"):
        proj.pair(torch.randn(1, 7, 4, 4, 4), torch.randn(1, 7, 4, 4, 4), torch.zeros(1, 3, 4, 4, 4))
    with pytest.raises(ValueError, match=r"expected \(B, 8, \*spatial\)"):
        proj(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match=r"query \(1, 8, 4, 4, 4\) and key \(1, 8, 4, 4, 5\)"):
        proj.pair(good, torch.randn(1, 8, 4, 4, 5))
    with pytest.raises(ValueError, match="in_channels and out_channels"):
        CoverProjection(3, 0, 4)
    assert proj.pair(good, good)[0].shape == (1, 4, 4, 4, 4)
