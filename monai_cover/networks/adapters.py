# SPDX-License-Identifier: Apache-2.0
"""Take a feature pyramid out of a stock MONAI network with forward hooks, so COVER can pretrain it unchanged.

:py:class:`FeaturePyramid` wraps the network, records the outputs of named submodules during the network's
own ``forward`` and returns them coarse to fine. Its ``state_dict`` holds the wrapped network's keys *without*
a prefix, so pretrained weights load straight into a plain network of the same class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from monai_cover.networks.utils import crop_pyramid, pad_to_divisible

__all__ = ["FeaturePyramid", "FeatureLevel", "default_pyramid_layers"]

_PREFIX = "network."


def _prod_strides(strides: Sequence[Any], spatial_dims: int) -> tuple[int, ...]:
    total = [1] * spatial_dims
    for s in strides:
        per_axis = [int(s)] * spatial_dims if isinstance(s, int) else [int(v) for v in s]
        total = [t * v for t, v in zip(total, per_axis)]
    return tuple(total)


def default_pyramid_layers(network: nn.Module) -> tuple[list[str], int | tuple[int, ...]]:
    """Hook points (coarse to fine) and input-size multiple of the MONAI networks supported out of the box.

    - ``BasicUNet``: ``down_4`` (1/16), ``upcat_4`` (1/8), ``upcat_3``, ``upcat_2``, ``upcat_1`` (1/1); multiple 16.
    - ``SwinUNETR``: ``decoder5`` (1/16), ``decoder4``, ``decoder3``, ``decoder2``, ``decoder1`` (1/1); multiple 32.
    - ``DynUNet``: ``bottleneck``, ``upsamples.0`` ... ``upsamples.{n-1}`` (1/1); multiple = product of ``strides``.
    - ``FlexibleUNet``: ``decoder.blocks.0`` ... ``decoder.blocks.{n-1}`` (1/1); multiple 32.
    - ``UNet``: the bottom block, then each decoder level's output (``model.1.submodule``... nested), then
      ``model.2``, the last up-convolution at 1/1, whose width is the network's ``out_channels`` (pretrain with
      ``out_channels`` set to a feature width, and leave ``model.2`` out when loading for another task);
      multiple = product of ``strides``.
    - ``SegResNet``: ``down_layers.{n-1}`` (1/2^(n-1)), then ``up_layers.0`` ... ``up_layers.{n-2}`` (1/1);
      multiple 2^(n-1).
    - ``UNETR``: ``decoder5`` (1/8), ``decoder4``, ``decoder3``, ``decoder2`` (1/1); multiple 16 (its input must
      have the size ``img_size`` it was built with anyway).
    - nnU-Net's U-Nets (``dynamic_network_architectures``: ``PlainConvUNet``, ``ResidualEncoderUNet``): the
      bottleneck ``encoder.stages.{n-1}``, then ``decoder.stages.0`` ... ``decoder.stages.{n-2}`` (1/1); multiple =
      product of ``encoder.strides`` (per axis: anisotropic plans downsample some axes less).

    Raises:
        TypeError: for other classes (pass ``layers=[...]`` to :py:class:`FeaturePyramid`).
    """
    from monai.networks.nets import UNETR, BasicUNet, DynUNet, FlexibleUNet, SegResNet, SwinUNETR, UNet

    if isinstance(network, BasicUNet):
        return ["down_4", "upcat_4", "upcat_3", "upcat_2", "upcat_1"], 16
    if isinstance(network, SwinUNETR):
        return ["decoder5", "decoder4", "decoder3", "decoder2", "decoder1"], 32
    if isinstance(network, DynUNet):
        dims = _infer_spatial_dims(network)
        return ["bottleneck"] + [f"upsamples.{i}" for i in range(len(network.upsamples))], _prod_strides(
            network.strides, dims
        )
    if isinstance(network, FlexibleUNet):
        return [f"decoder.blocks.{i}" for i in range(len(network.decoder.blocks))], 32
    if isinstance(network, UNet):
        depth = len(network.strides)
        inner = [f"model{'.1.submodule' * k}" for k in range(depth, 0, -1)]
        return inner + ["model.2"], _prod_strides(network.strides, network.dimensions)
    if isinstance(network, SegResNet):
        n = len(network.down_layers)
        return [f"down_layers.{n - 1}"] + [f"up_layers.{i}" for i in range(len(network.up_layers))], 2 ** (n - 1)
    if isinstance(network, UNETR):
        return ["decoder5", "decoder4", "decoder3", "decoder2"], 16
    if _is_nnunet_unet(network):
        dims = _infer_spatial_dims(network)
        layers = [f"encoder.stages.{len(network.encoder.stages) - 1}"]
        return layers + [f"decoder.stages.{i}" for i in range(len(network.decoder.stages))], _prod_strides(
            network.encoder.strides, dims
        )
    raise TypeError(
        f"FeaturePyramid: no default pyramid layers for {type(network).__name__}; pass layers=[...] "
        "(names of submodules, coarse to fine, e.g. from network.named_modules())."
    )


def _is_nnunet_unet(network: nn.Module) -> bool:
    """An encoder-decoder U-Net of ``dynamic_network_architectures`` (nnU-Net's networks), told by its structure so
    that this module needs no import of that package."""
    encoder, decoder = getattr(network, "encoder", None), getattr(network, "decoder", None)
    return (
        type(network).__module__.startswith("dynamic_network_architectures")
        and all(hasattr(encoder, a) for a in ("stages", "strides"))
        and all(hasattr(decoder, a) for a in ("stages", "seg_layers"))
        and len(decoder.stages) == len(encoder.stages) - 1
    )


def _infer_spatial_dims(network: nn.Module) -> int:
    for m in network.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.weight.ndim - 2
    raise ValueError(f"FeaturePyramid: cannot infer spatial_dims of {type(network).__name__}; pass spatial_dims.")


def _infer_out_channels(module: nn.Module, name: str) -> int:
    last = None
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            last = m
    if last is None:
        raise ValueError(f"FeaturePyramid: cannot infer the output channels of layer '{name}'; pass out_channels.")
    return int(last.out_channels)


class _LevelHook:
    """Forward hook storing a module's output in its pyramid's capture dict (a class, so that deepcopy and
    pickling of the pyramid carry working hooks)."""

    def __init__(self, pyramid: FeaturePyramid, index: int) -> None:
        self.pyramid, self.index = pyramid, index

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        store = self.pyramid._capture
        if store is not None:
            store[self.index] = output[0] if isinstance(output, (tuple, list)) else output


def _strip_prefix(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict post-hook: ``<prefix>network.<key>`` -> ``<prefix><key>`` (in place, order kept)."""
    inner = prefix + _PREFIX
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner) :]] = state_dict.pop(key)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        for key in [k for k in metadata if k == inner[:-1] or k.startswith(inner)]:
            new_key = prefix[:-1] if key == inner[:-1] else prefix + key[len(inner) :]
            metadata[new_key] = metadata.pop(key)


