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
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = [
    "DEMO_VOLUMES",
    "demo_available",
    "demo_pretrain_datalist",
    "demo_segmentation_datalist",
    "chest_ct_label_names",
]

#: name -> (modality, package that ships it)
DEMO_VOLUMES = {
    "mni152_t1_2mm": ("MR", "nilearn"),
    "chest_ct": ("CT", "slicerio"),
    "epi_example4d": ("MR", "nibabel"),
    "anatomical_t1": ("MR", "nibabel"),
}

_MISSING = (
    "the embedded demo data needs the packages {missing}: install them with "
    "`pip install monai_cover[demo]` (or `pip install {missing_sp}`), or pass your own data with --dataset_dir."
)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(name)
    return Path(spec.origin).parent


def demo_available() -> bool:
    """Whether every package the embedded demo data comes from is installed."""
    return all(importlib.util.find_spec(p) is not None for p in ("nilearn", "slicerio", "nibabel"))


def _require(*packages: str) -> None:
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
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


def _volume_path(name: str, cache_dir: Path) -> Path:
    """Path of one demo volume, writing a NIfTI copy into ``cache_dir`` where the package has no file."""
    import nibabel as nib
    import numpy as np

    if name == "chest_ct":
        return _chest_ct_files()[0]  # read in place by SimpleITKReader
    if name == "anatomical_t1":
        return _package_dir("nibabel") / "tests" / "data" / "anatomical.nii"
    cache_dir.mkdir(parents=True, exist_ok=True)
    if name == "mni152_t1_2mm":
        _require("nilearn")
        out = cache_dir / "mni152_t1_2mm.nii.gz"
        if not out.exists():
            from nilearn.datasets import load_mni152_template

            tpl = load_mni152_template(resolution=2)  # in memory only, resampled from the packaged 1 mm file
            _atomic_save(nib.Nifti1Image(np.asarray(tpl.dataobj, dtype=np.float32), tpl.affine), out)
        return out
    if name == "epi_example4d":
        out = cache_dir / "epi_example4d_frame0.nii.gz"
        if not out.exists():
            src = nib.load(str(_package_dir("nibabel") / "tests" / "data" / "example4d.nii.gz"))
            frame = np.asarray(src.dataobj[..., 0], dtype=np.float32)
            _atomic_save(nib.Nifti1Image(frame, src.affine), out)
        return out
    raise KeyError(f"unknown demo volume {name!r}; known: {sorted(DEMO_VOLUMES)}.")


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
