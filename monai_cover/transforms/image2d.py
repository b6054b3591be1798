# SPDX-License-Identifier: Apache-2.0
"""Transforms that turn what a 2-D pretraining folder holds into single-channel 2-D images.

- :py:class:`RandSlice` / :py:class:`RandSliced`: a random 2-D slice of a 3-D volume along one axis, drawn among the
  slices with enough foreground (a 2-D input passes through), ``num_samples`` slices per call;
- :py:class:`SqueezeSpatial` / ``d``: drop trailing size-1 spatial axes (a single-frame DICOM read as ``X x Y x 1``);
- :py:class:`ToGrayscale` / ``d``: RGB/RGBA/LA pictures to one luminance channel (ITU-R 601, as PIL's ``"L"``);
- :py:class:`InvertMonochrome1` / ``d``: MONOCHROME1 radiographs (high values dark) to MONOCHROME2, once;
- :py:class:`ApplyBySpatialDimsd`: run a transform only on images with a given number of spatial axes (a 2-D run
  resizes its pictures but resamples the volumes it slices).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, Transform
from monai.utils import TransformBackends

__all__ = [
    "MONOCHROME1_HANDLED",
    "ApplyBySpatialDimsd",
    "InvertMonochrome1",
    "InvertMonochrome1d",
    "RandSlice",
    "RandSliced",
    "SqueezeSpatial",
    "SqueezeSpatiald",
    "ToGrayscale",
    "ToGrayscaled",
    "foreground_slices",
    "photometric_interpretation",
]

#: metadata key set once a MONOCHROME1 image's values have been inverted (by a GDCM-based reader such as
#: :py:class:`~monai_cover.data.SimpleITKReader`, or by :py:class:`InvertMonochrome1d`), so it is never done twice
MONOCHROME1_HANDLED = "monochrome1_inverted"
_LUMA = (0.299, 0.587, 0.114)


def _spatial_axes(img) -> int:
    return int(img.ndim) - 1


def foreground_slices(
    img: torch.Tensor, axis: int, min_fraction: float = 0.0, threshold: float = 0.1, slice_range=None
) -> torch.Tensor:
    """Indices of the slices of ``img`` ``(C, X, Y, Z)`` along spatial ``axis`` in which more than ``min_fraction`` of
    the pixels have a channel mean above ``threshold`` (1-D int64 tensor, ascending). ``slice_range``: ``(lo, hi)``
    fractions of the depth along ``axis`` (``[lo * depth, hi * depth)``) to choose from; ``None``: all."""
    counts = _foreground_counts(img, axis, threshold)
    area = max(1, int(torch.as_tensor(img).shape[1:].numel()) // int(img.shape[axis + 1]))
    keep = counts.float() / area > float(min_fraction)
    keep &= _range_mask(int(counts.numel()), slice_range)
    return torch.nonzero(keep).flatten()


def _foreground_counts(img: torch.Tensor, axis: int, threshold: float) -> torch.Tensor:
    x = torch.as_tensor(img).float().mean(0)
    return (x > threshold).movedim(int(axis), 0).flatten(1).sum(1)


def _range_mask(depth: int, slice_range) -> torch.Tensor:
    mask = torch.ones(depth, dtype=torch.bool)
    if slice_range is not None:
        lo, hi = (float(v) for v in slice_range)
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"slice_range must be (lo, hi) fractions with 0 <= lo < hi <= 1, got {slice_range!r}.")
        idx = torch.arange(depth, dtype=torch.float64)
        mask = (idx >= lo * depth) & (idx < hi * depth)
        if not bool(mask.any()):
            mask[min(depth - 1, int(lo * depth))] = True
    return mask


def _slice_meta(img: torch.Tensor, axis: int, index: int) -> torch.Tensor:
    """``img[:, ..., index, ...]`` along spatial ``axis``; a MetaTensor keeps its meta with a 2-D affine (the other two
    axes' block of the 3-D affine, its origin moved to the slice)."""
    out = torch.as_tensor(img).select(axis + 1, int(index)).clone()
    if not isinstance(img, MetaTensor):
        return out
    affine = np.asarray(img.affine, dtype=np.float64)
    keep = [a for a in range(3) if a != axis]
    new = np.eye(3)
    new[:2, :2] = affine[np.ix_(keep, keep)]
    new[:2, 2] = affine[keep, 3] + affine[keep, axis] * int(index)
    meta = dict(img.meta)
    meta["affine"] = torch.as_tensor(new)
    meta["slice_axis"], meta["slice_index"] = int(axis), int(index)
    return MetaTensor(out, meta=meta)


class RandSlice(Randomizable, Transform):
    """A random 2-D slice of a 3-D image ``(C, X, Y, Z)`` along spatial ``axis``, among the slices with enough
    foreground; a 2-D image ``(C, X, Y)`` is returned as it is (so one pipeline reads 2-D pictures and volumes).

    Foreground is the channel mean above ``threshold`` (intensities scaled to ``[0, 1]`` before, as the bundles do):
    a slice qualifies when more than ``min_fraction`` of its pixels are foreground. When no slice qualifies, the
    slice with the most foreground is used (so a nearly empty volume still gives images).

    Args:
        axis: spatial axis to slice along (0, 1 or 2; after ``Orientation("RAS")``: 0 sagittal, 1 coronal, 2 axial).
        min_fraction: fraction of a slice's pixels that must be foreground for it to be drawn.
        threshold: intensity above which a pixel is foreground.
        num_samples: slices per call; ``num_samples > 1`` returns a list (drawn independently).

    The slice range can be narrowed per call (``slice_range``, fractions of the depth), e.g. to hold the upper
    slices of a volume out for validation.

    Example::

        RandSlice(axis=2, min_fraction=0.25)(torch.rand(1, 64, 64, 40)).shape  # (1, 64, 64)
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, axis: int = 2, min_fraction: float = 0.0, threshold: float = 0.1, num_samples: int = 1) -> None:
        if int(axis) not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (a spatial axis of a 3-D image), got {axis!r}.")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples!r}.")
        self.axis, self.min_fraction, self.threshold = int(axis), float(min_fraction), float(threshold)
        self.num_samples = int(num_samples)
        self._indices: list[int] = []

    def candidates(self, img: torch.Tensor, slice_range=None) -> torch.Tensor:
        """Slice indices that qualify within ``slice_range`` (or the fullest slice there when none does)."""
        found = foreground_slices(img, self.axis, self.min_fraction, self.threshold, slice_range)
        if found.numel() == 0:
            counts = _foreground_counts(img, self.axis, self.threshold)
            counts[~_range_mask(int(counts.numel()), slice_range)] = -1
            found = counts.argmax().reshape(1)
        return found

    def randomize(self, img: torch.Tensor, slice_range=None) -> None:
        if _spatial_axes(img) != 3:
            self._indices = []
            return
        found = self.candidates(img, slice_range)
        picks = self.R.randint(0, int(found.numel()), size=self.num_samples)
        self._indices = [int(found[int(i)]) for i in picks]

    def __call__(self, img: torch.Tensor, randomize: bool = True, slice_range=None):
        if _spatial_axes(img) not in (2, 3):
            raise ValueError(f"RandSlice: expected (C, X, Y) or (C, X, Y, Z), got shape {tuple(img.shape)}.")
        if randomize:
            self.randomize(img, slice_range)
        if _spatial_axes(img) == 2:
            out = [img] * self.num_samples
        else:
            out = [_slice_meta(img, self.axis, i) for i in self._indices]
        return out if self.num_samples > 1 else out[0]


class RandSliced(Randomizable, MapTransform):
    """Dictionary form of :py:class:`RandSlice`: one slice index per sample, shared by every key (an image and its
    label), chosen by the foreground of ``foreground_key`` (default: the first key). A 2-D entry passes through.
    ``num_samples > 1`` returns a list of dicts (like MONAI's ``RandSpatialCropSamplesd``); other entries are
    copied into each. An item's ``range_key`` entry (default ``"slice_range"``: ``[lo, hi]`` fractions of the
    depth), when present, limits the slices drawn from it (a datalist can hold the upper slices of a volume out).

    Example::

        RandSliced(keys=["image", "label"], axis=2, min_fraction=0.1, num_samples=4)(
            {"image": torch.rand(1, 64, 64, 40), "label": torch.zeros(1, 64, 64, 40)}
        )  # 4 dicts with (1, 64, 64) entries
    """

    backend = RandSlice.backend

    def __init__(
        self,
        keys: KeysCollection,
        axis: int = 2,
        min_fraction: float = 0.0,
        threshold: float = 0.1,
        num_samples: int = 1,
        foreground_key: str | None = None,
        range_key: str = "slice_range",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.slicer = RandSlice(axis=axis, min_fraction=min_fraction, threshold=threshold, num_samples=num_samples)
        self.foreground_key = foreground_key or self.keys[0]
        self.range_key = range_key

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandSliced:
        super().set_random_state(seed, state)
        self.slicer.set_random_state(seed, state)
        return self

    def randomize(self, data: torch.Tensor, slice_range=None) -> None:
        self.slicer.randomize(data, slice_range)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]):
        d = dict(data)
        self.randomize(d[self.foreground_key], d.get(self.range_key))
        n = self.slicer.num_samples
        d.pop(self.range_key, None)  # items with and without one batch together
        outs = [dict(d) for _ in range(n)]
        for key in self.key_iterator(d):
            img = d[key]
            if _spatial_axes(img) == 3 and _spatial_axes(d[self.foreground_key]) != 3:
                raise ValueError(f"RandSliced: {key!r} is 3-D but {self.foreground_key!r} is not.")
            sliced = self.slicer(img, randomize=False)
            sliced = sliced if isinstance(sliced, list) else [sliced]
            for out, s in zip(outs, sliced):
                out[key] = s
        return outs if n > 1 else outs[0]


class SqueezeSpatial(Transform):
    """Drop size-1 spatial axes from the end while the image has more than ``spatial_dims`` of them: a single-frame
    DICOM or a one-slice NIfTI read as ``(C, X, Y, 1)`` becomes ``(C, X, Y)`` (a MetaTensor keeps its meta, with the
    affine of the remaining axes); real volumes are left alone."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, spatial_dims: int = 2) -> None:
        self.spatial_dims = int(spatial_dims)

    def __call__(self, img):
        while _spatial_axes(img) > self.spatial_dims and img.shape[-1] == 1:
            if isinstance(img, MetaTensor):
                n = _spatial_axes(img)
                affine = np.asarray(img.affine, dtype=np.float64)
                new = np.eye(n)
                new[: n - 1, : n - 1] = affine[: n - 1, : n - 1]
                new[: n - 1, -1] = affine[: n - 1, -1]
                meta = dict(img.meta)
                meta["affine"] = torch.as_tensor(new)
                img = MetaTensor(img.as_tensor()[..., 0], meta=meta)
            else:
                img = img[..., 0]
        return img


class SqueezeSpatiald(MapTransform):
    """Dictionary form of :py:class:`SqueezeSpatial`."""

    backend = SqueezeSpatial.backend

    def __init__(self, keys: KeysCollection, spatial_dims: int = 2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.squeeze = SqueezeSpatial(spatial_dims)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.squeeze(d[key])
        return d


def photometric_interpretation(img) -> str:
    """The DICOM Photometric Interpretation of a MetaTensor read by SimpleITK/ITK (``"0028|0004"``) or by MONAI's
    ``PydicomReader`` (``"00280004"``), upper case without padding; ``""`` when the metadata has none."""
    meta = getattr(img, "meta", {}) or {}
    value = meta.get("0028|0004")
    if value is None and "00280004" in meta:
        value = meta["00280004"]
        if isinstance(value, Mapping):
            value = (value.get("Value") or [""])[0]
    return str(value or "").strip().upper()


class InvertMonochrome1(Transform):
    """Invert a MONOCHROME1 image (a DICOM radiograph whose high values are dark) to the usual MONOCHROME2 sense:
    ``x -> min + max - x`` over the image (its range kept). An image is inverted once: readers built on GDCM
    (SimpleITK, ITK) already present MONOCHROME1 files inverted, and :py:class:`~monai_cover.data.SimpleITKReader`
    records that in ``meta["monochrome1_inverted"]`` (:py:data:`MONOCHROME1_HANDLED`), which this transform sets
    too; MONAI's ``PydicomReader`` returns the stored values, which are inverted here. Images without the tag
    (PNG, NIfTI, MONOCHROME2, plain tensors) are returned unchanged."""

    backend = [TransformBackends.TORCH]

    def __call__(self, img):
        if photometric_interpretation(img) != "MONOCHROME1" or not isinstance(img, MetaTensor):
            return img
        if bool(img.meta.get(MONOCHROME1_HANDLED, False)):
            return img
        t = img.as_tensor()
        out = MetaTensor(t.max() + t.min() - t, meta=dict(img.meta))
        out.meta[MONOCHROME1_HANDLED] = True
        return out


class InvertMonochrome1d(MapTransform):
    """Dictionary form of :py:class:`InvertMonochrome1`."""

    backend = InvertMonochrome1.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.invert = InvertMonochrome1()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.invert(d[key])
        return d


class ToGrayscale(Transform):
    """A picture with 2, 3 or 4 channels (grey + alpha, RGB, RGBA) to one luminance channel: ``0.299 R + 0.587 G +
    0.114 B`` (ITU-R 601, what PIL's ``convert("L")`` computes), alpha dropped. One channel is returned as it is;
    other channel counts raise ``ValueError`` naming the file."""

    backend = [TransformBackends.TORCH]

    def __call__(self, img, name: str = "image"):
        c = int(img.shape[0])
        if c == 1:
            return img
        if c not in (2, 3, 4):
            source = (getattr(img, "meta", None) or {}).get("filename_or_obj", "?")
            raise ValueError(f"ToGrayscale: {name!r} of {source!r} has {c} channels; expected 1 to 4.")
        t = torch.as_tensor(img).float()
        if c == 2:
            grey = t[:1]
        else:
            w = torch.tensor(_LUMA, dtype=t.dtype).reshape(3, *([1] * (t.ndim - 1)))
            grey = (t[:3] * w).sum(0, keepdim=True)
        return MetaTensor(grey, meta=dict(img.meta)) if isinstance(img, MetaTensor) else grey


class ToGrayscaled(MapTransform):
    """Dictionary form of :py:class:`ToGrayscale` (errors name the key)."""

    backend = ToGrayscale.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.grey = ToGrayscale()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.grey(d[key], name=str(key))
        return d


class ApplyBySpatialDimsd(MapTransform):
    """Apply ``transform`` (a dictionary transform or a sequence of them) only to data whose ``keys[0]`` entry has
    ``spatial_dims`` spatial axes; otherwise return the data unchanged. A 2-D run resizes its pictures
    (``spatial_dims=2``) and resamples the volumes it slices (``spatial_dims=3``) in one pipeline."""

    def __init__(
        self,
        keys: KeysCollection,
        transform: Callable | Sequence[Callable],
        spatial_dims: int,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transforms = list(transform) if isinstance(transform, Sequence) else [transform]
        self.spatial_dims = int(spatial_dims)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]):
        key = self.keys[0]
        if key not in data or _spatial_axes(data[key]) != self.spatial_dims:
            return dict(data)
        out = dict(data)
        for t in self.transforms:
            out = t(out)
        return out
