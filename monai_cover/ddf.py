# SPDX-License-Identifier: Apache-2.0
"""The one displacement-field convention of monai_cover.

Everything in this package that produces, consumes or composes a dense displacement field
(DDF) follows MONAI's :py:class:`monai.networks.blocks.Warp` semantics, written down here once:

- **pull**: ``warp(image, ddf)(p) = image(p + ddf(p))``;
- **units**: voxels of the grid ``ddf`` lives on;
- **axis order**: channel ``i`` of ``ddf`` is the displacement along spatial tensor axis ``i``
  (``H, W[, D]`` order, not x/y/z);
- **corners aligned**: voxel centres sit at integer coordinates ``0 .. size - 1``, so a zero
  field is an exact identity and an identity transform gives ``ddf == 0`` exactly;
- **linear interpolation, zero padding** unless stated otherwise.

A COVER pair obeys ``view_b = warp(view_a_geometry, ddf)``, with ``view_a_geometry`` the
appearance view before its appearance augmentation.

MONAI calls a *velocity* field "DVF" (see :py:class:`monai.networks.blocks.DVF2DDF`); COVER's
paper says DVF for a displacement field. monai_cover says ``ddf`` for the displacement field.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.utils import meshgrid_ij

__all__ = ["identity_grid", "warp", "sample_at", "compose_ddf", "overlap_mask", "upsample_ddf", "capture_range"]


def identity_grid(
    spatial_shape: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Voxel coordinates of a grid, shape ``(spatial_dims, *spatial_shape)``; channel ``i`` holds the
    index along axis ``i`` (``meshgrid`` in ``ij`` order)."""
    axes = [torch.arange(int(s), device=device, dtype=dtype) for s in spatial_shape]
    return torch.stack(meshgrid_ij(*axes), dim=0)


