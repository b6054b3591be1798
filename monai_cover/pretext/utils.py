# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the baseline pretext tasks: boxes, crop-and-resize, and reading a backbone's pyramid.

Boxes are ``(start, size)`` pairs of integer tuples in voxels of the image's spatial axes
(``H, W[, D]`` order, as everywhere in monai_cover).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import LossReduction, TransformBackends

__all__ = [
    "box_intersection",
    "box_iou",
    "crop_resize",
    "as_pyramid",
    "run_backbone_on_views",
    "global_pool",
    "as_channel_first_image",
    "SingleImageCropd",
    "reduce_per_sample",
]

Box = tuple[tuple[int, ...], tuple[int, ...]]


def box_intersection(a: Box, b: Box) -> int:
    """Number of voxels two boxes ``(start, size)`` share."""
    (sa, za), (sb, zb) = a, b
    if len(sa) != len(sb):
        raise ValueError(f"box_intersection: boxes of different rank, {a} and {b}.")
    return math.prod(max(0, min(x0 + xs, y0 + ys) - max(x0, y0)) for x0, xs, y0, ys in zip(sa, za, sb, zb))


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes ``(start, size)``."""
    inter = box_intersection(a, b)
    union = math.prod(a[1]) + math.prod(b[1]) - inter
    return inter / union if union > 0 else 0.0


def crop_resize(image: torch.Tensor, box: Box, out_size: Sequence[int] | None = None) -> torch.Tensor:
    """Crop ``image`` ``(C, *S)`` to ``box`` and resize it to ``out_size`` (linear, corners not aligned).

    The box must lie inside the image. ``out_size=None`` (or equal to the box size) returns the crop.
    The result is a plain float tensor (metadata dropped: crops of a pretext task are network inputs).
    """
    start, size = (tuple(int(v) for v in t) for t in box)
    spatial = tuple(image.shape[1:])
    if len(start) != len(spatial) or len(size) != len(spatial):
        raise ValueError(f"crop_resize: box {box} does not match image of shape {tuple(image.shape)}.")
    if any(s < 0 or z < 1 or s + z > n for s, z, n in zip(start, size, spatial)):
        raise ValueError(f"crop_resize: box {box} is not inside the image's spatial shape {spatial}.")
    img = image.as_tensor() if hasattr(image, "as_tensor") else image
    crop = img[(slice(None), *(slice(s, s + z) for s, z in zip(start, size)))]
    if not crop.is_floating_point():
        crop = crop.float()
    if out_size is None or tuple(int(v) for v in out_size) == size:
        return crop.clone()
    out_size = tuple(int(v) for v in out_size)
    if len(out_size) != len(spatial):
        raise ValueError(f"crop_resize: out_size {out_size} must have {len(spatial)} entries.")
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    return F.interpolate(crop[None], size=out_size, mode=mode, align_corners=False)[0]


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


def as_channel_first_image(
    image, spatial_dims: int, owner: str, key, size_name: str, size: Sequence[int]
) -> torch.Tensor:
    """``image`` as a tensor ``(C, *S)`` with ``spatial_dims`` spatial axes; errors name ``owner``, ``key`` and
    the ``size_name`` argument whose length fixed ``spatial_dims``."""
    if not isinstance(image, torch.Tensor):
        image = torch.as_tensor(np.asarray(image))
    if image.ndim != spatial_dims + 1:
        raise ValueError(f"{owner}: {key!r} must be (C, *S) with {spatial_dims} spatial dims to match {size_name} "
                         f"{tuple(size)}, got {tuple(image.shape)}.")
    return image


def reduce_per_sample(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply a MONAI ``LossReduction`` to per-sample (or per-anchor) loss values ``(B,)``."""
    if reduction == LossReduction.MEAN.value:
        return values.mean()
    if reduction == LossReduction.SUM.value:
        return values.sum()
    return values


class SingleImageCropd(RandomizableTransform, MapTransform):
    """Base of the pretext crop transforms: one image key, output keys prefixed with ``prefix``, all
    randomness from ``self.R``. Subclasses implement ``__call__``."""

    backend = [TransformBackends.TORCH]

    def __init__(self, keys: KeysCollection, prefix: str, allow_missing_keys: bool = False) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"{type(self).__name__}: exactly one image key is supported, got {self.keys}.")
        self.prefix = prefix
