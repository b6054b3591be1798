# SPDX-License-Identifier: Apache-2.0
"""Checks of a run's own arguments, made in ``initialize`` before the output folder's lock is taken or any data is
read: each failure is one ``ERROR:`` line naming the argument, what it got and what would work."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .overrides import OverrideError

__all__ = ["MIN_FREE_BYTES", "check_model_file", "check_run"]

#: the least free space an output folder's disk must have for a run to start (checkpoints, logs, models)
MIN_FREE_BYTES = 200 * 2**20


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_run(device: Any, epochs: Any, output_dir: str | os.PathLike, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Refuse arguments a run cannot start with.

    - ``device``: a device this PyTorch has (``--device cuda`` on a CPU-only build, or ``cuda:3`` on a machine with
      two GPUs, is refused with what there is);
    - ``epochs``: an integer >= 1;
    - ``output_dir``: writable (or creatable) with at least ``min_free_bytes`` free on its disk.

    Nothing is created or written.

    Raises:
        OverrideError: one message listing every problem.
    """
    problems = []
    try:
        dev = torch.device(str(device))
    except (RuntimeError, TypeError) as e:
        dev = None
        problems.append(f"--device {device!r}: not a device ({e}); use cpu or cuda[:N].")
    if dev is not None and dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            problems.append(f"--device {device}: this PyTorch ({torch.__version__}) sees no CUDA device; use --device "
                            "cpu (or install a CUDA build of PyTorch on a machine with a GPU).")
        elif dev.index is not None and dev.index >= count:
            problems.append(f"--device {device}: there are {count} CUDA device(s), cuda:0 to cuda:{count - 1}.")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        problems.append(f"--epochs {epochs!r}: expected an integer >= 1.")
    out = Path(str(output_dir)).expanduser()
    parent = _existing_parent(out)
    if parent.exists() and not parent.is_dir():
        problems.append(f"--output_dir {out}: {parent} is a file, not a folder.")
    elif not os.access(parent, os.W_OK | os.X_OK):
        problems.append(f"--output_dir {out}: {parent} is not writable; choose a folder you can write to.")
    else:
        free = shutil.disk_usage(parent).free
        if free < int(min_free_bytes):
            problems.append(f"--output_dir {out}: no space left on its disk ({free / 2**20:.0f} MB free, a run needs "
                            f"at least {int(min_free_bytes) / 2**20:.0f} MB for checkpoints and models).")
    if problems:
        raise OverrideError("\n".join(problems) if len(problems) == 1 else
                            f"{len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems))


def check_model_file(path: str | os.PathLike, made_by: str = "the fine-tuning bundle") -> None:
    """Refuse to run inference or evaluation without the trained weights it loads.

    Args:
        path: the model file (``models/model.pt`` of a run's ``--output_dir``).
        made_by: what writes that file, for the message.

    Raises:
        OverrideError: the file is missing or empty; the message names it and how to get it.
    """
    model = Path(str(path)).expanduser()
    if not model.is_file():
        raise OverrideError(f"no trained model at {model}: run {made_by} first, or point --output_dir at the folder "
                            "of the run that trained it (its models/ holds the file).")
    if model.stat().st_size == 0:
        raise OverrideError(f"{model} is empty (0 bytes): a write that failed? Train again or restore the file.")
