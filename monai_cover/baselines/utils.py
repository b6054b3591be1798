# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by the baseline pretext tasks: boxes, crop-and-resize, the single-image crop base.

Boxes are ``(start, size)`` pairs of integer tuples in voxels of the image's spatial axes
(``H, W[, D]`` order, as everywhere in monai_cover).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends, convert_to_tensor

__all__ = [
    "box_intersection",
    "box_iou",
    "crop_resize",
    "as_channel_first_image",
    "SingleImageCropd",
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
    img = convert_to_tensor(image, track_meta=False)
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
