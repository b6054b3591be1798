# SPDX-License-Identifier: Apache-2.0
"""Fused Triton kernels of the mixture of vectors (forward and backward); the CUDA backend of
:func:`monai_cover.networks.blocks.mixture_of_vectors`.

Same definition as the PyTorch op (see :mod:`monai_cover.networks.blocks.mixture_of_vectors`): heads interleaved
(channel ``c`` belongs to head ``c % num_heads``), offsets of the cube ``[-r, r]^d``, neighbours outside the image
left out of the softmax, ``ddf = mean over heads of sum_o a_h(p, o) * o``.

One program handles ``BLOCK`` voxels of one ``(batch, head)``; it loads the query tile ``(BLOCK, head_dim)`` once and
walks the ``(2r + 1)^d`` offsets with an online (running-max) softmax, so nothing of size ``K * N`` is ever written.
A 2D input is run as a 3D one with a singleton first axis and radius 0 along it. Arithmetic is float32 whatever the
input dtype (float32, bfloat16 or float16 are read as they are, no cast copy); logits are kept in base-2 units
(``log2(e) / sqrt(head_dim)`` folded into the query) so the exponentials are ``exp2``.

Forward kernel: per voxel and head, the displacement ``out_h`` (``(B, heads, d, N)`` float32) and the base-2
log-sum-exp (``(B, heads, N)`` float32), both saved for the backward; the result is ``out_h.mean(1)``.

Backward, with ``g`` the gradient of the result (so ``g / heads`` reaches every head) and
``delta_h(p) = out_h(p) . g(p) / heads``, the logit gradient is ``dlogit_h(p, o) = a_h(p, o) (o . g(p) / heads -
delta_h(p))``, the probabilities ``a`` recomputed from the saved log-sum-exp. Two gather kernels, no atomics:

* ``dq(p) = sum_o dlogit(p, o) k(p + o) / sqrt(head_dim)``, per query voxel ``p``;
* ``dk(y) = sum_o dlogit(y - o, o) q(y - o) / sqrt(head_dim)``, per key voxel ``y`` (the offsets that reach ``y``).

Gradients are written in the inputs' dtype. This module imports ``triton`` at import time: import it only where
triton is installed (the dispatcher in ``mixture_of_vectors.py`` does so lazily). Under ``TRITON_INTERPRET=1`` (set
before this module is imported) the kernels run in Triton's interpreter on CPU tensors, which the tests use.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable
from triton.runtime.jit import JITFunction

__all__ = ["mixture_of_vectors_triton", "INTERPRETED"]

_LOG2E = 1.4426950408889634
#: compile options of every launch: multiply-adds fused (Triton 3.9 warns that its default will change)
_OPTIONS = dict(enable_fp_fusion=True)
#: input dtypes read directly by the kernels (float64 is left to the PyTorch op)
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _voxel_block(S0, S1, S2, NH: tl.constexpr, HD: tl.constexpr, HDP: tl.constexpr, BLOCK: tl.constexpr):
    """This program's (batch b, head h) and BLOCK voxels n (flat, with coordinates x0, x1, x2 and the in-image mask),
    and the int64 offset ``chan`` of element (b, c = j * NH + h, 0) of a contiguous (B, C, N) tensor per channel j
    of the head (``chan_ok``: j < HD)."""
    pid_bh = tl.program_id(1)
    b = pid_bh // NH
    h = pid_bh % NH
    n_vox = S0 * S1 * S2
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_img = n < n_vox
    j = tl.arange(0, HDP)
    chan = (b.to(tl.int64) * (NH * HD) + j * NH + h) * n_vox
    return b, h, n_vox, n, in_img, n // (S1 * S2), (n // S2) % S1, n % S2, chan, j < HD


@triton.jit
def _mov_fwd_kernel(
    q_ptr,
    k_ptr,
    out_ptr,
    lse_ptr,
    S0,
    S1,
    S2,
    q_scale,
    NH: tl.constexpr,
    HD: tl.constexpr,
    HDP: tl.constexpr,
    R0: tl.constexpr,
    R: tl.constexpr,
    NDIM: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """out[b, h, :, n] = sum_o softmax_o(s) o and lse[b, h, n] (base 2) for the BLOCK voxels n of program 0."""
    b, h, n_vox, n, in_img, x0, x1, x2, chan, chan_ok = _voxel_block(S0, S1, S2, NH, HD, HDP, BLOCK)
    q = tl.load(q_ptr + chan[None, :] + n[:, None], mask=in_img[:, None] & chan_ok[None, :], other=0.0)
    q = q.to(tl.float32) * q_scale
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK], tl.float32)
    acc0 = tl.zeros([BLOCK], tl.float32)
    acc1 = tl.zeros([BLOCK], tl.float32)
    acc2 = tl.zeros([BLOCK], tl.float32)
    for o0 in range(-R0, R0 + 1):
        y0 = x0 + o0
        ok0 = in_img & (y0 >= 0) & (y0 < S0)
        for o1 in range(-R, R + 1):
            y1 = x1 + o1
            ok1 = ok0 & (y1 >= 0) & (y1 < S1)
            for o2 in range(-R, R + 1):
                y2 = x2 + o2
                valid = ok1 & (y2 >= 0) & (y2 < S2)
                nb = n + (o0 * S1 + o1) * S2 + o2
                kt = tl.load(k_ptr + chan[None, :] + nb[:, None], mask=valid[:, None] & chan_ok[None, :], other=0.0)
                s = tl.sum(q * kt.to(tl.float32), axis=1)
                s = tl.where(valid, s, float("-inf"))
                m_new = tl.maximum(m, s)
                # while no neighbour has been seen (m_new = -inf) use 0 as reference: every exp2 below is then 0
                ref = tl.where(m_new == float("-inf"), 0.0, m_new)
                alpha = tl.exp2(m - ref)
                p = tl.exp2(s - ref)
                total = total * alpha + p
                acc0 = acc0 * alpha + p * o0
                acc1 = acc1 * alpha + p * o1
                acc2 = acc2 * alpha + p * o2
                m = m_new
    # the zero offset is always inside, so total >= 1 on the voxels of the image
    inv = 1.0 / tl.where(in_img, total, 1.0)
    head = b.to(tl.int64) * NH + h
    out_row = out_ptr + head * (NDIM * n_vox) + n
    if NDIM == 3:
        tl.store(out_row, acc0 * inv, mask=in_img)
        tl.store(out_row + n_vox, acc1 * inv, mask=in_img)
        tl.store(out_row + 2 * n_vox, acc2 * inv, mask=in_img)
    else:
        tl.store(out_row, acc1 * inv, mask=in_img)
        tl.store(out_row + n_vox, acc2 * inv, mask=in_img)
    tl.store(lse_ptr + head * n_vox + n, m + tl.log2(tl.where(in_img, total, 1.0)), mask=in_img)


@triton.jit
def _mov_bwd_dq_kernel(
    q_ptr,
    k_ptr,
    g_ptr,
    delta_ptr,
    lse_ptr,
    dq_ptr,
    S0,
    S1,
    S2,
    q_scale,
    grad_scale,
    NH: tl.constexpr,
    HD: tl.constexpr,
    HDP: tl.constexpr,
    R0: tl.constexpr,
    R: tl.constexpr,
    NDIM: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """dq(p) = grad_scale * sum_o a(p, o) (o . g(p) - delta(p)) k(p + o) for the BLOCK query voxels p."""
    b, h, n_vox, n, in_img, x0, x1, x2, chan, chan_ok = _voxel_block(S0, S1, S2, NH, HD, HDP, BLOCK)
    q = tl.load(q_ptr + chan[None, :] + n[:, None], mask=in_img[:, None] & chan_ok[None, :], other=0.0)
    q = q.to(tl.float32) * q_scale
    head = b.to(tl.int64) * NH + h
    lse = tl.load(lse_ptr + head * n_vox + n, mask=in_img, other=0.0)
    delta = tl.load(delta_ptr + head * n_vox + n, mask=in_img, other=0.0)
    g_row = g_ptr + b.to(tl.int64) * (NDIM * n_vox) + n
    if NDIM == 3:
        g0 = tl.load(g_row, mask=in_img, other=0.0)
        g1 = tl.load(g_row + n_vox, mask=in_img, other=0.0)
        g2 = tl.load(g_row + 2 * n_vox, mask=in_img, other=0.0)
    else:
        g0 = tl.zeros([BLOCK], tl.float32)
        g1 = tl.load(g_row, mask=in_img, other=0.0)
        g2 = tl.load(g_row + n_vox, mask=in_img, other=0.0)
    acc = tl.zeros([BLOCK, HDP], tl.float32)
    for o0 in range(-R0, R0 + 1):
        y0 = x0 + o0
        ok0 = in_img & (y0 >= 0) & (y0 < S0)
        for o1 in range(-R, R + 1):
            y1 = x1 + o1
            ok1 = ok0 & (y1 >= 0) & (y1 < S1)
            for o2 in range(-R, R + 1):
                y2 = x2 + o2
                valid = ok1 & (y2 >= 0) & (y2 < S2)
                nb = n + (o0 * S1 + o1) * S2 + o2
                kt = tl.load(k_ptr + chan[None, :] + nb[:, None], mask=valid[:, None] & chan_ok[None, :], other=0.0)
                kt = kt.to(tl.float32)
                s = tl.sum(q * kt, axis=1)
                a = tl.where(valid, tl.exp2(s - lse), 0.0)
                dl = a * (g0 * o0 + g1 * o1 + g2 * o2 - delta)
                acc += dl[:, None] * kt
    dq = acc * grad_scale
    tl.store(
        dq_ptr + chan[None, :] + n[:, None],
        dq.to(dq_ptr.dtype.element_ty),
        mask=in_img[:, None] & chan_ok[None, :],
    )


@triton.jit
def _mov_bwd_dk_kernel(
    q_ptr,
    k_ptr,
    g_ptr,
    delta_ptr,
    lse_ptr,
    dk_ptr,
    S0,
    S1,
    S2,
    q_scale,
    grad_scale,
    NH: tl.constexpr,
    HD: tl.constexpr,
    HDP: tl.constexpr,
    R0: tl.constexpr,
    R: tl.constexpr,
    NDIM: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """dk(y) = grad_scale * sum_o a(y - o, o) (o . g(y - o) - delta(y - o)) q(y - o) for the BLOCK key voxels y."""
    b, h, n_vox, n, in_img, x0, x1, x2, chan, chan_ok = _voxel_block(S0, S1, S2, NH, HD, HDP, BLOCK)
    # the logit scale goes on the key tile (loaded once) so the gathered query is used as it is
    k = tl.load(k_ptr + chan[None, :] + n[:, None], mask=in_img[:, None] & chan_ok[None, :], other=0.0)
    k = k.to(tl.float32) * q_scale
    head = b.to(tl.int64) * NH + h
    lse_row = lse_ptr + head * n_vox
    delta_row = delta_ptr + head * n_vox
    g_row = g_ptr + b.to(tl.int64) * (NDIM * n_vox)
    acc = tl.zeros([BLOCK, HDP], tl.float32)
    for o0 in range(-R0, R0 + 1):
        p0 = x0 - o0
        ok0 = in_img & (p0 >= 0) & (p0 < S0)
        for o1 in range(-R, R + 1):
            p1 = x1 - o1
            ok1 = ok0 & (p1 >= 0) & (p1 < S1)
            for o2 in range(-R, R + 1):
                p2 = x2 - o2
                valid = ok1 & (p2 >= 0) & (p2 < S2)
                src = n - (o0 * S1 + o1) * S2 - o2  # the query voxel p = y - o
                qt = tl.load(q_ptr + chan[None, :] + src[:, None], mask=valid[:, None] & chan_ok[None, :], other=0.0)
                qt = qt.to(tl.float32)
                lse = tl.load(lse_row + src, mask=valid, other=0.0)
                delta = tl.load(delta_row + src, mask=valid, other=0.0)
                if NDIM == 3:
                    go = (
                        tl.load(g_row + src, mask=valid, other=0.0) * o0
                        + tl.load(g_row + n_vox + src, mask=valid, other=0.0) * o1
                        + tl.load(g_row + 2 * n_vox + src, mask=valid, other=0.0) * o2
                    )
                else:
                    go = (
                        tl.load(g_row + src, mask=valid, other=0.0) * o1
                        + tl.load(g_row + n_vox + src, mask=valid, other=0.0) * o2
                    )
                s = tl.sum(qt * k, axis=1)
                a = tl.where(valid, tl.exp2(s - lse), 0.0)
                dl = a * (go - delta)
                acc += dl[:, None] * qt
    dk = acc * grad_scale
    tl.store(
        dk_ptr + chan[None, :] + n[:, None],
        dk.to(dk_ptr.dtype.element_ty),
        mask=in_img[:, None] & chan_ok[None, :],
    )


#: True when the kernels above were built by Triton's interpreter (``TRITON_INTERPRET=1`` at import): they then run
#: on CPU tensors (slowly; for tests), and compiled kernels are not available from this module object.
INTERPRETED = not isinstance(_mov_fwd_kernel, JITFunction)


def _block_size(head_dim_p2: int) -> int:
    """Voxels per program: 128 up to head_dim 8, then the ``(BLOCK, head_dim)`` tiles stay at 1K floats (for sm_90,
    head_dim 8 compiles to about 56 registers per thread and head_dim 32 to about 100, no spills; not tuned on a GPU).
    """
    return max(16, min(128, 1024 // head_dim_p2))


def _launch_args(query: torch.Tensor, radius: int, num_heads: int) -> tuple[tuple, dict, tuple]:
    """Shape arguments, constexprs and grid shared by the three kernels."""
    b, c, *spatial = query.shape
    ndim = len(spatial)
    s0, s1, s2 = (1, *spatial) if ndim == 2 else spatial
    head_dim = c // num_heads
    hdp = triton.next_power_of_2(head_dim)
    block = _block_size(hdp)
    consts = dict(NH=num_heads, HD=head_dim, HDP=hdp, R0=radius if ndim == 3 else 0, R=radius, NDIM=ndim, BLOCK=block)
    grid = (triton.cdiv(s0 * s1 * s2, block), b * num_heads)
    return (s0, s1, s2), consts, grid


def _check_device(query: torch.Tensor) -> None:
    if not (query.is_cuda or INTERPRETED):
        raise ValueError(
            f"the Triton mixture of vectors runs on CUDA tensors, got a tensor on {query.device} "
            "(use backend='torch', or TRITON_INTERPRET=1 before importing this module to interpret the kernels)."
        )


def _on_device(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it ``t``'s (tensors on ``cuda:1`` with ``cuda:0`` current)."""
    return torch.cuda.device(t.device) if t.is_cuda else nullcontext()


