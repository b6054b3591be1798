# SPDX-License-Identifier: Apache-2.0
"""NnUNetPlan: plans planned by nnunetv2's own planners on a tiny dataset, networks built by its own code, and the
COVER pyramid over them."""

from __future__ import annotations

import json

import pytest
import torch
from nnunet_helpers import DATASET, fixture_nnunet_dataset, fixture_preprocessed  # noqa: F401 (fixtures)

from monai_cover.networks import FeaturePyramid
from monai_cover.networks.nets import CoverNet
from monai_cover.nnunet import NnUNetPlan, NnUNetPlanError, capture_range_for_plan, levels_for_plan


def test_plan_reads_what_nnunet_planned(preprocessed):
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text(encoding="utf-8"))
    plan = NnUNetPlan.load(preprocessed, "3d_fullres")  # the folder: nnUNetPlans.json is taken
    config = plans["configurations"]["3d_fullres"]
    assert plan.plans_file == preprocessed / "nnUNetPlans.json"
    assert plan.patch_size == config["patch_size"]
    assert plan.spacing == pytest.approx(config["spacing"])
    assert plan.spacing == pytest.approx([1.5, 1.0, 1.0])  # nnU-Net's transposed order: the 1.5 mm axis first
    assert plan.features_per_stage == config["architecture"]["arch_kwargs"]["features_per_stage"]
    assert plan.normalization_schemes == ["ZScoreNormalization"]
    assert (plan.num_input_channels, plan.num_image_channels, plan.num_segmentation_heads) == (1, 1, 2)
    assert plan.dataset_name == DATASET and plan.plans_identifier == "nnUNetPlans"
    assert plan.preprocessed_folder == preprocessed / "nnUNetPlans_3d_fullres"
    record = plan.record()
    assert record["configuration"] == "3d_fullres" and record["patch_size"] == plan.patch_size
    json.dumps(record)  # JSON-ready


@pytest.mark.parametrize(
    "plans_name, configuration, network_class",
    [("nnUNetPlans.json", "3d_fullres", "PlainConvUNet"), ("nnUNetPlans.json", "2d", "PlainConvUNet"),
     ("nnUNetResEncUNetMPlans.json", "3d_fullres", "ResidualEncoderUNet")],
)
def test_network_and_pyramid(preprocessed, plans_name, configuration, network_class):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    plan = NnUNetPlan.load(preprocessed / plans_name, configuration)
    network = plan.build_network()
    assert type(network).__name__ == network_class
    # the same keys and shapes as the network nnU-Net's trainer builds for these plans
    theirs = nnUNetTrainer.build_network_architecture(plan.plans_manager, plan.configuration_manager, 1, 2, True)
    assert {k: v.shape for k, v in network.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()}

    pyramid = FeaturePyramid.from_network(network)
    stages = len(plan.features_per_stage)
    assert pyramid.layers == (f"encoder.stages.{stages - 1}", *[f"decoder.stages.{i}" for i in range(stages - 1)])
    assert pyramid.out_channels == tuple(reversed(plan.features_per_stage))
    assert set(pyramid.state_dict()) == set(network.state_dict())

    size = [s - 3 for s in plan.patch_size]  # not a multiple of the strides: padded, then cropped back
    levels = pyramid(torch.randn(1, 1, *size))
    expected = [s for s in reversed(plan.level_sizes(size))]
    assert [list(f.shape[2:]) for f in levels] == expected
    assert [f.shape[1] for f in levels] == list(pyramid.out_channels)


def test_cover_net_trains_the_plan_network(preprocessed):
    plan = NnUNetPlan.load(preprocessed, "3d_fullres")
    levels = levels_for_plan(plan, radius=2)
    # 40^3 with strides 1,2,2,2: 40, 20, 10, 5 voxels; the head needs >= 8 voxels per axis, so 3 levels
    assert plan.level_sizes() == [[40] * 3, [20] * 3, [10] * 3, [5] * 3]
    assert levels == 3
    assert capture_range_for_plan(plan, levels, radius=2) == 2 * (1 + 2 + 4)
    net = CoverNet(FeaturePyramid.from_network(plan.build_network()), levels=levels, radius=2)
    x = torch.randn(1, 1, 32, 32, 32)
    out = net(x, x)
    assert out["ddf"].shape == (1, 3, 32, 32, 32)
    assert out["features_a"].shape == (1, plan.features_per_stage[0], 32, 32, 32)


def test_anisotropic_plan_levels_and_reach(preprocessed, tmp_path):
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text(encoding="utf-8"))
    arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    arch["strides"] = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    plans["configurations"]["3d_fullres"]["patch_size"] = [16, 64, 64]
    (tmp_path / "plans.json").write_text(json.dumps(plans), encoding="utf-8")
    plan = NnUNetPlan.load(tmp_path / "plans.json", "3d_fullres", preprocessed / "dataset.json")
    assert plan.level_sizes() == [[16, 64, 64], [16, 32, 32], [8, 16, 16], [4, 8, 8]]
    assert levels_for_plan(plan, radius=2) == 3
    # the first axis is halved once less: its reach is 2 * (1 + 1 + 2), the others 2 * (1 + 2 + 4)
    assert capture_range_for_plan(plan, 3, radius=2) == 8
    pyramid = FeaturePyramid.from_network(plan.build_network())
    assert pyramid.size_divisible == (4, 8, 8)


def test_plan_errors_name_what_is_wrong(preprocessed, tmp_path):
    with pytest.raises(NnUNetPlanError, match="no configuration '3d_lowres'.*'3d_fullres'"):
        NnUNetPlan.load(preprocessed, "3d_lowres")
    with pytest.raises(NnUNetPlanError, match="does not exist"):
        NnUNetPlan.load(tmp_path / "nope.json")
    with pytest.raises(NnUNetPlanError, match="no plans file given"):
        NnUNetPlan.load("")
    (tmp_path / "nnUNetPlans.json").write_text((preprocessed / "nnUNetPlans.json").read_text(encoding="utf-8"),
                                               encoding="utf-8")
    with pytest.raises(NnUNetPlanError, match="dataset.json.*does not exist"):
        NnUNetPlan.load(tmp_path, "3d_fullres")
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(NnUNetPlanError, match="cannot read .*broken.json"):
        NnUNetPlan.load(tmp_path / "broken.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NnUNetPlanError, match="has no plans JSON"):
        NnUNetPlan.load(empty)


def test_for_pretraining_refuses_2d_and_cascades(preprocessed, tmp_path):
    plan = NnUNetPlan.load(preprocessed, "3d_fullres")
    assert plan.for_pretraining(3) is plan
    with pytest.raises(NnUNetPlanError, match="'2d' of .* is 2-D; this pretraining is 3-D.*'3d_fullres'"):
        NnUNetPlan.load(preprocessed, "2d").for_pretraining(3)
    assert NnUNetPlan.load(preprocessed, "2d").for_pretraining(2).spatial_dims == 2
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text(encoding="utf-8"))
    plans["configurations"]["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_fullres"}
    (tmp_path / "plans.json").write_text(json.dumps(plans), encoding="utf-8")
    cascade = NnUNetPlan.load(tmp_path / "plans.json", "3d_cascade_fullres", preprocessed / "dataset.json")
    assert cascade.num_input_channels == 2  # nnU-Net feeds the previous stage's foreground label as a channel
    with pytest.raises(NnUNetPlanError, match="cascade stage.*'3d_fullres'"):
        cascade.for_pretraining(3)
