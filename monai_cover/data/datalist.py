# SPDX-License-Identifier: Apache-2.0
"""Turn a bundle's ``dataset_dir`` into a MONAI datalist ``{"training": [...], "validation": [...]}``.

``dataset_dir`` may be:

- empty (``""`` or ``None``): the embedded real demo volumes (:py:mod:`monai_cover.data.demo`);
- a MONAI/Decathlon datalist JSON file (``{"training": [{"image": ...}, ...], "validation": [...]}``),
  paths relative to the file's folder;
- a folder holding ``dataset.json`` / ``datalist.json`` (read as above);
- a folder in Decathlon layout (``imagesTr/`` and, for segmentation, ``labelsTr/`` with equal names);
- a folder of volumes: NIfTI, NRRD, MetaImage files, and sub-folders of DICOM files (one series
  each), searched recursively.

Without a ``validation`` list, every ``round(1 / val_fraction)``-th volume (sorted by path) is held
out, so the split is deterministic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["VOLUME_SUFFIXES", "find_volumes", "get_datalist", "split_datalist"]

#: file suffixes read as one volume each
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
_DATALIST_NAMES = ("datalist.json", "dataset.json")


def _is_volume(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES) and not path.name.startswith(".")


def _is_dicom_dir(path: Path) -> bool:
    return path.is_dir() and any(f.is_file() and f.suffix.lower() in (".dcm", ".ima") for f in path.iterdir())


def find_volumes(folder: str | os.PathLike) -> list[str]:
    """Sorted paths of the volumes under ``folder``: image files with :py:data:`VOLUME_SUFFIXES` and
    folders that directly hold ``.dcm``/``.ima`` files (each read as one DICOM series)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset_dir {str(folder)!r} is not a folder.")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if here != root and _is_dicom_dir(here):
            found.append(str(here))
            dirnames[:] = []
            continue
        found.extend(str(here / f) for f in filenames if _is_volume(here / f))
    return sorted(found)


def split_datalist(items: list[dict], val_fraction: float = 0.2) -> dict[str, list[dict]]:
    """Hold out the last ``val_fraction`` of the items, in order (MONAI's ``partition_dataset``; at least one
    when there are two or more items); ``val_fraction <= 0`` keeps everything for training and validates on
    nothing."""
    from monai.data import partition_dataset

    items = list(items)
    if val_fraction <= 0 or len(items) < 2:
        return {"training": items, "validation": []}
    num_val = min(len(items) - 1, max(1, round(len(items) * float(val_fraction))))
    train, val = partition_dataset(items, ratios=[len(items) - num_val, num_val], shuffle=False)
    return {"training": train, "validation": val}


def _load_json_datalist(path: Path, val_fraction: float) -> dict[str, list[dict]]:
    from monai.data import load_decathlon_datalist

    with open(path) as f:
        content = json.load(f)
    if "training" not in content:
        raise ValueError(f"datalist {str(path)!r} has no 'training' list (keys: {sorted(content)}).")
    base = str(path.parent)
    train = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key="training", base_dir=base)
    if content.get("validation"):
        val = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key="validation", base_dir=base)
        return {"training": train, "validation": val}
    return split_datalist(train, val_fraction)


def get_datalist(
    dataset_dir: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    labels: bool = False,
    modality: str | None = None,
) -> dict[str, list[dict]]:
    """Datalist for a bundle: see the module docstring for what ``dataset_dir`` may be.

    Args:
        dataset_dir: a datalist JSON, a folder, or empty for the embedded demo data.
        cache_dir: where the demo writes its NIfTI copies (``dataset_dir`` empty only).
        val_fraction: fraction held out for validation when the source has no validation list.
        labels: segmentation data: items need a ``label`` (the demo becomes the labelled chest CT,
            a plain folder must be in Decathlon layout ``imagesTr``/``labelsTr``).
        modality: ``"CT"`` or ``"MR"`` stored in items that have no ``modality`` of their own
            (``"unknown"`` when not given; read by :py:class:`~monai_cover.transforms.ScaleIntensityByModalityd` in ``"auto"`` mode).

    Returns:
        ``{"training": [{"image": ..., ["label": ...,] ...}], "validation": [...]}``.
    """
    from monai_cover.data.demo import demo_pretrain_datalist, demo_segmentation_datalist

    if dataset_dir is None or str(dataset_dir).strip() == "":
        if cache_dir is None:
            raise ValueError("get_datalist: the demo data needs a cache_dir to write its NIfTI copies.")
        return demo_segmentation_datalist(cache_dir) if labels else demo_pretrain_datalist(cache_dir)
    root = Path(dataset_dir).expanduser()
    if root.is_file():
        if not root.name.lower().endswith(".json"):
            raise ValueError(f"dataset_dir {str(root)!r} is a file but not a datalist JSON.")
        out = _load_json_datalist(root, val_fraction)
    elif not root.is_dir():
        raise FileNotFoundError(f"dataset_dir {str(root)!r} does not exist.")
    elif any((root / n).is_file() for n in _DATALIST_NAMES):
        out = _load_json_datalist(next(root / n for n in _DATALIST_NAMES if (root / n).is_file()), val_fraction)
    elif (root / "imagesTr").is_dir():
        images = find_volumes(root / "imagesTr")
        items = []
        for img in images:
            item = {"image": img}
            if (root / "labelsTr").is_dir():
                lab = root / "labelsTr" / Path(img).name
                if labels and not lab.exists():
                    raise FileNotFoundError(f"no label {str(lab)!r} for image {img!r}.")
                if lab.exists():
                    item["label"] = str(lab)
            items.append(item)
        out = split_datalist(items, val_fraction)
    else:
        if labels:
            raise ValueError(
                f"dataset_dir {str(root)!r}: segmentation needs a datalist JSON with image/label pairs or a "
                "Decathlon-layout folder (imagesTr/, labelsTr/)."
            )
        out = split_datalist([{"image": p} for p in find_volumes(root)], val_fraction)
    if not out["training"]:
        raise ValueError(f"dataset_dir {str(root)!r}: no training volumes found.")
    if labels:
        for item in out["training"] + out["validation"]:
            if "label" not in item:
                raise ValueError(f"dataset_dir {str(root)!r}: item without 'label': {item}.")
    for item in out["training"] + out["validation"]:  # every item gets one, so batches collate
        item.setdefault("modality", modality or "unknown")
    return out
