# SPDX-License-Identifier: Apache-2.0
"""Training checkpoints that survive what ends runs: written atomically (a full disk or a kill mid-write leaves the
previous file whole, and the message says how much space there was), carrying the random states so a resumed run
draws what the uninterrupted run would have, and resumed from the newest intact file."""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.transforms import Randomizable

from monai_cover.weights import atomic_write

from .training import CheckpointRetentionHandler, find_latest_checkpoint

__all__ = ["AtomicCheckpointSaver", "DiskFullError", "RandomStates", "ResumableSchedule", "TrainingCheckpoints",
           "save_checkpoint_file"]

logger = logging.getLogger(__name__)


class DiskFullError(OSError):
    """A checkpoint or model could not be written for lack of space; the previous file is kept."""

    user_error = True  # one ERROR line on a bundle command line (see monai_cover.bundle.install_error_hook)


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def save_checkpoint_file(checkpoint: Mapping, path: str | os.PathLike) -> Path:
    """``torch.save(checkpoint, path)`` atomically (a temporary file in the same folder, renamed into place).

    Raises:
        DiskFullError: the write failed for lack of space (``ENOSPC``/``EFBIG``, or PyTorch's ``unexpected pos``
            writer error with less free space than the checkpoint needs): the message names the file, its size and
            the free space; the previous file at ``path`` is untouched and no temporary file is left.
    """
    path = Path(path)
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else None  # before: a failed writer's file
    try:  # may hold its space until collected
        return atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
    except (OSError, RuntimeError) as e:
        need = _tensor_bytes(checkpoint)
        free = shutil.disk_usage(path.parent).free if free is None else free
        full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or (
            "unexpected pos" in str(e) or "file write failed" in str(e) or free < need
        )
        if not full:
            raise
        kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
        raise DiskFullError(
            errno.ENOSPC,
            f"no space left to write {path} (about {need / 2**20:.1f} MB needed, {free / 2**20:.1f} MB free on its "
            f"disk); {kept}. Free space or choose another --output_dir. ({type(e).__name__}: {str(e)[:200]})",
        ) from e