def _add_prefix(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: ``<prefix><key>`` -> ``<prefix>network.<key>`` unless already prefixed."""
    inner = prefix + _PREFIX
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix) :]] = state_dict.pop(key)


class FeaturePyramid(nn.Module):
    """A stock network as a feature-pyramid backbone: ``forward(x)`` runs the network and returns the outputs of
    ``layers`` (submodule names, coarse to fine) as a list.

    The input is padded at the end of each axis to a multiple of ``size_divisible`` and every level is cropped back
    (:py:func:`~monai_cover.networks.utils.crop_pyramid`), so the finest level of a U-Net has the input
    size and the pyramid halves exactly. The network's own output (e.g. logits) is computed and discarded; its
    final layer receives no gradient (use ``find_unused_parameters=True`` with DistributedDataParallel).

    ``state_dict()`` and ``load_state_dict()`` use the wrapped network's own keys (no ``"network."`` prefix, also
    inside a :py:class:`~monai_cover.networks.nets.CoverNet`, whose keys are ``"backbone." + <network key>``), so
    ``BasicUNet(...).load_state_dict(pyramid.state_dict())`` works. ``named_parameters()`` keep the prefix.

    Args:
        network: the stock network (its modules get forward hooks; see :py:meth:`remove_hooks`).
        layers: submodule names coarse to fine; ``None`` picks the defaults of :py:func:`default_pyramid_layers`
            (``BasicUNet``, ``SwinUNETR``, ``DynUNet``, ``FlexibleUNet``).
        levels: keep only the ``levels`` finest of ``layers`` (``None``: all), e.g. ``levels=3`` for 32^3 crops
            (see :py:func:`~monai_cover.networks.nets.levels_for_size`). The network's padding rule is kept.
        out_channels: channels per level; ``None`` reads them off the last convolution of each hooked module.
        spatial_dims: ``None`` reads it off the network's first convolution.
        size_divisible: pad the input to this multiple (int or one per axis); ``None`` uses the default of the
            network class (also with explicit ``layers`` or ``levels``), or 1 (no padding) on an unknown class.
        pad_mode: ``"constant"`` (zeros), ``"replicate"`` or ``"reflect"``.

    Attributes:
        out_channels: tuple of channels per level, coarse to fine (what :py:class:`CoverHead` takes).
        spatial_dims, layers, size_divisible.

    Examples::

        unet = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2)
        pyramid = FeaturePyramid.from_network(unet)        # layers down_4, upcat_4 ... upcat_1
        pyramid.out_channels                               # (256, 128, 64, 32, 32)
        cover = CoverNet(pyramid)                          # CoverHead built from pyramid.out_channels
        ...                                                # pretrain
        torch.save(cover.backbone.state_dict(), "unet.pt") # plain BasicUNet keys
        BasicUNet(spatial_dims=3, in_channels=1, out_channels=2).load_state_dict(torch.load("unet.pt"))
    """

    def __init__(
        self,
        network: nn.Module,
        layers: Sequence[str] | None = None,
        levels: int | None = None,
        out_channels: Sequence[int] | None = None,
        spatial_dims: int | None = None,
        size_divisible: int | Sequence[int] | None = None,
        pad_mode: str = "constant",
    ) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(f"FeaturePyramid: network must be a torch.nn.Module, got {type(network).__name__}.")
        default_multiple: int | tuple[int, ...] = 1
        try:  # the network's padding rule holds whatever levels are read
            default_layers, default_multiple = default_pyramid_layers(network)
        except TypeError:
            default_layers = None
        if layers is None:
            if default_layers is None:
                default_pyramid_layers(network)  # raises the error that names the class
            layers = default_layers
        elif isinstance(layers, str) or len(layers) < 1:
            raise ValueError(f"FeaturePyramid: layers must be a non-empty sequence of submodule names, got {layers!r}.")
        if levels is not None:
            if int(levels) != levels or not 1 <= int(levels) <= len(layers):
                raise ValueError(f"FeaturePyramid: levels must be an integer in [1, {len(layers)}] (the layers "
                                 f"{list(layers)}), got {levels!r}.")
            layers = list(layers)[-int(levels):]
        self.layers = tuple(str(n) for n in layers)
        names = dict(network.named_modules())
        missing = [n for n in self.layers if n not in names]
        if missing:
            raise ValueError(
                f"FeaturePyramid: {type(network).__name__} has no submodule(s) {missing}; "
                f"top-level children are {[n for n, _ in network.named_children()]}."
            )
        if out_channels is None:
            out_channels = [_infer_out_channels(names[n], n) for n in self.layers]
        elif len(out_channels) != len(self.layers):
            raise ValueError(
                f"FeaturePyramid: out_channels {tuple(out_channels)} must have one entry per layer {self.layers}."
            )
        self.out_channels = tuple(int(c) for c in out_channels)
        self.spatial_dims = int(spatial_dims) if spatial_dims is not None else _infer_spatial_dims(network)
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"FeaturePyramid: spatial_dims must be 2 or 3, got {self.spatial_dims}.")
        self.size_divisible = default_multiple if size_divisible is None else size_divisible
        if pad_mode not in ("constant", "replicate", "reflect"):
            raise ValueError(
                f"FeaturePyramid: pad_mode must be 'constant', 'replicate' or 'reflect', got {pad_mode!r}."
            )
        self.pad_mode = pad_mode
        self.network = network
        self._capture: dict[int, torch.Tensor] | None = None
        self._handles = [names[n].register_forward_hook(_LevelHook(self, i)) for i, n in enumerate(self.layers)]
        self.register_state_dict_post_hook(_strip_prefix)
        self.register_load_state_dict_pre_hook(_add_prefix)

    @classmethod
    def from_network(cls, network: nn.Module, **kwargs: Any) -> FeaturePyramid:
        """``FeaturePyramid(network, **kwargs)`` with the default layers of the network's class (see
        :py:func:`default_pyramid_layers`) unless ``layers`` is given."""
        return cls(network, **kwargs)

    @property
    def levels(self) -> int:
        return len(self.layers)

    def remove_hooks(self) -> None:
        """Detach the forward hooks from the wrapped network (this pyramid stops working)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """
        Args:
            x: ``(B, C_in, *S)`` with ``spatial_dims`` spatial axes.

        Returns:
            the outputs of ``layers``, coarse to fine, each cropped to the part covering the unpadded input.
        """
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"FeaturePyramid: x must be (B, C, *spatial) with {self.spatial_dims} spatial dims, "
                f"got {tuple(x.shape)}."
            )
        if not self._handles:
            raise RuntimeError("FeaturePyramid: the hooks were removed.")
        size = tuple(x.shape[2:])
        padded = pad_to_divisible(x, self.size_divisible, self.pad_mode)
        self._capture = store = {}
        try:
            self.network(padded)
        finally:
            self._capture = None
        missing = [n for i, n in enumerate(self.layers) if i not in store]
        if missing:
            raise RuntimeError(
                f"FeaturePyramid: layer(s) {missing} did not run in {type(self.network).__name__}.forward."
            )
        levels = [store[i] for i in range(len(self.layers))]
        return crop_pyramid(levels, size, padded.shape[2:])

    def extra_repr(self) -> str:
        return f"layers={list(self.layers)}, out_channels={self.out_channels}, size_divisible={self.size_divisible}"


class FeatureLevel(nn.Module):
    """One level of a feature pyramid as a plain ``image -> tensor`` network (for feature extraction and
    ``verify_net_in_out``).

    Args:
        pyramid: a module returning a list/tuple of feature maps (coarse to fine), e.g.
            ``monai_cover.networks.FeaturePyramid``.
        level: index into that list; ``-1`` (default) is the finest, full-resolution map.
    """

    def __init__(self, pyramid: nn.Module, level: int = -1) -> None:
        super().__init__()
        self.pyramid = pyramid
        self.level = int(level)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pyramid(x)
        return out[self.level] if isinstance(out, (list, tuple)) else out
