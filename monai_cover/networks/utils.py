# SPDX-License-Identifier: Apache-2.0
"""Small tensor helpers of the networks: padding an input to a network's stride and cropping its pyramid
back, reading any backbone output as a pyramid, running a backbone on stacked views, global pooling.

Padding goes at the *end* of every spatial axis to a multiple of the network's total stride; after the
network runs, every pyramid level is cropped back to ``ceil(size * level_size / padded_size)``. Voxel ``0``
of every level stays voxel ``0``, each level keeps the exact x2 geometry of the padded pyramid, and the
finest level has the input's size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.utils import ensure_tuple_rep

__all__ = ["pad_to_divisible", "crop_pyramid", "as_pyramid", "run_backbone_on_views", "global_pool"]


def pad_to_divisible(
    x: torch.Tensor, divisor: int | Sequence[int], mode: str = "constant", value: float = 0.0
) -> torch.Tensor:
    """Pad the spatial axes of ``x`` ``(B, C, *S)`` at their end to the next multiple of ``divisor``.

    Args:
        x: batched input.
        divisor: one int for all axes or one per spatial axis (``>= 1``).
        mode: ``torch.nn.functional.pad`` mode: ``"constant"`` (``value``), ``"replicate"``, ``"reflect"``.
        value: fill value of ``"constant"``.

    Returns:
        ``x`` itself when no padding is needed, else the padded tensor.
    """
    spatial = tuple(x.shape[2:])
    div = ensure_tuple_rep(divisor, len(spatial))
    if min(int(d) for d in div) < 1:
        raise ValueError(f"pad_to_divisible: divisor must be >= 1, got {divisor}.")
    extra = [(-s) % int(d) for s, d in zip(spatial, div)]
    if not any(extra):
        return x
    pads: list[int] = []
    for e in reversed(extra):  # F.pad takes the last axis first
        pads += [0, e]
    if mode == "constant":
        return F.pad(x, pads, mode="constant", value=value)
    if mode == "reflect" and any(e >= s for e, s in zip(extra, spatial)):
        mode = "replicate"  # reflect needs a pad smaller than the axis
    return F.pad(x, pads, mode=mode)


def crop_pyramid(
    levels: Sequence[torch.Tensor], spatial_size: Sequence[int], padded_size: Sequence[int]
) -> list[torch.Tensor]:
    """Crop every level computed on a grid padded from ``spatial_size`` to ``padded_size`` back to the part that
    covers the unpadded input: ``ceil(spatial_size * level_size / padded_size)`` voxels from the start of each axis.
    """
    if tuple(spatial_size) == tuple(padded_size):
        return list(levels)
    out = []
    for f in levels:
        size = f.shape[2:]
        keep = [max(1, -(-int(s) * int(n) // int(p))) for s, n, p in zip(spatial_size, size, padded_size)]
        out.append(f[(slice(None), slice(None)) + tuple(slice(0, k) for k in keep)])
    return out


def as_pyramid(output, key: str | None = None) -> list[torch.Tensor]:
    """Read a backbone output as a feature pyramid: a list of ``(B, C_l, *S_l)`` maps, coarse to fine.

    Accepts a list/tuple of tensors (taken as coarse to fine), a single tensor (a one-level pyramid),
    or a mapping: ``output[key]`` when ``key`` is given, else the mapping's tensor values in order.
    """
    if isinstance(output, Mapping):
        if key is not None:
            if key not in output:
                raise KeyError(f"as_pyramid: key {key!r} not in backbone output keys {sorted(output)}.")
            output = output[key]
        else:
            output = [v for v in output.values() if isinstance(v, torch.Tensor)]
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (list, tuple)) and output and all(isinstance(t, torch.Tensor) for t in output):
        return list(output)
    raise TypeError(
        "as_pyramid: the backbone must return a tensor, a list/tuple of tensors (coarse to fine) or a mapping of "
        f"them, got {type(output).__name__}."
    )


def run_backbone_on_views(
    backbone: torch.nn.Module, views: torch.Tensor, pyramid_key: str | None = None
) -> list[list[torch.Tensor]]:
    """Run ``backbone`` once on every view of a ``(B, V, C, *S)`` stack and split the pyramid back per view.

    Returns ``V`` pyramids, each a list of ``(B, C_l, *S_l)`` maps, coarse to fine.
    """
    if views.ndim < 4:
        raise ValueError(f"run_backbone_on_views: views must be (B, V, C, *S), got {tuple(views.shape)}.")
    b, v = views.shape[:2]
    pyramid = as_pyramid(backbone(views.reshape(b * v, *views.shape[2:])), pyramid_key)
    per_level = [level.reshape(b, v, *level.shape[1:]) for level in pyramid]
    return [[level[:, i] for level in per_level] for i in range(v)]


def global_pool(feature: torch.Tensor) -> torch.Tensor:
    """Global average pooling of ``(B, C, *S)`` to ``(B, C)``."""
    if feature.ndim < 3:
        raise ValueError(f"global_pool: expected (B, C, *S), got {tuple(feature.shape)}.")
    return feature.flatten(2).mean(dim=2)
