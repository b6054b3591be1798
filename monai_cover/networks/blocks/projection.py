# SPDX-License-Identifier: Apache-2.0
"""Per-level projection of COVER's head: a 1x1 convolution (with bias) followed by a one-group GroupNorm."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_norm_layer

from monai_cover.ddf import warp

__all__ = ["CoverProjection"]


class CoverProjection(nn.Sequential):
    """``P_l`` of COVER: ``Conv 1x1 (bias) -> GroupNorm(1 group, affine)``, mapping ``(B, in_channels, *S)``
    to ``(B, out_channels, *S)``; the spatial shape is kept.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the backbone features of this level.
        out_channels: ``head_dim * num_heads`` of this level.
        norm: normalisation spec for MONAI's ``get_norm_layer`` (default ``("group", {"num_groups": 1})``,
            the reference); ``None`` for none.

    Examples::

        proj = CoverProjection(3, in_channels=256, out_channels=32)
        proj(torch.rand(1, 256, 8, 8, 8)).shape  # (1, 32, 8, 8, 8)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: str | tuple | None = ("group", {"num_groups": 1}),
    ) -> None:
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"CoverProjection: spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(
                f"CoverProjection: in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}."
            )
        layers: list[nn.Module] = [Conv[Conv.CONV, spatial_dims](int(in_channels), int(out_channels), 1, bias=True)]
        if norm is not None:
            layers.append(get_norm_layer(norm, spatial_dims=spatial_dims, channels=int(out_channels)))
        super().__init__(*layers)
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, int(in_channels), int(out_channels)

    def _check(self, *tensors: torch.Tensor) -> None:
        for x in tensors:
            if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
                raise ValueError(
                    f"CoverProjection: expected (B, {self.in_channels}, *spatial) with {self.spatial_dims} spatial "
                    f"dims, got {tuple(x.shape)}."
                )
        if len(tensors) == 2 and tensors[0].shape != tensors[1].shape:
            raise ValueError(
                f"CoverProjection: query {tuple(tensors[0].shape)} and key {tuple(tensors[1].shape)} must have the "
                "same shape."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        self._check(x)
        return super().forward(x)

    def pair(
        self, query: torch.Tensor, key: torch.Tensor, key_ddf: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P(query), P(warp(key, key_ddf)))`` from one batched pass (``P(key)`` when ``key_ddf`` is None).

        The warp is applied to the bias-free 1x1 convolution of ``key`` instead of to ``key`` itself: the values
        are the same, because warping (linear interpolation, zeros outside the image) is linear per channel and
        commutes with a per-voxel channel mixing, ``W warp(k) = warp(W k)``; the bias and the norm come after the
        warp as before. The warp then moves ``out_channels`` instead of ``in_channels`` channels (a quarter of them
        on the finest level of the reference head), which is most of the head's cost at full resolution.

        Args:
            query: ``(B, in_channels, *S)``.
            key: ``(B, in_channels, *S)``, same shape.
            key_ddf: ``(B, spatial_dims, *S)`` displacement (voxels, :py:func:`monai_cover.ddf.warp`) or None.

        Returns:
            the two projections, ``(B, out_channels, *S)`` each; in float32 (the warp's dtype) when ``key_ddf``
            is given.
        """
        self._check(query, key)
        batch = query.shape[0]
        both = torch.cat([query, key.to(query.dtype)], dim=0)
        if key_ddf is None:
            query_out, key_out = super().forward(both).split(batch)
            return query_out, key_out
        conv = self[0]
        mixed = conv._conv_forward(both, conv.weight, None)
        mixed_query, mixed_key = mixed.split(batch)
        warped = warp(mixed_key, key_ddf)
        out = torch.cat([mixed_query.to(warped.dtype), warped], dim=0)
        out = out + conv.bias.to(out.dtype).view(1, -1, *([1] * self.spatial_dims))
        for layer in list(self)[1:]:
            out = layer(out)
        query_out, key_out = out.split(batch)
        return query_out, key_out
