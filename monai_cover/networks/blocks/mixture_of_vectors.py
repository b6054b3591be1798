# SPDX-License-Identifier: Apache-2.0
"""Mixture of vectors (VEU + MVI): the parameter-free op that reads a displacement off two feature maps.

PLACEHOLDER: a plain, exact formulation with autograd; the streaming implementation replaces it.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MixtureOfVectors", "mixture_of_vectors"]


def mixture_of_vectors(query: torch.Tensor, key: torch.Tensor, radius: int = 2, num_heads: int = 1) -> torch.Tensor:
    """``(B, C, *S)`` query and key -> ``(B, spatial_dims, *S)`` displacement in voxels (float32)."""
    b, c, *spatial = query.shape
    d = len(spatial)
    hd = c // num_heads
    qh = query.float().reshape(b, hd, num_heads, *spatial) * hd**-0.5
    kh = key.float().reshape(b, hd, num_heads, *spatial)
    pad = [radius] * (2 * d)
    kp = F.pad(kh, pad)
    valid = F.pad(torch.ones(spatial, dtype=torch.bool, device=query.device), pad)
    offsets = list(itertools.product(range(-radius, radius + 1), repeat=d))
    logits = []
    for o in offsets:
        window = tuple(slice(radius + oi, radius + oi + si) for oi, si in zip(o, spatial))
        logit = (qh * kp[(..., *window)]).sum(1)
        logits.append(logit.masked_fill(~valid[window], float("-inf")))
    prob = torch.softmax(torch.stack(logits, 2), dim=2)
    vectors = torch.tensor(offsets, dtype=prob.dtype, device=prob.device)
    return torch.einsum("bhk...,kd->bhd...", prob, vectors).mean(1)


class MixtureOfVectors(nn.Module):
    def __init__(self, spatial_dims: int, radius: int = 2, num_heads: int = 1) -> None:
        super().__init__()
        self.spatial_dims, self.radius, self.num_heads = spatial_dims, radius, num_heads

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return mixture_of_vectors(query, key, self.radius, self.num_heads)