class _MixtureOfVectorsTriton(torch.autograd.Function):
    """``(query, key, radius, num_heads) -> ddf`` through the fused kernels; see the module docstring."""

    @staticmethod
    def forward(ctx, query, key, radius, num_heads):  # type: ignore[override]
        b, c, *spatial = query.shape
        q, k = query.contiguous(), key.contiguous()
        shape, consts, grid = _launch_args(q, radius, num_heads)
        n_vox = math.prod(spatial)
        out_h = torch.empty(b, num_heads, len(spatial), n_vox, device=q.device, dtype=torch.float32)
        lse = torch.empty(b, num_heads, n_vox, device=q.device, dtype=torch.float32)
        q_scale = _LOG2E / math.sqrt(consts["HD"])
        with _on_device(q):
            _mov_fwd_kernel[grid](q, k, out_h, lse, *shape, q_scale, **consts, **_OPTIONS)
        if any(ctx.needs_input_grad[:2]):
            ctx.save_for_backward(q, k, out_h, lse)
            ctx.cfg = (radius, num_heads)
        return out_h.mean(1).view(b, len(spatial), *spatial)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        q, k, out_h, lse = ctx.saved_tensors
        radius, num_heads = ctx.cfg
        b, ndim, n_vox = out_h.shape[0], out_h.shape[2], out_h.shape[3]
        g = grad.to(torch.float32).reshape(b, ndim, n_vox).div(num_heads).contiguous()  # d result / d out_h
        delta = (out_h * g.unsqueeze(1)).sum(2)  # (B, heads, N): out_h . g / heads (plain ops: no autocast cast)
        shape, consts, grid = _launch_args(q, radius, num_heads)
        q_scale = _LOG2E / math.sqrt(consts["HD"])
        grad_scale = 1.0 / math.sqrt(consts["HD"])
        dq = dk = None
        with _on_device(q):
            if ctx.needs_input_grad[0]:
                dq = torch.empty_like(q)
                _mov_bwd_dq_kernel[grid](q, k, g, delta, lse, dq, *shape, q_scale, grad_scale, **consts, **_OPTIONS)
            if ctx.needs_input_grad[1]:
                dk = torch.empty_like(k)
                _mov_bwd_dk_kernel[grid](q, k, g, delta, lse, dk, *shape, q_scale, grad_scale, **consts, **_OPTIONS)
        return dq, dk, None, None


