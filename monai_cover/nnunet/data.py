# SPDX-License-Identifier: Apache-2.0
"""Data as nnU-Net sees it: cases read and preprocessed by nnunetv2's own preprocessor for a plan (its reader, crop
to non-zero, target spacing, per-channel normalisation with the dataset fingerprint), or read from the files
``nnUNetv2_preprocess`` already wrote."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import TransformBackends

from .plans import NnUNetPlan

__all__ = ["NnUNetDataError", "NnUNetDataReport", "NnUNetPreprocessd", "check_nnunet_data", "nnunet_cases"]

#: endings of the files ``nnUNetv2_preprocess`` writes per case (blosc2 since nnU-Net 2.6, numpy before)
PREPROCESSED_ENDINGS = (".b2nd", ".npz")


class NnUNetDataError(ValueError):
    """Input data that cannot be read as cases of the plan (the message names the folder or file)."""

    user_error = True


def _is_preprocessed(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and str(value).endswith(PREPROCESSED_ENDINGS)


def _case_identifier(name: str) -> str:
    """``case_000.b2nd`` -> ``case_000`` (nnU-Net's case identifier of a preprocessed file)."""
    return name[: -len(next(e for e in PREPROCESSED_ENDINGS if name.endswith(e)))]


class NnUNetPreprocessd(MapTransform):
    """Read one case and preprocess it exactly as nnU-Net does for ``plan`` (nnunetv2's own preprocessor class of the
    configuration), or load a case that ``nnUNetv2_preprocess`` already wrote.

    The value of each key is either the case's image files, one per channel in nnU-Net's channel order (a list, or a
    single path for one channel), or the path of a preprocessed case (``<folder>/<case>.b2nd`` or ``.npz``).
    It becomes a float32 ``MetaTensor`` of shape ``(C, *S)`` in nnU-Net's axis order (``transpose_forward`` applied),
    cropped to the non-zero region, at the plan's target spacing (``meta["pixdim"]``, in mm) and normalised per
    channel; ``meta["filename_or_obj"]`` is the first file.

    A 2D configuration keeps the volume (nnU-Net preprocesses 2D configurations as stacks of slices, resampled in
    plane only); its first spatial axis is the slice axis.

    Raises:
        NnUNetDataError: a file that nnU-Net's reader cannot read, or a wrong number of channels; the message names
            the file(s).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, keys: KeysCollection, plan: NnUNetPlan, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if not isinstance(plan, NnUNetPlan):
            raise TypeError(f"NnUNetPreprocessd: plan must be an NnUNetPlan, got {type(plan).__name__}.")
        self.plan = plan

    def _preprocess(self, files: list[str]) -> tuple[np.ndarray, list[float]]:
        plan = self.plan
        if len(files) != plan.num_image_channels:
            raise NnUNetDataError(f"NnUNetPreprocessd: {files} has {len(files)} file(s), the plan's dataset.json "
                                  f"({plan.dataset_json_file}) has {plan.num_image_channels} channel(s).")
        preprocessor = plan.configuration_manager.preprocessor_class(verbose=False)
        try:
            data, _, _ = preprocessor.run_case(files, None, plan.plans_manager, plan.configuration_manager,
                                               plan.dataset_json)
        except Exception as e:
            raise NnUNetDataError(f"NnUNetPreprocessd: nnU-Net could not read or preprocess {files}: "
                                  f"{type(e).__name__}: {e}") from e
        return data, plan.spacing

    def _load_preprocessed(self, path: str) -> tuple[np.ndarray, list[float]]:
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        folder, name = os.path.split(path)
        identifier = _case_identifier(name)
        try:
            dataset = infer_dataset_class(folder)(folder, identifiers=[identifier])
            data, _, _, _ = dataset.load_case(identifier)
            data = np.asarray(data[:], dtype=np.float32)
        except Exception as e:
            raise NnUNetDataError(f"NnUNetPreprocessd: cannot load the preprocessed case {path}: "
                                  f"{type(e).__name__}: {e}") from e
        return data, self.plan.spacing

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            files = [str(value)] if isinstance(value, (str, os.PathLike)) else [str(v) for v in value]
            if len(files) == 1 and _is_preprocessed(files[0]):
                array, spacing = self._load_preprocessed(files[0])
            else:
                array, spacing = self._preprocess(files)
            if not np.isfinite(array).all():
                raise NnUNetDataError(f"NnUNetPreprocessd: the preprocessed case {files} has non-finite values.")
            spatial = array.ndim - 1
            spacing = ([1.0] * (spatial - len(spacing))) + list(spacing)  # 2D plans: the slice axis
            affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
            meta = {"filename_or_obj": files[0], "nnunet_files": files, "pixdim": [1.0, *spacing, 1.0][:8]}
            d[key] = MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), affine=affine,
                                meta=meta)
        return d


def _channel_groups(files: Sequence[Path], file_ending: str, channels: int) -> list[list[str]] | None:
    """nnU-Net's naming ``<case>_<XXXX><file_ending>`` grouped into cases (channels in order), or ``None`` when not
    every file follows it."""
    pattern = re.compile(r"^(.*)_(\d{4})" + re.escape(file_ending) + r"$")
    cases: dict[str, dict[int, str]] = {}
    for f in files:
        m = pattern.match(f.name)
        if m is None:
            return None
        cases.setdefault(m.group(1), {})[int(m.group(2))] = str(f)
    groups = []
    for case, by_channel in sorted(cases.items()):
        if sorted(by_channel) != list(range(channels)):
            raise NnUNetDataError(f"case {case!r} in {files[0].parent} has channel file(s) "
                                  f"{sorted(by_channel)}; the plan's dataset.json has channels 0..{channels - 1}.")
        groups.append([by_channel[c] for c in range(channels)])
    return groups


def nnunet_cases(plan: NnUNetPlan, dataset_dir: str | os.PathLike = "") -> tuple[list[Any], str]:
    """The cases to pretrain on, each the value :py:class:`NnUNetPreprocessd` takes, and where they were found.

    ``dataset_dir`` may be
    - ``""``: the configuration's preprocessed folder beside the plans (``nnUNetv2_preprocess``'s output) when it has
      cases, else the raw dataset's ``imagesTr`` (and ``imagesTs``) under ``$nnUNet_raw``;
    - a folder of preprocessed cases (``.b2nd``/``.npz``);
    - an nnU-Net raw dataset folder (its ``imagesTr`` and ``imagesTs``);
    - any folder of scans with the dataset's ``file_ending``: named ``<case>_<XXXX><ending>`` (one file per channel),
      or any names when the plan has one channel (each file one case; unlabelled scans need not follow nnU-Net's
      naming).

    Raises:
        NnUNetDataError: nothing found; the message says where it looked.
    """
    ending = str(plan.dataset_json.get("file_ending", ".nii.gz"))
    channels = plan.num_image_channels
    looked = []

    def preprocessed(folder: Path) -> list[str]:
        if not folder.is_dir():
            return []
        return sorted(str(p) for p in folder.iterdir()
                      if _is_preprocessed(p.name) and not _case_identifier(p.name).endswith("_seg"))

    def scans(folder: Path) -> list[list[str]]:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(ending))
        if not files:
            return []
        groups = _channel_groups(files, ending, channels)
        if groups is not None:
            return groups
        if channels != 1:
            raise NnUNetDataError(f"{folder}: the plan has {channels} channels, so files must be named "
                                  f"<case>_<XXXX>{ending} (one per channel, as in nnU-Net's imagesTr); "
                                  f"e.g. {files[0].name} is not.")
        return [[str(f)] for f in files]

    if not str(dataset_dir):
        found = preprocessed(plan.preprocessed_folder)
        looked.append(str(plan.preprocessed_folder))
        if found:
            return found, f"nnU-Net's preprocessed folder {plan.preprocessed_folder}"
        raw = os.environ.get("nnUNet_raw")
        if raw:
            dataset_dir = Path(raw) / plan.dataset_name
        else:
            raise NnUNetDataError(f"no data: {plan.preprocessed_folder} has no preprocessed cases and nnUNet_raw is "
                                  "not set; run nnUNetv2_preprocess, or pass --dataset_dir (a folder of scans, the raw "
                                  "dataset folder, or a preprocessed folder).")
    folder = Path(str(dataset_dir)).expanduser()
    if not folder.is_dir():
        raise NnUNetDataError(f"dataset_dir: {folder} is not a folder.")
    found = preprocessed(folder)
    if found:
        return found, f"preprocessed cases in {folder}"
    cases: list[Any] = []
    parts = [sub for sub in ("imagesTr", "imagesTs") if (folder / sub).is_dir()]
    for sub in parts:
        cases += scans(folder / sub)
        looked.append(str(folder / sub))
    if cases:
        return cases, f"the raw dataset {folder} ({', '.join(parts)})"
    cases = scans(folder)
    looked.append(str(folder))
    if cases:
        return cases, f"scans in {folder}"
    raise NnUNetDataError(f"no cases found in {', '.join(looked)}: expected preprocessed cases (.b2nd/.npz) or scans "
                          f"ending in {ending!r} (the file_ending of {plan.dataset_json_file}).")


@dataclass
class NnUNetDataReport:
    """The cases a pretraining run reads (what the bundle's ``data_report`` gives the rest of the config).

    Attributes:
        datalist: ``{"training": [{"image": case}, ...], "validation": [...]}``.
        source: where the cases were found, in words.
        dataset_type: ``"cache"`` (preprocessed cases are kept in memory, up to ``cache_rate``).
    """

    datalist: dict
    source: str
    dataset_type: str = "cache"
    plan_record: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"source": self.source, "plan": self.plan_record,
                "training": [c["image"] for c in self.datalist["training"]],
                "validation": [c["image"] for c in self.datalist["validation"]]}


def check_nnunet_data(plan: NnUNetPlan, dataset_dir: str | os.PathLike = "", val_fraction: float = 0.2,
                      output_dir: str | os.PathLike | None = None) -> NnUNetDataReport:
    """Find the cases of ``plan`` (:py:func:`nnunet_cases`), check that their files exist and are not empty, and
    split them: the last ``round(val_fraction * n)`` cases (sorted) validate, at least one case trains. Writes
    ``data_report.json`` into ``output_dir`` when given.

    Raises:
        NnUNetDataError: no cases, a missing or empty file (named), ``val_fraction`` outside [0, 1).
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise NnUNetDataError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    cases, source = nnunet_cases(plan, dataset_dir)
    for case in cases:
        for f in [case] if isinstance(case, str) else case:
            if not os.path.isfile(f) or os.path.getsize(f) == 0:
                raise NnUNetDataError(f"{f}: {'empty file' if os.path.isfile(f) else 'no such file'}.")
    n_val = min(len(cases) - 1, int(round(float(val_fraction) * len(cases))))
    split = len(cases) - n_val
    datalist = {"training": [{"image": c} for c in cases[:split]],
                "validation": [{"image": c} for c in cases[split:]]}
    report = NnUNetDataReport(datalist, source, plan_record=plan.record())
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "data_report.json"), "w", encoding="utf-8") as f:
            json.dump(report.to_json(), f, indent=4)
    return report
