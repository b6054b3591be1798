# SPDX-License-Identifier: Apache-2.0
"""What the pretraining bundle's nnU-Net override calls: the head's levels and reach on the plan's pyramid, and the
handler that writes ``nnunet_pretrained.pth`` with its record."""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.nn as nn

from monai_cover.networks.nets.cover_head import min_level_size

from .plans import NnUNetPlan, NnUNetPlanError
from .weights import compare_with_plan, save_nnunet_pretrained

__all__ = ["NnUNetWeightsSaver", "capture_range_for_plan", "levels_for_plan"]

logger = logging.getLogger(__name__)


def levels_for_plan(plan: NnUNetPlan, patch_size: Sequence[int] | None = None, radius: int = 2) -> int:
    """How many pyramid levels (finest first) the COVER head reads on the plan's network: the largest ``L`` (at
    most the number of stages) whose coarsest level has at least ``min_level_size(radius)`` voxels on every axis of
    a ``patch_size`` crop (default: the plan's patch), at least 1. Uses the plan's strides, so an axis that an
    anisotropic plan downsamples less keeps more voxels."""
    sizes = plan.level_sizes(list(patch_size) if patch_size is not None else None)
    levels = 1
    while levels < len(sizes) and min(sizes[levels]) >= min_level_size(radius):
        levels += 1
    return levels


def capture_range_for_plan(plan: NnUNetPlan, levels: int, radius: int = 2) -> int:
    """Largest displacement, in full-resolution voxels on every axis, that a head of ``levels`` levels reaches on
    the plan's pyramid: ``radius`` voxels of each level's own grid, summed; the smallest over the axes (an axis
    downsampled less has a shorter reach)."""
    strides = plan.strides
    if not 1 <= int(levels) <= len(strides):
        raise ValueError(f"capture_range_for_plan: levels must be in [1, {len(strides)}], got {levels}.")
    reach = [0] * plan.spatial_dims
    scale = [1] * plan.spatial_dims
    for stride in strides[: int(levels)]:
        scale = [s * st for s, st in zip(scale, stride)]
        reach = [r + int(radius) * s for r, s in zip(reach, scale)]
    return int(min(reach))


class NnUNetWeightsSaver:
    """Ignite handler: check, when attached, that the network is the plan's (:py:meth:`check_network`), then write
    its weights for ``nnUNetv2_train -pretrained_weights`` every ``interval`` epochs and when training completes
    (:py:func:`~monai_cover.nnunet.save_nnunet_pretrained`, atomic), with a JSON record beside it: the plan
    (identifier, configuration, spacing, normalisation, patch size), the method, the iterations and epochs done, and
    the data.

    Args:
        network: the nnU-Net network being pretrained (or a ``FeaturePyramid`` over it).
        filename: e.g. ``<output_dir>/nnunet_pretrained.pth``.
        plan: its :py:class:`NnUNetPlan`.
        method, data: recorded as given (e.g. ``"cover"`` and the data report's source).
        interval: epochs between writes (``0``: only at the end).
        enabled: ``False`` on the non-zero ranks of a distributed run.
    """

    def __init__(self, network: nn.Module, filename: str | os.PathLike, plan: NnUNetPlan, method: str = "cover",
                 data: Any = None, patch_size: Sequence[int] | None = None, interval: int = 1,
                 enabled: bool = True) -> None:
        if int(interval) < 0:
            raise ValueError(f"NnUNetWeightsSaver: interval must be >= 0, got {interval}.")
        self.network, self.filename, self.plan = network, Path(filename), plan
        self.method, self.data, self.interval, self.enabled = str(method), data, int(interval), bool(enabled)
        self.patch_size = [int(s) for s in patch_size] if patch_size is not None else plan.patch_size
        self._written_at: int | None = None  # the iteration last written (the last epoch and COMPLETED coincide)

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        if not self.enabled:
            return
        self.check_network()  # before any training step: a mismatch would otherwise show only at the first write
        if self.interval > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def record(self, engine: Any) -> dict:
        from monai_cover import __version__

        record = self.plan.record()
        record.update({
            "pretraining_patch_size": self.patch_size,
            "method": self.method,
            "iterations": int(engine.state.iteration),
            "epochs": int(engine.state.epoch),
            "data": self.data,
            "monai_cover_version": __version__,
            "written": datetime.datetime.now().isoformat(timespec="seconds"),
        })
        return record

    def check_network(self) -> None:
        """Refuse to write weights nnU-Net would reject (a ``network_def`` overridden away from the plan's).

        Raises:
            NnUNetPlanError: with the first differing keys and shapes.
        """
        check = compare_with_plan(self.network.state_dict(), self.plan, str(self.filename))
        if not check.ok:
            raise NnUNetPlanError(f"NnUNetWeightsSaver: the network being pretrained is not the plan's, so nnU-Net "
                                  f"would refuse its weights; nothing written.\n{check}")

    def __call__(self, engine: Any) -> None:
        if self._written_at == engine.state.iteration and self.filename.is_file():
            return
        save_nnunet_pretrained(self.network, self.filename, self.record(engine))
        self._written_at = engine.state.iteration
        logger.info("nnU-Net weights written to %s (epoch %d)", self.filename, engine.state.epoch)