def mixture_of_vectors_triton(
    query: torch.Tensor, key: torch.Tensor, radius: int = 2, num_heads: int = 1
) -> torch.Tensor:
    """The mixture of vectors through the fused Triton kernels (differentiable in ``query`` and ``key``).

    Args:
        query: ``(B, C, *S)`` CUDA tensor (2D or 3D ``S``), float32, bfloat16 or float16.
        key: same shape and device as ``query`` (mixed dtypes are promoted, e.g. bfloat16 with float32 to float32).
        radius: neighbourhood radius ``r >= 1``.
        num_heads: interleaved heads, ``C % num_heads == 0``.

    Returns:
        ``(B, d, *S)`` float32 displacement in voxels; gradients come back in the inputs' dtype.

    Shapes and arguments are validated by :func:`monai_cover.networks.blocks.mixture_of_vectors`; this function only
    checks what is particular to the kernels (device, dtype).
    """
    _check_device(query)
    if key.device != query.device:
        raise ValueError(f"query and key must be on one device, got {query.device} and {key.device}.")
    dtype = torch.promote_types(query.dtype, key.dtype)  # e.g. a bf16 query with a key warped in float32
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"the Triton mixture of vectors reads {SUPPORTED_DTYPES}, got {dtype}.")
    query, key = query.to(dtype), key.to(dtype)
    return _MixtureOfVectorsTriton.apply(query, key, int(radius), int(num_heads))