def _check_pair(image: torch.Tensor, ddf: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Return batched ``(image, ddf)`` and whether the inputs were unbatched."""
    unbatched = ddf.ndim == image.ndim and ddf.ndim in (3, 4) and ddf.shape[0] == ddf.ndim - 1
    if unbatched:
        image, ddf = image[None], ddf[None]
    spatial_dims = image.ndim - 2
    if spatial_dims not in (2, 3):
        raise ValueError(
            f"{name}: image must be (B, C, H, W[, D]) or (C, H, W[, D]) with 2 or 3 spatial dims, "
            f"got shape {tuple(image.shape)}."
        )
    expected = (image.shape[0], spatial_dims, *image.shape[2:])
    if tuple(ddf.shape) != expected:
        raise ValueError(
            f"{name}: ddf must have shape {expected} to match image {tuple(image.shape)}, got {tuple(ddf.shape)}."
        )
    return image, ddf, unbatched


#: most slabs a 3D CPU warp is split into (each holds an image-sized gradient in the backward)
_MAX_SLABS = 4


def _grid_sample(image: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str) -> torch.Tensor:
    """``F.grid_sample`` with corners aligned; on CPU, 3D samples run split into slabs in parallel.

    PyTorch's CPU 3D grid sampler (forward and backward) parallelises over the batch only, so one volume uses one
    core. When the batch is smaller than the thread count, each sample's output grid is cut into slabs along its
    first axis (one per thread, at most ``_MAX_SLABS``) that go through one call as a batch (the image is expanded,
    not copied), which gives the same values as one call per sample. The backward holds one image-sized gradient per
    slab before summing them, hence the cap.
    """
    threads = torch.get_num_threads()
    if image.ndim != 5 or image.device.type != "cpu" or image.shape[0] >= threads or grid.shape[1] < 2:
        return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    parts = min(threads, grid.shape[1], _MAX_SLABS)
    rows = -(-grid.shape[1] // parts)
    outputs = []
    for img, grd in zip(image.split(1), grid.split(1)):
        grd = F.pad(grd, (0, 0, 0, 0, 0, 0, 0, rows * parts - grd.shape[1]))  # dummy rows, sampled then dropped
        slabs = F.grid_sample(
            img.expand(parts, *img.shape[1:]), grd.reshape(parts, rows, *grd.shape[2:]),
            mode=mode, padding_mode=padding_mode, align_corners=True,
        )  # (parts, C, rows, H, W)
        out = slabs.transpose(0, 1).reshape(1, img.shape[1], parts * rows, *slabs.shape[3:])
        outputs.append(out[:, :, : grid.shape[1]])
    return torch.cat(outputs) if len(outputs) > 1 else outputs[0]


def _voxel_grid(points: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """``(B, d, *S_out)`` voxel coordinates into an image of ``spatial`` -> ``grid_sample``'s ``(B, *S_out, d)``
    normalised grid (corners aligned; last tensor axis first, i.e. x/y[/z] order)."""
    # the arithmetic of MONAI's Warp, for the same values
    return torch.stack([points[:, i] * 2 / max(int(spatial[i]) - 1, 1) - 1 for i in reversed(range(len(spatial)))], -1)


def warp(
    image: torch.Tensor, ddf: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros"
) -> torch.Tensor:
    """Resample ``image`` at ``p + ddf(p)`` (pull, voxels, corners aligned): MONAI's ``Warp`` semantics.

    Computed by ``grid_sample`` directly (same values as :py:class:`monai.networks.blocks.Warp`), so that on CPU a
    3D warp of a batch smaller than the thread count runs split over the threads (PyTorch's 3D CPU sampler only
    parallelises over the batch).

    Args:
        image: ``(B, C, H, W[, D])``, or ``(C, H, W[, D])`` together with an unbatched ``ddf``.
        ddf: ``(B, spatial_dims, H, W[, D])`` or ``(spatial_dims, H, W[, D])``, in voxels.
        mode: ``"bilinear"`` (linear in 2D and 3D), ``"nearest"`` or ``"bicubic"``.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Returns:
        the warped image, same shape as ``image``. Computed in the promoted floating dtype of
        the two inputs (``grid_sample`` needs equal dtypes, which autocast does not guarantee).
    """
    image_b, ddf_b, unbatched = _check_pair(image, ddf, "warp")
    dtype = torch.promote_types(image_b.dtype, ddf_b.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    spatial = image_b.shape[2:]
    with torch.autocast(device_type=image_b.device.type, enabled=False):
        points = identity_grid(spatial, device=ddf_b.device, dtype=dtype)[None] + ddf_b.to(dtype)
        out = _grid_sample(image_b.to(dtype), _voxel_grid(points, spatial), mode, padding_mode)
    return out[0] if unbatched else out


def sample_at(
    image: torch.Tensor, points: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros"
) -> torch.Tensor:
    """Sample ``image`` at voxel coordinates ``points`` of its own grid (corners aligned, as :py:func:`warp`).

    The general form of :py:func:`warp` for when the output grid differs from the image grid (e.g. a crop
    that reads from the whole source): ``warp(image, ddf) == sample_at(image, identity_grid + ddf)``.

    Args:
        image: ``(C, *S_src)`` source, 2 or 3 spatial dims.
        points: ``(spatial_dims, *S_out)`` voxel coordinates into ``image``; channel ``i`` indexes axis ``i``.
        mode: ``grid_sample`` interpolation mode; ``padding_mode``: ``"zeros"``, ``"border"``, ``"reflection"``.

    Returns:
        ``(C, *S_out)`` in the floating dtype of ``image`` (float32 for other dtypes).
    """
    d = image.ndim - 1
    if d not in (2, 3) or points.ndim != d + 1 or points.shape[0] != d:
        raise ValueError(
            f"sample_at: image must be (C, H, W[, D]) and points (spatial_dims, *out_shape) with matching "
            f"spatial_dims, got image {tuple(image.shape)} and points {tuple(points.shape)}."
        )
    work = image if image.dtype.is_floating_point else image.float()
    with torch.autocast(device_type=work.device.type, enabled=False):
        grid = _voxel_grid(points[None].to(work.dtype), image.shape[1:])
        return _grid_sample(work[None], grid, mode, padding_mode)[0]


def compose_ddf(outer: torch.Tensor, inner: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Compose two fields: ``inner`` first, then ``outer``, as ``warp(outer, inner) + inner``.

    ``warp(warp(x, outer), inner) ≈ warp(x, compose_ddf(outer, inner))``: a point ``p`` goes to
    ``p + inner(p)`` and from there by ``outer``. Shapes as in :py:func:`warp`, both fields on one grid.
    """
    return warp(outer, inner, padding_mode=padding_mode) + inner


def overlap_mask(ddf: torch.Tensor) -> torch.Tensor:
    """1 where ``p + ddf(p)`` lies inside the grid on **every** spatial axis, else 0.

    Inside means ``0 <= p_i + ddf_i(p) <= size_i - 1`` for all axes ``i`` (corners aligned).

    Args:
        ddf: ``(B, spatial_dims, *spatial)`` or unbatched ``(spatial_dims, *spatial)``, in voxels.

    Returns:
        float mask of shape ``(B, 1, *spatial)`` (or ``(1, *spatial)``), dtype of ``ddf``.
    """
    unbatched = ddf.ndim in (3, 4) and ddf.shape[0] == ddf.ndim - 1
    batched = ddf[None] if unbatched else ddf
    spatial = batched.shape[2:]
    if batched.ndim not in (4, 5) or batched.shape[1] != len(spatial):
        raise ValueError(
            f"overlap_mask: ddf must be (B, spatial_dims, H, W[, D]) or (spatial_dims, H, W[, D]) with "
            f"spatial_dims in (2, 3), got {tuple(ddf.shape)}."
        )
    target = identity_grid(spatial, device=batched.device, dtype=batched.dtype)[None] + batched
    upper = torch.tensor([s - 1 for s in spatial], device=batched.device, dtype=batched.dtype)
    upper = upper.view(1, -1, *([1] * len(spatial)))
    inside = ((target >= 0) & (target <= upper)).all(dim=1, keepdim=True)
    mask = inside.to(batched.dtype if batched.dtype.is_floating_point else torch.float32)
    return mask[0] if unbatched else mask


def upsample_ddf(
    ddf: torch.Tensor, spatial_size: Sequence[int], scale: float | Sequence[float] | None = 2.0
) -> torch.Tensor:
    """Bring a field to another grid, usually a finer one: values times ``scale`` (units of the new grid),
    then linear interpolation with corners aligned to ``spatial_size``. The one field resize of the package.

    Args:
        ddf: ``(B, spatial_dims, *coarse)`` in coarse-grid voxels.
        spatial_size: the new grid's spatial shape.
        scale: voxel-size ratio old/new, one for all axes (2 from one pyramid level to the next finer one)
            or one per axis (channel ``i`` is multiplied by ``scale[i]``); ``None`` takes the size ratio
            ``spatial_size[i] / coarse[i]`` of each axis.

    Returns:
        ``(B, spatial_dims, *spatial_size)`` in fine-grid voxels.
    """
    spatial_dims = ddf.ndim - 2
    if spatial_dims not in (2, 3) or ddf.shape[1] != spatial_dims or len(spatial_size) != spatial_dims:
        raise ValueError(
            f"upsample_ddf: ddf must be (B, spatial_dims, H, W[, D]) and spatial_size of length spatial_dims, "
            f"got ddf {tuple(ddf.shape)} and spatial_size {tuple(spatial_size)}."
        )
    size = tuple(int(s) for s in spatial_size)
    if scale is None:
        scale = [n / c for n, c in zip(size, ddf.shape[2:])]
    if isinstance(scale, Sequence):
        if len(scale) != spatial_dims:
            raise ValueError(f"upsample_ddf: scale must have {spatial_dims} entries (one per axis), got {scale}.")
        if len(set(float(v) for v in scale)) == 1:
            scale = float(scale[0])
        else:
            scale = torch.tensor([float(v) for v in scale], dtype=ddf.dtype, device=ddf.device)
            scale = scale.view(1, -1, *([1] * spatial_dims))
    if tuple(ddf.shape[2:]) == size:
        return ddf * scale
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    return F.interpolate(ddf * scale, size=size, mode=mode, align_corners=True)


def capture_range(radius: int = 2, levels: int = 5) -> int:
    """Largest displacement per axis, in full-resolution voxels, that a COVER head can predict.

    Each pyramid level adds at most ``radius`` voxels of its own grid, and level ``l`` (0 = full
    resolution) has voxels ``2**l`` wide, so the reach is ``radius * (2**levels - 1)``: 62 for the
    reference ``radius=2``, five levels; 93 for ``radius=3``.
    """
    if int(radius) < 1 or int(levels) < 1:
        raise ValueError(f"capture_range: radius and levels must be >= 1, got radius={radius}, levels={levels}.")
    return int(radius) * (2 ** int(levels) - 1)
