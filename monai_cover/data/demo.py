# SPDX-License-Identifier: Apache-2.0
"""Small REAL volumes that installed packages ship, used as the bundles' embedded default data.

Nothing is downloaded. The volumes come from wheels (``pip install monai_cover[demo]`` adds
nilearn and slicerio; nibabel is a core dependency):

============================  ========  ===================================  ======================
volume                        modality  source (licence)                     native shape, spacing
============================  ========  ===================================  ======================
``mni152_t1_2mm``             MR T1     nilearn ``load_mni152_template(2)``  99x117x95, 2 mm
                                        (ICBM 2009a, BSD-style)
``chest_ct``                  CT (HU)   slicerio ``data/CTChest4.nrrd`` (MIT) 128x128x34, 3x3x10 mm
``epi_example4d``             MR EPI    nibabel ``tests/data/example4d``     128x96x24, 2x2x2.2 mm
                                        (first frame; MIT)
``anatomical_t1``             MR T1     nibabel ``tests/data/anatomical.nii`` 33x41x25, 2 mm
============================  ========  ===================================  ======================

Pretraining default split: the first three train, ``anatomical_t1`` (a different person) is the
held-out validation volume. The MNI template is a population average, not a subject; its 1 mm
version and the GM/WM maps describe the same anatomy, so they are not added as extra "subjects".

Segmentation default (fine-tuning): ``chest_ct`` with slicerio's ``Segmentation.seg.nrrd``
(same grid as the CT; labels 1-7 = ribs, cervical/thoracic/lumbar vertebral column, right lung,
left lung, tissue; read from the file's ``Segment<i>_LabelValue``/``_Name`` fields).

2-D default (pretraining, :py:func:`demo_pretrain_2d_datalist`): two real computed radiographs that pydicom-data
ships (``RG1_UNCR.dcm``, a chest CR, 1955x1841, MONOCHROME1, trains; ``RG3_UNCR.dcm``, an extremity CR, 1760x1760,
MONOCHROME1, validates) and slices of the 3-D volumes above: the MNI template's lower 55 % of axial positions, the
chest CT and the EPI train, the MNI template's upper 35 % validate (as ``benchmarks/pretext_study.py --track 2d``);
``anatomical_t1`` (33x41 in-plane) is too small for a 2-D crop. 2-D segmentation (fine-tuning,
:py:func:`demo_segmentation_2d_datalist`): axial slices of the MNI template with :py:func:`mni152_tissue_labels`,
written once as 2-D NIfTI pairs, split by position (lower half trains, upper half validates, 4 mm apart).

In memory (nothing written): :py:func:`demo_volume` gives any of these as ``(array, affine)``,
:py:func:`mni152_t1` the template at 1 or 2 mm and :py:func:`mni152_tissue_labels` its
other / grey matter / white matter label map (from nilearn's probability maps).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = [
    "DEMO_VOLUMES",
    "MNI152_TISSUE_NAMES",
    "DEMO_RADIOGRAPHS",
    "demo_available",
    "demo_pretrain_2d_datalist",
    "demo_radiograph",
    "demo_segmentation_2d_datalist",
    "demo_pretrain_datalist",
    "demo_segmentation_datalist",
    "demo_volume",
    "chest_ct_label_names",
    "mni152_t1",
    "mni152_tissue_labels",
    "read_volume",
]

#: name -> (modality, package that ships it)
DEMO_VOLUMES = {
    "mni152_t1_2mm": ("MR", "nilearn"),
    "chest_ct": ("CT", "slicerio"),
    "epi_example4d": ("MR", "nibabel"),
    "anatomical_t1": ("MR", "nibabel"),
}

#: name -> file in pydicom-data's ``data_store/data`` (real computed radiographs, MIT licence)
DEMO_RADIOGRAPHS = {"chest_cr": "RG1_UNCR.dcm", "extremity_cr": "RG3_UNCR.dcm"}

#: the classes of :py:func:`mni152_tissue_labels`
MNI152_TISSUE_NAMES = {0: "background", 1: "other", 2: "grey matter", 3: "white matter"}

_MISSING = (
    "the embedded demo data needs the packages {missing}: install them with "
    "`pip install monai_cover[demo]` (or `pip install {missing_sp}`), or pass your own data with --dataset_dir."
)


_PIP_NAMES = {"data_store": "pydicom-data"}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(name)
    return Path(spec.origin).parent


def demo_available() -> bool:
    """Whether every package the embedded demo data comes from is installed."""
    return all(importlib.util.find_spec(p) is not None for p in ("nilearn", "slicerio", "nibabel"))


def _require(*packages: str) -> None:
    missing = [_PIP_NAMES.get(p, p) for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ImportError(_MISSING.format(missing=", ".join(missing), missing_sp=" ".join(missing)))


def _atomic_save(img, path: Path) -> None:
    import nibabel as nib

    tmp = path.with_name(f".{os.getpid()}.{path.name}")
    nib.save(img, str(tmp))
    os.replace(tmp, path)


def _chest_ct_files() -> tuple[Path, Path]:
    _require("slicerio")
    data = _package_dir("slicerio") / "data"
    return data / "CTChest4.nrrd", data / "Segmentation.seg.nrrd"


def read_volume(path: str | os.PathLike):
    """``(array, affine)`` of one volume file (NRRD, NIfTI, MetaImage, ...) read by MONAI's ``LoadImage`` with
    :py:class:`~monai_cover.data.SimpleITKReader`: the array ``(I, J, K)`` float32 indexed ``[i, j, k]`` (x fastest),
    the affine ``(4, 4)`` float64 voxel -> RAS mm."""
    import numpy as np
    from monai.transforms import LoadImage

    from .readers import SimpleITKReader

    img = LoadImage(reader=SimpleITKReader(), image_only=True)(str(path))
    return img.numpy(), np.asarray(img.affine, dtype=np.float64)


def mni152_t1(resolution: int = 2):
    """``(array, affine)`` of nilearn's ICBM152 2009a T1 template at ``resolution`` mm (1 or 2; the 2 mm one is
    resampled in memory from the packaged 1 mm file): the array float32 ``[i, j, k]``, the affine ``(4, 4)`` RAS mm."""
    import numpy as np

    _require("nilearn")
    from nilearn.datasets import load_mni152_template

    tpl = load_mni152_template(resolution=int(resolution))
    return np.asarray(tpl.dataobj, dtype=np.float32), np.asarray(tpl.affine, dtype=np.float64)


def mni152_tissue_labels(resolution: int = 2):
    """``(label, names)``: a uint8 label map on :py:func:`mni152_t1`'s grid, 0 outside nilearn's brain mask
    (probability > 0.5) and inside it the most probable of 1 other (a fixed 0.5), 2 grey matter, 3 white matter
    (nilearn's GM/WM probability maps), i.e. GM/WM where its probability exceeds 0.5 and the other's; ``names`` is
    :py:data:`MNI152_TISSUE_NAMES`."""
    import numpy as np

    _require("nilearn")
    from nilearn import datasets

    gm = datasets.load_mni152_gm_template(resolution=int(resolution)).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=int(resolution)).get_fdata()
    mask = datasets.load_mni152_brain_mask(resolution=int(resolution)).get_fdata() > 0.5
    label = np.argmax(np.stack([np.full(gm.shape, 0.5), gm, wm]), axis=0).astype(np.uint8) + 1
    label[~mask] = 0
    return label, dict(MNI152_TISSUE_NAMES)


def demo_volume(name: str):
    """``(array, affine)`` of the demo volume ``name`` (a key of :py:data:`DEMO_VOLUMES`), in memory: the array
    float32 ``[i, j, k]`` (the EPI's first frame), the affine ``(4, 4)`` voxel -> RAS mm (the CT through
    :py:func:`read_volume`).

    Raises:
        KeyError: an unknown ``name``, listing the known ones.
        ImportError: the package that ships it is not installed.
    """
    import numpy as np

    if name == "mni152_t1_2mm":
        return mni152_t1(2)
    if name == "chest_ct":
        return read_volume(_chest_ct_files()[0])
    files = {"anatomical_t1": "anatomical.nii", "epi_example4d": "example4d.nii.gz"}
    if name not in files:
        raise KeyError(f"unknown demo volume {name!r}; known: {sorted(DEMO_VOLUMES)}.")
    import nibabel as nib

    img = nib.load(str(_package_dir("nibabel") / "tests" / "data" / files[name]))
    data = img.dataobj[..., 0] if name == "epi_example4d" else img.dataobj
    return np.asarray(data, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def _volume_path(name: str, cache_dir: Path) -> Path:
    """Path of one demo volume, writing a NIfTI copy of :py:func:`demo_volume` into ``cache_dir`` where the package
    has no file (the 2 mm template, the EPI's first frame)."""
    import nibabel as nib

    if name == "chest_ct":
        return _chest_ct_files()[0]  # read in place by SimpleITKReader
    if name == "anatomical_t1":
        return _package_dir("nibabel") / "tests" / "data" / "anatomical.nii"
    files = {"mni152_t1_2mm": "mni152_t1_2mm.nii.gz", "epi_example4d": "epi_example4d_frame0.nii.gz"}
    if name not in files:
        raise KeyError(f"unknown demo volume {name!r}; known: {sorted(DEMO_VOLUMES)}.")
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = cache_dir / files[name]
    if not out.exists():
        _atomic_save(nib.Nifti1Image(*demo_volume(name)), out)
    return out


def demo_pretrain_datalist(cache_dir: str | os.PathLike) -> dict[str, list[dict]]:
    """The pretraining bundle's default data: ``{"training": [...], "validation": [...]}``.

    Each item is ``{"image": path, "modality": "CT" | "MR", "name": ...}``. Files that the packages
    only hold in memory (the 2 mm MNI template) or inside a 4D series are written once as NIfTI into
    ``cache_dir``; the other files are read where the packages installed them (read-only is fine).
    """
    _require("nilearn", "slicerio")
    cache = Path(cache_dir)
    items = {
        name: {"image": str(_volume_path(name, cache)), "modality": mod, "name": name}
        for name, (mod, _) in DEMO_VOLUMES.items()
    }
    return {
        "training": [items["mni152_t1_2mm"], items["chest_ct"], items["epi_example4d"]],
        "validation": [items["anatomical_t1"]],
    }


def chest_ct_label_names() -> dict[int, str]:
    """``{label value: segment name}`` of slicerio's ``Segmentation.seg.nrrd`` (0 = background)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(_chest_ct_files()[1]))
    reader.ReadImageInformation()
    keys = set(reader.GetMetaDataKeys())
    names = {0: "background"}
    i = 0
    while f"Segment{i}_ID" in keys:
        value = int(reader.GetMetaData(f"Segment{i}_LabelValue")) if f"Segment{i}_LabelValue" in keys else i + 1
        names[value] = reader.GetMetaData(f"Segment{i}_Name")
        i += 1
    return names


def demo_segmentation_datalist(cache_dir: str | os.PathLike | None = None) -> dict[str, list[dict]]:
    """The fine-tuning bundle's default data: the chest CT with its 7-class label map.

    There is only one labelled volume, so ``training`` and ``validation`` hold the same item: the
    demo's validation Dice shows that the pipeline learns, it does not measure generalisation.
    ``cache_dir`` is accepted for symmetry with :py:func:`demo_pretrain_datalist` (nothing is written).
    """
    image, label = _chest_ct_files()
    item = {"image": str(image), "label": str(label), "modality": "CT", "name": "chest_ct"}
    return {"training": [dict(item)], "validation": [dict(item)]}


def demo_radiograph(name: str) -> Path:
    """Path of one of pydicom-data's real radiographs (:py:data:`DEMO_RADIOGRAPHS`), read in place.

    Raises:
        KeyError: an unknown ``name``; ImportError: pydicom-data is not installed.
    """
    if name not in DEMO_RADIOGRAPHS:
        raise KeyError(f"unknown demo radiograph {name!r}; known: {sorted(DEMO_RADIOGRAPHS)}.")
    _require("data_store")
    return _package_dir("data_store") / "data" / DEMO_RADIOGRAPHS[name]


def demo_pretrain_2d_datalist(cache_dir: str | os.PathLike) -> dict[str, list[dict]]:
    """The 2-D pretraining bundle's default data (see the module docstring): items ``{"image", "modality", "name"}``
    (radiographs are ``"CR"``), the volumes' with ``"slice_range"`` (fractions of the depth along the slice axis,
    read by :py:class:`~monai_cover.transforms.RandSliced`) where only part of a volume is used."""
    _require("nilearn", "slicerio", "data_store")
    cache = Path(cache_dir)
    vol = {name: {"image": str(_volume_path(name, cache)), "modality": mod, "name": name}
           for name, (mod, _) in DEMO_VOLUMES.items() if name != "anatomical_t1"}  # fmt: skip
    xr = {name: {"image": str(demo_radiograph(name)), "modality": "CR", "name": name} for name in DEMO_RADIOGRAPHS}
    mni = vol["mni152_t1_2mm"]
    return {
        "training": [xr["chest_cr"], dict(mni, slice_range=[0.0, 0.55]), vol["chest_ct"], vol["epi_example4d"]],
        "validation": [xr["extremity_cr"], dict(mni, slice_range=[0.65, 1.0])],
    }


def demo_segmentation_2d_datalist(
    cache_dir: str | os.PathLike, step: int = 1, min_labelled: float = 0.1, gap_mm: float = 4.0
) -> dict[str, list[dict]]:
    """The 2-D fine-tuning bundle's default data: axial slices of the 2 mm MNI template and its tissue labels
    (:py:func:`mni152_tissue_labels`, 4 classes), written once into ``cache_dir/mni152_slices`` as 2-D NIfTI pairs.

    Every ``step``-th axial slice with at least ``min_labelled`` of its pixels labelled is used; the labelled range
    is split at its middle, ``gap_mm`` either side left out: the lower slices train, the upper ones validate, so
    the two see different anatomy. ``info["labels"]`` names the classes.
    """
    import nibabel as nib
    import numpy as np

    _require("nilearn")
    folder = Path(cache_dir) / "mni152_slices"
    folder.mkdir(parents=True, exist_ok=True)
    image, affine = mni152_t1(2)
    label, names = mni152_tissue_labels(2)
    labelled = np.nonzero(label.reshape(-1, label.shape[2]).max(0))[0]
    lo, hi = int(labelled.min()), int(labelled.max()) + 1
    mid, gap = (lo + hi) // 2, max(1, int(round(gap_mm / float(abs(affine[2, 2])))))
    out: dict[str, list[dict]] = {"training": [], "validation": []}
    for z in range(lo, hi, int(step)):
        split = "training" if z < mid - gap else "validation" if z >= mid + gap else None
        if split is None or float((label[..., z] > 0).mean()) < float(min_labelled):
            continue
        slice_affine = np.eye(4)
        slice_affine[:2, :2] = affine[:2, :2]
        slice_affine[:3, 3] = affine[:3, 3] + affine[:3, 2] * z
        paths = {}
        for key, arr, dtype in (("image", image, np.float32), ("label", label, np.uint8)):
            path = folder / f"mni152_z{z:03d}_{key}.nii.gz"
            if not path.exists():
                _atomic_save(nib.Nifti1Image(np.ascontiguousarray(arr[..., z]).astype(dtype), slice_affine), path)
            paths[key] = str(path)
        out[split].append({**paths, "modality": "MR", "name": f"mni152_z{z:03d}"})
    out["info_labels"] = {str(k): v for k, v in names.items()}
    return out
