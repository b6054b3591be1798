# SPDX-License-Identifier: Apache-2.0
"""PCRLv2-style pretext data and network wrapper: global and local crops, a backbone run on each.

Source: H.-Y. Zhou, C. Lu, C. Chen, S. Yang, Y. Yu, "A Unified Visual Information Preservation
Framework for Self-supervised Pre-training in Medical Image Analysis" (PCRLv2), IEEE TPAMI 2023.
Written from the paper's description; the loss is :py:class:`monai_cover.losses.pcrlv2.PCRLv2Loss`.

Data (per volume, :py:class:`PCRLv2Cropd`):

- two **global** boxes with per-axis size fractions ``~ U(global_scale)`` of the image, redrawn until
  their IoU exceeds ``min_iou`` (at most ``max_tries``), each resized to ``global_size``;
- ``num_local`` **local** boxes ("sub-crops") with size fractions ``~ U(local_scale)``, drawn inside
  the union box of the two globals, each resized to ``local_size``;
- every crop gets random flips (``flip_prob`` per axis); the flipped clean global crops are the
  restoration targets; the network inputs are corrupted copies (noise, blur, gamma, local voxel
  shuffling for the globals; the same without shuffling for the locals), MONAI transforms.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandCoarseShuffle,
    RandGaussianNoise,
    RandGaussianSmooth,
    Randomizable,
)
from monai.utils import convert_to_tensor

from monai_cover.baselines.utils import Box, SingleImageCropd, as_channel_first_image, box_iou, crop_resize
from monai_cover.networks.utils import run_backbone_on_views

__all__ = ["PCRLv2Cropd", "PCRLv2CropD", "PCRLv2CropDict", "PCRLv2CropParams", "PCRLv2Net", "default_corruption"]


@dataclass
class PCRLv2CropParams:
    """One draw of :py:class:`PCRLv2Cropd`: boxes ``(start, size)`` in input voxels, flipped axes (of the
    ``(C, *S)`` crop) per crop, and the seed of each crop's corruption (``None``: not random)."""

    global_boxes: list[Box]
    local_boxes: list[Box]
    global_flips: list[tuple[int, ...]]
    local_flips: list[tuple[int, ...]]
    global_seeds: list[int | None]
    local_seeds: list[int | None]


def default_corruption(spatial_dims: int = 3, shuffle: bool = True) -> Compose:
    """PCRLv2's input corruption from MONAI transforms: Gaussian noise, Gaussian blur, random gamma,
    and (``shuffle=True``, global crops only) shuffling of voxels inside random small boxes."""
    steps: list = [
        RandGaussianNoise(prob=0.5, mean=0.0, std=0.05),
        RandGaussianSmooth(sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), sigma_z=(0.25, 1.0), prob=0.5),
        RandAdjustContrast(prob=0.5, gamma=(0.7, 1.5)),
    ]
    if shuffle:
        steps.append(RandCoarseShuffle(holes=8, spatial_size=[4] * spatial_dims, max_holes=16, prob=0.5))
    return Compose(steps)


def _check_fractions(value: Sequence[float], name: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"PCRLv2Cropd: {name} must satisfy 0 < low <= high <= 1, got {tuple(value)}.")
    return lo, hi


