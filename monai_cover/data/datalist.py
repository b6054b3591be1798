# SPDX-License-Identifier: Apache-2.0
"""Turn a bundle's ``dataset_dir`` into a MONAI datalist ``{"training": [...], "validation": [...], "info": {...}}``.

``dataset_dir`` may be:

- empty (``""`` or ``None``): the embedded real demo volumes (:py:mod:`monai_cover.data.demo`);
- a MONAI/Decathlon datalist JSON file (``{"training": [{"image": ...}, ...], "validation": [...]}``),
  paths relative to the file's folder;
- a folder holding ``dataset.json`` / ``datalist.json`` (read as above);
- a folder in Decathlon layout (``imagesTr/`` and, for segmentation, ``labelsTr/`` with equal names);
- a folder of volumes: NIfTI, NRRD, MetaImage files, and sub-folders of DICOM files (one series
  each), searched recursively. Other files (a PNG, a ``.txt``) are not volumes: they are listed in
  ``info["ignored"]`` with the reason, never dropped without a word.

The 2-D bundles pass ``spatial_dims=2``: a folder is then searched with :py:func:`find_images` (pictures, single-file
DICOM, 2-D NIfTI and 3-D volume files, each file one item) and the demo is the 2-D one.

A datalist JSON with a ``validation`` key uses it as it is, even an empty list (validate on nothing). Without
one, the last ``val_fraction`` of the volumes (sorted by path; at least one when there are two or more) is held
out, and ``info["split"]`` says so.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "DatalistError",
    "DatasetNotFoundError",
    "MODALITIES",
    "VOLUME_SUFFIXES",
    "find_images",
    "find_volumes",
    "get_datalist",
    "inference_datalist",
    "normalize_modality",
    "split_datalist",
]

logger = logging.getLogger(__name__)


class DatalistError(ValueError):
    """A ``dataset_dir`` or datalist that gives no usable items (the message names it and why)."""

    user_error = True


class DatasetNotFoundError(FileNotFoundError):
    """A ``dataset_dir``, datalist or label file that does not exist (named in the message)."""

    user_error = True

#: file suffixes read as one volume each
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
#: the documented ``modality`` values (``--modality`` and an item's own ``"modality"``), case-insensitive
MODALITIES = ("CT", "MR", "CR", "DX")
_MODALITY_ALIASES = {"CT": "CT", "MR": "MR", "MRI": "MR", "CR": "CR", "DX": "DX"}
_DATALIST_NAMES = ("datalist.json", "dataset.json")
_IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
_IGNORED_QUIETLY = (".raw", ".zraw", ".img")  # data files of .mhd/.nhdr/.hdr headers, read through their header


def _is_volume(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES) and not path.name.startswith(".")


def _is_dicom_dir(path: Path) -> bool:
    return path.is_dir() and any(f.is_file() and f.suffix.lower() in (".dcm", ".ima") for f in path.iterdir())


def _why_not_a_volume(path: Path) -> str:
    name = path.name.lower()
    if name.startswith("."):
        return "hidden file"
    if name.endswith(_IMAGE_2D_SUFFIXES):
        return f"a 2-D picture format ({path.suffix}), not a medical volume"
    suffix = "".join(path.suffixes[-2:]) or "no suffix"
    return f"not a volume file ({suffix}; volumes are {', '.join(VOLUME_SUFFIXES)} or DICOM series folders)"


def _walk_visible(folder: str | os.PathLike) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``os.walk`` of the dataset folder ``folder`` in sorted order with hidden folders skipped: ``(folder, its
    subfolders, its file names)``; emptying the yielded subfolder list skips them.

    Raises:
        FileNotFoundError: ``folder`` is not a folder (when the iteration starts).
    """
    root = Path(folder)
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset_dir {str(folder)!r} is not a folder.")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield Path(dirpath), dirnames, sorted(filenames)


def find_volumes(folder: str | os.PathLike, ignored: list[dict] | None = None) -> list[str]:
    """Sorted paths of the volumes under ``folder``: image files with :py:data:`VOLUME_SUFFIXES` and
    folders that directly hold ``.dcm``/``.ima`` files (each read as one DICOM series; ``folder`` itself too, so a
    series folder given as ``dataset_dir`` is one volume).

    Args:
        folder: the folder to search (recursively; hidden folders are skipped).
        ignored: when given, every other file is appended as ``{"path": ..., "reason": ...}`` (a PNG, a ``.txt``,
            ...), except the data files of ``.mhd``/``.nhdr`` headers and datalist JSON files.
    """
    root, found = Path(folder), []
    for here, dirnames, filenames in _walk_visible(root):
        if _is_dicom_dir(here):  # the folder given may itself be the series
            found.append(str(here))
            dirnames[:] = []
            continue
        for f in filenames:
            path = here / f
            if _is_volume(path):
                found.append(str(path))
            elif ignored is not None and not f.lower().endswith(_IGNORED_QUIETLY) and f not in _DATALIST_NAMES:
                ignored.append({"path": str(path), "reason": _why_not_a_volume(path)})
    return sorted(found)


