# SPDX-License-Identifier: Apache-2.0
"""Small Ignite handlers the bundles need: gradient clipping, re-seeding validation transforms,
finding the checkpoint to resume from, and a progress bar."""

from __future__ import annotations

import glob
import os
import re
import zipfile

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

__all__ = [
    "GradientClipHandler",
    "ProgressBarHandler",
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


def find_latest_checkpoint(ckpt_dir: str | os.PathLike, pattern: str = "checkpoint_epoch=*.pt") -> str | None:
    """Path of the complete checkpoint with the highest epoch number in ``ckpt_dir`` (``CheckpointSaver``'s
    ``checkpoint_epoch=<n>.pt`` files), or ``None`` when there is none.

    MONAI's ``CheckpointSaver`` writes in place (not atomically), so a run killed while saving leaves a file cut
    short; ``torch.save`` writes a zip archive whose directory comes last, so such a file is no zip archive and
    is skipped (the run resumes from the checkpoint before it)."""
    found = []
    for path in glob.glob(os.path.join(str(ckpt_dir), pattern)):
        m = re.search(r"=(\d+)\.pt$", path)
        if m:
            found.append((int(m.group(1)), path))
    for _, path in sorted(found, reverse=True):
        if zipfile.is_zipfile(path):
            return path
    return None


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
