# SPDX-License-Identifier: Apache-2.0
"""VoCo-style pretext data and network wrapper: base crops, random crops, overlap-area position targets.

Source: L. Wu, J. Zhuang, H. Chen, "VoCo: A Simple-yet-Effective Volume Contrastive Learning
Framework for 3D Medical Image Analysis", CVPR 2024. Written from the paper's description; the loss
is :py:class:`monai_cover.losses.voco.VoCoLoss`.

Data (per volume, :py:class:`VoCoCropd`): the image's extent along the two ``grid_axes`` is tiled
by a ``g_0 × g_1`` grid of **base crops** of size ``t_a = ⌊S_a / g_a⌋`` (full extent along any other
axis; VoCo: 4 × 4 crops of 96 × 96 over the axial plane, full depth). ``num_random`` **random crops**
of the same size are placed uniformly inside the tiled region. The position target of random crop
``k`` is the fraction of its area shared with each base crop::

    y_{k,i} = |crop_k ∩ base_i| / |base_i|,    Σ_i y_{k,i} = 1.

Every crop is resized to ``roi_size``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection

from monai_cover.baselines.utils import SingleImageCropd, as_channel_first_image, box_intersection, crop_resize
from monai_cover.networks.utils import global_pool, run_backbone_on_views

__all__ = ["VoCoCropd", "VoCoCropD", "VoCoCropDict", "VoCoNet", "voco_position_labels"]


def voco_position_labels(random_boxes: Sequence, base_boxes: Sequence) -> torch.Tensor:
    """``(K, n_base)`` overlap fractions ``|random_k ∩ base_i| / |base_i|`` of boxes ``(start, size)``."""
    return torch.tensor(
        [[box_intersection(r, b) / math.prod(b[1]) for b in base_boxes] for r in random_boxes], dtype=torch.float32
    )


class VoCoCropd(SingleImageCropd):
    """Base and random crops of one image with VoCo's position targets (see the module docstring).

    Reads ``keys`` (one image ``(C, *S)``, 2D or 3D) and adds (``prefix`` defaults to ``"voco_"``):

    - ``{prefix}base``: ``(g_0·g_1, C, *roi_size)`` base crops, row-major over the grid;
    - ``{prefix}random``: ``(num_random, C, *roi_size)`` random crops;
    - ``{prefix}labels``: ``(num_random, g_0·g_1)`` float32 position targets, rows summing to 1.

    Args:
        keys: the one image key.
        grid: base-crop grid along ``grid_axes`` (VoCo: (4, 4)).
        num_random: random crops per volume (VoCo: 2).
        roi_size: output size of every crop (a valid backbone input size).
        grid_axes: the two spatial axes tiled by the grid (default the first two, ``H, W``).
        prefix: prefix of the output keys.
        allow_missing_keys: skip silently when the image key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        grid: Sequence[int] = (4, 4),
        num_random: int = 2,
        roi_size: Sequence[int] = (64, 64, 64),
        grid_axes: Sequence[int] = (0, 1),
        prefix: str = "voco_",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prefix, allow_missing_keys)
        self.grid = tuple(int(g) for g in grid)
        self.grid_axes = tuple(int(a) for a in grid_axes)
        if len(self.grid) != 2 or min(self.grid) < 1 or len(self.grid_axes) != 2 or len(set(self.grid_axes)) != 2:
            raise ValueError(f"VoCoCropd: grid and grid_axes must be two positive ints / two distinct axes, got "
                             f"grid={grid}, grid_axes={grid_axes}.")
        if int(num_random) < 1:
            raise ValueError(f"VoCoCropd: num_random must be >= 1, got {num_random}.")
        self.num_random = int(num_random)
        self.roi_size = tuple(int(s) for s in roi_size)
        if len(self.roi_size) not in (2, 3) or max(self.grid_axes) >= len(self.roi_size):
            raise ValueError(f"VoCoCropd: roi_size must have 2 or 3 entries covering grid_axes {self.grid_axes}, "
                             f"got {self.roi_size}.")

    def base_boxes(self, spatial_shape: Sequence[int]) -> list:
        """The ``g_0·g_1`` base boxes ``(start, size)`` of an image of ``spatial_shape``, row-major."""
        spatial = tuple(int(s) for s in spatial_shape)
        tile = list(spatial)
        for axis, g in zip(self.grid_axes, self.grid):
            if spatial[axis] < g:
                raise ValueError(f"VoCoCropd: image axis {axis} of size {spatial[axis]} is smaller than grid {g}.")
            tile[axis] = spatial[axis] // g
        boxes = []
        for i in range(self.grid[0]):
            for j in range(self.grid[1]):
                start = [0] * len(spatial)
                a0, a1 = self.grid_axes
                start[a0], start[a1] = i * tile[a0], j * tile[a1]
                boxes.append((tuple(start), tuple(tile)))
        return boxes

    def randomize(self, spatial_shape: Sequence[int]) -> list:
        """Draw ``num_random`` boxes of the base size, uniformly inside the tiled region (from ``self.R``)."""
        tile = self.base_boxes(spatial_shape)[0][1]
        boxes = []
        for _ in range(self.num_random):
            start = [0] * len(tile)
            for axis, g in zip(self.grid_axes, self.grid):
                start[axis] = int(self.R.randint(0, (g - 1) * tile[axis] + 1))
            boxes.append((tuple(start), tuple(tile)))
        return boxes

    sample_random_boxes = randomize

    def apply(self, image: torch.Tensor, random_boxes: Sequence) -> dict[str, torch.Tensor]:
        """The crops of ``image`` ``(C, *S)`` and their position labels for drawn ``random_boxes``
        (deterministic), keyed without the prefix."""
        bases = self.base_boxes(image.shape[1:])
        return {
            "base": torch.stack([crop_resize(image, b, self.roi_size) for b in bases]),
            "random": torch.stack([crop_resize(image, b, self.roi_size) for b in random_boxes]),
            "labels": voco_position_labels(random_boxes, bases),
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = as_channel_first_image(d[key], len(self.roi_size), "VoCoCropd", key, "roi_size", self.roi_size)
            crops = self.apply(image, self.randomize(image.shape[1:]))
            d.update({f"{self.prefix}{name}": value for name, value in crops.items()})
        return d


VoCoCropD = VoCoCropDict = VoCoCropd


class VoCoNet(torch.nn.Module):
    """Run a backbone on VoCo's crops and pool the features; the output is the input of ``VoCoLoss``.

    Each crop's vector is the concatenation of the global average pools of the chosen pyramid levels
    (VoCo pools and concatenates its encoder's stages).

    Args:
        backbone: maps ``(N, C, *S)`` to a pyramid (list of maps coarse to fine, a tensor or a mapping;
            see :py:func:`~monai_cover.networks.utils.as_pyramid`).
        levels: pyramid levels to pool (indices; default all).
        pyramid_key: key of the pyramid when the backbone returns a mapping.

    ``forward(base, random)`` with ``base`` ``(B, n_base, C, *R)`` and ``random`` ``(B, K, C, *R)``
    returns ``{"base_features": (B, n_base, F), "random_features": (B, K, F)}`` (one backbone call).
    """

    def __init__(self, backbone: torch.nn.Module, levels: Sequence[int] | None = None,
                 pyramid_key: str | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.levels = None if levels is None else [int(i) for i in levels]
        self.pyramid_key = pyramid_key

    def forward(self, base: torch.Tensor, random: torch.Tensor) -> dict[str, torch.Tensor]:
        if base.ndim < 4 or random.ndim != base.ndim or base.shape[0] != random.shape[0] or \
                base.shape[2:] != random.shape[2:]:
            raise ValueError(f"VoCoNet: base and random must be (B, n, C, *R) and (B, K, C, *R), got "
                             f"{tuple(base.shape)} and {tuple(random.shape)}.")
        n_base = base.shape[1]
        pyramids = run_backbone_on_views(self.backbone, torch.cat([base, random], dim=1), self.pyramid_key)
        levels = self.levels if self.levels is not None else range(len(pyramids[0]))
        vectors = torch.stack([torch.cat([global_pool(p[i]) for i in levels], dim=1) for p in pyramids], dim=1)
        return {"base_features": vectors[:, :n_base], "random_features": vectors[:, n_base:]}
