# SPDX-License-Identifier: Apache-2.0
"""Make a finished run's output folder a complete bundle."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from monai_cover.bundle.distributed import is_rank_zero

__all__ = ["export_bundle"]

_BUNDLE_FILES = ("configs", "docs", "LICENSE")


def export_bundle(
    bundle_root: str | os.PathLike, output_dir: str | os.PathLike, files: Sequence[str] = _BUNDLE_FILES
) -> str:
    """Copy the bundle's ``configs/``, ``docs/`` and ``LICENSE`` into ``output_dir``, so that the run's
    output (which gets ``models/model.pt``) is a complete bundle that ``monai.bundle.load`` and
    :py:func:`monai_cover.load_pretrained` accept. Nothing is written into ``bundle_root``; only rank 0
    copies; copying a folder onto itself is skipped. Returns ``output_dir``.
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
    return str(output_dir)
