# SPDX-License-Identifier: Apache-2.0
"""A loader transform that stops at NaN/inf voxels, naming the file, or replaces them when asked."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["NONFINITE_POLICIES", "CheckFinited", "replace_nonfinite"]

logger = logging.getLogger(__name__)

#: accepted ``nonfinite`` values
NONFINITE_POLICIES = ("error", "replace")


def replace_nonfinite(img: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``img`` with NaN and -inf set to its smallest finite value and +inf to its largest (0 when no voxel is finite),
    and the number of voxels replaced."""
    finite = torch.isfinite(img)
    count = int(finite.numel() - finite.sum())
    if count == 0:
        return img, 0
    values = img[finite]
    low, high = (float(values.min()), float(values.max())) if values.numel() else (0.0, 0.0)
    out = torch.nan_to_num(img, nan=low, posinf=high, neginf=low)
    return out, count


class CheckFinited(MapTransform):
    """Raise on NaN/inf voxels (``nonfinite="error"``), naming the file, or replace them (``"replace"``: NaN and -inf
    by the volume's smallest finite value, +inf by its largest) and log how many.

    Put it right after ``LoadImaged``: resampling spreads a NaN to its neighbours, and intensity scaling by percentiles
    turns a volume with one NaN into NaN everywhere.

    Args:
        keys: image keys.
        nonfinite: ``"error"`` or ``"replace"``.

    Raises:
        ValueError: a non-finite voxel with ``nonfinite="error"``: the message holds the file (``filename_or_obj``
            of the image's metadata), the key and the counts.
    """

    def __init__(self, keys: KeysCollection, nonfinite: str = "error", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        nonfinite = str(nonfinite).lower()
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}.")
        self.nonfinite = nonfinite

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            finite = torch.isfinite(img)
            if bool(finite.all()):
                continue
            meta = getattr(img, "meta", {}) or {}
            name = meta.get("filename_or_obj", "<no file name>")
            if self.nonfinite == "error":
                nan = int(torch.isnan(img).sum())
                raise ValueError(
                    f"{name!s} ({key!r}): {nan} NaN and {int((~finite).sum()) - nan} infinite voxel(s) of "
                    f"{img.numel()}. Fix the file, or pass --nonfinite replace to replace them by the volume's "
                    "finite minimum/maximum."
                )
            d[key], count = replace_nonfinite(img)
            logger.warning("%s (%r): replaced %d non-finite voxel(s) (--nonfinite replace).", name, key, count)
        return d