class _AtomicDiskSaver(BaseSaveHandler):
    """Ignite save handler writing through :py:func:`save_checkpoint_file`; ``filename`` fixes the file name (as
    MONAI's ``CheckpointSaver`` does for ``final_filename``/``key_metric_filename``)."""

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        self.dirname = Path(dirname)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        self.dirname.mkdir(parents=True, exist_ok=True)
        save_checkpoint_file(checkpoint, self.dirname / (self.filename or filename))

    def remove(self, filename: str) -> None:
        path = self.dirname / (self.filename or filename)
        if path.exists():
            path.unlink()


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments, same file names) whose writes are atomic: MONAI writes in place,
    so a full disk or a kill mid-write left a partial file where the previous good one was. A failed write raises
    :py:class:`DiskFullError` naming the file, its size and the free space."""

    def __init__(self, save_dir: str, save_dict: dict, *args: Any, **kwargs: Any) -> None:
        super().__init__(save_dir, save_dict, *args, **kwargs)
        for name, fixed in (("_final_checkpoint", self._final_filename), ("_key_metric_checkpoint",
                            getattr(self, "_key_metric_filename", None)), ("_interval_checkpoint", None)):
            checkpoint = getattr(self, name, None)
            if checkpoint is not None:
                fixed = getattr(checkpoint.save_handler, "filename", fixed)
                checkpoint.save_handler = _AtomicDiskSaver(save_dir, fixed)


def _random_transforms(root: Any, seen: set[int] | None = None) -> list[Randomizable]:
    """Every ``Randomizable`` reachable from ``root`` through attributes, lists and tuples (a ``Compose``'s
    transforms, a transform's inner transforms), in a fixed order."""
    seen = set() if seen is None else seen
    if id(root) in seen or isinstance(root, (str, bytes, int, float, torch.Tensor, np.ndarray)) or root is None:
        return []
    seen.add(id(root))
    found = [root] if isinstance(root, Randomizable) else []
    if isinstance(root, (list, tuple)):
        children = list(root)
    elif isinstance(root, Mapping):
        children = list(root.values())
    elif hasattr(root, "__dict__") and type(root).__module__.split(".")[0] in ("monai", "monai_cover"):
        children = [v for k, v in sorted(vars(root).items()) if k != "R"]
    else:
        children = []
    for child in children:
        found += _random_transforms(child, seen)
    return found


class RandomStates:
    """The random states a training run draws from, as a checkpoint item (``state_dict``/``load_state_dict``):
    PyTorch's (CPU and every CUDA device), NumPy's and Python's global generators, and the ``R`` of every random
    transform of the training data loader's dataset (MONAI seeds those when the loader is built, so a resumed run
    would otherwise draw the first epoch's crops and views again). Saved at the end of an epoch and restored when
    the checkpoint is loaded, the next epoch draws the same samples, crops and views as the uninterrupted run."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine

    def _transforms(self) -> list[Randomizable]:
        loader = getattr(self.engine, "data_loader", None)
        dataset = getattr(loader, "dataset", None)
        return _random_transforms(getattr(dataset, "transform", None))

    def state_dict(self) -> dict:
        state = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state(np.random.get_state()),
            "python": random.getstate(),
            "transforms": [],
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        for t in self._transforms():
            state["transforms"].append([type(t).__name__, *_numpy_state(t.R.get_state())[1:]])
        return state

    def load_state_dict(self, state: Mapping) -> None:
        torch.set_rng_state(state["torch"].cpu())
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        random.setstate(_as_tuple(state["python"]))
        transforms = self._transforms()
        saved = list(state.get("transforms", []))
        if [s[0] for s in saved] != [type(t).__name__ for t in transforms]:
            logger.warning("resume: the training transforms differ from the checkpoint's (%d saved, %d now): their "
                           "random states are not restored, so the resumed run draws other samples than the "
                           "uninterrupted one would.", len(saved), len(transforms))  # fmt: skip
            return
        for t, (_, keys, pos, has_gauss, cached) in zip(transforms, saved):
            t.R.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))


class ResumableSchedule:
    """A learning-rate scheduler as a checkpoint item whose *length* comes from this run's config and whose
    *progress* from the checkpoint. PyTorch's ``state_dict`` of a scheduler holds its attributes, so loading it
    brought back the first run's ``t_total``: a run resumed with a larger ``--epochs`` (to train on) decayed to a
    learning rate of 0 at the old end and trained the new epochs with no update. Only the step counters are loaded;
    the learning rates are then recomputed from this run's schedule."""

    PROGRESS = ("last_epoch", "_step_count")

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: Mapping) -> None:
        import warnings

        sched = self.scheduler
        changed = {k: (state[k], v) for k, v in vars(sched).items() if k in state and k not in self.PROGRESS
                   and not k.startswith("_") and k != "base_lrs" and _differs(state[k], v)}  # fmt: skip
        for key in self.PROGRESS:
            if key in state:
                setattr(sched, key, state[key])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # get_lr outside step() warns; this is its intended use on resume
            lrs = sched.get_lr()
        for group, lr in zip(sched.optimizer.param_groups, lrs):
            group["lr"] = lr
        sched._last_lr = [float(lr) for lr in lrs]
        if changed:
            logger.info("resume: the learning-rate schedule is this run's (%s), continued from step %s.",
                        ", ".join(f"{k} {new!r} instead of the checkpoint's {old!r}" for k, (old, new) in
                                  changed.items()), state.get("last_epoch"))  # fmt: skip


def _differs(a: Any, b: Any) -> bool:
    try:
        return bool(a != b)
    except Exception:  # noqa: BLE001 - values that do not compare (tensors): treat as equal
        return False


