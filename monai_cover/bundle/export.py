# SPDX-License-Identifier: Apache-2.0
"""Make a finished run's output folder a complete bundle."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from monai_cover.bundle.distributed import is_rank_zero

__all__ = ["export_bundle"]

_BUNDLE_FILES = ("configs", "docs", "LICENSE")


def export_bundle(
    bundle_root: str | os.PathLike,
    output_dir: str | os.PathLike,
    files: Sequence[str] = _BUNDLE_FILES,
    config_files: Sequence[str | os.PathLike] | None = None,
) -> str:
    """Copy the bundle's ``configs/``, ``docs/`` and ``LICENSE`` into ``output_dir``, so that the run's
    output (which gets ``models/model.pt``) is a complete bundle that ``monai.bundle.load`` and
    :py:func:`monai_cover.load_pretrained` accept. Nothing is written into ``bundle_root``; only rank 0
    copies; copying a folder onto itself is skipped. Returns ``output_dir``.

    A bundle whose ``configs/train.json`` is an override of another bundle's (the 2-D bundles over the 3-D ones)
    is not complete on its own: when the run's config files (``config_files``; default: the ``--config_file`` list
    of this process's ``monai.bundle run`` command line) include ``bundle_root/configs/train.json`` and files from
    outside ``bundle_root``, ``output_dir/configs/train.json`` is written as the merge of those files up to and
    including it (MONAI's ``ConfigParser.load_config_files``: the configuration that ran, less the command-line
    overrides), and the override itself as ``configs/train_override.json``.
    """
    src, dst = Path(bundle_root).resolve(), Path(output_dir).resolve()
    if src == dst or not is_rank_zero() or not (src / "configs" / "metadata.json").is_file():
        return str(output_dir)  # same folder, another rank, or bundle_root is not a bundle (e.g. the default ".")
    dst.mkdir(parents=True, exist_ok=True)
    for name in files:
        item = src / name
        if item.is_dir():
            shutil.copytree(item, dst / name, dirs_exist_ok=True)
        elif item.is_file():
            shutil.copy2(item, dst / name)
    _write_merged_train(src, dst, config_files)
    return str(output_dir)


def _write_merged_train(src: Path, dst: Path, config_files: Sequence[str | os.PathLike] | None) -> None:
    if config_files is None:
        from monai_cover.bundle.overrides import command_line_config_files

        config_files = command_line_config_files()
    paths = [Path(c).resolve() for c in config_files]
    train = (src / "configs" / "train.json").resolve()
    if train not in paths:
        return
    used = paths[: paths.index(train) + 1]
    if all(src in p.parents for p in used):
        return  # the bundle's own files only (e.g. train.json + multi_gpu_train.json): copied as they are
    from monai.bundle import ConfigParser

    merged = ConfigParser.load_config_files([str(p) for p in used])
    out = dst / "configs"
    shutil.copy2(train, out / "train_override.json")
    tmp = out / f".train.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(merged, indent=4) + "\n", encoding="utf-8")
    os.replace(tmp, out / "train.json")
