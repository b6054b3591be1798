# SPDX-License-Identifier: Apache-2.0
"""Mixture of vectors (VEU + MVI): the parameter-free op that reads a displacement off two feature maps.

For a query ``q`` and a key ``k`` of shape ``(B, C, *S)`` (``d = len(S)`` is 2 or 3), ``C = num_heads * head_dim``,
every voxel ``p`` and every integer offset ``o`` in the cube ``[-r, r]^d``::

    s_h(p, o) = <q_h(p), k_h(p + o)> / sqrt(head_dim)      only where p + o lies inside the image
    a_h(p, .) = softmax over the in-image offsets of s_h(p, .)
    v_h(p)    = sum_o a_h(p, o) * o                          (o as a d-vector, channel i = array axis i)
    ddf(p)    = mean over heads of v_h(p)                     (in voxels, |ddf|_inf <= r)

Heads are *interleaved*: channel ``c`` belongs to head ``c % num_heads`` (the channels are read as
``(B, head_dim, num_heads, *S)``). Offsets are enumerated like ``itertools.product(range(-r, r + 1), repeat=d)``
(first axis slowest). Neighbours outside the image are left out of the softmax (not given a large negative logit),
so the result is exact under any logit magnitude; the offset ``0`` is always inside, so every softmax is defined.

Implementation: a custom :class:`torch.autograd.Function` with an analytic backward
(``dlogit = p * (o.g - v_h.g)``). The offsets are taken in *groups*: the ``2r + 1`` offsets that differ only on the
last axis. A group's dot products are one multiply-accumulate per channel over the group's valid sub-box of the
leading axes, reading the key through an ``unfold`` window of a copy padded by ``r`` on the last axis (the copy also
carries the ``log2(e) / sqrt(head_dim)`` scale: the softmax runs in base 2, since ``exp2`` is several times cheaper
than ``exp`` on CPU); small inputs use one product and a channel sum instead. Logits go into a buffer of whole groups,
``(B, num_heads, chunk, *S)``, combined with an online (running-max) softmax, so the peak memory is
``O(B * C * N)`` plus that buffer (two in the backward) rather than the ``O(B * heads * K * N)`` of the
straightforward form; the default buffer budget is 8 MiB (``chunk_size`` overrides it). When all ``K`` offsets fit
in one buffer the probabilities are kept for the backward; otherwise the backward recomputes them chunk by chunk
from the saved log-sum-exp, then adds each offset's share to ``dq`` for the whole chunk and then to ``dk`` (two
passes, each small enough to stay in cache). Saved for the backward: the query, the padded key, the per-head
displacements and the log-sum-exp. Softmax and accumulations run in float32 (float64 for float64 inputs), also under
CPU/CUDA autocast (inputs are cast to float32).
``benchmarks/bench_mov.py`` measures its speed and peak memory against the per-offset loop.

Backends: the op above (``"torch"``) runs on every device. On CUDA tensors, when the optional ``triton`` package is
installed (``pip install monai_cover[gpu]``), ``backend="auto"`` (the default) runs fused Triton kernels instead
(:mod:`~monai_cover.networks.blocks.mixture_of_vectors_triton`: one pass over the neighbourhood per voxel, forward
and backward, float32 arithmetic on float32/bfloat16/float16 inputs read as they are, also under autocast). So there
is one code path per device: Triton on CUDA, this op everywhere else (and for float64 inputs, which it keeps in
float64). ``backend="torch"`` or ``"triton"`` forces one; the environment variable ``MONAI_COVER_MOV_BACKEND``
(``auto``, ``torch`` or ``triton``) sets what ``"auto"`` means for a whole run, e.g. to compare the two in a
pretraining run without touching its config. :func:`select_backend` says which backend a call would run.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import math
import os

import torch
import torch.nn as nn
from monai.data import MetaTensor
from torch.autograd.function import once_differentiable

__all__ = ["MixtureOfVectors", "mixture_of_vectors", "select_backend", "triton_available", "BACKENDS", "BACKEND_ENV"]

#: values of the ``backend`` argument
BACKENDS = ("auto", "torch", "triton")
#: environment variable that sets what ``backend="auto"`` means (``auto``, ``torch`` or ``triton``)
BACKEND_ENV = "MONAI_COVER_MOV_BACKEND"
#: input dtypes the Triton kernels read (float64 stays with the PyTorch op)
_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

#: bytes allowed for one ``(B, num_heads, chunk, *S)`` logits buffer when ``chunk_size`` is not given.
_BUFFER_BUDGET = 8 * 2**20
#: up to this many bytes of ``query`` a group's logits are one product + channel sum instead of a channel chain.
_PRODUCT_IN_CACHE = 2**19
#: the logits are kept in base 2 (scaled by log2(e)): ``exp2`` is several times cheaper than ``exp`` on CPU
_LOG2E = 1.0 / math.log(2.0)


def _boxes(offset: tuple[int, ...], spatial: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Query and key slices of the sub-box where ``p`` and ``p + offset`` are both inside the image (empty where an
    offset is at least the image's size on its axis)."""
    qs = tuple(slice(max(0, -o), max(0, -o, s - max(0, o))) for o, s in zip(offset, spatial))
    ks = tuple(slice(max(0, o), max(0, o, s + min(0, o))) for o, s in zip(offset, spatial))
    return qs, ks


