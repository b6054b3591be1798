# SPDX-License-Identifier: Apache-2.0
"""Small Ignite handlers the bundles need: gradient clipping, re-seeding validation transforms,
finding the checkpoint to resume from, keeping ``n_saved`` checkpoints across resumes, and a progress bar."""

from __future__ import annotations

import glob
import logging
import os
import re
import zipfile

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

from monai_cover.weights import atomic_write

__all__ = [
    "CheckpointRetentionHandler",
    "GradientClipHandler",
    "ProgressBarHandler",
    "TransformSeedHandler",
    "ValidateAtEndHandler",
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
    """Path of the intact checkpoint with the highest epoch number in ``ckpt_dir`` (``CheckpointSaver``'s
    ``checkpoint_epoch=<n>.pt`` files), or ``None`` when there is none.

    MONAI's ``CheckpointSaver`` writes in place (not atomically), so a run killed while saving leaves a file cut
    short, and a disk can corrupt one. ``torch.save`` writes a zip archive whose directory comes last and whose
    members carry CRC-32s: a file that is no zip archive (cut short) or whose members fail their CRC (corrupted
    inside, size kept) is skipped with a warning naming it and why, and the newest intact one before it is taken."""
    logger = logging.getLogger(__name__)
    for _, path in reversed(_checkpoints(ckpt_dir, pattern)):
        why = _checkpoint_damage(path)
        if why is None:
            return path
        logger.warning("resume: skipping %s (%s); trying the checkpoint before it.", path, why)
    return None


def _checkpoint_damage(path: str) -> str | None:
    """Why ``path`` cannot be a whole ``torch.save`` archive, or ``None`` when it is intact."""
    if not zipfile.is_zipfile(path):
        return f"not a whole archive: {os.path.getsize(path)} bytes, cut short"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"unreadable archive: {e}"
    return None if bad is None else f"corrupted inside: member {bad} fails its CRC check"


def _checkpoints(ckpt_dir: str | os.PathLike, pattern: str) -> list[tuple[int, str]]:
    found = []
    for path in glob.glob(os.path.join(str(ckpt_dir), pattern)):
        m = re.search(r"=(\d+)\.pt$", path)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


class CheckpointRetentionHandler(_OnEvent):
    """Keep at most ``n_saved`` checkpoints in ``ckpt_dir`` in total, across resumed runs.

    MONAI's ``CheckpointSaver(n_saved=...)`` only counts the files it wrote itself, so every resume adds
    ``n_saved`` more. Attached after the saver (``EPOCH_COMPLETED``), this handler keeps the ``n_saved`` whole
    ``checkpoint_epoch=<n>.pt`` files with the highest epochs up to the current one and deletes the older ones,
    and files cut short by a kill (not a zip archive, see :py:func:`find_latest_checkpoint`) older than the newest
    whole one. Checkpoints of *later* epochs (an earlier, longer run in the same folder) are left alone, with a
    warning, since a later resume would pick them.

    Args:
        ckpt_dir: the saver's folder.
        n_saved: how many to keep (``None`` or ``<= 0``: all).
        pattern: the checkpoint file names.
        enabled: ``False`` does nothing (e.g. on ranks other than 0).
    """

    def __init__(
        self, ckpt_dir: str | os.PathLike, n_saved: int | None = 2, pattern: str = "checkpoint_epoch=*.pt",
        enabled: bool = True,
    ) -> None:  # fmt: skip
        self.ckpt_dir = str(ckpt_dir)
        self.n_saved = int(n_saved) if n_saved else 0
        self.pattern = pattern
        self.enabled = bool(enabled)
        self._warned = False

    def __call__(self, engine: Engine) -> None:
        if not self.enabled or self.n_saved <= 0:
            return
        current = int(engine.state.epoch)
        found = _checkpoints(self.ckpt_dir, self.pattern)
        later = [p for e, p in found if e > current]
        if later and not self._warned:
            self._warned = True
            logging.getLogger(__name__).warning(
                "%s holds checkpoints of later epochs than this run's %d (%s), from an earlier run: a resume would "
                "start from them; delete them or use another output_dir.", self.ckpt_dir, current,
                ", ".join(os.path.basename(p) for p in later[:3]),
            )  # fmt: skip
        whole = [(e, p) for e, p in found if e <= current and zipfile.is_zipfile(p)]
        keep = {p for _, p in whole[-self.n_saved :]}
        oldest_kept = min((e for e, p in whole if p in keep), default=None)
        for epoch, path in found:
            if epoch > current or path in keep or oldest_kept is None or epoch >= oldest_kept:
                continue
            try:
                os.remove(path)
            except OSError:  # pragma: no cover - removed meanwhile
                pass


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


class ValidateAtEndHandler:
    """Make a training run end with a validated, saved model.

    On ``Events.COMPLETED``: when the last epoch was not a validation epoch (``epoch % interval != 0``, e.g.
    ``--epochs 2`` with ``val_interval`` 5), run ``validator`` once more, so its key-metric saver writes the best
    model; then, when ``model_file`` still does not exist (no validation data), save ``network``'s weights there
    (atomically) with a warning that it is the final model, not the best one.

    Attach it before handlers that read ``model_file`` at the end (e.g. ``SafetensorsExportHandler``).

    Args:
        validator: the validation engine (``None``: no validation data).
        interval: the epochs between validations of ``monai.handlers.ValidationHandler``.
        model_file: the file the validator's saver writes (``models/model.pt``).
        network: the network whose weights are saved when nothing wrote ``model_file``.
        enabled: ``False`` on the non-zero ranks of a distributed run (validation still runs on every rank).
    """

    def __init__(self, validator, interval: int, model_file: str | os.PathLike, network: torch.nn.Module,
                 enabled: bool = True) -> None:
        self.validator, self.interval = validator, int(interval)
        self.model_file, self.network, self.enabled = str(model_file), network, bool(enabled)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        if self.validator is not None and self.interval > 0 and epoch % self.interval != 0:
            logging.getLogger(__name__).info("validating the last epoch (%d) as well", epoch)
            self.validator.run(epoch)
        if not self.enabled or os.path.isfile(self.model_file):
            return
        logging.getLogger(__name__).warning(
            "no validation ran, so %s is the final model (epoch %d), not the best by validation.", self.model_file,
            epoch,
        )
        state = self.network.state_dict()
        atomic_write(self.model_file, lambda tmp: torch.save(state, tmp))