def find_images(folder: str | os.PathLike, ignored: list[dict] | None = None) -> list[str]:
    """Sorted paths of the files a 2-D run reads under ``folder`` (recursively, hidden folders skipped): 2-D pictures
    and single-file DICOM (:py:data:`~monai_cover.data.readers.IMAGE_2D_SUFFIXES`, each file one image, so a folder
    of CT slices gives one image per slice) and volume files (:py:data:`VOLUME_SUFFIXES`: 2-D NIfTI, or 3-D volumes
    that the 2-D bundles slice). ``ignored`` as :py:func:`find_volumes`."""
    from monai_cover.data.readers import IMAGE_2D_SUFFIXES

    found = []
    for here, _, filenames in _walk_visible(folder):
        for f in filenames:
            path = here / f
            name = f.lower()
            if not f.startswith(".") and (name.endswith(IMAGE_2D_SUFFIXES) or name.endswith(VOLUME_SUFFIXES)):
                found.append(str(path))
            elif ignored is not None and not name.endswith(_IGNORED_QUIETLY) and f not in _DATALIST_NAMES:
                reason = "hidden file" if f.startswith(".") else (
                    f"not an image file ({''.join(path.suffixes[-2:]) or 'no suffix'}; 2-D runs read "
                    f"{', '.join(IMAGE_2D_SUFFIXES + VOLUME_SUFFIXES)})")  # fmt: skip
                ignored.append({"path": str(path), "reason": reason})
    return sorted(found)


def normalize_modality(value, where: str = "--modality") -> str:
    """``"CT"`` or ``"MR"`` for a documented modality (case-insensitive; ``"MRI"`` is ``"MR"``), ``""`` for none.

    Raises:
        ValueError: any other value (e.g. ``"PET"``, a typo), naming ``where`` and the accepted values.
    """
    if value is None or str(value).strip() == "":
        return ""
    key = str(value).strip().upper()
    if key not in _MODALITY_ALIASES:
        raise DatalistError(
            f"{where}: unknown modality {value!r}; accepted: {', '.join(MODALITIES)} (case-insensitive), or empty for "
            "none. Intensity scaling depends on it (CT: HU window; MR, CR, DX: percentiles); for another modality pass "
            "--intensity mri (percentiles) or --intensity none and leave --modality empty."
        )
    return _MODALITY_ALIASES[key]


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


def _held_out_note(out: dict, val_fraction: float) -> str:
    n_val, n = len(out["validation"]), len(out["training"]) + len(out["validation"])
    if n_val == 0:
        return f"no validation list, nothing held out ({n} volume(s), val_fraction {val_fraction})"
    return (
        f"no validation list: the last {n_val} of {n} volume(s) (sorted by path) held out for validation "
        f"(val_fraction {val_fraction}; --val_fraction 0 trains on all)"
    )


def _load_json_datalist(path: Path, val_fraction: float) -> dict:
    from monai.data import load_decathlon_datalist

    with open(path, encoding="utf-8") as f:
        content = json.load(f)
    if "training" not in content:
        raise DatalistError(f"datalist {str(path)!r} has no 'training' list (keys: {sorted(content)}).")
    base = str(path.parent)
    train = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key="training", base_dir=base)
    info = {"source": "datalist", "path": str(path)}
    if isinstance(content.get("labels"), dict):
        info["labels"] = {str(k): str(v) for k, v in content["labels"].items()}
    if "validation" in content:  # an explicit list, even an empty one, is the user's choice
        val = (
            load_decathlon_datalist(str(path), is_segmentation=False, data_list_key="validation", base_dir=base)
            if content["validation"]
            else []
        )
        nothing = "; validating on nothing" if not val else ""
        info["split"] = f"validation list of {str(path)!r} ({len(val)} item(s){nothing})"
        info["split_kind"] = "datalist"
        return {"training": train, "validation": val, "info": info}
    out = split_datalist(train, val_fraction)
    info["split"], info["split_kind"] = _held_out_note(out, val_fraction), "val_fraction"
    return {**out, "info": info}