def _offset_chunks(radius: int, ndim: int, groups_per_chunk: int) -> list[tuple[int, list[tuple[int, ...]]]]:
    """``(start, prefixes)`` chunks of offset *groups*, the chunk holding the zero offset first.

    A group is the ``2r + 1`` offsets that share their first ``ndim - 1`` components (the ``prefix``) and run over
    ``-r..r`` on the last axis; group ``g`` holds the 'ij'-ordered offsets ``g * (2r + 1) ... (g + 1) * (2r + 1) - 1``
    and ``start`` is the index of a chunk's first offset.
    """
    width = 2 * radius + 1
    prefixes = list(itertools.product(range(-radius, radius + 1), repeat=ndim - 1))
    chunks = [(i * width, prefixes[i : i + groups_per_chunk]) for i in range(0, len(prefixes), groups_per_chunk)]
    first = (len(prefixes) // 2) // groups_per_chunk
    return [chunks[first]] + chunks[:first] + chunks[first + 1 :]


def _offset_table(radius: int, ndim: int, like: torch.Tensor) -> torch.Tensor:
    """``(K, ndim + 1)`` table of the 'ij'-ordered offsets plus a column of ones, built on ``like``'s device."""
    r = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
    grid = torch.stack(torch.meshgrid(*([r] * ndim), indexing="ij"), -1).reshape(-1, ndim)
    return torch.cat([grid, torch.ones_like(grid[:, :1])], 1)


def _pad_last(key: torch.Tensor, radius: int, scale: float) -> torch.Tensor:
    """``scale * key`` zero-padded by ``radius`` on the last axis (one pass; the margins are the only zero fill)."""
    kpad = key.new_empty(*key.shape[:-1], key.shape[-1] + 2 * radius)
    kpad[..., :radius].zero_()
    kpad[..., -radius:].zero_()
    torch.mul(key, scale, out=kpad[..., radius:-radius])
    return kpad


def _key_box(ks: tuple[slice, ...], radius: int) -> tuple[slice, ...]:
    """Index of the key sub-box ``ks`` (slices of the unpadded image) inside the key padded by ``radius`` on the
    last axis (:func:`_pad_last`)."""
    last = slice(ks[-1].start + radius, ks[-1].stop + radius)
    return (slice(None),) * 3 + ks[:-1] + (last,)


def _logits(
    buf: torch.Tensor,
    qh: torch.Tensor,
    kpad: torch.Tensor,
    prefixes: list[tuple[int, ...]],
    radius: int,
    neg_shift: torch.Tensor | None = None,
) -> None:
    """``buf[:, :, j] = <qh(p), k(p + o_j)> + neg_shift(p)`` where ``p + o_j`` is inside the image, ``-inf`` elsewhere.

    ``qh`` is ``(B, head_dim, heads, *S)``, ``kpad`` the scaled key padded on the last axis (:func:`_pad_last`),
    ``buf`` ``(B, heads, len(prefixes) * (2r + 1), *S)`` and ``neg_shift`` ``(B, heads, *S)`` or ``None``. A group (one
    prefix and its ``2r + 1`` last-axis offsets) takes one operation per channel: the key is read through an
    ``unfold`` window of the padded last axis; the products with the zero padding are overwritten with ``-inf``
    afterwards, for the whole chunk at once.
    """
    spatial = tuple(qh.shape[3:])
    width, lead, inf = 2 * radius + 1, (slice(None),) * 3, float("-inf")
    chained = qh.numel() * qh.element_size() > _PRODUCT_IN_CACHE
    for g, prefix in enumerate(prefixes):
        block = buf[:, :, g * width : (g + 1) * width]
        qs, ks = _boxes(prefix, spatial[:-1])
        for axis, (o_a, s_a) in enumerate(zip(prefix, spatial)):  # the group's shells on the leading axes
            if o_a:
                shell = slice(max(0, s_a - o_a), None) if o_a > 0 else slice(0, -o_a)
                block[(slice(None),) * (3 + axis) + (shell,)].fill_(inf)
        out = block[lead + qs].movedim(2, -1)  # (B, heads, *sub, W, width)
        q_box = qh[lead + qs].unsqueeze(-1)
        k_box = kpad[lead + ks].unfold(-1, width, 1)  # k_box[..., w, j] = k[..., w + j - r]
        neg = None if neg_shift is None else neg_shift[(slice(None),) * 2 + qs].unsqueeze(-1)
        if chained:
            q_ch, k_ch = q_box.unbind(1), k_box.unbind(1)
            if neg is None:
                torch.mul(q_ch[0], k_ch[0], out=out)
            else:
                torch.addcmul(neg, q_ch[0], k_ch[0], out=out)
            for q_c, k_c in zip(q_ch[1:], k_ch[1:]):
                out.addcmul_(q_c, k_c)
        else:
            torch.sum(q_box * k_box, 1, out=out)
            if neg is not None:
                out.add_(neg)
    groups = buf.unflatten(2, (len(prefixes), width))
    last = spatial[-1]
    for j in range(width):  # neighbours outside the image on the last axis, for every group of the chunk
        o = j - radius
        if o:
            groups[:, :, :, j, ..., slice(max(0, last - o), None) if o > 0 else slice(0, -o)].fill_(inf)


class _MixtureOfVectorsFunction(torch.autograd.Function):
    """``(query, key, radius, num_heads, groups_per_chunk) -> ddf``; see the module docstring."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, query, key, radius, num_heads, groups_per_chunk):  # type: ignore[override]
        dtype = torch.float64 if torch.float64 in (query.dtype, key.dtype) else torch.float32
        b, c, *spatial = query.shape
        spatial = tuple(spatial)
        d, hd, n_vox = len(spatial), c // num_heads, math.prod(spatial)
        bh, width = b * num_heads, 2 * radius + 1
        n_groups = width ** (d - 1)
        groups_per_chunk = min(groups_per_chunk, n_groups)
        chunk = groups_per_chunk * width
        needs_grad = any(ctx.needs_input_grad[:2])
        qh = query.to(dtype).reshape(b, hd, num_heads, *spatial)
        # logits in base 2 (scaled by log2(e)): exp2 is several times cheaper than exp on CPU
        kpad = _pad_last(key.to(dtype).reshape(b, hd, num_heads, *spatial), radius, hd**-0.5 * _LOG2E)
        table = _offset_table(radius, d, qh)
        storage = qh.new_empty(bh * chunk * n_vox)  # chunks are contiguous prefixes of one buffer
        m = acc = buf = None
        for start, prefixes in _offset_chunks(radius, d, groups_per_chunk):
            n = len(prefixes) * width
            buf = storage[: bh * n * n_vox].view(b, num_heads, n, *spatial)
            _logits(buf, qh, kpad, prefixes, radius)
            m_chunk = buf.amax(2)
            if m is None:  # first chunk holds the zero offset: m is finite from here on
                m = m_chunk
            else:
                m_new = torch.maximum(m, m_chunk)
                alpha = torch.sub(m, m_new).exp2_().view(bh, 1, n_vox)
                m = m_new
            buf.sub_(m.unsqueeze(2)).exp2_()
            # one GEMM gives sum_o e(o) * o (rows 0..d-1) and sum_o e(o) (row d)
            part = torch.matmul(table[start : start + n].t(), buf.reshape(bh, n, n_vox))
            acc = part if acc is None else acc.mul_(alpha).add_(part)
        total = acc[:, d:]  # (bh, 1, N): sum of exp(logit - m)
        out_h = (acc[:, :d] / total).view(b, num_heads, d, *spatial)
        if needs_grad:
            if groups_per_chunk == n_groups:  # everything fit in one buffer: keep exp(logit - m) and 1 / sum
                ctx.save_for_backward(qh, kpad, out_h, buf, total.reciprocal().view(b, num_heads, *spatial))
            else:
                lse = total.log2().view(b, num_heads, *spatial).add_(m)  # base 2, like the logits
                ctx.save_for_backward(qh, kpad, out_h, None, lse)
            ctx.cfg = (radius, groups_per_chunk)
        return out_h.mean(1)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    @torch.amp.custom_bwd(device_type="cpu")
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        qh, kpad, out_h, kept, stat = ctx.saved_tensors
        radius, groups_per_chunk = ctx.cfg
        b, hd, num_heads, *spatial = qh.shape
        spatial = tuple(spatial)
        d, n_vox, bh, width = len(spatial), math.prod(spatial), b * num_heads, 2 * radius + 1
        chunk = groups_per_chunk * width
        # d out / d out_h (mean over heads), over log2(e): the saved logits are in base 2
        g = grad.to(qh.dtype).reshape(b, 1, d, n_vox) / (num_heads * _LOG2E)
        # dlogit = p * (o.g - out_h.g): one GEMM of [o, 1] with [g; -out_h.g] per voxel gives the bracket
        g_aug = qh.new_empty(b, num_heads, d + 1, n_vox)
        g_aug[:, :, :d] = g
        torch.sum(out_h.reshape(b, num_heads, d, n_vox) * g, dim=2, out=g_aug[:, :, d])
        g_aug[:, :, d].neg_()
        if kept is not None:  # p = kept / sum: fold 1 / sum into the bracket
            g_aug.mul_(stat.view(b, num_heads, 1, n_vox))
        g_aug = g_aug.view(bh, d + 1, n_vox)
        table = _offset_table(radius, d, qh)
        dqh, dkh = torch.zeros_like(qh), torch.zeros_like(qh)
        dl_storage = qh.new_empty(bh * chunk * n_vox)
        prob_storage = qh.new_empty(bh * chunk * n_vox) if kept is None else None
        neg_lse = None if kept is not None else stat.neg()
        lead = (slice(None),) * 3
        for start, prefixes in _offset_chunks(radius, d, groups_per_chunk):
            n = len(prefixes) * width
            if kept is None:
                prob = prob_storage[: bh * n * n_vox].view(b, num_heads, n, *spatial)
                _logits(prob, qh, kpad, prefixes, radius, neg_shift=neg_lse)
                prob.exp2_()
            else:
                prob = kept
            dl = dl_storage[: bh * n * n_vox].view(b, num_heads, n, *spatial)
            torch.matmul(table[start : start + n], g_aug, out=dl.view(bh, n, n_vox))
            dl.mul_(prob)
            offsets = [o_p + (o_l,) for o_p in prefixes for o_l in range(-radius, radius + 1)]
            # all of the chunk's dq, then all of its dk: each pass reads half the tensors, which then stay in cache
            for j, o in enumerate(offsets):
                qs, ks = _boxes(o, spatial)
                dl_j = dl[(slice(None), slice(None), j) + qs].unsqueeze(1)
                dqh[lead + qs].addcmul_(dl_j, kpad[_key_box(ks, radius)])  # kpad holds the scaled key
            for j, o in enumerate(offsets):
                qs, ks = _boxes(o, spatial)
                dl_j = dl[(slice(None), slice(None), j) + qs].unsqueeze(1)
                dkh[lead + ks].addcmul_(dl_j, qh[lead + qs])
        dkh.mul_(hd**-0.5 * _LOG2E)
        c = hd * num_heads
        return dqh.view(b, c, *spatial), dkh.view(b, c, *spatial), None, None, None


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when the optional ``triton`` package imports (checked once per process; only called for CUDA tensors)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # a broken install counts as absent: the PyTorch op is used
        return False
    return True


def select_backend(
    backend: str = "auto", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> str:
    """The backend (``"torch"`` or ``"triton"``) that :func:`mixture_of_vectors` runs for inputs on ``device``.

    ``"torch"`` and ``"triton"`` are returned as given. ``"auto"`` first reads ``MONAI_COVER_MOV_BACKEND`` (unset or
    ``auto``: no override), then picks ``"triton"`` for CUDA devices when triton is installed and ``dtype`` is
    float32, bfloat16 or float16, and ``"torch"`` otherwise.

    Raises:
        ValueError: an unknown ``backend`` or environment value.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "auto":
        backend = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"{BACKEND_ENV} must be one of {BACKENDS} (or unset), got {os.environ[BACKEND_ENV]!r}.")
    if backend != "auto":
        return backend
    if torch.device(device).type == "cuda" and dtype in _TRITON_DTYPES and triton_available():
        return "triton"
    return "torch"


