# SPDX-License-Identifier: Apache-2.0
"""The cover_pretrain_3d config parsed with ``monai.bundle.ConfigParser`` and CLI-style overrides (no training):
the views' ``max_displacement`` follows the head's capture range, ``--method NAME`` alone resolves each method's
network, loss and transform, and the per-method settings live in ``monai_cover.methods``, not in the config."""

from __future__ import annotations

import json
import re
import warnings

import pytest
from conftest import PRETRAIN, TINY_FEATURES

CONFIG = PRETRAIN / "configs" / "train.json"


def _parser(**overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser.read_config(str(CONFIG))
    parser.update({"bundle_root": str(PRETRAIN), "features": json.loads(TINY_FEATURES), **overrides})
    return parser


def _bounds(parser) -> tuple[float, float, float]:
    """``max_displacement`` and the bound of the training and the validation pair transforms."""
    train_pair = parser.get_parsed_content("train#pair_transform")
    val_pair = parser.get_parsed_content("validate#random_transforms")[-1]
    assert type(val_pair) is type(train_pair) and val_pair is not train_pair  # same definition, own random state
    return (
        parser.get_parsed_content("max_displacement"),
        train_pair.pair.max_displacement,
        val_pair.pair.max_displacement,
    )


def _strictly_checked(key: str, value: str):
    """The value the bundle's strict override check gives ``--key value`` on the real command line."""
    from monai_cover.bundle import check_overrides

    argv = ["/site-packages/monai/bundle/__main__.py", "run", "--config_file", str(CONFIG),
            "--bundle_root", str(PRETRAIN), f"--{key}", value]
    checks = json.loads(CONFIG.read_text(encoding="utf-8"))["override_checks"]
    return check_overrides(checks, argv=argv)[key]


def _widths(head) -> list[int]:
    """Output widths of the linear layers of a projection head."""
    return [m.out_features for m in head.mlp if hasattr(m, "out_features")]


@pytest.mark.parametrize(
    "radius, patch, levels, bound",
    [(2, [32, 32, 32], 3, 14), (3, [32, 32, 32], 2, 9), (2, [64, 64, 64], 4, 30), (2, [128, 128, 128], 5, 62),
     (3, [128, 128, 128], 4, 45)],
)
def test_levels_and_max_displacement_follow_the_crop_and_radius(radius, patch, levels, bound):
    parser = _parser(head_radius=radius, patch_size=patch)
    assert parser.get_parsed_content("head_levels") == levels
    assert _bounds(parser) == (bound, bound, bound)
    # the same reach as the CoverNet the config builds, which reads the `levels` finest pyramid levels
    cover_net = parser.get_parsed_content("cover_net")
    assert cover_net.levels == levels and cover_net.head.capture_range == bound


def test_explicit_max_displacement_wins():
    assert _bounds(_parser(head_radius=3, max_displacement=40.0)) == (40.0, 40.0, 40.0)


@pytest.mark.parametrize(
    "method, network, loss, transform",
    [
        ("cover", "CoverNet", "CoverLoss", "RandCoverPaird"),
        ("voxel_infonce", "TwoViewFeatures", "VoxelInfoNCELoss", "RandCoverPaird"),
        ("pcrlv2", "PCRLv2Net", "PCRLv2Loss", "PCRLv2Cropd"),
        ("voco", "VoCoNet", "VoCoLoss", "VoCoCropd"),
    ],
)
def test_method_override_resolves_network_loss_and_transform(method, network, loss, transform):
    parser = _parser(method=method, patch_size=[32, 32, 32])
    ssl = parser.get_parsed_content("ssl")
    assert ssl.name == method
    assert (type(ssl.network).__name__, type(ssl.loss).__name__, type(ssl.transform).__name__) == (
        network,
        loss,
        transform,
    )
    # the pipeline runs the method's transform after the crop, and the network/loss trained are the method's
    assert parser.get_parsed_content("train#random_transforms")[-1] is ssl.transform
    assert ssl.predicts_ddf == (method == "cover")
    params = {id(p) for p in parser.get_parsed_content("optimizer").param_groups[0]["params"]}
    assert {id(p) for p in ssl.parameters()} == params
    if method == "voxel_infonce":  # monai_cover.methods.method_kwargs: 1024 voxels, head 256-128
        assert ssl.loss.num_samples == 1024
        assert _widths(ssl.loss.head) == [256, 128]
    if method == "pcrlv2":  # global and local crops of patch_size, 2 local crops
        assert tuple(ssl.transform.global_size) == (32, 32, 32) and tuple(ssl.transform.local_size) == (32, 32, 32)
        assert ssl.transform.num_local == 2
    if method == "voco":  # 2x2 base grid and 2 random crops of patch_size, head 512-512-512
        assert ssl.transform.grid == (2, 2) and ssl.transform.num_random == 2
        assert tuple(ssl.transform.roi_size) == (32, 32, 32)
        assert _widths(ssl.loss.projection) == [512, 512, 512]


def test_method_kwargs_overrides_merge_with_the_defaults():
    parser = _parser(method="voxel_infonce")
    parser["method_loss_kwargs#num_samples"] = 512  # as --method_loss_kwargs#num_samples 512
    ssl = parser.get_parsed_content("ssl")
    assert ssl.loss.num_samples == 512
    assert _widths(ssl.loss.head) == [256, 128]  # the other defaults stay
    parser = _parser(method="voco", patch_size=[32, 32, 32], method_transform_kwargs={"grid": [1, 2]})
    transform = parser.get_parsed_content("train#method_transform")
    assert transform.grid == (1, 2) and transform.num_random == 2 and tuple(transform.roi_size) == (32, 32, 32)


def test_no_method_switches_in_the_config():
    text = CONFIG.read_text(encoding="utf-8")
    refs = re.findall(r'"([^"]*@method\b[^"]*)"', text)
    # the name goes to build_method / build_method_transform and to method_kwargs; nothing compares it
    assert sorted(refs) == sorted(
        [
            "@method",
            "@method",
            "$monai_cover.methods.method_kwargs(@method, @patch_size, @method_transform_kwargs, @method_loss_kwargs)",
        ]
    ), refs
    config = json.loads(text)
    assert "stop_after_epoch" not in config and "stop_handler" not in config["train"]
    assert "pretext" not in text and "bundle_utils" not in text and "diagnostics" not in text  # deprecated aliases


def test_teacher_forced_residuals_are_on_by_default_and_one_override_turns_them_off():
    import torch

    parser = _parser(patch_size=[32, 32, 32])
    net, loss = parser.get_parsed_content("cover_net"), parser.get_parsed_content("cover_loss")
    prepare = parser.get_parsed_content("cover_prepare_batch")
    assert (net.levels, net.head.teacher_forced_levels, loss.residual_weight, prepare.network_ddf) == (3, 2, 1.0, True)
    # one step of the chain the trainer runs: the true field reaches the head, the loss has the residual term
    torch.manual_seed(0)
    batch = {"view_a": torch.randn(1, 1, 32, 32, 32), "view_b": torch.randn(1, 1, 32, 32, 32),
             "ddf": torch.randn(1, 3, 32, 32, 32), "overlap": torch.ones(1, 1, 32, 32, 32)}
    inputs, targets, args, kwargs = prepare(batch)
    out = net(inputs, *args, **kwargs)  # as MONAI's SupervisedTrainer calls it
    assert len(out["residuals"]) == 2 and set(loss.terms(out, targets)) >= {"vector", "consistency", "residual"}
    # voxel InfoNCE shares the batch preparation but its network takes no field
    assert parser.get_parsed_content("ssl").prepare_batch is prepare
    infonce_parser = _parser(method="voxel_infonce", patch_size=[32, 32, 32])
    assert infonce_parser.get_parsed_content("ssl").prepare_batch.network_ddf is False
    assert infonce_parser.get_parsed_content("cover_prepare_batch").network_ddf is True  # a copy, not changed
    off = _parser(patch_size=[32, 32, 32], teacher_forced_levels=0)
    assert off.get_parsed_content("cover_net").head.teacher_forced_levels == 0
    assert off.get_parsed_content("cover_loss").residual_weight == 0.0
    assert off.get_parsed_content("cover_prepare_batch").network_ddf is False
    # a head of one level keeps it for the field: nothing to teacher-force
    assert _parser(patch_size=[16, 16, 16], head_levels=1).get_parsed_content("teacher_forced_levels") == 0


def test_infonce_beside_the_objective_is_one_documented_override():
    """``--cover_loss#infonce_weight 1.0`` (the bundle README's way to trade the tissue probes for InfoNCE's matching)
    passes the strict override check, keeps teacher forcing, and adds a finite InfoNCE term whose gradient reaches the
    backbone's finest block."""
    import torch

    assert _strictly_checked("cover_loss#infonce_weight", "1.0") == 1.0
    parser = _parser(patch_size=[32, 32, 32], **{"cover_loss#infonce_weight": 1.0})
    net, loss = parser.get_parsed_content("cover_net"), parser.get_parsed_content("cover_loss")
    assert (loss.infonce_weight, loss.residual_weight, loss.consistency_weight) == (1.0, 1.0, 1.0)
    torch.manual_seed(0)
    image = torch.randn(1, 1, 32, 32, 32)
    batch = {"view_a": image, "view_b": image.clone(), "ddf": torch.zeros(1, 3, 32, 32, 32),
             "overlap": torch.ones(1, 1, 32, 32, 32)}
    inputs, targets, args, kwargs = parser.get_parsed_content("cover_prepare_batch")(batch)
    out = net(inputs, *args, **kwargs)
    terms = loss.terms(out, targets)
    assert {"vector", "consistency", "spread", "residual", "infonce"} <= set(terms)
    assert torch.isfinite(terms["infonce"]) and terms["infonce"] > 0
    net.zero_grad()
    terms["infonce"].backward()
    unet = parser.get_parsed_content("network_def")  # the BasicUNet the COVER net wraps (same instance)
    assert any(p is q for p in unet.parameters() for q in net.parameters())
    finest = [p.grad for p in unet.upcat_1.parameters() if p.grad is not None]
    assert finest and sum(g.abs().sum().item() for g in finest) > 0


def test_wider_fine_heads_are_one_documented_override():
    """``--cover_net#num_heads 4`` (the bundle README's way to let the displacement reach every finest channel)
    passes the strict override check and gives 4 heads of 8 on every level, the finest projection 32 -> 32, with
    teacher forcing kept."""
    assert _strictly_checked("cover_net#num_heads", "4") == 4
    features = json.loads(CONFIG.read_text(encoding="utf-8"))["features"]  # the bundle's own width, 32 at the finest
    net = _parser(patch_size=[32, 32, 32], features=features, **{"cover_net#num_heads": 4}).get_parsed_content(
        "cover_net")
    assert set(net.head.num_heads) == {4} and net.head.teacher_forced_levels == 2
    assert (net.head.projections[-1].in_channels, net.head.projections[-1].out_channels) == (32, 32)
    default = _parser(patch_size=[32, 32, 32], features=features).get_parsed_content("cover_net")
    assert default.head.num_heads[-1] == 1 and default.head.projections[-1].out_channels == 8