def get_datalist(
    dataset_dir: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    labels: bool = False,
    modality: str | None = None,
    spatial_dims: int = 3,
) -> dict:
    """Datalist for a bundle: see the module docstring for what ``dataset_dir`` may be.

    Args:
        dataset_dir: a datalist JSON, a folder, or empty for the embedded demo data.
        cache_dir: where the demo writes its NIfTI copies (``dataset_dir`` empty only).
        val_fraction: fraction held out for validation when the source has no validation list.
        labels: segmentation data: items need a ``label`` (the demo becomes the labelled chest CT,
            a plain folder must be in Decathlon layout ``imagesTr``/``labelsTr``).
        modality: ``"CT"`` or ``"MR"`` (:py:data:`MODALITIES`, case-insensitive) stored in items that have no
            ``modality`` of their own (``"unknown"`` when not given; read by
            :py:class:`~monai_cover.transforms.ScaleIntensityByModalityd` in ``"auto"`` mode).
        spatial_dims: 2 for the 2-D bundles: a folder is searched with :py:func:`find_images` (pictures, DICOM
            files, 2-D and 3-D volume files) and the demo is the 2-D one
            (:py:func:`~monai_cover.data.demo.demo_pretrain_2d_datalist`, ``demo_segmentation_2d_datalist``).

    Returns:
        ``{"training": [{"image": ..., ["label": ...,] "modality": ...}], "validation": [...], "info": {...}}``;
        ``info`` holds ``source`` (``demo``/``datalist``/``decathlon``/``folder``), ``split`` (how the validation
        items were chosen, in words), ``split_kind`` (``demo``/``datalist``/``val_fraction``), ``val_fraction``,
        ``ignored`` (files that are not volumes, with the reason) and, from a Decathlon ``dataset.json``,
        ``labels`` (``{"0": "background", ...}``).

    Raises:
        ValueError: an unknown ``modality`` (also an item's own), no training volumes, a missing label.
    """
    from monai_cover.data.demo import (
        demo_pretrain_2d_datalist,
        demo_pretrain_datalist,
        demo_segmentation_2d_datalist,
        demo_segmentation_datalist,
    )

    two_d = int(spatial_dims) == 2
    find = find_images if two_d else find_volumes
    default_modality = normalize_modality(modality)
    ignored: list[dict] = []
    if dataset_dir is None or str(dataset_dir).strip() == "":
        if cache_dir is None:
            raise DatalistError("get_datalist: the demo data needs a cache_dir to write its NIfTI copies.")
        if two_d:
            out = demo_segmentation_2d_datalist(cache_dir) if labels else demo_pretrain_2d_datalist(cache_dir)
        else:
            out = demo_segmentation_datalist(cache_dir) if labels else demo_pretrain_datalist(cache_dir)
        demo_labels = out.pop("info_labels", None)
        # the demo's two nibabel example volumes are 25 and 26 voxels deep at 2 mm, less than a 32^3 patch: the demo
        # asks for them to be padded (user data is padded only with --pad_small true)
        for item in out["training"] + out["validation"]:
            item.setdefault("pad", True)
        out["info"] = {"source": "demo", "split": "the embedded demo's own split", "split_kind": "demo"}
        if demo_labels:
            out["info"]["labels"] = demo_labels
        root = None
    else:
        root = Path(dataset_dir).expanduser()
        if root.is_file():
            if not root.name.lower().endswith(".json"):
                raise DatalistError(f"dataset_dir {str(root)!r} is a file but not a datalist JSON.")
            out = _load_json_datalist(root, val_fraction)
        elif not root.is_dir():
            raise DatasetNotFoundError(f"dataset_dir {str(root)!r} does not exist.")
        elif any((root / n).is_file() for n in _DATALIST_NAMES):
            out = _load_json_datalist(next(root / n for n in _DATALIST_NAMES if (root / n).is_file()), val_fraction)
        elif (root / "imagesTr").is_dir():
            images = find(root / "imagesTr", ignored=ignored)
            items = []
            for img in images:
                item = {"image": img}
                if (root / "labelsTr").is_dir():
                    lab = root / "labelsTr" / Path(img).name
                    if labels and not lab.exists():
                        raise DatasetNotFoundError(f"no label {str(lab)!r} for image {img!r}.")
                    if lab.exists():
                        item["label"] = str(lab)
                items.append(item)
            out = split_datalist(items, val_fraction)
            out["info"] = {"source": "decathlon", "path": str(root), "split": _held_out_note(out, val_fraction),
                           "split_kind": "val_fraction"}  # fmt: skip
        else:
            if labels:
                raise DatalistError(
                    f"dataset_dir {str(root)!r}: segmentation needs a datalist JSON with image/label pairs or a "
                    "Decathlon-layout folder (imagesTr/, labelsTr/)."
                )
            out = split_datalist([{"image": p} for p in find(root, ignored=ignored)], val_fraction)
            out["info"] = {"source": "folder", "path": str(root), "split": _held_out_note(out, val_fraction),
                           "split_kind": "val_fraction"}  # fmt: skip
    if not out["training"]:
        where = "the embedded demo" if root is None else repr(str(root))
        others = ""
        if ignored:
            others = f" ({len(ignored)} other file(s) ignored, e.g. {ignored[0]['path']!r}: {ignored[0]['reason']})"
        raise DatalistError(f"dataset_dir {where}: no training volumes found{others}.")
    if labels:
        for item in out["training"] + out["validation"]:
            if "label" not in item:
                raise DatalistError(f"dataset_dir {str(root)!r}: item without 'label': {item}.")
    for item in out["training"] + out["validation"]:  # every item gets one, so batches collate
        if item.get("modality") not in (None, "", "unknown"):
            item["modality"] = normalize_modality(item["modality"], where=f"datalist item {item.get('image')!r}")
        else:
            item["modality"] = default_modality or "unknown"
    out["info"]["val_fraction"] = float(val_fraction)
    out["info"]["ignored"] = ignored
    logger.debug("dataset_dir %s: %s.", root, out["info"]["split"])
    return out


