# SPDX-License-Identifier: Apache-2.0
"""COVER's reference backbone: a U-Net that returns its feature pyramid (bottleneck + decoder outputs).

Inputs of any size are padded to the total stride and the pyramid cropped back with
:py:func:`monai_cover.networks.utils.pad_to_divisible` / :py:func:`~monai_cover.networks.utils.crop_pyramid`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool

from monai_cover.networks.blocks.upsample import resize_linear
from monai_cover.networks.utils import crop_pyramid, pad_to_divisible

__all__ = ["PyramidUNet", "Pyramidunet", "pyramidunet"]


class PyramidUNet(nn.Module):
    """The U-Net of COVER's reference, returning its feature pyramid coarse to fine.

    Encoder: ``[conv3 -> norm -> act] x 2`` per level, max-pooling (x2) between levels; decoder: x2 linear
    upsampling (corners not aligned, as the reference), concatenation with the skip, ``[conv3 -> norm -> act] x 2``.
    With the reference ``channels=(32, 64, 128, 256, 512)`` the pyramid is
    ``[512 @ 1/16 (bottleneck), 256 @ 1/8, 128 @ 1/4, 64 @ 1/2, 32 @ 1/1]``.

    Any input size works: the input is padded at the end of each axis to a multiple of
    ``2 ** (len(channels) - 1)`` and every level is cropped back (see :py:func:`crop_pyramid`), so the finest level
    has the input's spatial size and level ``k`` from the finest has ``ceil(size / 2**k)`` voxels per axis.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        channels: encoder widths, finest first; ``len(channels)`` is the number of pyramid levels (``>= 1``).
            The decoder widths are the reverse of ``channels[:-1]``.
        act: activation spec for MONAI's factory (reference: LeakyReLU 0.2).
        norm: normalisation spec; ``None`` (default) is the reference GroupNorm with ``channels // 8`` groups
            (at least 1) at every layer.
        pad_mode: padding of the input to the multiple of the total stride (``"constant"`` zeros, ``"replicate"``,
            ``"reflect"``).

    Attributes:
        out_channels: tuple of the pyramid's channels, coarse to fine (what :py:class:`CoverHead` takes).
        spatial_dims: as given.

    Examples::

        net = PyramidUNet(spatial_dims=3, in_channels=1)
        pyramid = net(torch.rand(2, 1, 40, 48, 56))
        [tuple(f.shape) for f in pyramid]
        # [(2, 512, 3, 3, 4), (2, 256, 5, 6, 7), (2, 128, 10, 12, 14), (2, 64, 20, 24, 28), (2, 32, 40, 48, 56)]
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        act: str | tuple = ("leakyrelu", {"negative_slope": 0.2, "inplace": True}),
        norm: str | tuple | None = None,
        pad_mode: str = "constant",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"PyramidUNet: spatial_dims must be 2 or 3, got {spatial_dims}.")
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1:
            raise ValueError(f"PyramidUNet: channels must be a non-empty sequence of positive ints, got {channels}.")
        if int(in_channels) < 1:
            raise ValueError(f"PyramidUNet: in_channels must be >= 1, got {in_channels}.")
        if pad_mode not in ("constant", "replicate", "reflect"):
            raise ValueError(f"PyramidUNet: pad_mode must be 'constant', 'replicate' or 'reflect', got {pad_mode!r}.")
        self.spatial_dims, self.in_channels, self.channels = spatial_dims, int(in_channels), channels
        self.pad_mode = pad_mode
        self.divisor = 2 ** (len(channels) - 1)
        self.out_channels = tuple(reversed(channels))

        def double_conv(cin: int, cout: int) -> nn.Sequential:
            layer_norm = ("group", {"num_groups": max(1, cout // 8)}) if norm is None else norm
            return nn.Sequential(
                Convolution(spatial_dims, cin, cout, kernel_size=3, act=act, norm=layer_norm),
                Convolution(spatial_dims, cout, cout, kernel_size=3, act=act, norm=layer_norm),
            )

        self.encoder = nn.ModuleList(
            [double_conv(self.in_channels if i == 0 else channels[i - 1], c) for i, c in enumerate(channels)]
        )
        self.decoder = nn.ModuleList(
            [double_conv(channels[i + 1] + channels[i], channels[i]) for i in reversed(range(len(channels) - 1))]
        )
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        for m in self.modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def levels(self) -> int:
        """Number of pyramid levels."""
        return len(self.channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """
        Args:
            x: ``(B, in_channels, *S)``, any spatial size.

        Returns:
            list of ``len(channels)`` feature maps coarse to fine: entry ``j`` is
            ``(B, out_channels[j], *ceil(S / 2 ** (levels - 1 - j)))``; the last one is ``(B, channels[0], *S)``.
        """
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PyramidUNet: x must be (B, {self.in_channels}, *spatial) with {self.spatial_dims} spatial dims, "
                f"got {tuple(x.shape)}."
            )
        size = tuple(x.shape[2:])
        x = pad_to_divisible(x, self.divisor, self.pad_mode)
        skips = []
        h = x
        for i, block in enumerate(self.encoder):
            h = block(h if i == 0 else self.pool(h))
            skips.append(h)
        out = [h]
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            up = resize_linear(h, tuple(skip.shape[2:]))  # F.interpolate's values; on CPU separable when exactly x2
            h = block(torch.cat([up, skip], dim=1))
            out.append(h)
        return crop_pyramid(out, size, x.shape[2:])

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}, in_channels={self.in_channels}, channels={self.channels}"


Pyramidunet = pyramidunet = PyramidUNet
