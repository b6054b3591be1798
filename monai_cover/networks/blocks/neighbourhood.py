# SPDX-License-Identifier: Apache-2.0
"""The mixture of vectors' attention over its neighbourhood, as log-probabilities, and the offset distribution a
known sub-voxel displacement corresponds to.

:func:`~monai_cover.networks.blocks.mixture_of_vectors.mixture_of_vectors` returns only the expected offset
``v_h(p) = sum_o a_h(p, o) o``: any attention with the right mean scores the same under an L1 loss, however flat.
A matching loss needs the attention itself; :func:`neighbourhood_log_softmax` gives ``log a_h(p, o)`` with the
same logits, offsets, heads and border rule, so that ``sum_o exp(.) * o`` averaged over heads is the mixture of
vectors. It keeps all ``K = (2r + 1)^d`` offsets in memory, ``(B, num_heads, K, *S)``: meant for the few channels
and heads of the finest levels (one head of 8 channels by default), not as a replacement of the mixture of vectors.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

__all__ = ["neighbourhood_offsets", "neighbourhood_log_softmax", "offset_distribution"]


def neighbourhood_offsets(radius: int, spatial_dims: int) -> list[tuple[int, ...]]:
    """The ``(2r + 1)^d`` integer offsets of the cube ``[-r, r]^d`` in the mixture of vectors' order
    (``itertools.product(range(-r, r + 1), repeat=d)``, first axis slowest)."""
    if int(radius) != radius or radius < 1:
        raise ValueError(f"neighbourhood_offsets: radius must be an integer >= 1, got {radius}.")
    if spatial_dims not in (2, 3):
        raise ValueError(f"neighbourhood_offsets: spatial_dims must be 2 or 3, got {spatial_dims}.")
    return list(itertools.product(range(-int(radius), int(radius) + 1), repeat=spatial_dims))


def neighbourhood_log_softmax(
    query: torch.Tensor, key: torch.Tensor, radius: int = 2, num_heads: int = 1
) -> torch.Tensor:
    """``log a_h(p, o)``: log-softmax over the in-image offsets of ``<q_h(p), k_h(p + o)> / sqrt(head_dim)``.

    Args:
        query: ``(B, C, *S)``, ``C = num_heads * head_dim``, channel ``c`` in head ``c % num_heads``.
        key: same shape; the neighbour of ``p`` at offset ``o`` is ``key[p + o]``.
        radius: neighbourhood radius ``r``.
        num_heads: number of interleaved heads.

    Returns:
        ``(B, num_heads, K, *S)`` float32 (float64 for float64 inputs) log-probabilities, offsets ordered as
        :func:`neighbourhood_offsets`; ``-inf`` where ``p + o`` is outside the image (the offset ``0`` never is).
        Differentiable by autograd.
    """
    if query.shape != key.shape or query.ndim not in (4, 5):
        raise ValueError(
            "neighbourhood_log_softmax: query and key must have the same (B, C, *spatial) shape with 2 or 3 spatial "
            f"dims, got {tuple(query.shape)} and {tuple(key.shape)}."
        )
    if int(num_heads) != num_heads or num_heads < 1 or query.shape[1] % num_heads:
        raise ValueError(
            f"neighbourhood_log_softmax: the channel count of {tuple(query.shape)} must be divisible by "
            f"num_heads={num_heads}."
        )
    b, c, *spatial = query.shape
    dtype = torch.float64 if torch.float64 in (query.dtype, key.dtype) else torch.float32
    heads, head_dim = int(num_heads), c // int(num_heads)
    q = query.to(dtype).reshape(b, head_dim, heads, *spatial)
    k = key.to(dtype).reshape(b, head_dim, heads, *spatial) / math.sqrt(head_dim)
    r = int(radius)
    padded = F.pad(k, (r, r) * len(spatial))
    inside = F.pad(torch.ones(spatial, dtype=torch.bool, device=k.device), (r, r) * len(spatial))
    logits, valid = [], []
    for offset in neighbourhood_offsets(r, len(spatial)):
        box = tuple(slice(r + o, r + o + s) for o, s in zip(offset, spatial))
        logits.append((q * padded[(slice(None), slice(None), slice(None)) + box]).sum(1))
        valid.append(inside[box])
    scores = torch.stack(logits, 2).masked_fill(~torch.stack(valid)[None, None], float("-inf"))
    return torch.log_softmax(scores, dim=2)


def offset_distribution(displacement: torch.Tensor, radius: int) -> torch.Tensor:
    """The distribution over the neighbourhood's offsets that a displacement of sub-voxel length corresponds to:
    linear-interpolation weights, ``t(o) = prod_i max(0, 1 - |o_i - u_i|)``, so that ``sum_o t(o) o = u``.

    Args:
        displacement: ``(B, d, *S)`` (or ``(B, d)``) displacement ``u`` in voxels, ``|u_i| <= radius``.
        radius: the neighbourhood's radius.

    Returns:
        ``(B, K, *S)`` (or ``(B, K)``) weights summing to 1 over ``K``, offsets ordered as
        :func:`neighbourhood_offsets`.
    """
    d = displacement.shape[1] if displacement.ndim >= 2 else 0
    if d not in (2, 3) or displacement.ndim not in (2, d + 2):
        raise ValueError(
            "offset_distribution: displacement must be (B, d) or (B, d, *S) with d = 2 or 3 spatial dims, got "
            f"{tuple(displacement.shape)}."
        )
    if float(displacement.detach().abs().max()) > radius:
        raise ValueError(f"offset_distribution: |displacement| must be <= radius={radius}.")
    offsets = torch.tensor(neighbourhood_offsets(radius, d), dtype=displacement.dtype, device=displacement.device)
    shape = (1, len(offsets), d) + (1,) * (displacement.ndim - 2)
    hat = (1 - (offsets.view(shape) - displacement.unsqueeze(1)).abs()).clamp_min(0)
    return hat.prod(2)
