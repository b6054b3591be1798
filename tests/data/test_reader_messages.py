# SPDX-License-Identifier: Apache-2.0
"""The reader lists' planned fallbacks print nothing that reads like an error; a file no reader reads still fails."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import SimpleITK as sitk
from monai.transforms import LoadImage

from monai_cover.data import volume_readers


def test_fallbacks_are_quiet_and_failures_are_not(tmp_path, caplog):
    nrrd = tmp_path / "a.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(60, dtype=np.float32).reshape(3, 4, 5)), str(nrrd))
    with caplog.at_level(logging.INFO):
        image = LoadImage(reader=volume_readers(), image_only=True)(str(nrrd))  # nibabel first, then SimpleITK
    assert tuple(image.shape) == (5, 4, 3)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "unable to load" not in text and "nvImageCodec" not in text, text
    bad = tmp_path / "b.nrrd"
    bad.write_bytes(b"not an image")
    with pytest.raises(RuntimeError, match="cannot find a suitable reader|can not find a suitable reader|b.nrrd"):
        LoadImage(reader=volume_readers(), image_only=True)(str(bad))
