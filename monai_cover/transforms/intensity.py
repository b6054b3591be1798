# SPDX-License-Identifier: Apache-2.0
"""Intensity scaling chosen per modality: a HU window for CT, percentiles for MRI (and anything else)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensityRange, ScaleIntensityRangePercentiles

__all__ = ["CT_MAX_MIN", "CT_MIN_MAX", "INTENSITY_MODES", "ScaleIntensityByModalityd", "looks_like_ct"]

#: accepted ``mode`` values
INTENSITY_MODES = ("auto", "ct", "mri", "none")


#: intensities below this (Hounsfield units: air is -1000) and above :data:`CT_MIN_MAX` (bone) mark a CT volume
CT_MAX_MIN = -500.0
CT_MIN_MAX = 300.0


def looks_like_ct(minimum: float, maximum: float) -> bool:
    """Whether a volume's intensity range looks like Hounsfield units (air near -1000, bone above 300): MR
    intensities are arbitrary but not negative hundreds, so an unlabelled CT among MR volumes gets the HU window."""
    return float(minimum) <= CT_MAX_MIN and float(maximum) >= CT_MIN_MAX


class ScaleIntensityByModalityd(MapTransform):
    """Scale intensities to ``[b_min, b_max]`` with a CT HU window or MRI percentiles.

    Args:
        keys: image keys to scale.
        mode: ``"ct"``: clip ``hu_window`` (Hounsfield units) to ``[b_min, b_max]`` (MONAI
            ``ScaleIntensityRange``); ``"mri"``: map the ``percentiles`` of each volume to
            ``[b_min, b_max]`` (``ScaleIntensityRangePercentiles``, robust to MRI's arbitrary
            units); ``"auto"``: per item, ``"ct"`` when ``data[modality_key]`` is ``"CT"``, ``"mri"`` for any
            other named modality, and for an item whose modality is unknown, ``"ct"`` when its intensities look
            like Hounsfield units (:func:`looks_like_ct`), else ``"mri"``;
            ``"none"``: leave intensities as they are.
        modality_key: item key holding the modality string, read in ``"auto"`` mode.
        hu_window: ``(low, high)`` HU for CT.
        percentiles: ``(lower, upper)`` percentiles in 0..100 for MRI.
        b_min, b_max: output range.
        clip: clip to ``[b_min, b_max]`` after scaling.
        meta_modality_key: in ``"auto"`` mode, for an item whose own modality is empty or ``"unknown"``, the
            metadata key of the image that names it (``"0008|0060"``: DICOM Modality as SimpleITK reads it, so a CT
            slice found in a folder gets the HU window and a CR/DX radiograph percentiles). ``None`` (default): the
            item's modality only.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mode: str = "auto",
        modality_key: str = "modality",
        hu_window: Sequence[float] = (-1000.0, 1000.0),
        percentiles: Sequence[float] = (0.5, 99.5),
        b_min: float = 0.0,
        b_max: float = 1.0,
        clip: bool = True,
        allow_missing_keys: bool = False,
        meta_modality_key: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        mode = str(mode).lower()
        if mode not in INTENSITY_MODES:
            raise ValueError(f"mode must be one of {INTENSITY_MODES}, got {mode!r}.")
        if len(hu_window) != 2 or not float(hu_window[0]) < float(hu_window[1]):
            raise ValueError(f"hu_window must be (low, high) with low < high, got {hu_window!r}.")
        if len(percentiles) != 2 or not 0.0 <= float(percentiles[0]) < float(percentiles[1]) <= 100.0:
            raise ValueError(f"percentiles must be (lower, upper) within 0..100, lower < upper, got {percentiles!r}.")
        self.mode = mode
        self.modality_key = modality_key
        self.meta_modality_key = meta_modality_key
        self.ct = ScaleIntensityRange(float(hu_window[0]), float(hu_window[1]), b_min, b_max, clip=clip)
        self.mri = ScaleIntensityRangePercentiles(
            float(percentiles[0]), float(percentiles[1]), b_min, b_max, clip=clip, relative=False
        )

    def _mode_for(self, data: Mapping) -> str:
        if self.mode != "auto":
            return self.mode
        modality = str(data.get(self.modality_key, "")).strip().upper()
        if modality in ("", "UNKNOWN") and self.meta_modality_key:
            for key in self.key_iterator(data):
                modality = str((getattr(data[key], "meta", None) or {}).get(self.meta_modality_key, "")).strip().upper()
                break
        if modality in ("", "UNKNOWN"):
            for key in self.key_iterator(data):
                image = data[key]
                if isinstance(image, (torch.Tensor, np.ndarray)) and image.size and looks_like_ct(
                        float(image.min()), float(image.max())):  # fmt: skip
                    return "ct"
                break
        return "ct" if modality == "CT" else "mri"

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        mode = self._mode_for(d)
        if mode == "none":
            return d
        scaler = self.ct if mode == "ct" else self.mri
        for key in self.key_iterator(d):
            d[key] = scaler(d[key])
        return d
