# SPDX-License-Identifier: Apache-2.0
"""Pre-flight check of a datalist: every file read in full, before any training, and a report of what was found.

:py:func:`check_datalist` reads every image (and label) of a datalist with the readers the pipeline uses, in
MONAI's order (``LoadImage`` tries the last reader first), decompressing it completely, and checks, per file:

- that it can be read at all (a truncated ``.nii.gz`` raises in nibabel; the error is kept, with the file);
- the number of spatial dimensions (a 2-D NIfTI in a 3-D run) and channels (a 4-D time series);
- that every voxel is finite (NaN/inf: an error, or replaced with ``nonfinite="replace"``);
- shape and spacing in the file and after ``Orientation`` + ``Spacing`` (computed lazily, nothing is resampled);
- the intensity range (and, for labels, the label values against ``num_classes``, and the image's grid);
- the size after resampling against the patch: smaller than ``patch_size`` on any axis is *too small* (an error
  naming both sizes) unless padding was asked for (``pad_small=True`` or an item's ``"pad": true``); between
  ``patch_size`` and ``crop_size`` it is padded to ``crop_size`` (reported).

Files of a folder that are not volumes (a PNG, a ``.txt``) come from :py:func:`~monai_cover.data.get_datalist`'s
``info["ignored"]`` and are listed as ignored. With ``on_bad_file="error"`` (the default) one
:py:class:`DataCheckError` names every bad file and why; with ``"skip"`` they are left out and listed. The split is
redone over the usable volumes when it came from ``val_fraction``. The report is printed as a compact table, written
to ``output_dir/data_report.json`` and ``data_report.md``, and ends with one line: *found N, training on M,
validating on K, skipped S (reasons)*. It also estimates the memory a ``CacheDataset`` would take, from which
:py:func:`choose_dataset_type` picks an in-memory or an on-disk (``PersistentDataset``) dataset.

Results of unchanged files (same path, size and modification time, same reading settings) are taken from an
existing ``data_report.json`` in ``output_dir``, so a resumed run does not read everything again. Under
``torch.distributed`` each rank reads its share of the files and the results are gathered; rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DATASET_TYPES",
    "ON_BAD_FILE",
    "SLICE_VOLUMES",
    "DataCheckError",
    "DataReport",
    "check_datalist",
    "choose_dataset_type",
    "physical_memory_bytes",
]

logger = logging.getLogger(__name__)

#: accepted ``on_bad_file`` values
ON_BAD_FILE = ("error", "skip")
#: accepted ``slice_volumes`` values (2-D runs)
SLICE_VOLUMES = ("auto", "always", "never")
#: accepted ``dataset_type`` values of :py:func:`choose_dataset_type`
DATASET_TYPES = ("auto", "cache", "persistent")
REPORT_JSON = "data_report.json"
REPORT_MD = "data_report.md"
#: facts about one file that do not depend on the patch or the policies, reusable across runs
_FACTS_VERSION = 1
_TABLE_ROWS = 40
#: what _judge_file adds to a file's facts (recomputed on every check)
_JUDGED = ("padded_shape", "estimated_bytes")


class DataCheckError(ValueError):
    """The data check found files it cannot train on (the message names each and why) or nothing usable."""

    user_error = True


def _fmt_shape(shape: Sequence[int] | None) -> str:
    return "x".join(str(int(s)) for s in shape) if shape else "?"


def _fmt_spacing(spacing: Sequence[float] | None) -> str:
    return "x".join(f"{float(s):.3g}" for s in spacing) + " mm" if spacing else "?"


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), 1


def physical_memory_bytes() -> int | None:
    """Physical memory of this machine in bytes (``None`` when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def choose_dataset_type(
    estimated_bytes: float, dataset_type: str = "auto", memory_budget_gb: float = 0.0, cache_rate: float = 1.0
) -> tuple[str, str]:
    """Pick ``"cache"`` (MONAI ``CacheDataset``, volumes held in memory) or ``"persistent"`` (``PersistentDataset``,
    preprocessed volumes written to disk once and read back every epoch).

    Args:
        estimated_bytes: memory of all preprocessed volumes (float32 after resampling and padding), as
            :py:attr:`DataReport.estimated_bytes`.
        dataset_type: ``"auto"`` (decide from the estimate), ``"cache"`` or ``"persistent"`` (explicit, kept).
        memory_budget_gb: the most a cache may take, in GB (``<= 0``: a quarter of the physical memory).
        cache_rate: the cached fraction of ``CacheDataset``.

    Returns:
        ``(dataset_type, reason in words)``.
    """
    dataset_type = str(dataset_type).lower()
    if dataset_type not in DATASET_TYPES:
        raise ValueError(f"dataset_type must be one of {DATASET_TYPES}, got {dataset_type!r}.")
    cached = float(estimated_bytes) * max(0.0, min(1.0, float(cache_rate)))
    gb = 1024**3
    if dataset_type != "auto":
        return (
            dataset_type,
            f"--dataset_type {dataset_type} (estimated {cached / gb:.3g} GB to cache at cache_rate {cache_rate})",
        )
    if float(memory_budget_gb) > 0:
        budget, why = float(memory_budget_gb) * gb, f"--memory_budget_gb {float(memory_budget_gb):g}"
    else:
        total = physical_memory_bytes()
        budget = total / 4 if total else 8 * gb
        why = f"a quarter of the {total / gb:.0f} GB of memory" if total else "8 GB (memory size unknown)"
    if cached <= budget:
        return (
            "cache",
            f"CacheDataset: the volumes take about {cached / gb:.3g} GB after resampling, within the memory budget "
            f"of {budget / gb:.3g} GB ({why})",
        )
    return "persistent", (
        f"PersistentDataset (on disk): the volumes take about {cached / gb:.3g} GB after resampling, more than the "
        "memory "
        f"budget of {budget / gb:.3g} GB ({why}); --dataset_type cache keeps them in memory anyway"
    )


@dataclass
class DataReport:
    """What :py:func:`check_datalist` found.

    Attributes:
        datalist: the usable items, ``{"training": [...], "validation": [...], "info": {...}}``.
        items: per item: ``split``, ``status`` (``ok``/``skipped``/``bad``), ``reasons`` and ``notes``
            (``[{"code", "message"}]``), ``files`` (``{key: facts}``: reader, shape, spacing, range, ...).
        ignored: files that are not volumes, ``[{"path", "reason"}]``.
        settings: what the check compared against (spacing, patch, policies, ...).
        estimated_bytes: memory of the usable volumes after resampling and padding (float32 images).
        dataset_type, dataset_reason: the choice of :py:func:`choose_dataset_type` (when asked for).
        summary: the last line: found N, training on M, validating on K, skipped S (reasons).
    """

    datalist: dict = field(default_factory=dict)
    items: list[dict] = field(default_factory=list)
    ignored: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    estimated_bytes: float = 0.0
    dataset_type: str | None = None
    dataset_reason: str = ""
    split: str = ""
    summary: str = ""
    seconds: float = 0.0
    reused: int = 0

    @property
    def bad(self) -> list[dict]:
        """Items with a reason not to train on them (skipped or not)."""
        return [it for it in self.items if it["reasons"]]

    def to_dict(self) -> dict:
        return {
            "summary": self.summary,
            "split": self.split,
            "counts": {
                "found": len(self.items),
                "training": len(self.datalist.get("training", [])),
                "validation": len(self.datalist.get("validation", [])),
                "testing": len(self.datalist.get("testing", [])),
                "skipped": sum(it["status"] == "skipped" for it in self.items),
                "bad": len(self.bad),
                "ignored": len(self.ignored),
            },
            "dataset": {
                "type": self.dataset_type,
                "reason": self.dataset_reason,
                "estimated_gb": self.estimated_bytes / 1024**3,
            },
            "settings": self.settings,
            "training": [_item_id(it) for it in self.datalist.get("training", [])],
            "validation": [_item_id(it) for it in self.datalist.get("validation", [])],
            "testing": [_item_id(it) for it in self.datalist.get("testing", [])],
            "items": self.items,
            "ignored": self.ignored,
            "seconds": self.seconds,
            "reused_from_previous_report": self.reused,
            "facts_version": _FACTS_VERSION,
        }

    def table_lines(self, max_rows: int = _TABLE_ROWS) -> list[str]:
        """A compact table, one row per item (bad and padded items always shown, others up to ``max_rows``)."""
        header = (
            f"{'status':8} {'split':10} {'file':40} {'reader':9} {'file shape @ spacing':32} {'resampled':13} range"
        )
        lines = [header]
        shown = 0
        for it in self.items:
            notes = [n for n in it["notes"] if n["code"] != "margin_padded"]  # the usual case: JSON/markdown only
            interesting = it["reasons"] or notes
            if shown >= max_rows and not interesting:
                continue
            shown += 1
            f = next(iter(it["files"].values()))
            name = f["path"] if len(f["path"]) <= 40 else "..." + f["path"][-37:]
            rng = f"{f['min']:.4g}..{f['max']:.4g}" if f.get("min") is not None else "-"
            shape = (
                f"{_fmt_shape(f.get('spatial_shape'))} @ {_fmt_spacing(f.get('spacing'))}"
                if f.get("spatial_shape")
                else "-"
            )
            lines.append(
                f"{it['status']:8} {it['split']:10} {name:40} {_short_reader(f.get('reader')):9} {shape:32} "
                f"{_fmt_shape(f.get('resampled_shape')) if f.get('resampled_shape') else '-':13} {rng}"
            )
            for r in it["reasons"]:
                lines.append(f"{'':8} -> {r['code']}: {r['message']}")
            for n in notes:
                lines.append(f"{'':8} .. {n['code']}: {n['message']}")
        hidden = len(self.items) - shown
        if hidden > 0:
            lines.append(f"... {hidden} more fine item(s) in {REPORT_MD}")
        for ig in self.ignored:
            lines.append(f"{'ignored':8} {'':10} {ig['path']}: {ig['reason']}")
        return lines

    def to_markdown(self) -> str:
        s = self.settings
        lines = [
            "# Data check",
            "",
            f"**{self.summary}**",
            "",
            f"- split: {self.split}",
            f"- dataset: {self.dataset_reason or '-'}",
            f"- readers (MONAI tries the last first): {', '.join(s.get('readers', []))}",
            f"- resampled to {s.get('spacing')} mm ({s.get('axcodes')}); patch {s.get('patch_size')}, "
            f"crop {s.get('crop_size')}",
            f"- policies: on_bad_file={s.get('on_bad_file')}, nonfinite={s.get('nonfinite')}, "
            f"pad_small={s.get('pad_small')}",
            f"- {len(self.items)} item(s) checked in {self.seconds:.1f} s ({self.reused} file result(s) reused from "
            "the previous report)",
            "",
            "| status | split | key | file | reader | shape @ spacing | resampled | range | scaling "
            "| reasons / notes |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for it in self.items:
            for key, f in it["files"].items():
                rng = f"{f['min']:.4g} .. {f['max']:.4g}" if f.get("min") is not None else "-"
                shape = (
                    f"{_fmt_shape(f.get('spatial_shape'))} @ {_fmt_spacing(f.get('spacing'))}"
                    if f.get("spatial_shape")
                    else "-"
                )
                why = "; ".join(f"**{r['code']}**: {r['message']}" for r in it["reasons"]) or "; ".join(
                    f"{n['code']}: {n['message']}" for n in it["notes"]
                )
                lines.append(
                    f"| {it['status']} | {it['split']} | {key} | `{f['path']}` | {f.get('reader') or '-'} | {shape} | "
                    f"{_fmt_shape(f.get('resampled_shape')) if f.get('resampled_shape') else '-'} | {rng} | "
                    f"{f.get('scaling') or '-'} | {why.replace('|', '/')} |"
                )
        if self.ignored:
            lines += ["", "## Ignored (not volumes)", ""] + [f"- `{ig['path']}`: {ig['reason']}" for ig in self.ignored]
        return "\n".join(lines) + "\n"

    def write(self, output_dir: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``data_report.json`` and ``data_report.md`` into ``output_dir`` (atomically); returns both paths."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = (out / REPORT_JSON, out / REPORT_MD)
        for path, text in zip(paths, (json.dumps(self.to_dict(), indent=1, default=_json_default), self.to_markdown())):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        return paths


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return np.asarray(obj).tolist()
    return str(obj)


def _item_id(item: Mapping) -> str:
    image = item.get("image")
    return str(image[0] if isinstance(image, (list, tuple)) else image)


def _reader_name(reader) -> str:
    name = type(reader).__name__
    if getattr(reader, "nifti", True) is False:
        name += "(nifti=False)"
    return name


def _short_reader(name: str | None) -> str:
    if not name:
        return "-"
    return {"NibabelReader": "nibabel", "SimpleITKReader": "SimpleITK"}.get(name.split("(")[0], name.split("(")[0])


def _finite_stats(img: torch.Tensor) -> dict:
    finite = torch.isfinite(img)
    n_nan = int(torch.isnan(img).sum())
    n_bad = int(finite.numel() - finite.sum())
    values = img if n_bad == 0 else img[finite]
    if values.numel() == 0:
        return {"nan": n_nan, "inf": n_bad - n_nan, "min": None, "max": None, "mean": None}
    values = values.float()
    return {
        "nan": n_nan,
        "inf": n_bad - n_nan,
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }


class _Opened:
    """A reader whose ``read`` returns an object another reader already opened (so ``LoadImage`` reads no file
    twice); ``get_data`` is that reader's."""

    def __init__(self, reader, obj) -> None:
        self.reader, self.obj = reader, obj

    def read(self, data, **kwargs):
        return self.obj

    def get_data(self, img):
        return self.reader.get_data(img)


def _inspect_file(path: str, key: str, readers: Sequence, settings: Mapping, is_label: bool) -> dict:
    """Facts about one file that depend only on the file and the reading settings (reusable across runs)."""
    from monai.data import MetaTensor
    from monai.transforms import LoadImage, Orientation, Spacing

    start = time.perf_counter()
    facts: dict[str, Any] = {"path": path, "key": key, "error": None, "error_code": None}
    try:
        stat = os.stat(path)
        facts["size_bytes"], facts["mtime_ns"] = int(stat.st_size), int(stat.st_mtime_ns)
    except OSError as e:
        facts.update(error=f"no such file or folder ({type(e).__name__}: {e})", error_code="missing")
        return facts
    # the readers the pipeline uses, in LoadImage's order: the last one first, the next one when read() raises
    tried, chosen, obj = [], None, None
    for reader in list(readers)[::-1]:
        try:
            obj = reader.read(path)
        except Exception as e:  # noqa: BLE001 - every reader's refusal is reported
            tried.append(
                f"{_reader_name(reader)}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            )
            continue
        chosen = reader
        break
    if chosen is None:
        facts.update(error="no reader could open it (" + "; ".join(tried) + ")", error_code="unreadable")
        return facts
    facts["reader"] = _reader_name(chosen)
    try:  # MONAI's own LoadImage on the object already opened: decompresses and reads every voxel
        img = LoadImage(image_only=True, ensure_channel_first=True)(path, reader=_Opened(chosen, obj))
    except Exception as e:  # noqa: BLE001
        hint = " (the file is truncated or corrupt)" if isinstance(e, (EOFError, OSError, zlib.error)) else ""
        facts.update(
            error=f"{facts['reader']} could not read the voxels: {type(e).__name__}: {e}{hint}", error_code="unreadable"
        )
        return facts
    facts["dtype"] = str(getattr(obj, "get_data_dtype", lambda: img.dtype)())
    facts["channels"] = int(img.shape[0])
    facts["spatial_shape"] = [int(s) for s in img.shape[1:]]
    affine = np.asarray(img.affine, dtype=np.float64)
    nd = min(len(facts["spatial_shape"]), affine.shape[0] - 1)
    facts["spacing"] = [float(v) for v in np.sqrt((affine[:nd, :nd] ** 2).sum(0))]
    facts["affine"] = np.round(affine, 6).tolist()
    facts.update(_finite_stats(img))
    if is_label and facts["nan"] == 0 and facts["inf"] == 0:
        values = torch.unique(torch.as_tensor(img))
        facts["label_values"] = [float(v) for v in values[:_MAX_LABEL_VALUES]]
        facts["label_values_count"] = int(values.numel())
        facts["label_min"], facts["label_max"] = float(values[0]), float(values[-1])
    if len(facts["spatial_shape"]) == int(settings["spatial_dims"]):
        try:
            out = img
            if settings.get("axcodes"):
                out = Orientation(axcodes=settings["axcodes"], labels=None, lazy=True)(out)
            if settings.get("spacing"):
                out = Spacing(pixdim=settings["spacing"], mode="nearest" if is_label else "bilinear", lazy=True)(out)
            shape = out.peek_pending_shape() if isinstance(out, MetaTensor) else out.shape[1:]
            facts["resampled_shape"] = [int(s) for s in shape]
        except Exception as e:  # noqa: BLE001
            facts.update(
                error=f"cannot be resampled to {settings.get('spacing')} mm: {type(e).__name__}: {e}",
                error_code="resample",
            )
    facts["seconds"] = round(time.perf_counter() - start, 3)
    return facts


def _fingerprint(settings: Mapping) -> dict:
    return {k: settings.get(k) for k in ("readers", "axcodes", "spacing", "spatial_dims")} | {"version": _FACTS_VERSION}


def _scaling(intensity: str, modality: Any, low: float, high: float) -> str:
    """Which intensity scaling ``ScaleIntensityByModalityd(mode=intensity)`` gives a file, and why."""
    from monai_cover.transforms import looks_like_ct

    mode, modality = str(intensity).lower(), str(modality or "").strip().upper()
    names = {"ct": "CT HU window", "mri": "percentiles (MR)", "none": "none"}
    if mode != "auto":
        return f"{names.get(mode, mode)} (--intensity {mode})"
    if modality == "CT":
        return "CT HU window (modality CT)"
    if modality not in ("", "UNKNOWN"):
        return f"percentiles (modality {modality})"
    if looks_like_ct(low, high):
        return f"CT HU window (no modality; {low:.4g}..{high:.4g} looks like HU)"
    return f"percentiles (no modality; {low:.4g}..{high:.4g} is not HU-like)"


#: the most distinct label values a report keeps per file (a float image given as a label has millions)
_MAX_LABEL_VALUES = 4096


def _some(values: Sequence[float], n: int = 8) -> str:
    """``0, 1, 2, ..., 116``: the first ``n`` values, an ellipsis and the last when there are more."""
    shown = [f"{v:g}" for v in values[:n]]
    if len(values) > n:
        shown += ["...", f"{values[-1]:g}"]
    return ", ".join(shown)


def _label_values_reason(facts: Mapping, num_classes: int) -> dict | None:
    """The ``label_values`` reason for a label map whose values are not the integers ``0 .. num_classes - 1``:
    how many distinct values are outside, which (first few), and the file's minimum, maximum and count."""
    values, count = facts["label_values"], int(facts.get("label_values_count", len(facts["label_values"])))
    low, high = facts.get("label_min", values[0]), facts.get("label_max", values[-1])
    bad = [v for v in values if v != int(v) or not 0 <= v < num_classes]
    if not bad:
        return None
    kept = "" if count <= len(values) else f" (the first {len(values)} kept)"
    return {"code": "label_values", "message": (
        f"{len(bad)} of its {count} distinct label values are not class indices 0..{num_classes - 1} (--num_classes "
        f"{num_classes}): {_some(bad)}; values in the file: min {low:g}, max {high:g}, {count} distinct: "
        f"{_some(values)}{kept}. Set --num_classes {int(high) + 1} if the values are classes, or map them "
        "to 0..num_classes-1")}  # fmt: skip


def _judge_file(
    facts: Mapping, settings: Mapping, is_label: bool, pad: bool, channels: int | None = None
) -> tuple[list[dict], list[dict], dict]:
    """Reasons not to train on a file, notes, and sizes (padded shape, padding fraction, estimated bytes)."""
    reasons, notes, sizes = [], [], {}
    if facts.get("error"):
        reasons.append({"code": facts["error_code"], "message": facts["error"]})
        return reasons, notes, sizes
    nd, shape = int(settings["spatial_dims"]), facts["spatial_shape"]
    slicing = settings.get("slice_volumes")
    if nd == 2 and len(shape) > 2:  # a single-frame DICOM or one-slice NIfTI is X x Y x 1: a 2-D image
        shape = _squeeze_shape(shape, 2)
    if nd == 2 and len(shape) == 3 and slicing in ("auto", "always"):
        notes.append({"code": "sliced", "message": (
            f"3-D volume {_fmt_shape(shape)}: 2-D slices along axis {settings.get('slice_axis')} are drawn from it")})
        sizes["estimated_bytes"] = math.prod(shape) * (8 if is_label else 4 * max(1, facts["channels"]))
    elif len(shape) != nd:
        what = "2-D images (H x W)" if nd == 2 else f"{nd}-D volumes (H x W x D)"
        hint = " (--slice_volumes never: volumes are not sliced)" if nd == 2 and len(shape) == 3 else ""
        reasons.append({"code": f"not_{nd}d", "message": (
            f"{len(shape)}-D image of shape {_fmt_shape(shape)} with {facts['channels']} channel(s); this run needs "
            f"{what}{hint}")})  # fmt: skip
        return reasons, notes, sizes
    want = 1 if is_label else int(settings["in_channels"]) if channels is None else channels
    if facts["channels"] in (2, 3, 4) and want == 1 and settings.get("to_gray") and not is_label:
        notes.append({"code": "to_gray", "message": (
            f"{facts['channels']} channels (RGB/RGBA/grey+alpha) converted to one grey channel (0.299 R + 0.587 G + "
            "0.114 B, alpha dropped)")})  # fmt: skip
    elif facts["channels"] != want:
        reasons.append({"code": "channels", "message": (
            f"{facts['channels']} channels (or time frames) of {_fmt_shape(shape)}; expected {want} "
            "(a 4-D series? keep one frame per file, or set in_channels)")})  # fmt: skip
    if facts.get("min") is None:
        reasons.append({"code": "nonfinite", "message": "no finite voxel at all"})
    elif facts["nan"] or facts["inf"]:
        what = f"{facts['nan']} NaN and {facts['inf']} infinite voxel(s)"
        if settings["nonfinite"] == "replace" and not is_label:
            notes.append(
                {
                    "code": "nonfinite_replaced",
                    "message": f"{what}, replaced by the finite minimum/maximum (--nonfinite replace)",
                }
            )
        else:
            reasons.append({"code": "nonfinite", "message": f"{what}; fix the file, or pass --nonfinite replace"})
    elif facts["min"] == facts["max"] and not is_label:
        notes.append({"code": "constant", "message": f"every voxel is {facts['min']:.4g}"})
    if is_label and facts.get("label_values") is not None and settings.get("num_classes"):
        reason = _label_values_reason(facts, int(settings["num_classes"]))
        if reason:
            reasons.append(reason)
    resampled = facts.get("resampled_shape")
    patch, crop = settings.get("patch_size"), settings.get("crop_size")
    if resampled and patch:
        if any(r < p for r, p in zip(resampled, patch)):
            keep = [min(r, c) / c for r, c in zip(resampled, crop)]
            padding = 1.0 - math.prod(keep)
            msg = (f"{_fmt_shape(resampled)} voxels after resampling to {_fmt_spacing(settings.get('spacing'))} "
                   f"(file: {_fmt_shape(shape)} at {_fmt_spacing(facts['spacing'])}), smaller than the patch "
                   f"{_fmt_shape(patch)} (padding it makes {padding:.1%} of each {_fmt_shape(crop)} crop "
                   "zeros)")  # fmt: skip
            if pad:
                notes.append({"code": "padded", "message": msg + " (padding asked for)"})
            else:
                reasons.append({"code": "too_small", "message": msg + (
                    ". Use a smaller --patch_size or --spacing, or --pad_small true to pad it")})  # fmt: skip
        elif any(r < c for r, c in zip(resampled, crop)):
            notes.append({"code": "margin_padded", "message": (
                f"{_fmt_shape(resampled)} after resampling, padded to the {_fmt_shape(crop)} crop "
                f"(margin x patch)")})  # fmt: skip
        padded = [max(r, c) for r, c in zip(resampled, crop)]
        sizes["padded_shape"] = padded
        sizes["estimated_bytes"] = math.prod(padded) * (8 if is_label else 4 * max(1, facts["channels"]))
    elif resampled:
        sizes["estimated_bytes"] = math.prod(resampled) * (8 if is_label else 4 * max(1, facts["channels"]))
    return reasons, notes, sizes


def _squeeze_shape(shape: Sequence[int], nd: int) -> list[int]:
    """``shape`` without trailing size-1 axes beyond ``nd`` (as :py:class:`~monai_cover.transforms.SqueezeSpatiald`)."""
    shape = list(shape)
    while len(shape) > nd and shape[-1] == 1:
        shape.pop()
    return shape


def _grid_reasons(image: Mapping, label: Mapping) -> list[dict]:
    if image.get("error") or label.get("error") or not image.get("spatial_shape") or not label.get("spatial_shape"):
        return []
    if image["spatial_shape"] != label["spatial_shape"]:
        return [{"code": "label_grid", "message": (
            f"label {_fmt_shape(label['spatial_shape'])} and image {_fmt_shape(image['spatial_shape'])} differ in "
            "shape")}]  # fmt: skip
    a, b = np.asarray(image["affine"]), np.asarray(label["affine"])
    if not np.allclose(a, b, atol=1e-3 * max(1.0, float(np.abs(a).max()))):
        return [{"code": "label_grid", "message": "label and image have the same shape but different affines (grids)"}]
    return []


def _refuse_volumes_among_images(items: list[dict], image_keys: Sequence[str]) -> None:
    """``slice_volumes="auto"``: when some items are 2-D images, each 3-D volume among them is a bad file."""

    def is_volume(item):
        f = next((item["files"][k] for k in image_keys if k in item["files"]), None)
        return f is not None and any(n["code"] == "sliced" for n in item["notes"])

    volumes = [it for it in items if is_volume(it)]
    images = [it for it in items if not it["reasons"] and not is_volume(it)]
    if not volumes or not images:
        return
    for it in volumes:
        f = next(it["files"][k] for k in image_keys if k in it["files"])
        it["notes"] = [n for n in it["notes"] if n["code"] != "sliced"]
        it["reasons"].append({"code": "volume_among_images", "message": (
            f"a 3-D volume ({_fmt_shape(_squeeze_shape(f['spatial_shape'], 2))}) among 2-D images; pass "
            "--slice_volumes always to train on its slices too, or remove it")})  # fmt: skip
        it["status"] = "bad"


def _load_previous(output_dir: str | os.PathLike | None, fingerprint: Mapping) -> dict:
    if not output_dir:
        return {}
    path = Path(output_dir) / REPORT_JSON
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if previous.get("facts_version") != _FACTS_VERSION or _fingerprint(previous.get("settings", {})) != dict(
        fingerprint
    ):
        return {}
    facts = {}
    for item in previous.get("items", []):
        for key, f in item.get("files", {}).items():
            if "size_bytes" in f:  # a missing file is looked for again
                facts[(f["path"], key)] = {k: v for k, v in f.items() if k not in _JUDGED}
    return facts


def _gather(results: list, world: int) -> list:
    if world == 1:
        return results
    gathered: list = [None] * world
    torch.distributed.all_gather_object(gathered, results)
    return [r for part in gathered for r in part]


def check_datalist(
    datalist: Mapping,
    keys: str | Sequence[str] = "image",
    label_key: str | None = None,
    readers: Sequence | None = None,
    spatial_dims: int = 3,
    in_channels: int = 1,
    spacing: Sequence[float] | None = None,
    axcodes: str | None = "RAS",
    patch_size: Sequence[int] | None = None,
    crop_size: Sequence[int] | None = None,
    pad_small: bool = False,
    on_bad_file: str = "error",
    nonfinite: str = "error",
    num_classes: int | None = None,
    dataset_type: str | None = None,
    memory_budget_gb: float = 0.0,
    cache_rate: float = 1.0,
    output_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    reuse: bool = True,
    verbose: bool = True,
    slice_volumes: str | None = None,
    slice_axis: int = 2,
    to_gray: bool = False,
    intensity: str | None = None,
) -> DataReport:
    """Read and check every file of ``datalist`` before training (see the module docstring).

    Args:
        datalist: ``{"training": [...], "validation": [...]}`` as from :py:func:`~monai_cover.data.get_datalist`
            (its ``info`` supplies the ignored files and how the split was made).
        keys: item keys holding images (each item's files are read under each key).
        label_key: item key holding a label map (checked against ``num_classes`` and the image's grid).
        readers: the ``LoadImage`` reader list of the pipeline, in the same order (default
            :py:func:`~monai_cover.data.volume_readers`).
        spatial_dims, in_channels: what every image must have.
        spacing, axcodes: the pipeline's ``Spacing`` (mm) and ``Orientation``; ``None`` skips them.
        patch_size: the smallest size (voxels, after resampling) a volume may have without padding.
        crop_size: what the pipeline pads to (default ``patch_size``).
        pad_small: pad volumes smaller than ``patch_size`` instead of refusing them (an item may ask with
            ``"pad": true``; the key is removed from the returned items).
        on_bad_file: ``"error"`` (raise :py:class:`DataCheckError` naming every bad file) or ``"skip"``.
        nonfinite: ``"error"`` (NaN/inf is a bad file) or ``"replace"`` (allowed; the pipeline's
            :py:class:`~monai_cover.data.CheckFinited` replaces them).
        num_classes: label values must lie in ``0 .. num_classes - 1``.
        dataset_type, memory_budget_gb, cache_rate: when ``dataset_type`` is given, the dataset is chosen with
            :py:func:`choose_dataset_type` and reported.
        output_dir: where ``data_report.json``/``.md`` are written (rank 0), and read back for reuse.
        num_workers: threads reading files (0: one at a time).
        reuse: take the results of unchanged files from the previous ``data_report.json``.
        verbose: log the table and the summary (rank 0).
        slice_volumes: 2-D runs (``spatial_dims=2``) only, what a 3-D volume is: ``"auto"`` (slices are drawn from
            it when the data holds no 2-D image; a volume among 2-D images is a bad file, ``volume_among_images``,
            except in the embedded demo, which mixes radiographs and volumes' slices on purpose),
            ``"always"`` (2-D images and volumes' slices together) or ``"never"`` (every volume is a bad file).
            An ``X x Y x 1`` file (single-frame DICOM) is a 2-D image.
        slice_axis: the axis the slices are taken along (reported).
        to_gray: 2, 3 or 4 channels are accepted when ``in_channels`` is 1 (converted to grey by the pipeline's
            :py:class:`~monai_cover.transforms.ToGrayscaled`; reported as a note).
        intensity: the pipeline's ``ScaleIntensityByModalityd`` mode: each image file's ``scaling`` (which one it
            gets, and why: its modality, or in ``auto`` mode without one, whether its range looks like HU) is
            written in the report. ``None``: not reported.

    Returns:
        a :py:class:`DataReport`; ``report.datalist`` is what to train and validate on.

    Raises:
        DataCheckError: bad files with ``on_bad_file="error"`` (after writing the report), or no usable training
            volume.
        ValueError: an unknown policy.
    """
    from monai_cover.data.finite import NONFINITE_POLICIES
    from monai_cover.data.readers import volume_readers

    start = time.perf_counter()
    on_bad_file, nonfinite = str(on_bad_file).lower(), str(nonfinite).lower()
    if on_bad_file not in ON_BAD_FILE:
        raise ValueError(f"on_bad_file must be one of {ON_BAD_FILE}, got {on_bad_file!r}.")
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}.")
    image_keys = [keys] if isinstance(keys, str) else list(keys)
    readers = list(readers) if readers is not None else volume_readers()
    patch = [int(p) for p in patch_size] if patch_size is not None else None
    crop = [int(c) for c in crop_size] if crop_size is not None else patch
    settings = {
        "readers": [_reader_name(r) for r in readers],
        "axcodes": axcodes,
        "spacing": [float(s) for s in spacing] if spacing is not None else None,
        "spatial_dims": int(spatial_dims),
        "in_channels": int(in_channels),
        "patch_size": patch,
        "crop_size": crop,
        "pad_small": bool(pad_small),
        "on_bad_file": on_bad_file,
        "nonfinite": nonfinite,
        "num_classes": int(num_classes) if num_classes else None,
        "keys": image_keys,
        "label_key": label_key,
    }
    if int(spatial_dims) == 2:
        slice_volumes = str(slice_volumes or "auto").lower()
        if slice_volumes not in SLICE_VOLUMES:
            raise ValueError(f"slice_volumes must be one of {SLICE_VOLUMES}, got {slice_volumes!r}.")
        settings.update(slice_volumes=slice_volumes, slice_axis=int(slice_axis), to_gray=bool(to_gray))
    info = dict(datalist.get("info", {}))
    entries = [("training", dict(it)) for it in datalist.get("training", [])]
    entries += [("validation", dict(it)) for it in datalist.get("validation", [])]
    entries += [("testing", dict(it)) for it in datalist.get("testing", [])]
    previous = _load_previous(output_dir, _fingerprint(settings)) if reuse else {}

    jobs = []  # (entry index, key, path, is_label)
    for i, (_, item) in enumerate(entries):
        for key in image_keys + ([label_key] if label_key else []):
            if key not in item:
                continue
            value = item[key]
            if isinstance(value, (list, tuple)) and len(value) > 1:  # files stacked as channels: each one checked
                jobs += [(i, f"{key}[{j}]", str(v), key == label_key) for j, v in enumerate(value)]
            else:
                jobs.append((i, key, str(value[0] if isinstance(value, (list, tuple)) else value), key == label_key))
    rank, world = _rank_world()
    reused = 0

    def run(job):
        _, key, path, is_label = job
        old = previous.get((path, key))
        if old is not None:
            try:
                stat = os.stat(path)
                if int(stat.st_size) == old.get("size_bytes") and int(stat.st_mtime_ns) == old.get("mtime_ns"):
                    return dict(old, reused=True)
            except OSError:
                pass
        return _inspect_file(path, key, readers, settings, is_label)

    mine = jobs[rank::world] if world > 1 else jobs
    if num_workers and int(num_workers) > 0 and len(mine) > 1:
        with ThreadPoolExecutor(max_workers=int(num_workers)) as pool:
            results = list(pool.map(run, mine))
    else:
        results = [run(job) for job in mine]
    results = _gather(list(zip(range(rank, len(jobs), world) if world > 1 else range(len(jobs)), results)), world)
    facts_by_job = {idx: facts for idx, facts in results}

    items: list[dict] = []
    per_entry: dict[int, dict] = {}
    for j, (i, key, _, _) in enumerate(jobs):
        per_entry.setdefault(i, {})[key] = facts_by_job[j]
    estimated = {}
    for i, (split, item) in enumerate(entries):
        files = per_entry.get(i, {})
        pad = bool(pad_small) or bool(item.pop("pad", False))
        reasons, notes, est = [], [], 0
        for key, facts in files.items():
            reused += int(bool(facts.pop("reused", False)))
            part = "[" in key  # one of several files stacked as channels: one channel each
            r, n, sizes = _judge_file(facts, settings, key.split("[")[0] == label_key, pad, 1 if part else None)
            facts.update(sizes)
            reasons += [dict(x, message=f"{key}: {x['message']}", path=facts.get("path")) if len(files) > 1 else
                        dict(x, path=facts.get("path")) for x in r]  # fmt: skip
            notes += n
            est += sizes.get("estimated_bytes", 0)
        if intensity:
            for key, facts in files.items():
                if key.split("[")[0] != label_key and facts.get("min") is not None:
                    facts["scaling"] = _scaling(intensity, item.get("modality"), facts["min"], facts["max"])
        if label_key and label_key in files:
            for key in image_keys:
                if key in files:
                    reasons += _grid_reasons(files[key], files[label_key])
        estimated[i] = est
        items.append({"split": split, "status": "bad" if reasons else "ok", "reasons": reasons, "notes": notes,
                      "files": files, "name": item.get("name", Path(_item_id(item)).name)})  # fmt: skip
        entries[i] = (split, item)

    if settings.get("slice_volumes") == "auto" and info.get("source") != "demo":  # the 2-D demo mixes on purpose
        _refuse_volumes_among_images(items, image_keys)
    report = DataReport(items=items, ignored=list(info.get("ignored", [])), settings=settings, reused=reused)
    good = [i for i, it in enumerate(items) if not it["reasons"]]
    if on_bad_file == "skip":
        for it in items:
            if it["reasons"]:
                it["status"] = "skipped"
    train = [entries[i][1] for i in good if entries[i][0] == "training"]
    val = [entries[i][1] for i in good if entries[i][0] == "validation"]
    test = [entries[i][1] for i in good if entries[i][0] == "testing"]
    split_note = info.get("split", "")
    if info.get("split_kind") == "val_fraction" and len(good) < len(items):
        from monai_cover.data.datalist import split_datalist

        resplit = split_datalist(train + val, float(info.get("val_fraction", 0.2)))
        train, val = resplit["training"], resplit["validation"]
        split_note = (f"no validation list: the last {len(val)} of the {len(train) + len(val)} usable volume(s) "
                      f"held out for validation (val_fraction {info.get('val_fraction', 0.2)}; --val_fraction 0 "
                      "trains on all)")  # fmt: skip
        good_ids = {id(x) for x in train}
        for i in good:
            items[i]["split"] = "training" if id(entries[i][1]) in good_ids else "validation"
    report.datalist = {"training": train, "validation": val, "info": info}
    if "testing" in datalist:
        report.datalist["testing"] = test
    report.split = split_note
    report.estimated_bytes = float(sum(estimated[i] for i in good))
    if dataset_type is not None:
        report.dataset_type, report.dataset_reason = choose_dataset_type(
            report.estimated_bytes, dataset_type, memory_budget_gb, cache_rate
        )
    counts = Counter(r["code"] for it in items for r in it["reasons"])
    why = f" ({', '.join(f'{n} {code}' for code, n in sorted(counts.items()))})" if counts else ""
    skipped = sum(it["status"] == "skipped" for it in items)
    ignored = f"; {len(report.ignored)} other file(s) ignored (not volumes)" if report.ignored else ""
    if on_bad_file == "error" and report.bad:
        report.summary = (f"found {len(items)}, {len(report.bad)} bad{why}: not training (--on_bad_file error)"
                          f"{ignored}")  # fmt: skip
    else:
        using = f"training on {len(train)}, validating on {len(val)}" if len(items) > len(test) else ""
        using += (", " if using else "") + f"inferring on {len(test)}" if "testing" in datalist else ""
        report.summary = f"found {len(items)}, {using}, skipped {skipped}{why}{ignored}"
    report.seconds = time.perf_counter() - start
    if rank == 0:
        if output_dir:
            report.write(output_dir)
        if verbose:
            for line in report.table_lines():
                logger.info("data check | %s", line)
            logger.info("data check | split: %s", report.split)
            if report.dataset_reason:
                logger.info("data check | dataset: %s", report.dataset_reason)
            level = logging.WARNING if skipped else logging.INFO
            logger.log(level, "data check | %s", report.summary)
    if on_bad_file == "error" and report.bad:
        lines = [f"{len(report.bad)} of {len(items)} data item(s) cannot be trained on (--on_bad_file error):"]
        for it in report.bad:
            first = next(iter(it["files"].values()))["path"] if it["files"] else "?"
            by_file: dict[str, list[str]] = {}
            for r in it["reasons"]:  # each reason under the file it is about (a label's under the label file)
                by_file.setdefault(r.get("path") or first, []).append(f"{r['code']}: {r['message']}")
            lines += [f"  {path}: " + "; ".join(why) for path, why in by_file.items()]
        where = f" Details: {Path(output_dir) / REPORT_MD}." if output_dir else ""
        lines.append(f"Fix or remove them, or pass --on_bad_file skip to train without them.{where}")
        raise DataCheckError("\n".join(lines))
    if datalist.get("training") and not train or datalist.get("testing") and not test:
        raise DataCheckError(f"no usable volume left: {report.summary}.")
    if report.dataset_type == "persistent" and output_dir:
        _check_cache_space(report.estimated_bytes, Path(output_dir))
    return report


def _check_cache_space(estimated_bytes: float, output_dir: Path) -> None:
    """Refuse a ``PersistentDataset`` cache that would not fit on the output folder's disk (it is written under
    ``output_dir/cache`` during the first epoch; a full disk then ends the run halfway)."""
    import shutil

    folder = output_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if estimated_bytes > 0.9 * free:
        gb = 1024**3
        raise DataCheckError(
            f"the on-disk cache (PersistentDataset) would take about {estimated_bytes / gb:.1f} GB under "
            f"{output_dir / 'cache'}, but its disk has {free / gb:.1f} GB free: choose an --output_dir on a larger "
            "disk, or a smaller --patch_size/--spacing (coarser spacing, fewer voxels), or --dataset_type cache with "
            "--cache_rate below 1 (the rest is loaded every epoch)."
        )
