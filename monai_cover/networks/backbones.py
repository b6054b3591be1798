# SPDX-License-Identifier: Apache-2.0
"""Stock MONAI networks by name, built from one set of arguments, so a bundle can pretrain any of them with
``--backbone NAME``; their pyramids are :py:func:`~monai_cover.networks.adapters.default_pyramid_layers`'."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch.nn as nn

__all__ = ["BACKBONES", "BACKBONE_LEVELS", "build_backbone"]


def _basic_unet(spatial_dims: int, in_channels: int, out_channels: int, features: Sequence[int],
                img_size: Sequence[int] | None, **kwargs: Any) -> nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                     features=tuple(features), **kwargs)


def _unet(spatial_dims: int, in_channels: int, out_channels: int, features: Sequence[int],
          img_size: Sequence[int] | None, **kwargs: Any) -> nn.Module:
    from monai.networks.nets import UNet

    channels = tuple(int(f) for f in features[1:5]) + (int(features[4]),)  # BasicUNet widths, encoder to bottom
    kwargs.setdefault("num_res_units", 2)
    return UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                channels=kwargs.pop("channels", channels), strides=kwargs.pop("strides", (2, 2, 2, 2)), **kwargs)


def _segresnet(spatial_dims: int, in_channels: int, out_channels: int, features: Sequence[int],
               img_size: Sequence[int] | None, **kwargs: Any) -> nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                     init_filters=kwargs.pop("init_filters", int(features[0])), **kwargs)


def _needs_img_size(name: str, img_size: Sequence[int] | None, spatial_dims: int) -> tuple[int, ...]:
    if img_size is None or len(img_size) != spatial_dims:
        raise ValueError(f"build_backbone: {name} needs img_size (the patch size, {spatial_dims} values), got "
                         f"{img_size!r}.")
    return tuple(int(s) for s in img_size)


def _unetr(spatial_dims: int, in_channels: int, out_channels: int, features: Sequence[int],
           img_size: Sequence[int] | None, **kwargs: Any) -> nn.Module:
    from monai.networks.nets import UNETR

    size = _needs_img_size("unetr", img_size, spatial_dims)
    return UNETR(in_channels=in_channels, out_channels=out_channels, img_size=size, spatial_dims=spatial_dims,
                 feature_size=kwargs.pop("feature_size", int(features[0]) // 2 or 1), **kwargs)


def _swinunetr(spatial_dims: int, in_channels: int, out_channels: int, features: Sequence[int],
               img_size: Sequence[int] | None, **kwargs: Any) -> nn.Module:
    from monai.networks.nets import SwinUNETR

    kwargs.setdefault("use_v2", True)
    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, spatial_dims=spatial_dims,
                     feature_size=kwargs.pop("feature_size", 24), **kwargs)


#: name -> builder ``(spatial_dims, in_channels, out_channels, features, img_size, **kwargs) -> network``
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "basic_unet": _basic_unet,
    "unet": _unet,
    "segresnet": _segresnet,
    "unetr": _unetr,
    "swinunetr": _swinunetr,
}


#: name -> pyramid levels of the network :py:func:`build_backbone` builds with its default arguments (a config can
#: size the head from this without building the network first, which would move its random initialisation)
BACKBONE_LEVELS: dict[str, int] = {"basic_unet": 5, "unet": 5, "segresnet": 4, "unetr": 4, "swinunetr": 5}


def build_backbone(name: str = "basic_unet", spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 1,
                   features: Sequence[int] = (32, 32, 64, 128, 256, 32), img_size: Sequence[int] | None = None,
                   **kwargs: Any) -> nn.Module:
    """A stock MONAI network, as COVER pretrains it.

    ``features`` are ``BasicUNet``'s six widths; the others take what fits from them (``kwargs`` override):

    - ``basic_unet``: ``BasicUNet(features=features)``.
    - ``unet``: ``UNet(channels=features[1:5] + (features[4],), strides=(2, 2, 2, 2), num_res_units=2)``; its
      full-resolution pyramid level is its output, so pretrain it with ``out_channels`` a feature width (the bundle
      passes ``features[-1]``) and leave ``model.2`` out when loading it for a task.
    - ``segresnet``: ``SegResNet(init_filters=features[0])``.
    - ``unetr``: ``UNETR(img_size=img_size, feature_size=features[0] // 2)`` (ViT-B unless ``hidden_size``,
      ``mlp_dim``, ``num_heads`` say otherwise); ``img_size`` (the patch size) is required.
    - ``swinunetr``: ``SwinUNETR(feature_size=24, use_v2=True)``.

    Raises:
        ValueError: an unknown name (the known ones are listed), or ``unetr`` without ``img_size``.
    """
    if name not in BACKBONES:
        raise ValueError(f"build_backbone: unknown backbone {name!r}; known: {sorted(BACKBONES)}.")
    if len(features) != 6:
        raise ValueError(f"build_backbone: features must be BasicUNet's six widths, got {tuple(features)}.")
    return BACKBONES[name](int(spatial_dims), int(in_channels), int(out_channels), tuple(int(f) for f in features),
                           img_size, **kwargs)
