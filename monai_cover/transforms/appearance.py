# SPDX-License-Identifier: Apache-2.0
"""Appearance half of a COVER pair: intensity-only augmentation of view A (geometry unchanged).

In order: gamma (optional, off by default), additive Gaussian noise, Gaussian blur, contrast about the mean,
additive brightness, in-painting boxes filled with uniform noise. Every parameter is drawn per sample by
:py:meth:`RandCoverAppearance.sample_params` from a ``numpy.random.RandomState``; :py:func:`apply_appearance`
is deterministic given the parameters. Noise values are generated on the image's device by a
``torch.Generator`` seeded with a seed drawn from the ``RandomState`` (so CPU runs are reproducible bit for
bit, and a CUDA run is reproducible on the same device).

MONAI transforms used as the deterministic steps: ``AdjustContrast`` (gamma), ``GaussianSmooth`` (blur),
``ScaleIntensityFixedMean`` (contrast) and ``ShiftIntensity`` (brightness).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import (
    AdjustContrast,
    GaussianSmooth,
    RandomizableTransform,
    ScaleIntensityFixedMean,
    ShiftIntensity,
)
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from monai_cover.transforms.spatial import check_interval

__all__ = ["AppearanceParams", "apply_appearance", "RandCoverAppearance", "check_prob"]

_MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class AppearanceParams:
    """One draw of the appearance augmentation; ``None`` means "step not applied".

    Attributes:
        gamma: exponent of MONAI ``AdjustContrast`` (intensities mapped to [0, 1], raised, mapped back).
        noise_std: standard deviation of additive Gaussian noise (intensity units).
        noise_seed: seed of the ``torch.Generator`` that makes the noise.
        blur_sigma: Gaussian blur sigma in voxels (same on every axis).
        contrast: factor ``c``: ``x <- (x - mean) * c + mean`` (mean over all channels and voxels).
        brightness: additive offset.
        boxes: in-painting boxes, each ``(start, size)`` per spatial axis, voxels.
        fill_range: ``(lo, hi)`` of the uniform noise that fills the boxes.
        fill_seed: seed of the ``torch.Generator`` that makes the fill noise.
    """

    gamma: float | None = None
    noise_std: float | None = None
    noise_seed: int = 0
    blur_sigma: float | None = None
    contrast: float | None = None
    brightness: float | None = None
    boxes: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = field(default_factory=tuple)
    fill_range: tuple[float, float] = (0.0, 1.0)
    fill_seed: int = 0

    def is_identity(self) -> bool:
        return all(
            v is None for v in (self.gamma, self.noise_std, self.blur_sigma, self.contrast, self.brightness)
        ) and not self.boxes


def _generator(seed: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def _plain(x: torch.Tensor) -> torch.Tensor:
    return convert_to_tensor(x, track_meta=False)


def apply_appearance(img: torch.Tensor, params: AppearanceParams) -> torch.Tensor:
    """Apply one appearance draw to ``img`` ``(C, H, W[, D])`` (floating; returns a plain float32 tensor on
    ``img``'s device). Deterministic given ``params``; ``params.is_identity()`` returns an exact copy."""
    out = _plain(img).to(torch.float32).clone()
    if params.gamma is not None:
        out = _plain(AdjustContrast(gamma=params.gamma)(out))
    if params.noise_std is not None and params.noise_std > 0:
        gen = _generator(params.noise_seed, out.device)
        out = out + params.noise_std * torch.randn(out.shape, generator=gen, device=out.device, dtype=out.dtype)
    if params.blur_sigma is not None and params.blur_sigma > 0:
        out = _plain(GaussianSmooth(sigma=params.blur_sigma)(out))
    if params.contrast is not None:
        out = _plain(ScaleIntensityFixedMean(factor=params.contrast - 1.0, fixed_mean=True)(out))
    if params.brightness is not None:
        out = _plain(ShiftIntensity(offset=params.brightness)(out))
    if params.boxes:
        gen = _generator(params.fill_seed, out.device)
        lo, hi = params.fill_range
        for start, size in params.boxes:
            window = (slice(None), *[slice(s, s + n) for s, n in zip(start, size)])
            shape = (out.shape[0], *size)
            fill = torch.rand(shape, generator=gen, device=out.device, dtype=out.dtype) * (hi - lo) + lo
            out[window] = fill
    return out


def check_prob(value: float, name: str) -> float:
    """Validate a probability in [0, 1]; errors name ``name``."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}.")
    return value


class RandCoverAppearance(RandomizableTransform):
    """Random appearance augmentation of one image ``(C, H, W[, D])`` (view A of a COVER pair).

    Each step has its own probability and range, drawn per sample; set a probability to 0 to switch the
    step off. Defaults follow cover-method.md, with a real blur (the reference's is a no-op).

    Args:
        noise_prob / noise_std_range: additive Gaussian noise, std ~ U(range). Default 1.0, (0, 0.02).
        blur_prob / blur_sigma_range: Gaussian blur, sigma ~ U(range) voxels. Default 0.5, (0.25, 1.0).
        contrast_prob / contrast_range: ``(x - mean) * c + mean``, c ~ U(range). Default 1.0, (0.5, 1.5).
        brightness_prob / brightness_std: ``x + b``, b ~ N(0, std). Default 1.0, 0.1.
        gamma_prob / gamma_range: MONAI ``AdjustContrast`` gamma ~ U(range). Default 0.0 (off), (0.7, 1.5).
        inpaint_prob: probability of in-painting at all. Default 1.0.
        inpaint_max_boxes: at most this many boxes; after the first, each further box is added with
            probability ``inpaint_continue_prob`` (default 10 and 0.95, as the reference).
        inpaint_size_range: box side as a fraction of the image side, per axis ~ U(range). Default (0.1, 0.133).
        inpaint_fill_range: boxes are filled with U(range) noise. Default (0, 1).

    Output: float32, same shape, device and metadata as the input (integer input is converted to float32).
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        noise_prob: float = 1.0,
        noise_std_range: Sequence[float] = (0.0, 0.02),
        blur_prob: float = 0.5,
        blur_sigma_range: Sequence[float] = (0.25, 1.0),
        contrast_prob: float = 1.0,
        contrast_range: Sequence[float] = (0.5, 1.5),
        brightness_prob: float = 1.0,
        brightness_std: float = 0.1,
        gamma_prob: float = 0.0,
        gamma_range: Sequence[float] = (0.7, 1.5),
        inpaint_prob: float = 1.0,
        inpaint_max_boxes: int = 10,
        inpaint_continue_prob: float = 0.95,
        inpaint_size_range: Sequence[float] = (0.1, 0.133),
        inpaint_fill_range: Sequence[float] = (0.0, 1.0),
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        self.noise_prob = check_prob(noise_prob, "noise_prob")
        self.noise_std_range = check_interval(noise_std_range, "noise_std_range", 0.0)
        self.blur_prob = check_prob(blur_prob, "blur_prob")
        self.blur_sigma_range = check_interval(blur_sigma_range, "blur_sigma_range", 0.0)
        self.contrast_prob = check_prob(contrast_prob, "contrast_prob")
        self.contrast_range = check_interval(contrast_range, "contrast_range", 0.0)
        self.brightness_prob = check_prob(brightness_prob, "brightness_prob")
        if not (math.isfinite(float(brightness_std)) and float(brightness_std) >= 0):
            raise ValueError(f"brightness_std must be a finite number >= 0, got {brightness_std}.")
        self.brightness_std = float(brightness_std)
        self.gamma_prob = check_prob(gamma_prob, "gamma_prob")
        self.gamma_range = check_interval(gamma_range, "gamma_range", 0.0)
        if self.gamma_prob > 0 and self.gamma_range[0] <= 0:
            raise ValueError(f"gamma_range must be > 0, got {self.gamma_range}.")
        self.inpaint_prob = check_prob(inpaint_prob, "inpaint_prob")
        if int(inpaint_max_boxes) < 0:
            raise ValueError(f"inpaint_max_boxes must be >= 0, got {inpaint_max_boxes}.")
        self.inpaint_max_boxes = int(inpaint_max_boxes)
        self.inpaint_continue_prob = check_prob(inpaint_continue_prob, "inpaint_continue_prob")
        self.inpaint_size_range = check_interval(inpaint_size_range, "inpaint_size_range", 0.0)
        if self.inpaint_size_range[1] > 1.0:
            raise ValueError(f"inpaint_size_range must lie in [0, 1], got {self.inpaint_size_range}.")
        self.inpaint_fill_range = check_interval(inpaint_fill_range, "inpaint_fill_range")
        self._params: AppearanceParams | None = None

    def sample_params(self, spatial_shape: Sequence[int], R: np.random.RandomState | None = None) -> AppearanceParams:
        """Draw one :py:class:`AppearanceParams` for an image of ``spatial_shape`` from ``R`` (default ``self.R``)."""
        R = self.R if R is None else R
        shape = tuple(int(s) for s in spatial_shape)

        def maybe(prob: float) -> bool:
            return prob > 0 and float(R.uniform()) < prob

        gamma = float(R.uniform(*self.gamma_range)) if maybe(self.gamma_prob) else None
        noise_std = float(R.uniform(*self.noise_std_range)) if maybe(self.noise_prob) else None
        noise_seed = int(R.randint(_MAX_SEED)) if noise_std is not None else 0
        blur = float(R.uniform(*self.blur_sigma_range)) if maybe(self.blur_prob) else None
        contrast = float(R.uniform(*self.contrast_range)) if maybe(self.contrast_prob) else None
        brightness = float(R.normal(0.0, self.brightness_std)) if maybe(self.brightness_prob) else None
        boxes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        fill_seed = 0
        if self.inpaint_max_boxes > 0 and maybe(self.inpaint_prob):
            count = 1
            while count < self.inpaint_max_boxes and float(R.uniform()) < self.inpaint_continue_prob:
                count += 1
            for _ in range(count):
                size = tuple(max(1, min(s, int(round(R.uniform(*self.inpaint_size_range) * s)))) for s in shape)
                start = tuple(int(R.randint(0, s - n + 1)) for s, n in zip(shape, size))
                boxes.append((start, size))
            fill_seed = int(R.randint(_MAX_SEED))
        return AppearanceParams(
            gamma, noise_std, noise_seed, blur, contrast, brightness, tuple(boxes), self.inpaint_fill_range, fill_seed
        )

    def randomize(self, spatial_shape: Sequence[int]) -> None:  # type: ignore[override]
        super().randomize(None)
        self._params = self.sample_params(spatial_shape)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """``img``: ``(C, H, W[, D])``. Returns the augmented float32 image (MetaTensor in, MetaTensor out)."""
        img = convert_to_tensor(img, track_meta=get_track_meta())
        if randomize:
            self.randomize(img.shape[1:])
        if self._params is None:
            raise RuntimeError("RandCoverAppearance: call randomize() before __call__(..., randomize=False).")
        out = apply_appearance(img, self._params)
        return convert_to_dst_type(out, dst=img, dtype=torch.float32)[0]
