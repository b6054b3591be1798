# SPDX-License-Identifier: Apache-2.0
"""Spatial half of a COVER pair: one random affine (+ optional elastic) transform, turned into ONE
dense displacement field (``ddf``) on the output crop, and ONE resampling of the source image.

Frames. The source image has spatial shape ``S``. The output crop is the window
``[crop_origin, crop_origin + crop_size)`` of the source (voxels). Voxel ``p`` of the crop sits at
source coordinate ``x = p + crop_origin``. The spatial transform maps ``x`` to the source coordinate

    src(x) = A (x - centre) + centre + translate + elastic(p)

with ``A = Shear @ Scale @ Rot`` (see :py:meth:`SpatialParams.matrix`). In the crop frame this gives the
displacement ``ddf(p) = src(x) - x = (A - I)(x - centre) + translate + elastic(p)`` and the pair relation
``view_b(p) = image(src(x)) = geom_a(p + ddf(p))`` wherever ``p + ddf(p)`` is inside the crop (the overlap),
``geom_a`` being the source cropped with the same window. Conventions as in :py:mod:`monai_cover.ddf`
(pull, voxels, channel ``i`` = tensor axis ``i``, corners aligned).

Randomness: :py:func:`sample_spatial_params` draws everything from a ``numpy.random.RandomState``;
:py:func:`spatial_ddf` and :py:func:`resample_crop` are deterministic given the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from monai_cover.ddf import capture_range, sample_at

__all__ = [
    "SpatialParams",
    "SpatialRanges",
    "default_spatial_ranges",
    "spatial_ddf",
    "resample_crop",
    "sample_spatial_params",
    "max_abs_displacement",
    "DEFAULT_MAX_DISPLACEMENT",
    "check_interval",
]

#: default bound on sampled displacements: the reach of a COVER head with radius 2 and 5 levels (62 voxels).
DEFAULT_MAX_DISPLACEMENT = capture_range(2, 5)


def _n_rot(spatial_dims: int) -> int:
    return 1 if spatial_dims == 2 else 3


def _n_shear(spatial_dims: int) -> int:
    return spatial_dims * (spatial_dims - 1)


def _shear_pairs(spatial_dims: int) -> list[tuple[int, int]]:
    """Ordered axis pairs ``(i, j)``, ``i != j``, in the order shear values are stored."""
    return [(i, j) for i in range(spatial_dims) for j in range(spatial_dims) if i != j]


@dataclass(frozen=True)
class SpatialParams:
    """Parameters of one spatial transform (all deterministic; see the module docstring for the formula).

    Attributes:
        rotate: radians. 2D: one angle (in the plane of axes 0, 1). 3D: three angles, about axes 0, 1, 2
            (applied as ``R0 @ R1 @ R2``).
        scale: per-axis factor, source voxels per output voxel (> 1 shows more of the image in view B).
        shear: shear angles in radians, one per ordered axis pair ``(i, j)``, ``i != j`` (2 in 2D, 6 in 3D);
            entry ``A[i, j]`` of the shear matrix is ``tan(angle)``.
        translate: per-axis translation of the source coordinate, voxels.
        centre: per-axis centre of rotation/scaling in source voxel coordinates (the margin region's centre).
        crop_origin: per-axis integer start of the output window in the source.
        crop_size: per-axis output size.
        elastic: ``None`` or a control-grid displacement ``(spatial_dims, *n)`` in voxels (float32, CPU), with
            control point ``k`` at crop coordinate ``k * elastic_spacing``; linearly interpolated (corners
            aligned) to the crop. ``n_i = ceil((crop_size_i - 1) / elastic_spacing) + 1``.
        elastic_spacing: control-grid spacing in voxels (integer >= 1).
    """

    rotate: tuple[float, ...]
    scale: tuple[float, ...]
    shear: tuple[float, ...]
    translate: tuple[float, ...]
    centre: tuple[float, ...]
    crop_origin: tuple[int, ...]
    crop_size: tuple[int, ...]
    elastic: torch.Tensor | None = None
    elastic_spacing: int = 1

    @property
    def spatial_dims(self) -> int:
        return len(self.crop_size)

    def matrix(self) -> np.ndarray:
        """The ``(spatial_dims, spatial_dims)`` float64 matrix ``A = Shear @ Scale @ Rot`` (exactly ``I`` when
        all angles are 0 and all scales 1)."""
        d = self.spatial_dims
        rot = np.eye(d)
        planes = [(0, 1)] if d == 2 else [(1, 2), (0, 2), (0, 1)]  # rotation about axis k acts in plane k
        for angle, (i, j) in zip(self.rotate, planes):
            r = np.eye(d)
            c, s = math.cos(angle), math.sin(angle)
            r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
            rot = rot @ r
        shear = np.eye(d)
        for angle, (i, j) in zip(self.shear, _shear_pairs(d)):
            shear[i, j] = math.tan(angle)
        return shear @ np.diag(np.asarray(self.scale, dtype=np.float64)) @ rot

    def is_identity(self) -> bool:
        """True when the transform is exactly the identity (then ``ddf == 0`` and view B is a plain copy)."""
        return (
            all(a == 0 for a in self.rotate)
            and all(s == 1 for s in self.scale)
            and all(a == 0 for a in self.shear)
            and all(t == 0 for t in self.translate)
            and (self.elastic is None or not bool(torch.any(self.elastic != 0)))
        )

    def shrunk(self, lam: float) -> SpatialParams:
        """The same draw moved toward the identity: angles, ``scale - 1``, translation and elastic field
        multiplied by ``lam`` in ``[0, 1]`` (``lam = 0`` is exactly the identity)."""
        lam = float(lam)
        return replace(
            self,
            rotate=tuple(lam * a for a in self.rotate),
            scale=tuple(1.0 + lam * (s - 1.0) for s in self.scale),
            shear=tuple(lam * a for a in self.shear),
            translate=tuple(lam * t for t in self.translate),
            elastic=None if self.elastic is None or lam == 0 else self.elastic * lam,
        )


def max_abs_displacement(params: SpatialParams) -> np.ndarray:
    """Per-axis upper bound of ``|ddf_i|`` over the whole crop, in voxels, shape ``(spatial_dims,)``.

    The affine part is affine in ``x``, so its extremes over the crop box are at the box's ``2**d`` corners
    (exact). The elastic part adds the largest control-point magnitude (linear interpolation never exceeds
    it), so the bound is exact for affine-only draws and conservative with elastic.
    """
    d = params.spatial_dims
    a_minus_i = params.matrix() - np.eye(d)
    lo = np.asarray(params.crop_origin, dtype=np.float64) - np.asarray(params.centre, dtype=np.float64)
    hi = lo + np.asarray(params.crop_size, dtype=np.float64) - 1.0
    corners = np.stack(np.meshgrid(*[np.array([lo[i], hi[i]]) for i in range(d)], indexing="ij"), 0).reshape(d, -1)
    aff = a_minus_i @ corners + np.asarray(params.translate, dtype=np.float64)[:, None]
    bound = np.abs(aff).max(axis=1)
    if params.elastic is not None:
        bound = bound + params.elastic.abs().reshape(d, -1).amax(dim=1).double().numpy()
    return bound


def spatial_ddf(params: SpatialParams, device: torch.device | str | None = None) -> torch.Tensor:
    """Dense displacement field of ``params`` on the crop, ``(spatial_dims, *crop_size)`` float32, voxels.

    ``ddf(p) = (A - I)(p + crop_origin - centre) + translate + elastic(p)``; exactly zero for the identity.
    Computed on ``device`` (the elastic control grid is moved there and upsampled there).
    """
    d = params.spatial_dims
    crop = tuple(int(s) for s in params.crop_size)
    if params.is_identity():
        return torch.zeros((d, *crop), dtype=torch.float32, device=device)
    a_minus_i = (params.matrix() - np.eye(d)).tolist()
    # coordinates relative to the centre, p + (origin - centre), as broadcastable 1D axes (no full grid)
    offset = np.asarray(params.crop_origin, dtype=np.float64) - np.asarray(params.centre, dtype=np.float64)
    rel = _axes(crop, device, offset)
    channels = []
    for i in range(d):
        ch = torch.full(crop, float(params.translate[i]), dtype=torch.float32, device=device)
        for j in range(d):
            if a_minus_i[i][j] != 0:
                ch = ch + a_minus_i[i][j] * rel[j]
        channels.append(ch)
    ddf = torch.stack(channels, 0)
    if params.elastic is not None:
        ddf = ddf + _upsample_control_grid(params.elastic.to(device=device, dtype=torch.float32), params, crop)
    return ddf


def _axes(shape: Sequence[int], device, offset: Sequence[float] | None = None) -> list[torch.Tensor]:
    """Per-axis coordinates ``arange(size_i) + offset_i`` (float32), shaped to broadcast over ``shape``."""
    d = len(shape)
    out = []
    for i, s in enumerate(shape):
        ax = torch.arange(int(s), dtype=torch.float32, device=device)
        if offset is not None and offset[i] != 0:
            ax = ax + float(offset[i])
        out.append(ax.view(*[int(s) if k == i else 1 for k in range(d)]))
    return out


def _upsample_control_grid(ctrl: torch.Tensor, params: SpatialParams, crop: tuple[int, ...]) -> torch.Tensor:
    """Linear (corners aligned) interpolation of a control grid with integer spacing ``g`` onto the crop."""
    g = int(params.elastic_spacing)
    n = ctrl.shape[1:]
    if g == 1:
        return ctrl[(slice(None), *[slice(0, c) for c in crop])]
    full = tuple((int(k) - 1) * g + 1 for k in n)
    mode = "bilinear" if len(crop) == 2 else "trilinear"
    up = F.interpolate(ctrl[None], size=full, mode=mode, align_corners=True)[0]
    return up[(slice(None), *[slice(0, c) for c in crop])]


def resample_crop(image: torch.Tensor, params: SpatialParams, ddf: torch.Tensor | None = None) -> torch.Tensor:
    """View B: the source ``image`` ``(C, *S)`` sampled at ``p + crop_origin + ddf(p)`` for every crop voxel ``p``.

    One linear interpolation (``grid_sample``, corners aligned, zero padding) reading the WHOLE source, so
    view B has real content where ``p + ddf(p)`` leaves the crop but stays inside the image (the overlap
    mask is 0 there). For the identity, a plain copy of the crop (bit-exact).

    Args:
        image: ``(C, H, W[, D])`` floating tensor (the source, before any crop).
        params: the spatial parameters.
        ddf: the field from :py:func:`spatial_ddf` if already computed (must be that field).

    Returns:
        ``(C, *crop_size)`` tensor with ``image``'s dtype and device.
    """
    d = params.spatial_dims
    crop = tuple(int(s) for s in params.crop_size)
    window = tuple(slice(int(o), int(o) + c) for o, c in zip(params.crop_origin, crop))
    if params.is_identity():
        return image[(slice(None), *window)].clone()
    if ddf is None:
        ddf = spatial_ddf(params, device=image.device)
    axes = _axes(crop, image.device, [float(o) for o in params.crop_origin])
    points = torch.stack([ddf[i].to(torch.float32) + axes[i] for i in range(d)])
    return sample_at(image, points).to(image.dtype)


@dataclass(frozen=True)
class SpatialRanges:
    """Ranges of the random spatial transform (each value drawn uniformly in ``[lo, hi]``, per sample).

    Attributes:
        rotate: per rotation angle ``(lo, hi)`` in radians (1 angle in 2D, 3 in 3D).
        scale: per axis ``(lo, hi)`` of the scale factor.
        shear: per ordered axis pair ``(lo, hi)`` shear angle in radians (2 in 2D, 6 in 3D).
        translate: per axis ``(lo, hi)`` as a fraction of the margin region's size on that axis.
        elastic: whether to add an elastic field.
        elastic_alpha: ``(lo, hi)`` of alpha (reference meaning: alpha times Gaussian-smoothed U(-1, 1)
            voxel noise).
        elastic_sigma: ``(lo, hi)`` of the smoothing sigma, voxels.
    """

    rotate: tuple[tuple[float, float], ...]
    scale: tuple[tuple[float, float], ...]
    shear: tuple[tuple[float, float], ...]
    translate: tuple[tuple[float, float], ...]
    elastic: bool
    elastic_alpha: tuple[float, float]
    elastic_sigma: tuple[float, float]


def _pairs(value, n: int, name: str, centre: float = 0.0) -> tuple[tuple[float, float], ...]:
    """``x`` -> ``n`` copies of ``(centre - x, centre + x)``; a sequence of length ``n`` -> one per entry, each a
    float ``x`` (symmetric) or a ``(lo, hi)`` pair."""
    if isinstance(value, (int, float)):
        value = [value] * n
    if not isinstance(value, Sequence) or len(value) != n:
        raise ValueError(f"{name} must be a number or a sequence of {n} numbers or (lo, hi) pairs, got {value!r}.")
    out = []
    for v in value:
        if isinstance(v, (int, float)):
            if v < 0:
                raise ValueError(f"{name}: a symmetric range must be >= 0, got {v}.")
            lo, hi = centre - float(v), centre + float(v)
        elif isinstance(v, Sequence) and len(v) == 2:
            lo, hi = float(v[0]), float(v[1])
        else:
            raise ValueError(f"{name}: each entry must be a number or a (lo, hi) pair, got {v!r}.")
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ValueError(f"{name}: need finite lo <= hi, got ({lo}, {hi}).")
        out.append((lo, hi))
    return tuple(out)


def check_interval(value, name: str, minimum: float = -math.inf) -> tuple[float, float]:
    """Validate a ``(lo, hi)`` pair of finite floats with ``minimum <= lo <= hi``; errors name ``name``."""
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be a (lo, hi) pair, got {value!r}.")
    lo, hi = float(value[0]), float(value[1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or lo < minimum:
        raise ValueError(f"{name}: need finite {minimum} <= lo <= hi, got ({lo}, {hi}).")
    return lo, hi


#: cover-method.md defaults. 2D: the reference run (degree 1.5): rotation +-30 deg, scale 1 +- 0.75, shear
#: +-8.4 deg, translation +-0.3 of the region, no elastic. 3D: the reference ``SpatialTransform3D`` values
#: (+-15 deg per axis, scale 1 +- 0.25, shear +-10 deg, translation +-0.1, elastic on), which for 96^3 crops
#: keep most draws within the capture range (see benchmarks/bench_views.py).
_DEFAULTS = {
    2: dict(rotate=math.pi / 6, scale=0.75, shear=1.5 * math.pi / 32, translate=0.3, elastic=False),
    3: dict(rotate=math.pi / 12, scale=0.25, shear=math.pi / 18, translate=0.1, elastic=True),
}


def default_spatial_ranges(
    spatial_dims: int,
    rotate_range=None,
    scale_range=None,
    shear_range=None,
    translate_range=None,
    elastic: bool | None = None,
    elastic_alpha_range: Sequence[float] = (0.0, 1000.0),
    elastic_sigma_range: Sequence[float] = (10.0, 13.0),
) -> SpatialRanges:
    """Resolve user ranges (``None`` = the cover-method default for ``spatial_dims``) to a :py:class:`SpatialRanges`.

    ``rotate_range``/``shear_range`` (radians), ``translate_range`` (fraction of the margin region) and
    ``scale_range`` (delta about 1) each take a number ``x`` (drawn in ``[-x, x]``, scale in ``[1 - x, 1 + x]``)
    or one number / ``(lo, hi)`` pair per angle or axis.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    dflt = _DEFAULTS[spatial_dims]
    pick = lambda v, k: dflt[k] if v is None else v  # noqa: E731
    ranges = SpatialRanges(
        rotate=_pairs(pick(rotate_range, "rotate"), _n_rot(spatial_dims), "rotate_range"),
        scale=_pairs(pick(scale_range, "scale"), spatial_dims, "scale_range", centre=1.0),
        shear=_pairs(pick(shear_range, "shear"), _n_shear(spatial_dims), "shear_range"),
        translate=_pairs(pick(translate_range, "translate"), spatial_dims, "translate_range"),
        elastic=bool(pick(elastic, "elastic")),
        elastic_alpha=check_interval(elastic_alpha_range, "elastic_alpha_range", 0.0),
        elastic_sigma=check_interval(elastic_sigma_range, "elastic_sigma_range", 0.0),
    )
    if any(lo <= 0 for lo, _ in ranges.scale):
        raise ValueError(f"scale_range must keep every scale factor > 0, got {ranges.scale}.")
    if any(max(abs(lo), abs(hi)) >= math.pi / 2 for lo, hi in ranges.shear):
        raise ValueError(f"shear_range angles must lie in (-pi/2, pi/2), got {ranges.shear}.")
    return ranges


def _draw_elastic(
    R: np.random.RandomState, ranges: SpatialRanges, crop: tuple[int, ...]
) -> tuple[torch.Tensor | None, int]:
    """Elastic control grid: U(-1, 1) noise on a grid of spacing ``g = max(1, round(sigma / 4))`` voxels with a
    margin of ``ceil(3 sigma / g)`` points, Gaussian-smoothed (sigma / g grid units), margin dropped, times
    ``alpha * g ** (-d / 2)``. The factor keeps the field's variance equal to that of the reference model
    (alpha times sigma-smoothed voxel-wise noise) while drawing ``g ** d`` times fewer numbers."""
    alpha = float(R.uniform(*ranges.elastic_alpha))
    sigma = float(R.uniform(*ranges.elastic_sigma))
    d = len(crop)
    g = max(1, int(round(sigma / 4.0)))
    n = [int(math.ceil((c - 1) / g)) + 1 for c in crop]
    m = int(math.ceil(3.0 * sigma / g))
    noise = torch.from_numpy(R.uniform(-1.0, 1.0, size=(d, *[k + 2 * m for k in n])).astype(np.float32))
    if alpha == 0.0 or sigma == 0.0:
        return None, g
    # Gaussian smoothing (sigma / g grid units, window +-m points) evaluated only at the n kept points of each
    # axis: one (n, n + 2m) banded matrix per axis, applied separably
    taps = torch.arange(-m, m + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps * g / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(torch.float32)
    field = noise
    for axis, k in enumerate(n):
        band = torch.zeros(k, k + 2 * m)
        for row in range(k):
            band[row, row : row + 2 * m + 1] = kernel
        field = torch.movedim(torch.tensordot(band, torch.movedim(field, axis + 1, 0), dims=1), 0, axis + 1)
    field = field * (alpha * g ** (-d / 2.0))
    return field.contiguous(), g


def _draw_once(
    R: np.random.RandomState,
    ranges: SpatialRanges,
    crop: tuple[int, ...],
    crop_origin: tuple[int, ...],
    centre: tuple[float, ...],
    region: tuple[int, ...],
) -> SpatialParams:
    rotate = tuple(float(R.uniform(lo, hi)) for lo, hi in ranges.rotate)
    scale = tuple(float(R.uniform(lo, hi)) for lo, hi in ranges.scale)
    shear = tuple(float(R.uniform(lo, hi)) for lo, hi in ranges.shear)
    translate = tuple(float(R.uniform(lo, hi)) * m for (lo, hi), m in zip(ranges.translate, region))
    elastic, g = _draw_elastic(R, ranges, crop) if ranges.elastic else (None, 1)
    return SpatialParams(rotate, scale, shear, translate, centre, crop_origin, crop, elastic, g)


def sample_spatial_params(
    R: np.random.RandomState,
    image_shape: Sequence[int],
    crop_size: Sequence[int],
    ranges: SpatialRanges,
    margin: float = 1.5,
    prob: float = 1.0,
    max_displacement: float | None = DEFAULT_MAX_DISPLACEMENT,
    max_redraws: int = 10,
    shrink_steps: int = 12,
) -> SpatialParams:
    """Draw the crop window, the margin region and one spatial transform (all randomness from ``R``).

    - crop origin: uniform over the image (integer voxels);
    - margin region: size ``min(image, ceil(margin * crop))`` per axis, placed uniformly among the positions
      that contain the crop and lie inside the image; its centre ``origin + (size - 1) / 2`` is the centre of
      rotation/scaling/shear (so the crop sits anywhere in the region, as in the reference);
    - with probability ``1 - prob`` the transform is the identity;
    - bound: if ``max_displacement`` is not None, up to ``max_redraws`` draws are made until the per-axis
      upper bound of ``|ddf|`` over the **whole crop** (:py:func:`max_abs_displacement`) is within it; if none
      is, the draw with the smallest bound is shrunk toward the identity (:py:meth:`SpatialParams.shrunk`,
      bisection over the factor, ``shrink_steps`` steps) until it is. So every returned field satisfies
      ``max |ddf| <= max_displacement`` on every axis.
    """
    shape = tuple(int(s) for s in image_shape)
    crop = tuple(int(c) for c in crop_size)
    crop_origin = tuple(int(R.randint(0, s - c + 1)) for s, c in zip(shape, crop))
    region = tuple(min(s, int(math.ceil(margin * c))) for s, c in zip(shape, crop))
    region_origin = tuple(
        int(R.randint(max(0, o + c - m), min(o, s - m) + 1)) for o, c, m, s in zip(crop_origin, crop, region, shape)
    )
    centre = tuple(ro + (m - 1) / 2.0 for ro, m in zip(region_origin, region))
    d = len(crop)
    zeros = (0.0,) * d
    identity = SpatialParams((0.0,) * _n_rot(d), (1.0,) * d, (0.0,) * _n_shear(d), zeros, centre, crop_origin, crop)
    if float(R.uniform()) >= prob:
        return identity
    best, best_excess = None, math.inf
    for _ in range(max(1, int(max_redraws))):
        params = _draw_once(R, ranges, crop, crop_origin, centre, region)
        if max_displacement is None:
            return params
        excess = float(np.max(max_abs_displacement(params) - max_displacement))
        if excess <= 0:
            return params
        if excess < best_excess:
            best, best_excess = params, excess
    lo, hi = 0.0, 1.0
    for _ in range(int(shrink_steps)):
        mid = 0.5 * (lo + hi)
        if np.all(max_abs_displacement(best.shrunk(mid)) <= max_displacement):
            lo = mid
        else:
            hi = mid
    return best.shrunk(lo)
