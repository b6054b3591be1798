# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the losses."""

from __future__ import annotations

import warnings

import torch
from monai.utils import LossReduction, convert_to_tensor

__all__ = ["reduce_per_sample", "channel_cosine"]


def reduce_per_sample(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply a MONAI ``LossReduction`` to per-sample (or per-anchor) loss values ``(B,)``."""
    if reduction == LossReduction.MEAN.value:
        return values.mean()
    if reduction == LossReduction.SUM.value:
        return values.sum()
    return values


def _channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(1, keepdim=True)`` without the full-size product: on CPU, on ``(1, 32, 64^3)`` features,
    einsum's reduction took 5.5 ms against 10 ms for the product and sum and 20 ms for ``linalg.vector_norm`` over
    the channel axis."""
    return torch.einsum("bc...,bc...->b...", a, b).unsqueeze(1)


class _ChannelCosine(torch.autograd.Function):
    """Cosine over axis 1 with an analytic backward; saves the inputs and per-voxel scalars only."""

    @staticmethod
    def forward(ctx, a, b, eps):  # type: ignore[override]
        norm_a, norm_b = _channel_dot(a, a).sqrt_(), _channel_dot(b, b).sqrt_()
        clamped_a, clamped_b = norm_a.clamp_min(eps), norm_b.clamp_min(eps)
        cos = _channel_dot(a, b).div_(clamped_a * clamped_b)
        ctx.save_for_backward(a, b, clamped_a, clamped_b, cos, norm_a > eps, norm_b > eps)
        return cos

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        a, b, clamped_a, clamped_b, cos, free_a, free_b = ctx.saved_tensors
        # d cos / d a = b / (|a| |b|) - cos * a / |a|^2 (the second term vanishes where |a| is clamped to eps)
        common = grad / (clamped_a * clamped_b)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.mul(b, common).addcmul_(a, grad * cos * free_a / clamped_a.square(), value=-1)
        if ctx.needs_input_grad[1]:
            grad_b = torch.mul(a, common).addcmul_(b, grad * cos * free_b / clamped_b.square(), value=-1)
        return grad_a, grad_b, None


def channel_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity over the channel axis, ``(B, C, *S)`` x2 -> ``(B, 1, *S)``.

    The values of ``F.cosine_similarity(a, b, dim=1, eps=eps).unsqueeze(1)`` (each norm clamped to at least
    ``eps``, so a zero vector gives 0), computed with fewer full-size temporaries: the backward keeps ``a``, ``b``
    and per-voxel scalars instead of the normalised copies, which saves time and memory on large 3D feature maps.
    """
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"channel_cosine: a and b must be (B, C, ...) of one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}.")
    dtype = torch.promote_types(a.dtype, b.dtype)
    return _ChannelCosine.apply(a.to(dtype), b.to(dtype), float(eps))


def _plain(*tensors: torch.Tensor | None) -> tuple:
    """MetaTensors as plain tensors (same graph): the losses return plain tensors."""
    return tuple(None if t is None else convert_to_tensor(t, track_meta=False) for t in tensors)


def _work_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_mask(mask: torch.Tensor | None, like: torch.Tensor, name: str) -> torch.Tensor | None:
    """``mask`` as ``(B, 1, *S)``; accepts ``(B, 1, *S)`` or ``(B, *S)``."""
    if mask is None:
        return None
    expected = (like.shape[0], 1, *like.shape[2:])
    if tuple(mask.shape) == (like.shape[0], *like.shape[2:]):
        mask = mask.unsqueeze(1)
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"{name}: mask must have shape {expected} (or without the channel axis), got {tuple(mask.shape)}."
        )
    return mask


def _masked_reduce(values: torch.Tensor, mask: torch.Tensor | None, reduction: str, name: str) -> torch.Tensor:
    """Reduce per-voxel ``values`` ``(B, 1, *S)`` over the voxels where ``mask > 0`` (weighted by ``mask``).

    ``"mean"``: sum over the masked voxels of the whole batch / their count (a scalar); ``"sum"``: that sum;
    ``"none"``: the per-sample masked mean, shape ``(B,)``. Empty masks give 0 (never NaN) and a warning.
    """
    if mask is None:
        weight = torch.ones_like(values)
        selected = values
    else:
        weight = torch.where(mask > 0, mask.to(values.dtype), torch.zeros_like(values))
        # where, not a product: NaN/inf outside the mask must not leak into the loss or its gradient
        selected = torch.where(mask > 0, values, torch.zeros_like(values)) * weight
    numerator = selected.flatten(1).sum(1)  # (B,)
    count = weight.flatten(1).sum(1)  # (B,)
    if reduction == LossReduction.SUM.value:
        if mask is not None and not bool((count > 0).all()):
            warnings.warn(f"{name}: the overlap mask is empty for some samples; they contribute 0.", stacklevel=3)
        return numerator.sum()
    if reduction == LossReduction.NONE.value:
        empty = count <= 0
        if bool(empty.any()):
            warnings.warn(
                f"{name}: the overlap mask is empty for {int(empty.sum())} sample(s); their loss is 0.", stacklevel=3
            )
        return torch.where(empty, numerator * 0.0, numerator / count.clamp_min(torch.finfo(count.dtype).tiny))
    total = count.sum()
    if not bool(total > 0):
        warnings.warn(f"{name}: the overlap mask is empty for the whole batch; the loss is 0.", stacklevel=3)
        return numerator.sum() * 0.0
    return numerator.sum() / total
