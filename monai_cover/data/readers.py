# SPDX-License-Identifier: Apache-2.0
"""A MONAI ``ImageReader`` backed by SimpleITK (NRRD, MetaImage, DICOM series, NIfTI, ...), and the reader
list the bundles use.

MONAI's own ``ITKReader`` needs the ``itk`` package; ``SimpleITK`` is a much smaller wheel and a
dependency of monai_cover, so this reader lets ``LoadImage(d)`` open every format SimpleITK can,
including a folder holding one DICOM series. It follows ``ITKReader``'s conventions: the returned
array is indexed ``[i, j, k]`` (x fastest, as nibabel), ``affine`` is in RAS by default.

**Reader order.** ``LoadImage(reader=[r0, r1])`` tries the readers from the END of the list (``r1`` first) and
falls back to the next one only when ``read()`` raises. The bundles pass :py:func:`volume_readers`:
``[SimpleITKReader(nifti=False), NibabelReader()]``, so NIfTI is read by nibabel (which raises on a truncated
``.nii.gz`` or a broken header, where SimpleITK zero-fills the missing voxels), and NRRD, MetaImage and DICOM
series, which nibabel refuses, by SimpleITK. ``nifti=False`` makes SimpleITK refuse NIfTI, so a NIfTI that
nibabel cannot open is an error, never silently read by the other library.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
from monai.data.image_reader import ImageReader, PILReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

__all__ = ["IMAGE_2D_SUFFIXES", "NIFTI_SUFFIXES", "PICTURE_SUFFIXES", "SITK_SUFFIXES", "PictureReader",
           "SimpleITKReader", "image_readers_2d", "volume_readers", "quiet_expected_reader_messages"]

#: suffixes this reader claims (a directory is treated as a DICOM series)
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz", ".dcm", ".img", ".hdr", ".vtk", ".tif", ".tiff")
#: 2-D picture files of the 2-D bundles (PNG/JPEG/BMP through PIL, TIFF and single-file DICOM through SimpleITK)
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
#: NIfTI files, read by nibabel in the bundles
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class SimpleITKReader(ImageReader):
    """Load medical images with SimpleITK; a directory is read as a DICOM series.

    Args:
        channel_dim: channel axis of the returned array for vector images; ``None`` means a scalar
            image gets no channel axis and a vector image gets its components last (as ``ITKReader``).
        series_name: DICOM series UID to read when a folder holds several (default: the first).
        affine_lps_to_ras: convert ITK's LPS affine to RAS (MONAI's default space).
        dtype: cast the array to this dtype (``None`` keeps the file's type).
        nifti: also read NIfTI (``.nii``, ``.nii.gz``); ``False`` makes :py:meth:`read` raise for them, so that in
            a reader list NIfTI is left to nibabel (see :py:func:`volume_readers`).

    Example::

        from monai.transforms import LoadImaged
        load = LoadImaged("image", reader=SimpleITKReader(), image_only=True, ensure_channel_first=True)
        load({"image": "CTChest4.nrrd"})["image"].shape  # (1, 128, 128, 34)
    """

    def __init__(
        self,
        channel_dim: int | None = None,
        series_name: str = "",
        affine_lps_to_ras: bool = True,
        dtype: np.dtype | type | str | None = np.float32,
        nifti: bool = True,
    ) -> None:
        super().__init__()
        self.channel_dim = channel_dim
        self.series_name = series_name
        self.affine_lps_to_ras = affine_lps_to_ras
        self.dtype = dtype
        self.nifti = bool(nifti)

    def verify_suffix(self, filename: Sequence[os.PathLike] | os.PathLike | str) -> bool:
        for name in ensure_tuple(filename):
            name = str(name)
            if not self.nifti and name.lower().endswith(NIFTI_SUFFIXES):
                return False
            if not (os.path.isdir(name) or name.lower().endswith(SITK_SUFFIXES)):
                return False
        return True

    def _read_one(self, name: str):
        import SimpleITK as sitk

        if os.path.isdir(name):
            uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(name)
            if not uids:
                raise FileNotFoundError(f"SimpleITKReader: no DICOM series in folder {name!r}.")
            uid = self.series_name or uids[0]
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(name, uid)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            return reader.Execute()
        return sitk.ReadImage(name)

    def read(self, data: Sequence[os.PathLike] | os.PathLike | str, **kwargs):
        """Read one file/folder, or a list of them (stacked as channels by :py:meth:`get_data`).

        Raises:
            ValueError: a NIfTI file when ``nifti=False`` (left to nibabel).
        """
        if not self.nifti:
            for name in ensure_tuple(data):
                if str(name).lower().endswith(NIFTI_SUFFIXES):
                    raise ValueError(f"SimpleITKReader(nifti=False) leaves NIfTI to nibabel: {str(name)!r}.")
        images = [self._read_one(str(name)) for name in ensure_tuple(data)]
        return images if len(images) > 1 else images[0]

    def _affine(self, img) -> np.ndarray:
        ndim = img.GetDimension()
        direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(ndim, ndim)
        spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
        affine = np.eye(ndim + 1)
        affine[:ndim, :ndim] = direction * spacing[None, :]
        affine[:ndim, -1] = np.asarray(img.GetOrigin(), dtype=np.float64)
        if self.affine_lps_to_ras and ndim >= 2:
            flip = np.diag([-1.0, -1.0] + [1.0] * (ndim - 2) + [1.0])
            affine = flip @ affine
        return affine

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        """Return the array (indexed ``[i, j, k]``) and a metadata dict with ``affine``,
        ``original_affine``, ``spatial_shape``, ``space`` and ``original_channel_dim``."""
        import SimpleITK as sitk

        arrays, headers = [], []
        images = [img] if isinstance(img, sitk.Image) else list(img)  # a sitk.Image iterates over its pixels
        for one in images:
            arr = sitk.GetArrayFromImage(one)  # (k, j, i[, c])
            ndim = one.GetDimension()
            vector = one.GetNumberOfComponentsPerPixel() > 1
            arr = np.moveaxis(arr.T, 0, -1) if vector else arr.T  # -> (i, j, k[, c])
            if vector and self.channel_dim is not None:
                arr = np.moveaxis(arr, -1, self.channel_dim)
            if self.dtype is not None:
                arr = arr.astype(self.dtype, copy=False)
            header = {key: one.GetMetaData(key) for key in one.GetMetaDataKeys()}
            if header.get("0028|0004", "").strip().upper() == "MONOCHROME1":
                header["monochrome1_inverted"] = True  # GDCM presents MONOCHROME1 pixels inverted (MONOCHROME2)
            header[MetaKeys.ORIGINAL_AFFINE] = self._affine(one)
            header[MetaKeys.AFFINE] = header[MetaKeys.ORIGINAL_AFFINE].copy()
            header[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
            header[MetaKeys.SPATIAL_SHAPE] = np.asarray(one.GetSize()[:ndim])
            if not vector:
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan")
            else:
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = -1 if self.channel_dim is None else self.channel_dim
            arrays.append(arr)
            headers.append(header)
        if len(arrays) == 1:
            return arrays[0], headers[0]
        # several files of one subject: channels of one image, so their grids must agree
        first = headers[0]
        for i, header in enumerate(headers[1:], start=1):
            same_grid = arrays[i].shape == arrays[0].shape and np.allclose(
                header[MetaKeys.AFFINE], first[MetaKeys.AFFINE], atol=1e-3
            )
            if not same_grid:
                raise ValueError(
                    f"SimpleITKReader: image {i} has shape {arrays[i].shape} and affine "
                    f"{header[MetaKeys.AFFINE].tolist()}, image 0 has {arrays[0].shape} and "
                    f"{first[MetaKeys.AFFINE].tolist()}: stacked files must share one grid."
                )
        meta = dict(first)
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta


class _ExpectedReaderMessages(logging.Filter):
    """Drops the log lines of fallbacks the reader lists make on purpose, which read like errors: MONAI's
    ``LoadImage`` logs ``NibabelReader: unable to load x.nrrd`` before SimpleITK reads it (and likewise for the 2-D
    lists), and every ``LoadImage`` builds MONAI's nvImageCodec DICOM reader, which warns that the optional GPU codec
    is absent. A file no reader can read still fails, with every reader's error in the exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (": unable to load " in text or text.startswith("nvImageCodec is not available"))


def quiet_expected_reader_messages() -> None:
    """Install :py:class:`_ExpectedReaderMessages` on the loggers that print them (idempotent)."""
    for name in ("LoadImage", "monai.data.nvimgcodec_pydicom_plugin", "monai.data.image_reader"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ExpectedReaderMessages) for f in logger.filters):
            logger.addFilter(_ExpectedReaderMessages())