class PCRLv2Cropd(SingleImageCropd):
    """Global and local crops of one image for the PCRLv2-style pretext (see the module docstring).

    Reads ``keys`` (one image ``(C, *S)``, 2D or 3D) and adds (``prefix`` defaults to ``"pcrlv2_"``):

    - ``{prefix}global_input``: ``(2, C, *global_size)`` corrupted global crops (network input);
    - ``{prefix}global_target``: ``(2, C, *global_size)`` clean global crops (restoration target);
    - ``{prefix}local_input``: ``(num_local, C, *local_size)`` corrupted local crops;
    - ``{prefix}global_boxes``: ``(2, 2, d)`` long, each box's start and size in input voxels.

    All randomness comes from ``self.R`` (seed with ``set_random_state``, or ``set_determinism``).

    Args:
        keys: the one image key.
        global_size, local_size: output sizes of the crops (make them valid backbone input sizes,
            e.g. multiples of 16 for a 5-level U-Net).
        num_local: local crops per volume (PCRLv2: 6).
        global_scale, local_scale: ``(low, high)`` per-axis box size as a fraction of the image size.
        min_iou: the two global boxes must overlap more than this (PCRLv2: 0.3).
        max_tries: redraws of the second global box before accepting the last draw.
        flip_prob: probability of flipping each axis of each crop.
        global_corruption, local_corruption: callables ``(C, *size) -> (C, *size)`` (default
            :py:func:`default_corruption`); ``Randomizable`` ones are reseeded from ``self.R``.
        prefix: prefix of the output keys.
        allow_missing_keys: skip silently when the image key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        global_size: Sequence[int] = (64, 64, 32),
        local_size: Sequence[int] = (16, 16, 16),
        num_local: int = 6,
        global_scale: Sequence[float] = (0.5, 1.0),
        local_scale: Sequence[float] = (0.15, 0.35),
        min_iou: float = 0.3,
        max_tries: int = 50,
        flip_prob: float = 0.5,
        global_corruption: Any = "default",
        local_corruption: Any = "default",
        prefix: str = "pcrlv2_",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prefix, allow_missing_keys)
        self.global_size = tuple(int(s) for s in global_size)
        self.local_size = tuple(int(s) for s in local_size)
        if len(self.global_size) != len(self.local_size) or len(self.global_size) not in (2, 3):
            raise ValueError(
                f"PCRLv2Cropd: global_size {self.global_size} and local_size {self.local_size} must both have 2 or 3 "
                "entries."
            )
        if int(num_local) < 0:
            raise ValueError(f"PCRLv2Cropd: num_local must be >= 0, got {num_local}.")
        self.num_local = int(num_local)
        self.global_scale = _check_fractions(global_scale, "global_scale")
        self.local_scale = _check_fractions(local_scale, "local_scale")
        self.min_iou, self.max_tries, self.flip_prob = float(min_iou), max(1, int(max_tries)), float(flip_prob)
        dims = len(self.global_size)
        self.global_corruption = default_corruption(dims, True) if global_corruption == "default" else global_corruption
        self.local_corruption = default_corruption(dims, False) if local_corruption == "default" else local_corruption

    def _box(self, spatial: Sequence[int], scale: tuple[float, float], region: Box | None = None) -> Box:
        r_start, r_size = region if region is not None else ((0,) * len(spatial), tuple(spatial))
        size = [max(1, min(rs, int(round(self.R.uniform(*scale) * n)))) for rs, n in zip(r_size, spatial)]
        start = [r0 + int(self.R.randint(0, rs - z + 1)) for r0, rs, z in zip(r_start, r_size, size)]
        return tuple(start), tuple(size)

    def _flip_axes(self, spatial_dims: int) -> tuple[int, ...]:
        return tuple(i + 1 for i in range(spatial_dims) if self.R.uniform() < self.flip_prob)

    def _corruption_seed(self, corruption: Any) -> int | None:
        return int(self.R.randint(np.iinfo(np.int32).max)) if isinstance(corruption, Randomizable) else None

    def sample_boxes(self, spatial_shape: Sequence[int]) -> tuple[list[Box], list[Box]]:
        """Draw the two global boxes and the local boxes for an image of ``spatial_shape``."""
        spatial = tuple(int(s) for s in spatial_shape)
        first = self._box(spatial, self.global_scale)
        second = self._box(spatial, self.global_scale)
        for _ in range(self.max_tries - 1):
            if box_iou(first, second) > self.min_iou:
                break
            second = self._box(spatial, self.global_scale)
        lo = [min(a, b) for a, b in zip(first[0], second[0])]
        hi = [max(a + za, b + zb) for a, za, b, zb in zip(first[0], first[1], second[0], second[1])]
        union = (tuple(lo), tuple(top - low for top, low in zip(hi, lo)))
        locals_ = [self._box(spatial, self.local_scale, union) for _ in range(self.num_local)]
        return [first, second], locals_

    def randomize(self, spatial_shape: Sequence[int]) -> PCRLv2CropParams:
        """Draw every random choice for an image of ``spatial_shape``: boxes, flips, corruption seeds."""
        globals_, locals_ = self.sample_boxes(spatial_shape)
        dims = len(self.global_size)
        global_flips = [self._flip_axes(dims) for _ in globals_]
        global_seeds = [self._corruption_seed(self.global_corruption) for _ in globals_]
        local_flips, local_seeds = [], []
        for _ in locals_:
            local_flips.append(self._flip_axes(dims))
            local_seeds.append(self._corruption_seed(self.local_corruption))
        return PCRLv2CropParams(globals_, locals_, global_flips, local_flips, global_seeds, local_seeds)

    @staticmethod
    def _corrupt(corruption: Any, crop: torch.Tensor, seed: int | None) -> torch.Tensor:
        if corruption is None:
            return crop.clone()
        if seed is not None:
            corruption.set_random_state(seed=seed)
        return convert_to_tensor(corruption(crop), track_meta=False).to(torch.float32)

    def apply(self, image: torch.Tensor, params: PCRLv2CropParams) -> dict[str, torch.Tensor]:
        """The crops of ``image`` ``(C, *S)`` for drawn ``params`` (deterministic), keyed without the prefix."""

        def crop(box: Box, size: tuple[int, ...], axes: tuple[int, ...]) -> torch.Tensor:
            out = crop_resize(image, box, size)
            return torch.flip(out, axes) if axes else out

        targets = [crop(b, self.global_size, f) for b, f in zip(params.global_boxes, params.global_flips)]
        inputs = [self._corrupt(self.global_corruption, t, s) for t, s in zip(targets, params.global_seeds)]
        local = [
            self._corrupt(self.local_corruption, crop(b, self.local_size, f), s)
            for b, f, s in zip(params.local_boxes, params.local_flips, params.local_seeds)
        ]
        return {
            "global_target": torch.stack(targets),
            "global_input": torch.stack(inputs),
            "local_input": torch.stack(local) if local else torch.zeros(0, image.shape[0], *self.local_size),
            "global_boxes": torch.tensor([[b[0], b[1]] for b in params.global_boxes], dtype=torch.long),
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            dims = len(self.global_size)
            image = as_channel_first_image(d[key], dims, "PCRLv2Cropd", key, "global_size", self.global_size)
            crops = self.apply(image, self.randomize(image.shape[1:]))
            d.update({f"{self.prefix}{name}": value for name, value in crops.items()})
        return d


PCRLv2CropD = PCRLv2CropDict = PCRLv2Cropd


class PCRLv2Net(torch.nn.Module):
    """Run a backbone on PCRLv2's crops; the output dict is the input of ``PCRLv2Loss``.

    Args:
        backbone: maps ``(N, C, *S)`` to a feature pyramid (list of ``(N, C_l, *S_l)`` maps, coarse to
            fine; a tensor or mapping is read with :py:func:`~monai_cover.networks.utils.as_pyramid`).
            The same backbone as COVER's, e.g. the U-Net whose decoder levels COVER uses.
        pyramid_key: key of the pyramid when the backbone returns a mapping.

    ``forward(global_input, local_input=None)``:
        - ``global_input``: ``(B, 2, C, *G)`` the two corrupted global crops;
        - ``local_input``: ``(B, K, C, *L)`` local crops, optional.

    Returns ``{"global_pyramids": [pyr_1, pyr_2], "local_pyramids": [pyr_1 .. pyr_K]}``, each pyramid a
    list of ``(B, C_l, *S_l)`` maps, coarse to fine. The backbone runs once for the globals and once for
    the locals (views stacked into the batch).
    """

    def __init__(self, backbone: torch.nn.Module, pyramid_key: str | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.pyramid_key = pyramid_key

    def forward(self, global_input: torch.Tensor, local_input: torch.Tensor | None = None) -> dict[str, Any]:
        if global_input.ndim < 4 or global_input.shape[1] != 2:
            raise ValueError(f"PCRLv2Net: global_input must be (B, 2, C, *S), got {tuple(global_input.shape)}.")
        out: dict[str, Any] = {"global_pyramids": run_backbone_on_views(self.backbone, global_input, self.pyramid_key)}
        has_local = local_input is not None and local_input.ndim >= 4 and local_input.shape[1] > 0
        out["local_pyramids"] = (
            run_backbone_on_views(self.backbone, local_input, self.pyramid_key) if has_local else []
        )
        return out
