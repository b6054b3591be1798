# SPDX-License-Identifier: Apache-2.0
"""A small per-voxel projector (1x1 convolutions) in front of the feature losses (``L_con``, the spread term)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
from monai.networks.layers.factories import Act, Conv
from monai.networks.layers.utils import get_norm_layer

__all__ = ["FeatureProjector"]


class FeatureProjector(nn.Sequential):
    """``(B, in_channels, *S) -> (B, channels[-1], *S)``: for every hidden width ``Conv 1x1 -> norm -> act``, then a
    last ``Conv 1x1`` (with bias, no norm, no activation). The spatial shape is kept.

    In COVER it sits between the backbone's finest features and the invariance terms, so that ``L_con`` and the
    spread term shape the projector's output and the backbone's features only through it (SimCLR/VICReg-style
    projector), instead of pulling the features a segmenter reads towards invariance directly.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: channels of the input features.
        channels: hidden widths followed by the output width (at least one entry; ``(C,)`` is one linear map).
        norm: normalisation after each hidden convolution (MONAI ``get_norm_layer`` spec; default one-group
            GroupNorm, which works with any batch size); ``None`` for none.
        act: activation after each hidden normalisation (MONAI ``Act`` spec; default LeakyReLU 0.2).

    Examples::

        proj = FeatureProjector(2, in_channels=32, channels=(64, 32))
        proj(torch.rand(2, 32, 96, 96)).shape  # (2, 32, 96, 96)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int] = (64, 32),
        norm: str | tuple | None = ("group", {"num_groups": 1}),
        act: str | tuple | None = ("leakyrelu", {"negative_slope": 0.2}),
    ) -> None:
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"FeatureProjector: spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        widths = [int(c) for c in channels] if not isinstance(channels, int) else [int(channels)]
        if int(in_channels) < 1 or not widths or min(widths) < 1:
            raise ValueError(
                f"FeatureProjector: in_channels and channels must be positive (channels non-empty), got "
                f"in_channels={in_channels}, channels={channels!r}."
            )
        conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = []
        width = int(in_channels)
        for hidden in widths[:-1]:
            layers.append(conv(width, hidden, 1, bias=norm is None))
            if norm is not None:
                layers.append(get_norm_layer(norm, spatial_dims=spatial_dims, channels=hidden))
            if act is not None:
                name, kwargs = (act, {}) if isinstance(act, str) else (act[0], dict(act[1]))
                layers.append(Act[name](**kwargs))
            width = hidden
        layers.append(conv(width, widths[-1], 1, bias=True))
        super().__init__(*layers)
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, int(in_channels), widths[-1]