quiet_expected_reader_messages()


def volume_readers() -> list[ImageReader]:
    """The bundles' reader list for ``LoadImage(d)(reader=...)``: ``[SimpleITKReader(nifti=False), NibabelReader()]``.

    MONAI tries the LAST reader first, so NIfTI goes through nibabel (a truncated ``.nii.gz`` raises ``EOFError``,
    a NaN stays NaN) and everything nibabel refuses (NRRD, MetaImage, DICOM series folders) through SimpleITK.
    """
    from monai.data import NibabelReader

    return [SimpleITKReader(nifti=False), NibabelReader()]


#: picture files that :py:class:`PictureReader` (PIL) reads; the rest of a 2-D folder goes to SimpleITK or nibabel
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class PictureReader(PILReader):
    """MONAI's ``PILReader`` restricted to picture files (:py:data:`PICTURE_SUFFIXES`): :py:meth:`read` raises
    ``ValueError`` for anything else, so in a reader list (which ``LoadImage`` tries without looking at the suffix)
    a DICOM file is never read by PIL, which would return its stored values without the DICOM header (no
    MONOCHROME1, no rescale)."""

    def verify_suffix(self, filename: Sequence[os.PathLike] | os.PathLike | str) -> bool:
        return all(str(name).lower().endswith(PICTURE_SUFFIXES) for name in ensure_tuple(filename))

    def read(self, data, **kwargs):
        if not self.verify_suffix(data):
            raise ValueError(f"PictureReader reads only {', '.join(PICTURE_SUFFIXES)} files: {data!r}.")
        return super().read(data, **kwargs)


def image_readers_2d() -> list[ImageReader]:
    """The 2-D bundles' reader list: :py:func:`volume_readers` and :py:class:`PictureReader` (PIL, tried first, for
    PNG, JPEG, BMP and TIFF). DICOM files (single-frame radiographs, CT/MR slices) go through SimpleITK, whose GDCM
    presents MONOCHROME1 radiographs inverted (recorded in ``meta["monochrome1_inverted"]``); NIfTI and NRRD as in
    3-D."""
    return volume_readers() + [PictureReader()]
