# SPDX-License-Identifier: Apache-2.0
"""Where the shipped bundles are."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["bundles_dir", "bundle_path"]


def bundles_dir() -> Path:
    """The ``bundles/`` folder of a source checkout (next to the ``monai_cover`` package).

    Raises:
        FileNotFoundError: when ``monai_cover`` is installed without the bundles (a wheel):
            clone the repository to get them.
    """
    here = Path(__file__).resolve().parents[2] / "bundles"
    if here.is_dir():
        return here
    raise FileNotFoundError(
        f"no bundles folder at {here}: the bundles ship with the source repository, not inside the wheel."
    )


def bundle_path(name: str = "cover_pretrain_3d") -> Path:
    """Folder of one shipped bundle, e.g. ``bundle_path("cover_finetune_3d")``."""
    path = bundles_dir() / name
    if not (path / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"no bundle {name!r} in {bundles_dir()} (found {sorted(os.listdir(bundles_dir()))}).")
    return path
