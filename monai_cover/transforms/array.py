# SPDX-License-Identifier: Apache-2.0
"""Array form of the COVER pair generator: :py:class:`RandCoverPair`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import RandomizableTransform, SpatialCrop
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor, fall_back_tuple

from monai_cover.ddf import overlap_mask
from monai_cover.transforms.appearance import AppearanceParams, RandCoverAppearance, apply_appearance, check_prob
from monai_cover.transforms.spatial import (
    DEFAULT_MAX_DISPLACEMENT,
    SpatialParams,
    SpatialRanges,
    default_spatial_ranges,
    resample_crop,
    sample_spatial_params,
    spatial_ddf,
)

__all__ = ["CoverPair", "RandCoverPair", "check_cover_image"]


class CoverPair(NamedTuple):
    """Output of :py:class:`RandCoverPair` (a tuple ``(view_a, view_b, ddf, overlap)`` with names).

    Attributes:
        view_a: ``(C, *crop)`` float32, the crop with appearance augmentation only.
        view_b: ``(C, *crop)`` float32, the crop with spatial augmentation only:
            ``view_b(p) = geom_a(p + ddf(p))`` inside the overlap (``geom_a`` = the crop before appearance).
        ddf: ``(spatial_dims, *crop)`` float32, voxels, channel ``i`` = displacement along tensor axis ``i``.
        overlap: ``(1, *crop)`` float32 in {0, 1}: 1 where ``p + ddf(p)`` lies inside the crop on every axis.
    """

    view_a: NdarrayOrTensor
    view_b: NdarrayOrTensor
    ddf: NdarrayOrTensor
    overlap: NdarrayOrTensor


def check_cover_image(img: Any, name: str = "image") -> torch.Tensor:
    """Validate one channel-first image for :py:class:`RandCoverPair` and return it as a float32 tensor.

    Raises:
        TypeError: not array-like, or a complex dtype. Integer and bool images are converted to float32.
        ValueError: not ``(C, H, W)`` or ``(C, H, W, D)``, a zero-size axis, or NaN/inf values.
    """
    if not isinstance(img, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name}: expected a torch.Tensor, MetaTensor or numpy array, got {type(img).__name__}.")
    img = convert_to_tensor(img, track_meta=get_track_meta())
    if img.dtype.is_complex:
        raise TypeError(f"{name}: complex dtype {img.dtype} is not supported; give a real-valued image.")
    if img.ndim not in (3, 4):
        raise ValueError(
            f"{name}: expected a channel-first image (C, H, W) or (C, H, W, D), got shape {tuple(img.shape)} "
            f"({img.ndim} dims)."
        )
    if any(int(s) == 0 for s in img.shape):
        raise ValueError(
            f"{name}: zero-size axis in shape {tuple(img.shape)}; expected (C, H, W[, D]) with all sizes >= 1."
        )
    if img.dtype != torch.float32:
        img = img.to(torch.float32)
    if not bool(torch.isfinite(img).all()):
        raise ValueError(f"{name}: the image contains NaN or inf values (shape {tuple(img.shape)}).")
    return img


class RandCoverPair(RandomizableTransform):
    """Make a COVER training pair from one channel-first image ``(C, H, W[, D])``.

    Conventions (MONAI ``Warp`` semantics, :py:mod:`monai_cover.ddf`): ``view_b(p) = geom_a(p + ddf(p))`` with
    ``geom_a`` the crop before appearance augmentation; ``ddf`` in voxels, channel ``i`` along tensor axis
    ``i``, corners aligned; an identity draw gives ``ddf == 0`` and ``view_b == geom_a`` exactly.

    Pipeline per call: draw the crop window (uniform over the image), the margin region
    (``ceil(margin * spatial_size)`` per axis, clipped to the image, containing the crop; its centre
    ``(size - 1) / 2`` is the centre of the affine), one spatial transform (rotation, per-axis scale, shear,
    translation, optional elastic) and one appearance draw. Then: ``ddf`` on the crop only
    (:py:func:`~monai_cover.transforms.spatial.spatial_ddf`), view B by ONE linear resampling of the whole source
    at ``p + ddf(p)`` (zero padding outside the image), view A = appearance(crop), overlap =
    :py:func:`monai_cover.ddf.overlap_mask` (ddf) in the crop frame.

    Args:
        spatial_size: output crop ``(H, W[, D])``; an int is used for every axis, ``None`` or a non-positive
            entry means the full image along that axis (no cropping). Must not exceed the image.
        margin: margin region size as a multiple of the crop (the reference uses 1.5). ``>= 1``.
        rotate_range: radians; number ``x`` -> ``U(-x, x)``, or one number / ``(lo, hi)`` per angle
            (1 angle in 2D, 3 in 3D, about axes 0, 1, 2). ``None``: 2D ``pi/6`` (30 deg), 3D ``pi/12`` (15 deg).
        scale_range: per-axis scale ``1 + U(-x, x)`` (or per-axis ``(lo, hi)`` of the factor). ``None``:
            2D 0.75, 3D 0.25. Scale > 1 shows more of the image in view B.
        shear_range: shear angles in radians per ordered axis pair (2 in 2D, 6 in 3D). ``None``: 2D
            ``1.5 pi/32`` (8.4 deg), 3D ``pi/18`` (10 deg).
        translate_range: fraction of the margin region size per axis. ``None``: 2D 0.3, 3D 0.1.
        elastic: add an elastic field. ``None``: off in 2D (as the reference 2D run), on in 3D.
        elastic_alpha_range / elastic_sigma_range: alpha and sigma (voxels) of the elastic field, reference
            meaning (alpha times sigma-smoothed U(-1, 1) voxel noise). Default (0, 1000) and (10, 13).
        spatial_prob: probability of a spatial transform at all (otherwise the identity). Default 1.0.
        max_displacement: bound in voxels on ``max |ddf_i|`` over the whole crop, per axis. Default 62 =
            ``capture_range(radius=2, levels=5)``, the reach of the default COVER head: targets beyond it
            cannot be predicted and would dominate the L1 loss. Draws beyond it are redrawn up to
            ``max_redraws`` times, then the best one is shrunk toward the identity until it fits. ``None``
            disables the bound (the reference behaviour). Use ``capture_range(3)`` = 93 for radius 3.
            Measured over the whole crop (exact for the affine part, via the crop corners; conservative with
            elastic), which also bounds every overlap voxel. The 3D defaults on 96^3 crops rarely exceed 62
            (identical statistics with and without the bound in benchmarks/bench_views.py); the 2D reference
            ranges on 384^2 crops almost never do (90 % of overlap voxels beyond reach unbounded), so 2D draws end
            up shrunk to
            the bound: prefer smaller 2D ranges or a larger head radius there.
        max_redraws: number of draws tried before shrinking (>= 1). Default 10.
        appearance: ``None`` (default settings), ``False`` (no appearance augmentation), a dict of
            :py:class:`RandCoverAppearance` arguments, or an instance.

    Returns:
        :py:class:`CoverPair` ``(view_a, view_b, ddf, overlap)``, all float32 on the input's device; MetaTensors
        (when meta tracking is on) carrying the input's metadata with the crop's affine.

    Input rules: integer/bool images are converted to float32 (float64 too: views are float32); complex dtypes
    raise ``TypeError``; wrong rank, zero-size axes, NaN/inf values or a crop larger than the image raise
    ``ValueError`` with the shape.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        spatial_size: Sequence[int] | int | None = None,
        margin: float = 1.5,
        rotate_range: Any = None,
        scale_range: Any = None,
        shear_range: Any = None,
        translate_range: Any = None,
        elastic: bool | None = None,
        elastic_alpha_range: Sequence[float] = (0.0, 1000.0),
        elastic_sigma_range: Sequence[float] = (10.0, 13.0),
        spatial_prob: float = 1.0,
        max_displacement: float | None = DEFAULT_MAX_DISPLACEMENT,
        max_redraws: int = 10,
        appearance: RandCoverAppearance | dict | bool | None = None,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        if spatial_size is not None:
            sizes = [spatial_size] if isinstance(spatial_size, int) else list(spatial_size)
            if not all(isinstance(s, (int, np.integer)) for s in sizes) or len(sizes) not in (1, 2, 3):
                raise ValueError(f"spatial_size must be None, an int or 2-3 ints, got {spatial_size!r}.")
        self.spatial_size = spatial_size
        if not (math.isfinite(float(margin)) and float(margin) >= 1.0):
            raise ValueError(f"margin must be a finite number >= 1, got {margin}.")
        self.margin = float(margin)
        self.spatial_prob = check_prob(spatial_prob, "spatial_prob")
        bound = None if max_displacement is None else float(max_displacement)
        if bound is not None and not (bound >= 0 and math.isfinite(bound)):
            raise ValueError(f"max_displacement must be None or a finite number >= 0, got {max_displacement}.")
        self.max_displacement = bound
        if int(max_redraws) < 1:
            raise ValueError(f"max_redraws must be >= 1, got {max_redraws}.")
        self.max_redraws = int(max_redraws)
        # ranges depend on spatial_dims; resolve both now so bad arguments fail here, naming the argument
        self._ranges: dict[int, SpatialRanges | ValueError] = {}
        for dims in (2, 3):
            try:
                self._ranges[dims] = default_spatial_ranges(
                    dims, rotate_range, scale_range, shear_range, translate_range, elastic,
                    elastic_alpha_range, elastic_sigma_range,
                )  # fmt: skip
            except ValueError as err:
                self._ranges[dims] = err
        if all(isinstance(r, ValueError) for r in self._ranges.values()):
            raise self._ranges[3]  # type: ignore[misc]
        if appearance is None or appearance is True:
            appearance = RandCoverAppearance()
        elif isinstance(appearance, dict):
            appearance = RandCoverAppearance(**appearance)
        elif appearance is False:
            appearance = None
        elif not isinstance(appearance, RandCoverAppearance):
            raise TypeError(
                f"appearance must be None, a bool, a dict or a RandCoverAppearance, got {type(appearance).__name__}."
            )
        self.appearance: RandCoverAppearance | None = appearance
        self.spatial_params: SpatialParams | None = None
        self.appearance_params: AppearanceParams | None = None

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandCoverPair:
        super().set_random_state(seed, state)
        if self.appearance is not None:  # forwarded for standalone use; the pair itself draws only from self.R
            self.appearance.set_random_state(seed, state)
        return self

    def ranges(self, spatial_dims: int) -> SpatialRanges:
        """The resolved spatial ranges for 2 or 3 spatial dims (raises the argument error if they don't fit)."""
        r = self._ranges[spatial_dims]
        if isinstance(r, ValueError):
            raise ValueError(f"RandCoverPair ranges do not fit {spatial_dims}D images: {r}")
        return r

    def crop_size(self, image_shape: Sequence[int], name: str = "image") -> tuple[int, ...]:
        """The output crop for a spatial ``image_shape`` (checks that it fits)."""
        shape = tuple(int(s) for s in image_shape)
        if self.spatial_size is None:
            return shape
        if not isinstance(self.spatial_size, int) and len(self.spatial_size) != len(shape):
            raise ValueError(
                f"{name}: spatial_size {tuple(self.spatial_size)} has {len(self.spatial_size)} entries but the image "
                f"has {len(shape)} spatial dims (shape (C, {', '.join(map(str, shape))}))."
            )
        crop = tuple(int(c) for c in fall_back_tuple(self.spatial_size, shape))
        if any(c > s for c, s in zip(crop, shape)):
            raise ValueError(f"{name}: crop spatial_size {crop} is larger than the image's spatial shape {shape}.")
        return crop

    def randomize(self, image_shape: Sequence[int]) -> None:  # type: ignore[override]
        """Draw the crop, the spatial transform and the appearance parameters for a spatial ``image_shape``
        (all from ``self.R``)."""
        super().randomize(None)
        shape = tuple(int(s) for s in image_shape)
        crop = self.crop_size(shape)
        self.spatial_params = sample_spatial_params(
            self.R, shape, crop, self.ranges(len(shape)), margin=self.margin, prob=self.spatial_prob,
            max_displacement=self.max_displacement, max_redraws=self.max_redraws,
        )  # fmt: skip
        self.appearance_params = None if self.appearance is None else self.appearance.sample_params(crop, self.R)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> CoverPair:  # type: ignore[override]
        """``img``: ``(C, H, W[, D])``. Returns :py:class:`CoverPair`; see the class docstring."""
        return self.make_pair(img, randomize=randomize)

    def make_pair(self, img: NdarrayOrTensor, randomize: bool = True, name: str = "image") -> CoverPair:
        """:py:meth:`__call__` with ``name`` used in error messages (the dict form passes the key)."""
        img = check_cover_image(img, name)
        crop = self.crop_size(img.shape[1:], name)
        if randomize:
            self.randomize(img.shape[1:])
        params = self.spatial_params
        if params is None or tuple(params.crop_size) != crop:
            raise RuntimeError(f"{name}: call randomize() with this image shape before __call__(..., randomize=False).")
        start = list(params.crop_origin)
        geom_a = SpatialCrop(roi_start=start, roi_end=[s + c for s, c in zip(start, crop)])(img)
        source = convert_to_tensor(img, track_meta=False)
        ddf = spatial_ddf(params, device=source.device)
        view_b = resample_crop(source, params, ddf)
        view_a = geom_a.clone() if self.appearance_params is None else apply_appearance(geom_a, self.appearance_params)
        overlap = overlap_mask(ddf)

        def like_crop(x: torch.Tensor) -> NdarrayOrTensor:
            out = convert_to_dst_type(x, dst=geom_a, dtype=torch.float32)[0]
            if isinstance(out, MetaTensor) and out is not geom_a:
                out.affine = geom_a.affine.clone()  # one affine tensor per output, never shared
            return out

        return CoverPair(like_crop(view_a), like_crop(view_b), like_crop(ddf), like_crop(overlap))
