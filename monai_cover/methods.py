# SPDX-License-Identifier: Apache-2.0
"""Select one of the four pretraining methods by name, for a bundle or a training script.

``build_method(name, backbone, ...)`` returns a :py:class:`PretrainMethod` with the method's random
``transform``, ``network``, ``loss``, ``prepare_batch``, ``parameters()`` (network *and* loss heads) and
``model`` (what a checkpoint saves), all around the same ``backbone`` (a pyramid such as
:py:class:`~monai_cover.networks.FeaturePyramid`):

- ``"cover"``: the given COVER components (``cover_net``, ``cover_loss``, ``cover_prepare_batch``,
  ``pair_transform``) unchanged;
- ``"voxel_infonce"``: the same pairs and ``cover_prepare_batch``, the backbone through
  :py:class:`~monai_cover.networks.TwoViewFeatures` (no DDF head), with
  :py:class:`~monai_cover.losses.voxel_infonce.VoxelInfoNCELoss` (with a projection head on the
  backbone's finest level) as the loss;
- ``"pcrlv2"``, ``"voco"``: :py:func:`~monai_cover.baselines.registry.build_pretext`.

:py:func:`method_kwargs` holds each method's default transform and loss arguments, so that a bundle selects a
method with its name alone (``--method voco``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from monai_cover.baselines.pcrlv2 import PCRLv2Cropd
from monai_cover.baselines.registry import PretextTask, build_pretext
from monai_cover.baselines.voco import VoCoCropd
from monai_cover.losses.voxel_infonce import VoxelInfoNCELoss
from monai_cover.networks.nets.cover_net import TwoViewFeatures

__all__ = ["METHODS", "PretrainMethod", "build_method", "build_method_transform", "method_kwargs"]

#: the names :py:func:`build_method` accepts
METHODS = ("cover", "voxel_infonce", "pcrlv2", "voco")


@dataclass
class PretrainMethod(PretextTask):
    """What a pretraining loop needs for one method (COVER or a baseline), plus what its checkpoint saves."""

    @property
    def model(self) -> torch.nn.Module:
        """The trained modules for a checkpoint: the network alone when the loss has no parameters (COVER),
        else a ``ModuleDict`` of ``network`` and ``loss``."""
        if next(iter(self.loss.parameters()), None) is None and not list(self.loss.buffers()):
            return self.network
        return torch.nn.ModuleDict({"network": self.network, "loss": self.loss})

    @property
    def predicts_ddf(self) -> bool:
        """Whether ``network`` predicts COVER's displacement field (``cover``), so that DDF validation metrics and
        a ``CoverNet`` checkpoint apply."""
        return self.name == "cover"

    @property
    def loss_title(self) -> str:
        """A one-line name of what the loss measures, e.g. for a loss summary."""
        formula = getattr(self.loss, "formula", None)
        if self.name == "cover":
            return f"COVER pretraining loss ({formula})" if formula else "COVER pretraining loss"
        return f"{self.name} pretraining loss"


def method_kwargs(
    name: str,
    patch_size: Sequence[int],
    transform_kwargs: Mapping[str, Any] | None = None,
    loss_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The ``transform_kwargs`` and ``loss_kwargs`` of :py:func:`build_method` for method ``name`` on crops of
    ``patch_size``: the defaults below, updated with ``transform_kwargs`` / ``loss_kwargs`` (e.g. a bundle's
    ``--method_loss_kwargs#num_samples 512``).

    - ``cover``: none (its components are given whole);
    - ``voxel_infonce``: 1024 sampled voxels per pair, projection head 256-128;
    - ``pcrlv2``: global and local crops of ``patch_size``, 2 local crops;
    - ``voco``: a 2x2 base grid and 2 random crops of ``patch_size``, projection head 512-512-512.

    Returns:
        ``{"transform_kwargs": {...}, "loss_kwargs": {...}}`` (new dicts).
    """
    name = str(name)
    if name not in METHODS:
        raise ValueError(f"method_kwargs: unknown method {name!r}; known: {list(METHODS)}.")
    size = [int(s) for s in patch_size]
    transform: dict[str, Any] = {}
    loss: dict[str, Any] = {}
    if name == "voxel_infonce":
        loss = {"num_samples": 1024, "projection_channels": [256, 128]}
    elif name == "pcrlv2":
        transform = {"global_size": size, "local_size": list(size), "num_local": 2}
    elif name == "voco":
        transform = {"grid": [2, 2], "num_random": 2, "roi_size": size}
        loss = {"projection_channels": [512, 512, 512]}
    transform.update(transform_kwargs or {})
    loss.update(loss_kwargs or {})
    return {"transform_kwargs": transform, "loss_kwargs": loss}


