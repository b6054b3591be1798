# SPDX-License-Identifier: Apache-2.0
"""upsample_linear_2x / resize_linear: the values and gradients of F.interpolate's x2 (bi/tri)linear upsampling
(corners not aligned), computed as separable passes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from monai_cover.networks.blocks import resize_linear, upsample_linear_2x

MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def interpolate_2x(x):
    return F.interpolate(x, scale_factor=2, mode=MODES[x.ndim - 2], align_corners=False)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4, 6), (1, 2, 1, 3, 2), (1, 1, 7, 1), (3, 2, 4, 5), (2, 2, 9)])
def test_values_and_gradients_equal_interpolate(shape):
    g = torch.Generator().manual_seed(len(shape))
    x = torch.randn(shape, dtype=torch.float64, generator=g, requires_grad=True)
    expected, got = interpolate_2x(x), upsample_linear_2x(x)
    assert got.shape == expected.shape == (*shape[:2], *(2 * s for s in shape[2:]))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)
    seed = torch.randn(expected.shape, dtype=torch.float64, generator=g)
    (grad,) = torch.autograd.grad((got * seed).sum(), x)
    (grad_expected,) = torch.autograd.grad((expected * seed).sum(), x)
    torch.testing.assert_close(grad, grad_expected, rtol=0, atol=1e-13)


def test_gradcheck():
    x = torch.randn(1, 2, 3, 1, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(upsample_linear_2x, (x,))
    assert torch.autograd.gradgradcheck(upsample_linear_2x, (x,))


def test_strided_inputs_float32_and_bfloat16():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 8, 6, 10, generator=g).contiguous(memory_format=torch.channels_last_3d)
    expected = interpolate_2x(x.contiguous())
    torch.testing.assert_close(upsample_linear_2x(x), expected, rtol=0, atol=1e-6)
    transposed = x.transpose(2, 4)  # a view with the last axis not contiguous
    torch.testing.assert_close(upsample_linear_2x(transposed), interpolate_2x(transposed.contiguous()), rtol=0,
                               atol=1e-6)
    low = upsample_linear_2x(x.bfloat16())
    assert low.dtype == torch.bfloat16
    # each of the three passes rounds to bf16 (8 bits of mantissa): a few bf16 ulps from the exact values
    assert ((low.float() - expected).abs() / expected.abs().clamp_min(1.0)).max() < 2**-6


def test_metatensor_and_errors():
    x = MetaTensor(torch.rand(1, 1, 3, 4), affine=torch.eye(4))
    out = upsample_linear_2x(x)
    assert type(out) is torch.Tensor
    torch.testing.assert_close(out, interpolate_2x(x.as_tensor()))
    with pytest.raises(ValueError, match=r"\(B, C, \*spatial\).*\(4,\)"):
        upsample_linear_2x(torch.rand(4))
    with pytest.raises(TypeError, match="floating point.*torch.int64"):
        upsample_linear_2x(torch.ones(1, 1, 2, 2, dtype=torch.long))


@pytest.mark.parametrize("size", [(8, 12), (7, 12), (4, 6), (9, 13)])
def test_resize_linear_is_interpolate_for_any_size(size):
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(resize_linear(x, size),
                               F.interpolate(x, size=size, mode="bilinear", align_corners=False), rtol=0, atol=1e-14)
