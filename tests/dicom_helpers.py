# SPDX-License-Identifier: Apache-2.0
"""Test helper (not a test module): real single-frame DICOM files written with pydicom. Load it by path:
``importlib.util.spec_from_file_location("dicom_helpers", <tests>/dicom_helpers.py)`` (the test folders are not
packages)."""

from __future__ import annotations

import numpy as np
import pytest


def write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME1", modality: str = "CR", bits: int = 12):
    """A single-frame uncompressed DICOM (pydicom) with ``pixels`` (rows, columns) as stored values."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # computed radiography
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName = modality, "Test^Radiograph"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    assert pydicom.dcmread(str(path)).PhotometricInterpretation == photometric
    return path
