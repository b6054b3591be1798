# SPDX-License-Identifier: Apache-2.0
"""A segmentation metric per class, under the class names: log, TensorBoard and a CSV."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events

__all__ = ["ClassMetricsHandler"]

logger = logging.getLogger(__name__)


class ClassMetricsHandler:
    """Report a per-class metric of an evaluator (e.g. MONAI's ``MeanDice``, whose per-case, per-class values are in
    ``engine.state.metric_details[metric_name]``) under the class names instead of ``class0``, ``class1``...

    At the end of every evaluator run it logs ``<metric_name> per class: ribs 0.41, right lung 0.88, ...``, writes
    the scalars ``<metric_name>/<class name>`` to TensorBoard (when a writer is given), and with ``save_dir`` writes
    ``<save_dir>/<metric_name>_per_class.csv``: one row per case (its file name) and one column per class, then a
    ``mean`` row.

    Args:
        metric_name: the metric's name in the evaluator (its ``metric_details`` must be saved: ``save_details=True``,
            MONAI's default).
        class_names: every class name, background first (``num_classes`` names).
        include_background: whether the metric's columns include class 0 (as the metric's own argument).
        summary_writer: a ``SummaryWriter`` for the scalars, or ``None``.
        save_dir: folder of the CSV, or ``None``.
        image_key: batch key whose ``meta["filename_or_obj"]`` names each case.
        global_epoch_transform: TensorBoard step from the evaluator's epoch.
    """

    def __init__(
        self,
        metric_name: str,
        class_names: Sequence[str],
        include_background: bool = False,
        summary_writer=None,
        save_dir: str | None = None,
        image_key: str = "image",
        global_epoch_transform=lambda x: x,
    ) -> None:
        self.metric_name = metric_name
        self.class_names = [str(c) for c in class_names]
        self.include_background = bool(include_background)
        self.writer = summary_writer
        self.save_dir = save_dir
        self.image_key = image_key
        self.global_epoch_transform = global_epoch_transform
        self._files: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._files = []

    def _collect(self, engine: Engine) -> None:
        batch = engine.state.batch
        items = batch if isinstance(batch, (list, tuple)) else [batch]
        for item in items:
            image = item.get(self.image_key) if isinstance(item, dict) else None
            meta = getattr(image, "meta", {}) or {}
            name = meta.get("filename_or_obj", f"case{len(self._files)}")
            self._files.extend(name if isinstance(name, (list, tuple)) else [name])

    @property
    def columns(self) -> list[str]:
        """Names of the metric's columns."""
        return self.class_names if self.include_background else self.class_names[1:]

    def __call__(self, engine: Engine) -> None:
        details = (getattr(engine.state, "metric_details", None) or {}).get(self.metric_name)
        if details is None:
            logger.warning("ClassMetricsHandler: no metric_details for %r (save_details=False?).", self.metric_name)
            return
        values = np.asarray(details.detach().cpu().float() if isinstance(details, torch.Tensor) else details, float)
        values = values.reshape(values.shape[0], -1)
        names = self.columns
        if values.shape[1] != len(names):
            raise ValueError(
                f"{self.metric_name}: {values.shape[1]} class column(s), but {len(names)} class name(s) {names} "
                f"(class_names {self.class_names}, include_background={self.include_background}); set --class_names "
                "with num_classes names, background first."
            )
        means = (
            np.nanmean(np.where(np.isfinite(values), values, np.nan), axis=0)
            if len(values)
            else np.full(len(names), np.nan)
        )
        logger.info("%s per class: %s", self.metric_name, ", ".join(f"{n} {m:.4f}" for n, m in zip(names, means)))
        if self.writer is not None:
            step = int(self.global_epoch_transform(engine.state.epoch))
            for n, m in zip(names, means):
                if np.isfinite(m):
                    self.writer.add_scalar(f"{self.metric_name}/{n}", float(m), step)
            self.writer.flush()
        if self.save_dir:
            os.makedirs(self.save_dir, exist_ok=True)
            path = os.path.join(self.save_dir, f"{self.metric_name}_per_class.csv")
            files = self._files + [f"case{i}" for i in range(len(self._files), len(values))]
            with open(path, "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(["filename", *names])
                for name, row in zip(files, values):
                    w.writerow([name, *(f"{v:.6g}" for v in row)])
                w.writerow(["mean", *(f"{v:.6g}" for v in means)])