def build_method_transform(name: str, pair_transform: Any = None, transform_kwargs: Mapping[str, Any] | None = None):
    """The random transform of method ``name`` (needs no network): ``pair_transform`` (a ``RandCoverPaird``) for
    ``cover`` and ``voxel_infonce``, ``PCRLv2Cropd(**transform_kwargs)`` / ``VoCoCropd(**transform_kwargs)`` for
    ``pcrlv2`` / ``voco``."""
    name = str(name)
    if name not in METHODS:
        raise ValueError(f"build_method_transform: unknown method {name!r}; known: {list(METHODS)}.")
    if name in ("cover", "voxel_infonce"):
        if pair_transform is None:
            raise ValueError(f"build_method_transform: method {name!r} needs pair_transform (a RandCoverPaird).")
        return pair_transform
    if name == "pcrlv2":
        return PCRLv2Cropd(**dict(transform_kwargs or {}))
    return VoCoCropd(**dict(transform_kwargs or {}))


def build_method(
    name: str,
    backbone: torch.nn.Module,
    cover_net: torch.nn.Module | None = None,
    cover_loss: torch.nn.Module | None = None,
    cover_prepare_batch: Any = None,
    pair_transform: Any = None,
    transform: Any = None,
    in_channels: int = 1,
    transform_kwargs: Mapping[str, Any] | None = None,
    loss_kwargs: Mapping[str, Any] | None = None,
) -> PretrainMethod:
    """Build the pretraining method ``name`` (one of :py:data:`METHODS`) around ``backbone``.

    Args:
        name: ``"cover"``, ``"voxel_infonce"``, ``"pcrlv2"`` or ``"voco"``.
        backbone: maps ``(N, in_channels, *S)`` to a pyramid (coarse to fine), exposing ``out_channels``.
        cover_net: the ``CoverNet`` on ``backbone`` (needed by ``cover``; ``voxel_infonce`` runs the backbone
            alone through :py:class:`~monai_cover.networks.TwoViewFeatures`).
        cover_loss: the ``CoverLoss`` (needed by ``cover``).
        cover_prepare_batch: the ``CoverPrepareBatch`` (needed by ``cover`` and ``voxel_infonce``).
        pair_transform: the ``RandCoverPaird`` (needed by ``cover`` and ``voxel_infonce`` unless ``transform``
            is given).
        transform: the method's random transform, e.g. from :py:func:`build_method_transform` (default: built
            from ``pair_transform`` / ``transform_kwargs``).
        in_channels: image channels (PCRLv2 restores them).
        transform_kwargs: arguments of the pretext crop transform (``pcrlv2``/``voco``; ignored otherwise).
        loss_kwargs: arguments of the loss (``voxel_infonce``/``pcrlv2``/``voco``; ignored for ``cover``).
    """
    name = str(name)
    if name not in METHODS:
        raise ValueError(f"build_method: unknown method {name!r}; known: {list(METHODS)}.")
    if transform is None:
        transform = build_method_transform(name, pair_transform, transform_kwargs)
    if name in ("cover", "voxel_infonce"):
        needed = {"cover_prepare_batch": cover_prepare_batch}
        if name == "cover":
            needed.update(cover_net=cover_net, cover_loss=cover_loss)
        missing = [k for k, v in needed.items() if v is None]
        if missing:
            raise ValueError(f"build_method: method {name!r} needs {missing}.")
        if name == "cover":
            return PretrainMethod(name, transform, cover_net, cover_loss, cover_prepare_batch)
        kwargs = dict(loss_kwargs or {})
        if "in_channels" not in kwargs:
            channels = getattr(backbone, "out_channels", None)
            if not isinstance(channels, (tuple, list)):
                raise ValueError("build_method: voxel_infonce needs loss_kwargs['in_channels'] or a backbone exposing "
                                 f"out_channels (coarse to fine); got {channels!r}.")
            kwargs["in_channels"] = int(channels[-1])
        # the features alone: the loss never reads COVER's ddf, so its head would be computed for nothing
        network = TwoViewFeatures(backbone)
        prepare = cover_prepare_batch
        if getattr(prepare, "network_ddf", False):  # the true field feeds COVER's teacher forcing, not this network
            prepare = copy.copy(prepare)
            prepare.network_ddf = False
        return PretrainMethod(name, transform, network, VoxelInfoNCELoss(**kwargs), prepare)
    task = build_pretext(name, backbone, in_channels=in_channels, transform_kwargs=transform_kwargs,
                         loss_kwargs=loss_kwargs)
    return PretrainMethod(name, transform, task.network, task.loss, task.prepare_batch)
