# SPDX-License-Identifier: Apache-2.0
"""A trainer handler that keeps a short text summary of the loss curve (first/last/min/mean per epoch)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["LossSummaryHandler", "read_loss_summary"]

_HEADER = "epoch\titerations\tfirst\tlast\tmin\tmean"


def _default_transform(output: Any) -> float:
    if isinstance(output, dict):
        output = output["loss"]
    if isinstance(output, (list, tuple)):
        output = output[0]["loss"] if isinstance(output[0], dict) else output[0]
    return float(output.item() if isinstance(output, torch.Tensor) else output)


def read_loss_summary(path: str | os.PathLike) -> list[dict]:
    """Parse the per-epoch table of a ``loss_summary.txt``: ``[{"epoch", "iterations", "first",
    "last", "min", "mean"}, ...]`` (empty if the file does not exist)."""
    rows: list[dict] = []
    if not os.path.isfile(path):
        return rows
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    try:
        start = lines.index(_HEADER) + 1
    except ValueError:
        return rows
    for line in lines[start:]:
        parts = line.split("\t")
        if len(parts) != 6 or not parts[0].isdigit():
            break
        rows.append(
            {
                "epoch": int(parts[0]),
                "iterations": int(parts[1]),
                **{k: float(v) for k, v in zip(_HEADER.split("\t")[2:], parts[2:])},
            }
        )
    return rows


class LossSummaryHandler:
    """Record the training loss of every iteration and rewrite ``filename`` after each epoch with
    one row per epoch (first, last, min and mean loss) and a one-line verdict on the whole curve.

    The file is rewritten at every epoch end, so a run that is killed keeps the epochs it finished;
    when training resumes from a checkpoint (the first epoch run is not epoch 1), the rows of the
    epochs already done are read back from the file and kept.

    Args:
        filename: path of the text file (folders are created).
        output_transform: maps ``engine.state.output`` to a float loss; the default accepts a dict
            with ``"loss"``, a list of such dicts (decollated output) or a tensor.
        title: first line of the file.
    """

    def __init__(
        self,
        filename: str | os.PathLike,
        output_transform: Callable[[Any], float] = _default_transform,
        title: str = "training loss per epoch",
    ) -> None:
        self.filename = str(filename)
        self.output_transform = output_transform
        self.title = title
        self.rows: list[dict] = []
        self._losses: list[float] = []
        self._resumed = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, engine: Engine) -> None:
        self._resumed = False

    def _epoch_started(self, engine: Engine) -> None:
        # read back at the first epoch (not at STARTED) so that a CheckpointLoader attached in any order
        # has already restored engine.state.epoch: rows of the epochs before this one are kept
        if not self._resumed:
            self._resumed = True
            current = int(engine.state.epoch)
            self.rows = [r for r in read_loss_summary(self.filename) if r["epoch"] < current] if current > 1 else []
        self._losses = []

    def _iteration_completed(self, engine: Engine) -> None:
        value = self.output_transform(engine.state.output)
        if math.isfinite(value):
            self._losses.append(value)

    def _epoch_completed(self, engine: Engine) -> None:
        if self._losses:
            self.rows = [r for r in self.rows if r["epoch"] != engine.state.epoch]
            self.rows.append(
                {
                    "epoch": int(engine.state.epoch),
                    "iterations": len(self._losses),
                    "first": self._losses[0],
                    "last": self._losses[-1],
                    "min": min(self._losses),
                    "mean": sum(self._losses) / len(self._losses),
                }
            )
        self.write()

    def summary_lines(self) -> list[str]:
        lines = [f"# {self.title}", _HEADER]
        for r in self.rows:
            lines.append(
                f"{r['epoch']}\t{r['iterations']}\t{r['first']:.6g}\t{r['last']:.6g}\t{r['min']:.6g}\t{r['mean']:.6g}"
            )
        if self.rows:
            first, last = self.rows[0], self.rows[-1]
            best = min(self.rows, key=lambda r: r["min"])
            change = (last["mean"] - first["mean"]) / abs(first["mean"]) * 100 if first["mean"] else float("nan")
            lines.append(
                f"# mean loss epoch {first['epoch']}: {first['mean']:.4g} -> epoch {last['epoch']}: {last['mean']:.4g} "
                f"({change:+.1f}%); lowest iteration loss {best['min']:.4g} in epoch {best['epoch']}"
            )
        return lines

    def write(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.filename))
        os.makedirs(folder, exist_ok=True)
        tmp = f"{self.filename}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(self.summary_lines()) + "\n")
        os.replace(tmp, self.filename)