def _numpy_state(state: tuple) -> list:
    """A NumPy ``RandomState`` state with tensors and Python numbers only (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = state
    return [str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)]


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


class TrainingCheckpoints:
    """Everything about a training run's checkpoints, as one component: resume from the newest intact checkpoint in
    ``ckpt_dir`` (damaged ones skipped with a warning, see :py:func:`find_latest_checkpoint`), save every
    ``save_interval`` epochs atomically (:py:class:`AtomicCheckpointSaver`) with the random states
    (:py:class:`RandomStates`), and keep ``n_saved`` files across resumes (:py:class:`CheckpointRetentionHandler`).
    Learning-rate schedulers in ``save_dict`` are resumed by :py:class:`ResumableSchedule` (this run's length, the
    checkpoint's progress), so ``--epochs`` can be raised to train on.

    Attach it after the engine's other handlers (the bundles do so in ``run``), so that the checkpoint is loaded
    after they have started and saved after validation at the end of an epoch.

    Args:
        ckpt_dir: where ``checkpoint_epoch=<n>.pt`` files are written and looked for.
        save_dict: the objects to checkpoint (``{"model": ..., "optimizer": ..., "trainer": ...}``); ``"rng"`` is
            added.
        resume: look for a checkpoint to resume from.
        resume_from: this checkpoint file instead of the newest in ``ckpt_dir``.
        save_interval: epochs between checkpoints.
        n_saved: how many checkpoints to keep (``None``/``<= 0``: all).
        map_location: where loaded tensors go (the training device).
        enabled: ``False`` (ranks other than 0) only loads, never writes or deletes.
    """

    def __init__(self, ckpt_dir: str | os.PathLike, save_dict: Mapping, resume: bool = True,
                 resume_from: str | os.PathLike | None = None, save_interval: int = 1, n_saved: int | None = 2,
                 map_location: Any = None, enabled: bool = True) -> None:  # fmt: skip
        self.ckpt_dir = str(ckpt_dir)
        self.rng = RandomStates()
        self.save_dict = {k: ResumableSchedule(v) if isinstance(v, torch.optim.lr_scheduler.LRScheduler) else v
                          for k, v in dict(save_dict).items()}  # fmt: skip
        self.save_dict["rng"] = self.rng
        if resume_from:
            if not Path(resume_from).is_file():
                raise FileNotFoundError(f"--resume_from {resume_from}: no such checkpoint file.")
            self.resume_from: str | None = str(resume_from)
        else:
            self.resume_from = find_latest_checkpoint(self.ckpt_dir) if resume else None
        self.save_interval = int(save_interval)
        self.n_saved = n_saved
        self.map_location = map_location
        self.enabled = bool(enabled)

    def attach(self, engine: Engine) -> None:
        self.rng.engine = engine
        if self.resume_from is not None:
            CheckpointLoader(load_path=self.resume_from, load_dict=self._load_dict(self.resume_from),
                             map_location=self.map_location).attach(engine)  # fmt: skip
        if self.enabled:
            AtomicCheckpointSaver(self.ckpt_dir, self.save_dict, save_interval=self.save_interval,
                                  n_saved=self.n_saved, epoch_level=True).attach(engine)  # fmt: skip
            CheckpointRetentionHandler(self.ckpt_dir, n_saved=self.n_saved).attach(engine)

    def _load_dict(self, path: str) -> dict:
        """The save dict, without ``rng`` for checkpoints written before random states were saved (with a note)."""
        import zipfile

        with zipfile.ZipFile(path) as archive:
            pickled = next((archive.read(n) for n in archive.namelist() if n.endswith("data.pkl")), b"")
        if b"X\x03\x00\x00\x00rng" in pickled:  # the key, as pickle writes a short str
            return self.save_dict
        logger.warning("resume: %s has no random states (written by an older version): the resumed run draws other "
                       "samples than the uninterrupted one would.", path)  # fmt: skip
        return {k: v for k, v in self.save_dict.items() if k != "rng"}