def mixture_of_vectors(
    query: torch.Tensor,
    key: torch.Tensor,
    radius: int = 2,
    num_heads: int = 1,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Displacement read off ``query`` and ``key`` by the mixture of vectors (see the module docstring).

    Args:
        query: ``(B, C, *S)`` features of the moving view (2D or 3D spatial shape ``S``).
        key: ``(B, C, *S)`` features of the fixed view; the neighbour of ``p`` at offset ``o`` is ``key[p + o]``.
        radius: neighbourhood radius ``r >= 1``: ``(2r + 1)^d`` offsets.
        num_heads: number of heads; ``C % num_heads == 0``, channel ``c`` belongs to head ``c % num_heads``.
        chunk_size: offsets per logits buffer, rounded down to whole groups of ``2r + 1`` (at least one group).
            ``None`` picks the largest chunk whose buffer ``B * num_heads * chunk * N`` floats stays within 8 MiB.
            PyTorch backend only.
        backend: ``"auto"`` (Triton for CUDA tensors when triton is installed, else PyTorch; see
            :func:`select_backend` and ``MONAI_COVER_MOV_BACKEND``), ``"torch"`` or ``"triton"`` (CUDA tensors only).

    Returns:
        ``(B, d, *S)`` displacement in voxels, channel ``i`` along array axis ``i`` (float32, float64 for float64
        inputs), with ``|ddf| <= radius``. If ``key(p + e_i) == query(p)`` with peaked features, ``ddf_i(p) = +1``.

    Raises:
        ValueError: mismatching shapes, a spatial rank other than 2 or 3, ``C`` not divisible by ``num_heads``,
            ``radius < 1``, ``chunk_size < 1``, an unknown ``backend``, or ``"triton"`` for non-CUDA or float64 inputs.
        ImportError: ``backend="triton"`` without triton installed.
    """
    if query.shape != key.shape:
        raise ValueError(f"query and key must have the same shape, got {tuple(query.shape)} and {tuple(key.shape)}.")
    if query.ndim not in (4, 5):
        raise ValueError(f"query and key must be (B, C, *spatial) with 2 or 3 spatial dims, got {tuple(query.shape)}.")
    if int(radius) != radius or radius < 1:
        raise ValueError(f"radius must be an integer >= 1, got {radius}.")
    if int(num_heads) != num_heads or num_heads < 1 or query.shape[1] % num_heads:
        raise ValueError(
            f"the channel count of query/key {tuple(query.shape)} must be divisible by num_heads={num_heads}."
        )
    b, _, *spatial = query.shape
    n_off = (2 * radius + 1) ** len(spatial)
    if chunk_size is None:
        chunk_size = _BUFFER_BUDGET // max(1, 4 * b * num_heads * math.prod(spatial))
    elif int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1 or None, got {chunk_size}.")
    width = 2 * int(radius) + 1
    n_groups = n_off // width
    groups = int(min(max(chunk_size // width, 1), n_groups))  # whole last-axis groups of 2r + 1 offsets
    groups = -(-n_groups // -(-n_groups // groups))  # same number of chunks, sizes as even as possible
    # MetaTensor's new_empty does not take the sizes the Function passes; the result carries no meta anyway.
    query, key = (x.as_tensor() if isinstance(x, MetaTensor) else x for x in (query, key))
    if select_backend(backend, query.device, torch.promote_types(query.dtype, key.dtype)) == "triton":
        if not triton_available():
            raise ImportError("backend='triton' needs the optional triton package: pip install 'monai_cover[gpu]'.")
        from .mixture_of_vectors_triton import mixture_of_vectors_triton

        return mixture_of_vectors_triton(query, key, int(radius), int(num_heads))
    return _MixtureOfVectorsFunction.apply(query, key, int(radius), int(num_heads), groups)


class MixtureOfVectors(nn.Module):
    """Module form of :func:`mixture_of_vectors` (no parameters).

    Args:
        spatial_dims: 2 or 3; inputs must be ``(B, C, *S)`` with ``len(S) == spatial_dims``.
        radius: neighbourhood radius ``r >= 1`` (COVER's default 2; the paper's ablation prefers 3).
        num_heads: number of interleaved heads (``C % num_heads == 0``).
        chunk_size: offsets per logits buffer (``None``: automatic, bounded memory); see :func:`mixture_of_vectors`.
        backend: ``"auto"`` (Triton on CUDA when installed, PyTorch elsewhere), ``"torch"`` or ``"triton"``.

    ``forward(query, key)`` returns the ``(B, spatial_dims, *S)`` displacement in voxels.
    """

    def __init__(
        self,
        spatial_dims: int,
        radius: int = 2,
        num_heads: int = 1,
        chunk_size: int | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if int(radius) != radius or radius < 1:
            raise ValueError(f"radius must be an integer >= 1, got {radius}.")
        if int(num_heads) != num_heads or num_heads < 1:
            raise ValueError(f"num_heads must be an integer >= 1, got {num_heads}.")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
        self.spatial_dims, self.radius, self.num_heads, self.chunk_size = spatial_dims, radius, num_heads, chunk_size
        self.backend = backend

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        if query.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"expected (B, C, *spatial) inputs with {self.spatial_dims} spatial dims, "
                f"got query {tuple(query.shape)}."
            )
        backend = getattr(self, "backend", "auto")  # modules pickled before the attribute existed
        return mixture_of_vectors(query, key, self.radius, self.num_heads, self.chunk_size, backend)

    def extra_repr(self) -> str:
        backend = getattr(self, "backend", "auto")
        backend = "" if backend == "auto" else f", backend={backend!r}"
        return f"spatial_dims={self.spatial_dims}, radius={self.radius}, num_heads={self.num_heads}{backend}"
