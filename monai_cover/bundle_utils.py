# SPDX-License-Identifier: Apache-2.0
"""Helpers that the bundles' configs call: where the bundles are, exporting a finished run as a
self-contained bundle folder, and a one-level view of a feature pyramid."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import json

import torch

__all__ = ["bundles_dir", "bundle_path", "export_bundle", "FeatureLevel", "is_rank_zero", "load_backbone_weights"]

_BUNDLE_FILES = ("configs", "docs", "LICENSE")


def bundles_dir() -> Path:
    """The ``bundles/`` folder of a source checkout (next to the ``monai_cover`` package).

    Raises:
        FileNotFoundError: when ``monai_cover`` is installed without the bundles (a wheel):
            clone the repository to get them.
    """
    here = Path(__file__).resolve().parent.parent / "bundles"
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


def is_rank_zero() -> bool:
    """True outside distributed runs and on global rank 0."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


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


class FeatureLevel(torch.nn.Module):
    """One level of a feature pyramid as a plain ``image -> tensor`` network (for feature extraction and
    ``verify_net_in_out``).

    Args:
        pyramid: a module returning a list/tuple of feature maps (coarse to fine), e.g.
            ``monai_cover.networks.FeaturePyramid``.
        level: index into that list; ``-1`` (default) is the finest, full-resolution map.
    """

    def __init__(self, pyramid: torch.nn.Module, level: int = -1) -> None:
        super().__init__()
        self.pyramid = pyramid
        self.level = int(level)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pyramid(x)
        return out[self.level] if isinstance(out, (list, tuple)) else out


def load_backbone_weights(
    network: torch.nn.Module,
    source,
    exclude: str | Sequence[str] | None = None,
    report_file: str | os.PathLike | None = None,
    require_all: bool = True,
    **kwargs,
):
    """:py:func:`monai_cover.load_pretrained` for a bundle's ``initialize``: load ``source`` (a pretraining
    output/bundle folder or a ``model.pt``) into ``network``, write the report as JSON to ``report_file``
    (rank 0), and with ``require_all`` raise ``RuntimeError`` unless EVERY destination key outside
    ``exclude`` was loaded (no missing, shape-mismatched or unexpected keys).

    Returns:
        the :py:class:`~monai_cover.weights.LoadReport`.
    """
    from monai_cover.weights import load_pretrained

    report = load_pretrained(network, source, exclude=exclude, **kwargs)
    if report_file is not None and is_rank_zero():
        Path(report_file).parent.mkdir(parents=True, exist_ok=True)
        content = {
            "source": report.source,
            "num_loaded": len(report.loaded),
            "num_network_keys": len(network.state_dict()),
            "loaded": report.loaded,
            "missing": report.missing,
            "unexpected": report.unexpected,
            "mismatched": {k: [list(a), list(b)] for k, (a, b) in report.mismatched.items()},
            "excluded": report.excluded,
        }
        with open(report_file, "w") as f:
            json.dump(content, f, indent=2)
    if require_all and (report.missing or report.mismatched or report.unexpected):
        raise RuntimeError(
            f"pretrained backbone weights did not load completely ({report}): missing {report.missing[:10]}, "
            f"mismatched {dict(list(report.mismatched.items())[:10])}, unexpected {report.unexpected[:10]}. "
            "Check that the fine-tuning network uses the same backbone definition (features, in_channels) "
            "as the pretraining run."
        )
    return report
