# SPDX-License-Identifier: Apache-2.0
"""x2 (bi/tri)linear upsampling as separable passes, one axis at a time, for CPU.

``upsample_linear_2x(x)`` has the values of ``F.interpolate(x, scale_factor=2, mode="bilinear"/"trilinear",
align_corners=False)``: along each axis, output voxel ``2i`` is ``0.75 x[i] + 0.25 x[i-1]`` and ``2i+1`` is
``0.75 x[i] + 0.25 x[i+1]``, with the border voxel repeated. PyTorch's CPU kernel for channels-first tensors does
not vectorise well (about 100 ms forward and 75 ms backward for ``(2, 64, 32^3)`` in bf16 on 2 cores); one
``lerp`` per axis and parity, written into strided views of the output, runs in about 36 and 33 ms
(``benchmarks/bench_step.py`` measures the step). The backward is the transposed pass per axis, in reverse order.

Each pass rounds to the input dtype: in float32 the result is within a few ulps of ``F.interpolate``; in bf16
within a few bf16 ulps (``F.interpolate`` rounds once).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import convert_to_tensor

__all__ = ["upsample_linear_2x", "resize_linear"]


def _double_axis(x: torch.Tensor, axis: int) -> torch.Tensor:
    """``x`` with ``axis`` upsampled x2 (corners not aligned, border repeated)."""
    n = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = 2 * n
    out = x.new_empty(shape)
    pairs = out.unflatten(axis, (n, 2))
    even, odd = pairs.select(axis + 1, 0), pairs.select(axis + 1, 1)
    even.narrow(axis, 0, 1).copy_(x.narrow(axis, 0, 1))
    odd.narrow(axis, n - 1, 1).copy_(x.narrow(axis, n - 1, 1))
    if n > 1:
        torch.lerp(x.narrow(axis, 1, n - 1), x.narrow(axis, 0, n - 1), 0.25, out=even.narrow(axis, 1, n - 1))
        torch.lerp(x.narrow(axis, 0, n - 1), x.narrow(axis, 1, n - 1), 0.25, out=odd.narrow(axis, 0, n - 1))
    return out


def _double_axis_transposed(grad: torch.Tensor, axis: int) -> torch.Tensor:
    """The adjoint of :func:`_double_axis`: ``grad`` with ``2n`` entries on ``axis`` -> ``n``."""
    n = grad.shape[axis] // 2
    pairs = grad.unflatten(axis, (n, 2))
    even, odd = pairs.select(axis + 1, 0), pairs.select(axis + 1, 1)
    out = torch.add(even, odd).mul_(0.75)
    # even[i] also reads x[i-1] and odd[i] x[i+1]; the repeated border voxels give their quarter to the border
    out.narrow(axis, 0, 1).add_(even.narrow(axis, 0, 1), alpha=0.25)
    out.narrow(axis, n - 1, 1).add_(odd.narrow(axis, n - 1, 1), alpha=0.25)
    if n > 1:
        out.narrow(axis, 0, n - 1).add_(even.narrow(axis, 1, n - 1), alpha=0.25)
        out.narrow(axis, 1, n - 1).add_(odd.narrow(axis, 0, n - 1), alpha=0.25)
    return out


class _UpsampleLinear2x(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        for axis in range(x.ndim - 1, 1, -1):  # the last (contiguous) axis first, while the tensor is smallest
            x = _double_axis(x, axis)
        return x

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        for axis in range(2, grad.ndim):  # the transposed passes in reverse order, largest tensor first
            grad = _double_axis_transposed(grad, axis)
        return grad


def upsample_linear_2x(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, *S)`` -> ``(B, C, *2S)``, the values of ``F.interpolate(x, scale_factor=2, mode=...linear,
    align_corners=False)`` (see the module docstring), differentiable, in ``x``'s floating dtype. Any number of
    spatial dims (1 to 3 in practice), any strides; a MetaTensor comes back as a plain tensor."""
    if x.ndim < 3:
        raise ValueError(f"upsample_linear_2x: x must be (B, C, *spatial), got shape {tuple(x.shape)}.")
    if not x.dtype.is_floating_point:
        raise TypeError(f"upsample_linear_2x: x must be floating point, got {x.dtype}.")
    return _UpsampleLinear2x.apply(convert_to_tensor(x, track_meta=False))


def resize_linear(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``F.interpolate(x, size, mode=(bi/tri)linear, align_corners=False)`` for ``(B, C, *S)``, by
    :func:`upsample_linear_2x` on CPU when ``size`` is exactly ``2 * S`` (the values are the same)."""
    spatial = tuple(x.shape[2:])
    doubled = tuple(int(s) for s in size) == tuple(2 * s for s in spatial)
    if doubled and x.device.type == "cpu" and x.dtype.is_floating_point and len(spatial) in (2, 3):
        return upsample_linear_2x(x)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)