def inference_datalist(
    source: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None = None,
    modality: str | None = None,
    spatial_dims: int = 3,
) -> dict:
    """Images to run a trained network on: ``{"testing": [{"image": ..., "modality": ...}], "info": {...}}``.

    Args:
        source: one volume file; a folder of volumes (searched as :py:func:`find_volumes`, other files listed in
            ``info["ignored"]``); a Decathlon folder (``imagesTs/``, else ``imagesTr/``); a datalist JSON or a folder
            holding one (its ``testing`` list, else every image of ``training`` and ``validation``); empty: the
            embedded demo's labelled chest CT (2-D: its first three validation slices).
        cache_dir: as :py:func:`get_datalist` (the demo).
        modality: as :py:func:`get_datalist`.
        spatial_dims: 2: folders are searched with :py:func:`find_images`, the demo is the 2-D one.
    """
    default_modality = normalize_modality(modality)
    ignored: list[dict] = []
    info: dict = {}
    root = None if source is None or str(source).strip() == "" else Path(source).expanduser()
    if root is None:
        dl = get_datalist("", cache_dir=cache_dir, labels=True, spatial_dims=spatial_dims)
        items, info = (dl["validation"][:3] if int(spatial_dims) == 2 else dl["training"][:1]), {"source": "demo"}
    elif root.is_file() and root.name.lower().endswith(".json") or root.is_dir() and any(
        (root / n).is_file() for n in _DATALIST_NAMES
    ):
        path = root if root.is_file() else next(root / n for n in _DATALIST_NAMES if (root / n).is_file())
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
        from monai.data import load_decathlon_datalist

        keys = ["testing"] if content.get("testing") else [k for k in ("training", "validation") if content.get(k)]
        items = []
        for key in keys:
            for it in load_decathlon_datalist(str(path), False, key, base_dir=str(path.parent)):
                items.append(it if isinstance(it, dict) else {"image": it})
        info = {"source": "datalist", "path": str(path), "lists": keys}
    elif root.is_file():
        items, info = [{"image": str(root)}], {"source": "file", "path": str(root)}
    elif root.is_dir():
        sub = next((root / d for d in ("imagesTs", "imagesTr") if (root / d).is_dir()), root)
        find = find_images if int(spatial_dims) == 2 else find_volumes
        items = [{"image": p} for p in find(sub, ignored=ignored)]
        info = {"source": "folder", "path": str(sub)}
    else:
        raise DatasetNotFoundError(f"inference input {str(root)!r} does not exist.")
    out = []
    for item in items:
        item = {k: v for k, v in dict(item).items() if k != "label"}
        if item.get("modality") not in (None, "", "unknown"):
            item["modality"] = normalize_modality(item["modality"], where=f"datalist item {item.get('image')!r}")
        else:
            item["modality"] = default_modality or "unknown"
        out.append(item)
    if not out:
        raise DatalistError(f"inference input {str(root)!r}: no volumes found.")
    info["ignored"] = ignored
    return {"testing": out, "info": info}
