# SPDX-License-Identifier: Apache-2.0
"""Write what a COVER network computes for each input pair (an evaluator handler)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import SaveImage

__all__ = ["CoverPairSaver"]


def _affine_of(x) -> np.ndarray:
    affine = getattr(x, "affine", None)
    if affine is None:
        return np.eye(4)
    affine = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    return affine if affine.shape == (4, 4) else np.eye(4)


class CoverPairSaver:
    """Save, per pair, the views, the predicted and true DDF, the overlap and both views' features
    as NIfTI files ``<output_dir>/pair<NNNN>_<what>.nii.gz`` with MONAI's ``SaveImage`` (channels last,
    nibabel layout; the views' affine).

    ``features_a``/``features_b`` of the prediction are saved as they are when they are tensors
    (``CoverNet`` returns the finest, full-resolution level); when they are lists (a whole pyramid)
    the ``levels`` listed are saved, one file per level.

    Reads an evaluator's non-decollated output (``decollate=False``): ``image`` (view A), ``label``
    (``{"ddf", "overlap"}``), ``pred`` (``CoverNet`` output) and ``engine.state.batch[view_b_key]``.

    Args:
        output_dir: folder for the files (created).
        levels: pyramid levels to save when the features are lists (indices, ``-1`` = finest).
        view_b_key: batch key of view B.
        save_views: also save ``view_a``/``view_b``/``overlap``/``ddf_true``.
    """

    def __init__(
        self, output_dir: str, levels: Sequence[int] = (-1,), view_b_key: str = "view_b", save_views: bool = True
    ) -> None:
        self.output_dir = str(output_dir)
        self.levels = [int(v) for v in levels]
        self.view_b_key = view_b_key
        self.save_views = bool(save_views)
        self.count = 0
        self._saver = SaveImage(
            output_dir=self.output_dir, output_ext=".nii.gz", output_dtype=np.float32, resample=False,
            separate_folder=False, print_log=False, writer="NibabelWriter",
        )  # fmt: skip

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _save(self, array: torch.Tensor, affine: np.ndarray, name: str) -> None:
        """Write ``array`` ``(C, *S)`` as ``<output_dir>/<name>.nii.gz``."""
        path = os.path.join(self.output_dir, name)
        self._saver(array.detach().float().cpu(), meta_data={"affine": affine}, filename=path)

    def __call__(self, engine: Engine) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        out = engine.state.output
        if isinstance(out, (list, tuple)):
            raise ValueError("CoverPairSaver needs decollate=False on the evaluator.")
        view_a, target, pred = out["image"], out["label"], out["pred"]
        view_b = engine.state.batch.get(self.view_b_key) if isinstance(engine.state.batch, dict) else None
        for b in range(view_a.shape[0]):
            stem = f"pair{self.count:04d}"
            affine = _affine_of(view_a[b])
            self._save(pred["ddf"][b], affine, f"{stem}_ddf_pred")
            for view in ("a", "b"):
                feats = pred[f"features_{view}"]
                if isinstance(feats, torch.Tensor):  # CoverNet returns the finest level only
                    self._save(feats[b], affine, f"{stem}_features_{view}")
                    continue
                for level in self.levels:
                    self._save(feats[level][b], affine, f"{stem}_features_{view}_level{level % len(feats)}")
            if self.save_views:
                self._save(view_a[b], affine, f"{stem}_view_a")
                if view_b is not None:
                    self._save(view_b[b], affine, f"{stem}_view_b")
                self._save(target["ddf"][b], affine, f"{stem}_ddf_true")
                self._save(target["overlap"][b], affine, f"{stem}_overlap")
            self.count += 1
