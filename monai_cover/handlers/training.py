# SPDX-License-Identifier: Apache-2.0
"""Small Ignite handlers the bundles need: gradient clipping, re-seeding validation transforms,
finding the checkpoint to resume from, and stopping a run on purpose (tests of resuming)."""

from __future__ import annotations

import glob
import os
import re

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

__all__ = [
    "GradientClipHandler",
    "ProgressBarHandler",
    "StopAfterEpochHandler",
    "TransformSeedHandler",
    "find_latest_checkpoint",
]


class _OnEvent:
    """A handler called on one engine event (``event``), MONAI style: ``handler.attach(engine)``."""

    event = Events.EPOCH_COMPLETED

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(self.event, self)


class GradientClipHandler(_OnEvent):
    """Clip the gradient norm between ``backward()`` and ``optimizer.step()`` of a MONAI trainer.

    Attached to ``IterationEvents.BACKWARD_COMPLETED``; with AMP's ``GradScaler`` the gradients are
    unscaled first (``scaler.unscale_``) so ``max_norm`` is in true gradient units.

    Args:
        max_norm: maximum total norm (``torch.nn.utils.clip_grad_norm_``); ``<= 0`` disables clipping.
        norm_type: the p of the p-norm.
    """

    event = IterationEvents.BACKWARD_COMPLETED

    def __init__(self, max_norm: float = 1.0, norm_type: float = 2.0) -> None:
        self.max_norm = float(max_norm)
        self.norm_type = float(norm_type)

    def __call__(self, engine: Engine) -> None:
        if self.max_norm <= 0:
            return
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and scaler.is_enabled():
            scaler.unscale_(engine.optimizer)
        params = [p for group in engine.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if params:
            norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type)
            engine.state.grad_norm = float(norm)


class TransformSeedHandler(_OnEvent):
    """Re-seed a (random) transform at the start of every run of an engine, so an evaluator sees the
    same random views, crops and displacement fields at every validation (with ``num_workers=0``).

    Args:
        transform: any object with ``set_random_state(seed=...)`` (a MONAI ``Compose``).
        seed: the seed.
    """

    event = Events.STARTED

    def __init__(self, transform, seed: int = 0) -> None:
        self.transform = transform
        self.seed = int(seed)

    def __call__(self, engine: Engine) -> None:
        self.transform.set_random_state(seed=self.seed)


class StopAfterEpochHandler(_OnEvent):
    """Hard-exit the process (``os._exit``) once epoch ``epoch`` has completed and its handlers ran,
    as a crash or a kill would: for testing that a run resumes from its last checkpoint.

    Attach it after the ``CheckpointSaver`` so the epoch's checkpoint is on disk.
    """

    def __init__(self, epoch: int = 1, exit_code: int = 3) -> None:
        self.epoch = int(epoch)
        self.exit_code = int(exit_code)

    def __call__(self, engine: Engine) -> None:
        if self.epoch > 0 and engine.state.epoch >= self.epoch:
            os._exit(self.exit_code)


def find_latest_checkpoint(ckpt_dir: str | os.PathLike, pattern: str = "checkpoint_epoch=*.pt") -> str | None:
    """Path of the checkpoint with the highest epoch number in ``ckpt_dir`` (``CheckpointSaver``'s
    ``checkpoint_epoch=<n>.pt`` files), or ``None`` when there is none."""
    best, best_n = None, -1
    for path in glob.glob(os.path.join(str(ckpt_dir), pattern)):
        m = re.search(r"=(\d+)\.pt$", path)
        if m and int(m.group(1)) > best_n:
            best, best_n = path, int(m.group(1))
    return best


class ProgressBarHandler:
    """Ignite's ``ProgressBar`` as a MONAI-style handler (``attach(engine)``) showing the loss.

    Args:
        output_transform: maps ``engine.state.output`` to a dict/number shown next to the bar
            (default: the ``"loss"`` entry of a non-decollated output).
        persist: keep the finished bar of each epoch on screen.
        desc: text before the bar.
    """

    def __init__(self, output_transform=None, persist: bool = True, desc: str = "epoch") -> None:
        self.output_transform = output_transform if output_transform is not None else _loss_of
        self.persist = persist
        self.desc = desc

    def attach(self, engine: Engine) -> None:
        from ignite.handlers import ProgressBar

        ProgressBar(persist=self.persist, desc=self.desc).attach(engine, output_transform=self.output_transform)


def _loss_of(output) -> dict:
    if isinstance(output, (list, tuple)):
        output = output[0]
    loss = output["loss"] if isinstance(output, dict) else output
    return {"loss": float(loss.item() if isinstance(loss, torch.Tensor) else loss)}
