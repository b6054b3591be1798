# SPDX-License-Identifier: Apache-2.0
"""An nnU-Net plan, read and built by nnunetv2's own code: the network of one configuration, its patch size, target
spacing and normalisation, and the number of input channels and segmentation heads nnU-Net will give it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

__all__ = ["NnUNetPlan", "NnUNetPlanError", "find_plans_file"]


class NnUNetPlanError(ValueError):
    """A plans file, configuration or dataset.json that cannot describe a network (the message says which and why)."""

    user_error = True


def find_plans_file(plans: str | Path) -> Path:
    """The plans JSON named by ``plans``: the file itself, or the folder holding it (nnU-Net's preprocessed dataset
    folder, e.g. ``$nnUNet_preprocessed/Dataset001_X``), where ``nnUNetPlans.json`` is taken first, else the only
    ``*Plans.json`` in it.

    Raises:
        NnUNetPlanError: no such file, or a folder with no plans file or several.
    """
    path = Path(str(plans)).expanduser()
    if not str(plans):
        raise NnUNetPlanError("nnunet_plans: no plans file given; pass --nnunet_plans PATH (nnU-Net's plans JSON, e.g. "
                              "$nnUNet_preprocessed/Dataset001_X/nnUNetPlans.json, or that folder).")
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "nnUNetPlans.json").is_file():
            return path / "nnUNetPlans.json"
        found = sorted(path.glob("*Plans*.json"))
        if len(found) == 1:
            return found[0]
        what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise NnUNetPlanError(f"nnunet_plans: the folder {path} has {what} plans JSON files; name the file.")
    raise NnUNetPlanError(f"nnunet_plans: {path} does not exist (expected nnU-Net's plans JSON, written by "
                          "nnUNetv2_plan_and_preprocess or nnUNetv2_plan_experiment).")


def _read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise NnUNetPlanError(f"{what}: cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise NnUNetPlanError(f"{what}: {path} holds a {type(data).__name__}, expected a JSON object.")
    return data


@dataclass
class NnUNetPlan:
    """One configuration of an nnU-Net plans file, with the dataset.json it was planned from.

    Built with :py:meth:`load`. Everything is read through nnunetv2's ``PlansManager``/``ConfigurationManager``, and
    the network is built by nnunetv2's ``get_network_from_plans``, so the keys and shapes are those of the network
    ``nnUNetv2_train`` builds for the same plans.

    Attributes:
        plans_file: the plans JSON.
        configuration: its configuration name (``"3d_fullres"``, ``"2d"``, ...).
        dataset_json: the dataset.json (channels, labels, file ending).
        dataset_json_file: where it was read from.
    """

    plans_file: Path
    configuration: str
    dataset_json: dict
    dataset_json_file: Path
    plans_manager: Any = field(repr=False)
    configuration_manager: Any = field(repr=False)

    @classmethod
    def load(cls, plans: str | Path | dict, configuration: str = "3d_fullres",
             dataset_json: str | Path | None = None) -> NnUNetPlan:
        """Read a plan.

        Args:
            plans: the plans JSON, or the folder holding it (see :py:func:`find_plans_file`).
            configuration: a configuration of the plans (``"3d_fullres"``, ``"3d_lowres"``, ``"2d"``, a custom one).
            dataset_json: the dataset.json; ``None`` or ``""``: the one beside the plans file (nnU-Net copies it
                into the preprocessed dataset folder).

        Raises:
            NnUNetPlanError: a missing or unreadable file, an unknown configuration (the available ones are listed).
        """
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        plans_file = find_plans_file(plans)
        plans_dict = _read_json(plans_file, "nnunet_plans")
        if "configurations" not in plans_dict:
            raise NnUNetPlanError(
                f"nnunet_plans: {plans_file} has no 'configurations'; is it an nnU-Net v2 plans file?")
        manager = PlansManager(plans_dict)
        if configuration not in manager.available_configurations:
            raise NnUNetPlanError(f"nnunet_configuration: {plans_file} has no configuration {configuration!r}; it has "
                                  f"{manager.available_configurations}.")
        ds_file = Path(str(dataset_json)).expanduser() if dataset_json else plans_file.parent / "dataset.json"
        if not ds_file.is_file():
            raise NnUNetPlanError(f"nnunet_dataset_json: {ds_file} does not exist; nnU-Net keeps dataset.json beside "
                                  "the plans in the preprocessed dataset folder, or pass --nnunet_dataset_json PATH.")
        ds = _read_json(ds_file, "nnunet_dataset_json")
        if "channel_names" not in ds and "modality" not in ds:
            raise NnUNetPlanError(f"nnunet_dataset_json: {ds_file} has no 'channel_names' (the input channels).")
        return cls(plans_file, configuration, ds, ds_file, manager, manager.get_configuration(configuration))

    def for_pretraining(self, spatial_dims: int = 3) -> NnUNetPlan:
        """This plan, checked for a COVER pretraining of ``spatial_dims`` dimensions (the 3-D bundle: 3).

        Raises:
            NnUNetPlanError: a configuration of other dimensions (nnU-Net's ``2d`` trains on slices), or a cascade
                stage (its input holds the previous stage's labels, which unlabelled scans do not have).
        """
        if self.spatial_dims != int(spatial_dims):
            raise NnUNetPlanError(
                f"nnunet_configuration: {self.configuration!r} of {self.plans_file} is {self.spatial_dims}-D; this "
                f"pretraining is {int(spatial_dims)}-D: use a {int(spatial_dims)}-D configuration of the plans "
                f"({[c for c in self.plans_manager.available_configurations if c != self.configuration]}).")
        if self.configuration_manager.previous_stage_name is not None:
            raise NnUNetPlanError(
                f"nnunet_configuration: {self.configuration!r} is a cascade stage (its input holds the labels of "
                f"{self.configuration_manager.previous_stage_name!r}); pretrain a configuration without a previous "
                "stage.")
        return self

    # what nnU-Net's trainer gives the network
    @property
    def num_input_channels(self) -> int:
        """Input channels of the network nnU-Net builds (the image channels, plus the previous stage's labels in a
        cascade)."""
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

        return int(determine_num_input_channels(self.plans_manager, self.configuration_manager, self.dataset_json))

    @property
    def num_image_channels(self) -> int:
        """Image channels of one case (``channel_names`` of dataset.json)."""
        names = self.dataset_json.get("channel_names", self.dataset_json.get("modality"))
        return len(names)

    @property
    def num_segmentation_heads(self) -> int:
        """Output channels of the segmentation layers (nnU-Net skips these when it loads pretrained weights)."""
        if "labels" not in self.dataset_json:
            return 2
        return int(self.plans_manager.get_label_manager(self.dataset_json).num_segmentation_heads)

    # the configuration
    @property
    def patch_size(self) -> list[int]:
        return [int(s) for s in self.configuration_manager.patch_size]

    @property
    def spacing(self) -> list[float]:
        """Target spacing in mm, in nnU-Net's (transposed) axis order."""
        return [float(s) for s in self.configuration_manager.spacing]

    @property
    def spatial_dims(self) -> int:
        return len(self.patch_size)

    @property
    def normalization_schemes(self) -> list[str]:
        return list(self.configuration_manager.normalization_schemes)

    @property
    def arch_kwargs(self) -> dict:
        return dict(self.configuration_manager.network_arch_init_kwargs)

    @property
    def features_per_stage(self) -> list[int]:
        return [int(f) for f in self.arch_kwargs["features_per_stage"]]

    @property
    def strides(self) -> list[list[int]]:
        """Stride of each encoder stage, one entry per axis."""
        dims = self.spatial_dims
        return [[int(s)] * dims if isinstance(s, int) else [int(v) for v in s] for s in self.arch_kwargs["strides"]]

    @property
    def plans_identifier(self) -> str:
        return str(self.plans_manager.plans_name)

    @property
    def dataset_name(self) -> str:
        return str(self.plans_manager.dataset_name)

    @property
    def preprocessed_folder(self) -> Path:
        """Where ``nnUNetv2_preprocess`` writes this configuration's cases (it may not exist yet)."""
        return self.plans_file.parent / str(self.configuration_manager.data_identifier)

    def level_sizes(self, patch_size: list[int] | None = None) -> list[list[int]]:
        """Spatial size of each stage's output on a crop of ``patch_size`` (default: the plan's), finest first."""
        size = [int(s) for s in (patch_size or self.patch_size)]
        out = []
        for stride in self.strides:
            size = [math.ceil(s / st) for s, st in zip(size, stride)]
            out.append(size)
        return out

    def build_network(self, deep_supervision: bool = False, num_segmentation_heads: int | None = None) -> nn.Module:
        """The network ``nnUNetv2_train`` builds for this configuration, by nnunetv2's ``get_network_from_plans``
        (initialised as nnU-Net initialises it). ``deep_supervision`` changes no key or shape."""
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        cm = self.configuration_manager
        heads = self.num_segmentation_heads if num_segmentation_heads is None else int(num_segmentation_heads)
        return get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                      cm.network_arch_init_kwargs_req_import, self.num_input_channels, heads,
                                      allow_init=True, deep_supervision=deep_supervision)

    def record(self) -> dict:
        """What a pretraining on this plan is recorded with (JSON-ready)."""
        return {
            "plans_file": str(self.plans_file),
            "plans_identifier": self.plans_identifier,
            "dataset_name": self.dataset_name,
            "configuration": self.configuration,
            "network_class": self.configuration_manager.network_arch_class_name,
            "num_input_channels": self.num_input_channels,
            "patch_size": self.patch_size,
            "spacing": self.spacing,
            "normalization_schemes": self.normalization_schemes,
            "channel_names": self.dataset_json.get("channel_names", self.dataset_json.get("modality")),
        }
