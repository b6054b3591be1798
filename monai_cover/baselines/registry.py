# SPDX-License-Identifier: Apache-2.0
"""Select a baseline pretext task by name: its crop transform, backbone wrapper, loss and ``prepare_batch``.

A benchmark or bundle builds every baseline from the same backbone (a module mapping ``(N, C, *S)`` to
a pyramid, coarse to fine) with one name::

    task = build_pretext("voco", PyramidUNet(spatial_dims=3), in_channels=1,
                         transform_kwargs={"roi_size": (64, 64, 64)})   # pyramid channels from the backbone
    train_transforms = Compose([...load/scale..., task.transform, DeleteItemsd("image")])
    trainer = SupervisedTrainer(network=task.network, loss_function=task.loss,
                                prepare_batch=task.prepare_batch, optimizer=Adam(task.parameters()), ...)

``voxel_infonce`` (:py:class:`~monai_cover.losses.voxel_infonce.VoxelInfoNCELoss`) is not here: it uses
COVER's own pairs, network and prepare_batch and only swaps the loss.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from monai_cover.baselines.pcrlv2 import PCRLv2Cropd, PCRLv2Net
from monai_cover.baselines.voco import VoCoCropd, VoCoNet
from monai_cover.engines import KeysPrepareBatch
from monai_cover.losses.pcrlv2 import PCRLv2Loss
from monai_cover.losses.voco import VoCoLoss

__all__ = ["PretextTask", "PRETEXT_TASKS", "build_pretext"]


@dataclass
class PretextTask:
    """What a baseline needs in a training loop. ``parameters()`` covers the network *and* the loss's heads."""

    name: str
    transform: Any
    network: torch.nn.Module
    loss: torch.nn.Module
    prepare_batch: KeysPrepareBatch

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        yield from self.network.parameters()
        yield from self.loss.parameters()


def _pcrlv2(backbone, pyramid_channels, in_channels, spatial_dims, transform_kwargs, loss_kwargs) -> PretextTask:
    return PretextTask(
        "pcrlv2",
        PCRLv2Cropd(**transform_kwargs),
        PCRLv2Net(backbone),
        PCRLv2Loss(in_channels=pyramid_channels, out_channels=in_channels, spatial_dims=spatial_dims, **loss_kwargs),
        KeysPrepareBatch(["pcrlv2_global_input", "pcrlv2_local_input"], ["pcrlv2_global_target"]),
    )


def _voco(backbone, pyramid_channels, in_channels, spatial_dims, transform_kwargs, loss_kwargs) -> PretextTask:
    levels = loss_kwargs.pop("levels", None)
    width = sum(pyramid_channels[i] for i in (levels if levels is not None else range(len(pyramid_channels))))
    loss_kwargs.setdefault("in_channels", width)
    return PretextTask(
        "voco",
        VoCoCropd(**transform_kwargs),
        VoCoNet(backbone, levels=levels),
        VoCoLoss(**loss_kwargs),
        KeysPrepareBatch(["voco_base", "voco_random"], ["voco_labels"]),
    )


#: name -> builder ``(backbone, pyramid_channels, in_channels, spatial_dims, transform_kwargs, loss_kwargs)``
PRETEXT_TASKS = {"pcrlv2": _pcrlv2, "voco": _voco}


def build_pretext(
    name: str,
    backbone: torch.nn.Module,
    pyramid_channels: Sequence[int] | None = None,
    in_channels: int = 1,
    spatial_dims: int | None = None,
    transform_kwargs: Mapping[str, Any] | None = None,
    loss_kwargs: Mapping[str, Any] | None = None,
) -> PretextTask:
    """Build the baseline ``name`` (``"pcrlv2"`` or ``"voco"``) around ``backbone``.

    Args:
        name: a key of :py:data:`PRETEXT_TASKS`.
        backbone: maps ``(N, in_channels, *S)`` to a pyramid with ``pyramid_channels`` (coarse to fine).
        pyramid_channels: channels of each pyramid level, coarse to fine (default: ``backbone.out_channels``,
            as :py:class:`~monai_cover.networks.nets.PyramidUNet` and ``FeaturePyramid`` expose).
        in_channels: image channels (PCRLv2 restores them).
        spatial_dims: 2 or 3 (default: ``backbone.spatial_dims``, else 3).
        transform_kwargs: arguments of the crop transform (``PCRLv2Cropd`` / ``VoCoCropd``); include sizes
            valid for the backbone.
        loss_kwargs: arguments of the loss (``PCRLv2Loss`` / ``VoCoLoss``; for VoCo also ``levels``, the
            pooled pyramid levels, default all, which sets the loss's ``in_channels``).
    """
    if name not in PRETEXT_TASKS:
        raise KeyError(f"build_pretext: unknown pretext task {name!r}; known: {sorted(PRETEXT_TASKS)}.")
    if pyramid_channels is None:
        pyramid_channels = getattr(backbone, "out_channels", None)
        if not isinstance(pyramid_channels, (tuple, list)):
            raise ValueError("build_pretext: pass pyramid_channels, or a backbone exposing out_channels (a tuple, "
                             "coarse "
                             f"to fine); got out_channels={pyramid_channels!r}.")
    if spatial_dims is None:
        spatial_dims = getattr(backbone, "spatial_dims", 3)
    channels = [int(c) for c in pyramid_channels]
    return PRETEXT_TASKS[name](backbone, channels, int(in_channels), int(spatial_dims),
                               dict(transform_kwargs or {}), dict(loss_kwargs or {}))
