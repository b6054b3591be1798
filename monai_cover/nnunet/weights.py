# SPDX-License-Identifier: Apache-2.0
"""Weights for ``nnUNetv2_train -pretrained_weights``: written in the layout nnunetv2's ``load_pretrained_weights``
reads, and checked against the network a plan builds before anyone spends GPU hours on them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from monai_cover.weights import atomic_write

from .plans import NnUNetPlan

__all__ = ["NNUNET_SKIPPED", "NnUNetWeightsCheck", "check_nnunet_weights", "compare_with_plan",
           "read_nnunet_weights", "save_nnunet_pretrained"]

#: parts of a key that nnU-Net's loader never transfers (the segmentation layers, whose classes are the target's)
NNUNET_SKIPPED = (".seg_layers.",)


def save_nnunet_pretrained(network: nn.Module, path: str | os.PathLike, record: dict | None = None) -> Path:
    """Write ``network``'s weights as nnU-Net's ``-pretrained_weights`` reads them: ``{"network_weights": state
    dict}`` (CPU tensors only, so it also loads with ``torch.load(weights_only=True)``), and ``record`` as JSON beside
    it (``<path without suffix>.json``). Both writes are atomic: a failed write leaves the previous files.

    ``network`` is the nnU-Net network itself or a :py:class:`~monai_cover.networks.FeaturePyramid` over it (same
    keys)."""
    path = Path(path)
    state = {k: v.detach().to("cpu").clone() for k, v in network.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save({"network_weights": state}, tmp))
    if record is not None:
        text = json.dumps(record, indent=4, default=str)
        atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    return path


def read_nnunet_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``network_weights`` of a file in nnU-Net's layout (ours, or an nnU-Net checkpoint), read without running
    pickled code.

    Raises:
        ValueError: a file that is missing, not a torch file, holds other pickled objects, or has no
            ``network_weights``; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file.")
    try:
        saved = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a weights file that loads without running pickled code "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200]}).") from e
    if not isinstance(saved, dict) or not isinstance(saved.get("network_weights"), dict):
        keys = list(saved)[:8] if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"{path}: has no 'network_weights' dict (nnU-Net's -pretrained_weights layout); found {keys}.")
    return saved["network_weights"]


@dataclass
class NnUNetWeightsCheck:
    """What nnU-Net's loader will do with a weights file for the network a plan builds.

    Attributes:
        transferred: keys nnU-Net loads (all but the segmentation layers).
        skipped: the network's segmentation-layer keys (nnU-Net keeps them as initialised).
        missing: network keys the file lacks (nnU-Net refuses the file).
        mismatched: ``{key: (file shape, network shape)}`` (nnU-Net refuses the file).
        unused: file keys the network does not have (ignored by nnU-Net).
    """

    weights: str
    plans: str
    configuration: str
    transferred: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """nnU-Net's ``load_pretrained_weights`` accepts the file."""
        return not self.missing and not self.mismatched

    def __str__(self) -> str:
        head = f"{self.weights} against {self.plans} ({self.configuration}):"
        lines = [head]
        if self.ok:
            lines.append(f"  compatible: nnU-Net will load {len(self.transferred)} tensors and keep its own "
                         f"{len(self.skipped)} segmentation-layer tensors ({', '.join(self.skipped[:4])}"
                         f"{', ...' if len(self.skipped) > 4 else ''}).")
        else:
            lines.append("  NOT compatible: nnUNetv2_train -pretrained_weights would stop with an assertion.")
            if self.mismatched:
                lines.append(f"  {len(self.mismatched)} tensor(s) of another shape, first ones (file vs network):")
                lines += [f"    {k}: {list(a)} vs {list(b)}" for k, (a, b) in list(self.mismatched.items())[:5]]
            if self.missing:
                lines.append(f"  {len(self.missing)} network key(s) not in the file, first ones:")
                lines += [f"    {k}" for k in self.missing[:5]]
            lines.append("  The weights were pretrained for another network: pretrain with the same plans file and "
                         "configuration as the nnU-Net training (same patch size, features and stages).")
        if self.unused:
            lines.append(f"  {len(self.unused)} key(s) of the file are not in the network and are ignored "
                         f"(first: {self.unused[0]}).")
        return "\n".join(lines)


def compare_with_plan(source: dict[str, torch.Tensor], plan: NnUNetPlan, weights: str = "") -> NnUNetWeightsCheck:
    """Compare a state dict with the network nnU-Net builds from ``plan``, key by key and shape by shape, with the
    rule of nnunetv2's ``load_pretrained_weights`` (every key but the segmentation layers must be present with the
    same shape). Builds the network on the CPU; loads nothing into it."""
    target = plan.build_network().state_dict()
    check = NnUNetWeightsCheck(weights, str(plan.plans_file), plan.configuration)
    for key, value in target.items():
        if any(s in key for s in NNUNET_SKIPPED):
            check.skipped.append(key)
        elif key not in source:
            check.missing.append(key)
        elif tuple(source[key].shape) != tuple(value.shape):
            check.mismatched[key] = (tuple(source[key].shape), tuple(value.shape))
        else:
            check.transferred.append(key)
    check.unused = [k for k in source if k not in target]
    return check


def check_nnunet_weights(weights: str | os.PathLike, plans: str | os.PathLike, configuration: str = "3d_fullres",
                         dataset_json: str | os.PathLike | None = None) -> NnUNetWeightsCheck:
    """:py:func:`compare_with_plan` for a weights file and a plan given by its files.

    Raises:
        ValueError: the weights file cannot be read (:py:func:`read_nnunet_weights`); NnUNetPlanError: the plan.
    """
    plan = NnUNetPlan.load(plans, configuration, dataset_json)
    return compare_with_plan(read_nnunet_weights(weights), plan, str(weights))
