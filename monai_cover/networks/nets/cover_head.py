# SPDX-License-Identifier: Apache-2.0
"""COVER's head: per-level projections, mixture of vectors, and vector pyramid aggregation (VPA).

Displacement convention: :py:mod:`monai_cover.ddf` (pull, voxels, channel ``i`` = array axis ``i``, corners
aligned). The predicted field ``ddf`` satisfies ``features_b(p) ~ features_a(p + ddf(p))``, i.e. the same
relation as the ground truth of a COVER pair, ``view_b = warp(view_a, ddf)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.utils import convert_to_tensor

from monai_cover.ddf import capture_range, compose_ddf, overlap_mask, upsample_ddf, warp
from monai_cover.networks.blocks import (
    CoverProjection,
    FeatureProjector,
    MixtureOfVectors,
    neighbourhood_log_softmax,
    offset_distribution,
)

__all__ = [
    "CoverHead", "Coverhead", "coverhead", "default_num_heads", "levels_for_size", "min_level_size",
    "TEACHER_FORCED_TARGETS",
]

#: what a teacher-forced level is scored on (:py:class:`CoverHead`'s ``teacher_forced_target``)
TEACHER_FORCED_TARGETS = ("displacement", "offsets")


def default_num_heads(levels: int) -> tuple[int, ...]:
    """The reference heads ``(4, 4, 4, 1, 1)`` generalised to ``levels`` levels: 4 heads on every level but the
    two finest, which get 1 (``(1,)`` for one level, ``(1, 1)`` for two, ``(4, 1, 1)`` for three...)."""
    if int(levels) < 1:
        raise ValueError(f"default_num_heads: levels must be >= 1, got {levels}.")
    levels = int(levels)
    return (4,) * max(0, levels - 2) + (1,) * min(levels, 2)


def min_level_size(radius: int = 2) -> int:
    """Smallest size (voxels per axis) of a pyramid level that the head reads a displacement from: ``4 * radius``.

    On a smaller level most voxels have neighbours outside the image, whose exclusion biases the soft-argmax
    towards the centre, and that bias is multiplied up to full resolution: measured on real 3D pairs at
    initialisation (BasicUNet pyramid, radius 2), the end-point error relative to predicting zero was 1.45 with a
    coarsest level of 2 voxels (32^3 crops, five levels), 1.53 with 4 (64^3), 1.13-1.20 with 6 (96^3), and
    0.91-0.97 with 8 or more.
    """
    return 4 * int(radius)


def levels_for_size(spatial_size: Sequence[int], max_levels: int = 5, radius: int = 2) -> int:
    """How many pyramid levels (finest first) a COVER head should use on crops of ``spatial_size``: the largest
    ``L <= max_levels`` whose coarsest level, ``spatial_size / 2 ** (L - 1)``, has at least
    :py:func:`min_level_size` voxels on every axis (at least 1).

    Examples: radius 2 gives 3 levels for 32^3 crops (capture range 14 voxels), 4 for 64^3 and 96^3 (30), 5 from
    128^3 (62); 5 for 128^2 2D crops.
    """
    if int(max_levels) < 1:
        raise ValueError(f"levels_for_size: max_levels must be >= 1, got {max_levels}.")
    smallest = min(int(s) for s in spatial_size)
    levels = 1
    while levels < int(max_levels) and smallest / 2**levels >= min_level_size(radius):
        levels += 1
    return levels


def _level_scale(coarse: Sequence[int], fine: Sequence[int]) -> tuple[float, ...]:
    """Voxel-size ratio coarse/fine per axis, taken as the nearest power of two of ``fine / coarse``
    (exactly 2 for a halving pyramid, also for the odd sizes of a floor/ceil pyramid; 1 for equal sizes)."""
    return tuple(float(2 ** round(math.log2(f / c))) for c, f in zip(coarse, fine))


class CoverHead(nn.Module):
    """Reads a full-resolution displacement field off two feature pyramids (COVER's VPA).

    Level ``l`` (0 = coarsest) projects both views' features with ``P_l`` (1x1 conv + one-group GroupNorm to
    ``head_dim[l] * num_heads[l]`` channels) and calls the mixture of vectors ``M_l`` (query = view B, key = view A,
    radius ``radius``). Coarse to fine, with ``up`` = :py:func:`monai_cover.ddf.upsample_ddf` (values times the
    voxel-size ratio, then corner-aligned linear interpolation to the next level's actual size)::

        coarsest: w = M_0(P_0 f_B, P_0 f_A);               phi = up(w)            (i.e. up of 2 M, in next-level voxels)
        middle:   f_A <- warp(f_A, phi); w = up(M_l(...));  phi <- warp(up(phi), w) + w
        finest:   f_A <- warp(f_A, phi); w = M_L(...);      phi <- warp(phi, w) + w

    With one level, ``phi = M(P f_B, P f_A)``. Compositions use :py:func:`monai_cover.ddf.compose_ddf`. The
    displacement arithmetic runs in float32 (also under autocast). The only parameters are the projections.
    ``P_l(warp(f_A, phi))`` is computed as in :py:meth:`CoverProjection.pair`, by warping the bias-free projection
    of ``f_A``: the same values, with ``head_dim * heads`` instead of ``in_channels`` channels to warp.

    Levels may have any sizes (stock networks): each level must be at least as fine as the previous one, and the
    scale between two levels is the nearest power of two of their size ratio per axis (2 for a halving pyramid).

    Args:
        spatial_dims: 2 or 3.
        in_channels: backbone channels per level, coarse to fine (e.g. ``PyramidUNet.out_channels``); the number
            of levels ``L = len(in_channels) >= 1``.
        head_dim: channels per head, one int or one per level (reference 8).
        num_heads: heads per level, one int or a sequence of length ``L``; ``None`` (default) is the reference
            ``(4, 4, 4, 1, 1)`` for five levels (see :py:func:`default_num_heads` for other ``L``). The
            displacement's gradient reaches a level's backbone features only through ``P_l``, so it shapes at most
            ``head_dim[l] * num_heads[l]`` of their channels: with the reference, 8 of the finest level's 32 in a
            ``BasicUNet(features=(32, ..., 32))``; ``num_heads=4`` covers all 32 (measured in
            ``benchmarks/results/ssl_variants_2026-12-06``, variant ``cover_teacher_forced_heads4``).
        radius: neighbourhood radius ``r`` of the mixture of vectors (``(2r+1)^d`` offsets). Default 2 (the
            reference code); the paper's ablation prefers 3 (a 7x7 neighbourhood). Wider reach, more cost.
        norm: normalisation of the projections (default the reference one-group GroupNorm).
        chunk_size: passed to :py:class:`~monai_cover.networks.blocks.MixtureOfVectors` (``None``: automatic).
        feature_projector: ``None`` (default, the reference: no projector) or the widths of a
            :py:class:`~monai_cover.networks.blocks.FeatureProjector` on the finest level's backbone features (hidden
            widths then output width, e.g. ``(64, 32)``). :py:class:`CoverNet` then returns ``"projected_a"`` /
            ``"projected_b"`` for ``L_con`` and the spread term. Not used by :py:meth:`forward`.
        teacher_forced_levels: **fine-level option**, 0 (default) for none: :py:meth:`teacher_forced` runs the
            ``teacher_forced_levels`` finest levels on keys aligned by the true field up to a known residual, so that
            they get a local matching target from the first step (``CoverNet`` does it when given the true ``ddf``).
        max_residual: largest residual per axis, in the level's voxels (default ``radius / 2``; at most
            ``radius``).
        teacher_forced_target: what a teacher-forced level returns and is scored on: ``"displacement"`` (default)
            its mixture of vectors, regressed onto the residual (L1); ``"offsets"`` its attention over the
            neighbourhood, ``(B, heads, K, *S_l)`` log-probabilities
            (:py:func:`~monai_cover.networks.blocks.neighbourhood.neighbourhood_log_softmax`), with the residual's
            offset distribution as target (cross-entropy, a matching loss: an attention with the right mean but
            spread over the neighbourhood is not a minimum).

    Examples::

        backbone = PyramidUNet(spatial_dims=3)
        head = CoverHead(3, backbone.out_channels)        # head_dim 8, heads (4, 4, 4, 1, 1), radius 2
        head.capture_range                                # 62 voxels per axis
        fa, fb = backbone(view_a), backbone(view_b)
        ddf = head(fa, fb)                                # (B, 3, *view_a.shape[2:]), view_b ~ warp(view_a, ddf)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: Sequence[int],
        head_dim: int | Sequence[int] = 8,
        num_heads: int | Sequence[int] | None = None,
        radius: int = 2,
        norm: str | tuple | None = ("group", {"num_groups": 1}),
        chunk_size: int | None = None,
        feature_projector: Sequence[int] | None = None,
        teacher_forced_levels: int = 0,
        max_residual: float | None = None,
        teacher_forced_target: str = "displacement",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"CoverHead: spatial_dims must be 2 or 3, got {spatial_dims}.")
        if isinstance(in_channels, int) or len(in_channels) < 1:
            raise ValueError(
                f"CoverHead: in_channels must be a non-empty sequence (one entry per level, coarse to fine), "
                f"got {in_channels!r}."
            )
        in_channels = tuple(int(c) for c in in_channels)
        levels = len(in_channels)
        if min(in_channels) < 1:
            raise ValueError(f"CoverHead: in_channels must be positive, got {in_channels}.")
        heads = default_num_heads(levels) if num_heads is None else num_heads
        heads = (heads,) * levels if isinstance(heads, int) else tuple(heads)
        dims = (head_dim,) * levels if isinstance(head_dim, int) else tuple(head_dim)
        for name, value in (("num_heads", heads), ("head_dim", dims)):
            if len(value) != levels or any(int(v) != v or v < 1 for v in value):
                raise ValueError(
                    f"CoverHead: {name} must be a positive int or {levels} positive ints (one per level of "
                    f"in_channels={in_channels}), got {value}."
                )
        if int(radius) != radius or radius < 1:
            raise ValueError(f"CoverHead: radius must be an integer >= 1, got {radius}.")
        self.spatial_dims, self.in_channels, self.radius = spatial_dims, in_channels, int(radius)
        self.num_heads = tuple(int(h) for h in heads)
        self.head_dim = tuple(int(d) for d in dims)
        self.projections = nn.ModuleList(
            [
                CoverProjection(spatial_dims, c, d * h, norm=norm)
                for c, d, h in zip(in_channels, self.head_dim, self.num_heads)
            ]
        )
        self.mixtures = nn.ModuleList(
            [MixtureOfVectors(spatial_dims, self.radius, h, chunk_size=chunk_size) for h in self.num_heads]
        )
        self.feature_projector = (
            None if feature_projector is None else FeatureProjector(spatial_dims, in_channels[-1], feature_projector)
        )
        if int(teacher_forced_levels) != teacher_forced_levels or not 0 <= int(teacher_forced_levels) <= levels:
            raise ValueError(
                f"CoverHead: teacher_forced_levels must be an integer in [0, {levels}], got {teacher_forced_levels!r}."
            )
        self.teacher_forced_levels = int(teacher_forced_levels)
        self.max_residual = 0.5 * self.radius if max_residual is None else float(max_residual)
        if not 0 < self.max_residual <= self.radius:
            raise ValueError(f"CoverHead: max_residual must be in (0, radius={self.radius}], got {max_residual}.")
        if teacher_forced_target not in TEACHER_FORCED_TARGETS:
            raise ValueError(
                f"CoverHead: teacher_forced_target must be one of {TEACHER_FORCED_TARGETS}, "
                f"got {teacher_forced_target!r}."
            )
        self.teacher_forced_target = teacher_forced_target

    @property
    def levels(self) -> int:
        """Number of pyramid levels ``L``."""
        return len(self.in_channels)

    @property
    def capture_range(self) -> int:
        """Largest displacement per axis the head can predict, in full-resolution voxels, for a halving pyramid:
        ``radius * (2 ** levels - 1)`` (62 for radius 2 and five levels, 93 for radius 3)."""
        return capture_range(self.radius, self.levels)

    def _check(self, features_a: Sequence[torch.Tensor], features_b: Sequence[torch.Tensor]) -> None:
        if len(features_a) != self.levels or len(features_b) != self.levels:
            raise ValueError(
                f"CoverHead: expected {self.levels} feature levels per view (coarse to fine), got "
                f"{len(features_a)} for features_a and {len(features_b)} for features_b."
            )
        prev = None
        for level, (fa, fb) in enumerate(zip(features_a, features_b)):
            if fa.shape != fb.shape:
                raise ValueError(
                    f"CoverHead: level {level}: features_a {tuple(fa.shape)} and features_b {tuple(fb.shape)} "
                    "must have the same shape."
                )
            if fa.ndim != self.spatial_dims + 2 or fa.shape[1] != self.in_channels[level]:
                raise ValueError(
                    f"CoverHead: level {level}: expected (B, {self.in_channels[level]}, *spatial) with "
                    f"{self.spatial_dims} spatial dims, got {tuple(fa.shape)}."
                )
            if fa.shape[0] != features_a[0].shape[0]:
                raise ValueError(
                    f"CoverHead: level {level} has batch size {fa.shape[0]}, level 0 has {features_a[0].shape[0]}."
                )
            if prev is not None and any(f < c for f, c in zip(fa.shape[2:], prev)):
                raise ValueError(
                    f"CoverHead: levels must go coarse to fine, but level {level} {tuple(fa.shape[2:])} is smaller "
                    f"than level {level - 1} {tuple(prev)} on some axis."
                )
            prev = fa.shape[2:]

    def _up(self, ddf: torch.Tensor, coarse: Sequence[int], fine: Sequence[int]) -> torch.Tensor:
        """``ddf`` on the ``coarse`` grid -> the ``fine`` grid, in fine voxels."""
        return upsample_ddf(ddf, fine, scale=_level_scale(coarse, fine))

    def forward(
        self,
        features_a: Sequence[torch.Tensor],
        features_b: Sequence[torch.Tensor],
        return_fields: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """
        Args:
            features_a: the pyramid of view A (the key), coarse to fine, level ``l`` ``(B, in_channels[l], *S_l)``.
            features_b: the pyramid of view B (the query), same shapes.
            return_fields: also return the cumulative field after each level (see below). The displacement
                returned first is the same with or without them.

        Returns:
            ``(B, spatial_dims, *S_finest)`` float32 displacement in finest-level voxels with
            ``features_b(p) ~ features_a(p + ddf(p))`` (the convention of the ground truth of a COVER pair).
            With ``return_fields=True``, ``(ddf, fields)``: ``fields[l]`` ``(B, spatial_dims, *S_l)`` float32 is the
            head's estimate after reading level ``l``, on level ``l``'s own grid and in its voxels:
            ``compose(phi_l, w_l)`` with ``phi_l`` the field handed down from the coarser levels (none on level 0)
            and ``w_l`` level ``l``'s mixture of vectors. ``fields[-1]`` is ``ddf`` itself; on the coarser levels
            it is the field before the upsampling that hands it on (``up(compose(phi, w))`` there equals the
            propagated ``compose(up(phi), up(w))`` up to the interpolation of the composition).
        """
        self._check(features_a, features_b)
        features_a = [convert_to_tensor(f, track_meta=False) for f in features_a]
        features_b = [convert_to_tensor(f, track_meta=False) for f in features_b]
        sizes = [tuple(f.shape[2:]) for f in features_b]
        device_type = features_b[-1].device.type
        phi: torch.Tensor | None = None
        fields: list[torch.Tensor] = []
        for level in range(self.levels):
            query, key = self.projections[level].pair(features_b[level], features_a[level], phi)
            w = self.mixtures[level](query, key)
            w = w if w.dtype == torch.float64 else w.float()
            with torch.autocast(device_type=device_type, enabled=False):
                if level + 1 < self.levels:
                    if return_fields:
                        fields.append(w if phi is None else compose_ddf(phi, w))
                    nxt = sizes[level + 1]
                    w = self._up(w, sizes[level], nxt)
                    phi = w if phi is None else compose_ddf(self._up(phi, sizes[level], nxt), w)
                else:
                    phi = w if phi is None else compose_ddf(phi, w)
                    fields.append(phi)
        assert phi is not None
        return (phi, fields) if return_fields else phi

    def teacher_forced(
        self,
        features_a: Sequence[torch.Tensor],
        features_b: Sequence[torch.Tensor],
        ddf: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Teacher-forced residuals at the ``teacher_forced_levels`` finest levels (none when it is 0).

        On level ``l`` with the true field ``psi_l`` on its grid (level voxels) and a residual ``delta`` drawn per
        sample, uniform in ``[-max_residual, max_residual]`` per axis, the key is warped by
        ``phi(q) = psi_l(q - delta) - delta`` (border padding), the field that ``delta`` composes to the truth
        (``compose(phi, delta) = psi_l``). The level's mixture of vectors on ``(P_l f_B, P_l warp(f_A, phi))``
        should then read ``delta`` at every voxel: a local matching target within the level's reach, whatever the
        coarser levels predict.

        Args:
            features_a, features_b: the two pyramids, as in :py:meth:`forward`.
            ddf: the true field ``(B, spatial_dims, *S_finest)`` in finest-level voxels.
            generator: for the residuals (``None``: torch's global RNG).

        Returns:
            ``(predicted, targets, masks)``, one entry per teacher-forced level, coarse to fine:
            ``(B, spatial_dims, *S_l)`` float32 fields in level voxels and ``(B, 1, *S_l)`` masks (1 where both
            ``p + psi_l(p)`` and ``p + delta`` lie inside the level's grid). With ``teacher_forced_target="offsets"``
            the predictions are the attention log-probabilities ``(B, heads, K, *S_l)`` and the targets the offset
            distributions of ``delta`` ``(B, K, *S_l)`` (:py:func:`~monai_cover.networks.blocks.offset_distribution`).
        """
        self._check(features_a, features_b)
        sizes = [tuple(f.shape[2:]) for f in features_b]
        expected = (features_b[-1].shape[0], self.spatial_dims, *sizes[-1])
        if tuple(ddf.shape) != expected:
            raise ValueError(f"CoverHead.teacher_forced: ddf must be {expected}, got {tuple(ddf.shape)}.")
        ddf = convert_to_tensor(ddf, track_meta=False).detach().float()
        predicted, targets, masks = [], [], []
        batch = ddf.shape[0]
        for level in range(self.levels - self.teacher_forced_levels, self.levels):
            size = sizes[level]
            with torch.autocast(device_type=ddf.device.type, enabled=False):
                true = self._up(ddf, sizes[-1], size)
                draw = torch.rand((batch, self.spatial_dims), generator=generator,
                                  device=generator.device if generator is not None else ddf.device).to(ddf.device)
                shift = (2 * draw - 1) * self.max_residual  # (B, d): one residual per sample
                delta = shift.view(batch, self.spatial_dims, *([1] * len(size))).expand_as(true)
                phi = warp(true, -delta, padding_mode="border") - delta
                mask = overlap_mask(true) * overlap_mask(delta)
            query, key = self.projections[level].pair(
                convert_to_tensor(features_b[level], track_meta=False),
                convert_to_tensor(features_a[level], track_meta=False), phi,
            )  # fmt: skip
            if getattr(self, "teacher_forced_target", "displacement") == "offsets":
                predicted.append(neighbourhood_log_softmax(query, key, self.radius, self.num_heads[level]))
                target = offset_distribution(shift, self.radius)
                targets.append(target.view(*target.shape, *([1] * len(size))).expand(-1, -1, *size))
            else:
                w = self.mixtures[level](query, key)
                predicted.append(w if w.dtype == torch.float64 else w.float())
                targets.append(delta.contiguous())
            masks.append(mask)
        return predicted, targets, masks

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, in_channels={self.in_channels}, head_dim={self.head_dim}, "
            f"num_heads={self.num_heads}, radius={self.radius}"
        )


Coverhead = coverhead = CoverHead
