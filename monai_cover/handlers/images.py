# SPDX-License-Identifier: Apache-2.0
"""Pictures of what the COVER head predicts, in TensorBoard, at every validation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from ignite.engine import Engine, Events

__all__ = ["CoverImageHandler", "PANELS"]

#: the images written at every validation, in this order (tags ``<tag_prefix><panel>``)
PANELS = (
    "view_a",
    "view_b",
    "ddf_true_magnitude",
    "ddf_pred_magnitude",
    "ddf_true_axis0",
    "ddf_pred_axis0",
    "overlap",
    "error_magnitude",
)


def _middle(x: torch.Tensor) -> np.ndarray:
    """The middle slice along the last axis of one ``(C, *S)`` sample, ``(C, H, W)``, float32 on the CPU."""
    x = x.detach().float().cpu()
    if x.ndim == 4:
        x = x[..., x.shape[-1] // 2]
    return x.numpy()


def _unit(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((x - low) / max(high - low, 1e-8), 0.0, 1.0).astype(np.float32)


class CoverImageHandler:
    """Write the middle slice (last axis) of one validation pair to TensorBoard at every validation run: view A,
    view B, the magnitude of the true and the predicted displacement, their first component (axis 0), the overlap
    and the end-point error map ``|pred - true|`` inside the overlap. So a user sees whether the head is learning:
    the predicted field should come to look like the true one, and the error map should fade.

    Scales: the views share one range (their joint minimum and maximum); the true and predicted magnitudes and the
    error share ``[0, max |true|]``; the components share ``[-m, m]`` with ``m = max |true component|`` (grey =
    no displacement); the overlap is 0/1.

    Attach to the evaluator (``decollate=False``): it reads ``image`` (view A), ``pred`` (``{"ddf", ...}``) and
    ``label`` (``{"ddf", "overlap"}``) from ``engine.state.output`` and ``view_b`` from ``engine.state.batch``, on
    the first iteration of each run.

    Args:
        summary_writer: a ``SummaryWriter`` (shared with the stats handlers, so one event file per run); when
            ``None`` one is made on ``log_dir``.
        log_dir: folder of a writer made here.
        index: which pair of the first batch.
        tag_prefix: prefix of the tags.
        view_b_key: batch key of view B.
        global_epoch_transform: step of the images from the evaluator's epoch (a ``ValidationHandler`` sets it to
            the trainer's epoch).
    """

    def __init__(
        self,
        summary_writer=None,
        log_dir: str = "./runs",
        index: int = 0,
        tag_prefix: str = "val_images/",
        view_b_key: str = "view_b",
        global_epoch_transform: Callable[[int], int] = lambda x: x,
    ) -> None:
        self._writer = summary_writer
        self.log_dir = log_dir
        self.index = int(index)
        self.tag_prefix = tag_prefix
        self.view_b_key = view_b_key
        self.global_epoch_transform = global_epoch_transform
        self._pending = False

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir)
        return self._writer

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._arm)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _arm(self, engine: Engine) -> None:
        self._pending = True

    def panels(self, engine: Engine) -> dict[str, np.ndarray]:
        """``{panel: (1, H, W) float32 in [0, 1]}`` of the current output (see :py:data:`PANELS`)."""
        out = engine.state.output
        if isinstance(out, (list, tuple)):
            raise ValueError("CoverImageHandler needs decollate=False on the evaluator.")
        b = self.index
        view_a = _middle(out["image"][b])[:1]
        batch = engine.state.batch if isinstance(engine.state.batch, dict) else {}
        view_b = _middle(batch[self.view_b_key][b])[:1] if self.view_b_key in batch else np.zeros_like(view_a)
        true, pred = _middle(out["label"]["ddf"][b]), _middle(out["pred"]["ddf"][b])
        overlap = _middle(out["label"]["overlap"][b])[:1]
        low, high = float(min(view_a.min(), view_b.min())), float(max(view_a.max(), view_b.max()))
        true_mag = np.linalg.norm(true, axis=0, keepdims=True)
        pred_mag = np.linalg.norm(pred, axis=0, keepdims=True)
        error = np.linalg.norm(pred - true, axis=0, keepdims=True) * (overlap > 0)
        top = float(true_mag.max()) or 1.0
        m = float(np.abs(true[0]).max()) or 1.0
        return {
            "view_a": _unit(view_a, low, high),
            "view_b": _unit(view_b, low, high),
            "ddf_true_magnitude": _unit(true_mag, 0.0, top),
            "ddf_pred_magnitude": _unit(pred_mag, 0.0, top),
            "ddf_true_axis0": _unit(true[:1], -m, m),
            "ddf_pred_axis0": _unit(pred[:1], -m, m),
            "overlap": _unit(overlap, 0.0, 1.0),
            "error_magnitude": _unit(error, 0.0, top),
        }

    def __call__(self, engine: Engine) -> None:
        if not self._pending:
            return
        self._pending = False
        step = int(self.global_epoch_transform(engine.state.epoch))
        for name, image in self.panels(engine).items():
            self.writer.add_image(f"{self.tag_prefix}{name}", image, step, dataformats="CHW")
        self.writer.flush()
