# SPDX-License-Identifier: Apache-2.0
"""build_backbone: stock MONAI networks by name, and their default COVER pyramids (coarse to fine, finest at full
resolution, the stock network's keys)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNETR, BasicUNet, SegResNet, SwinUNETR, UNet

from monai_cover.networks import BACKBONE_LEVELS, BACKBONES, FeaturePyramid, build_backbone
from monai_cover.networks.nets import CoverNet

FEATURES = (8, 8, 16, 16, 32, 8)
SMALL_VIT = {"hidden_size": 48, "mlp_dim": 96, "num_heads": 4}


@pytest.mark.parametrize(
    "name, cls, kwargs, layers, channels, divisible",
    [
        ("basic_unet", BasicUNet, {}, ("down_4", "upcat_4", "upcat_3", "upcat_2", "upcat_1"), (32, 16, 16, 8, 8), 16),
        ("unet", UNet, {}, ("model.1.submodule.1.submodule.1.submodule.1.submodule", "model.1.submodule.1.submodule.1."
                            "submodule", "model.1.submodule.1.submodule", "model.1.submodule", "model.2"),
         (32, 16, 16, 8, 8), (16, 16, 16)),
        ("segresnet", SegResNet, {}, ("down_layers.3", "up_layers.0", "up_layers.1", "up_layers.2"), (64, 32, 16, 8),
         8),
        ("unetr", UNETR, SMALL_VIT, ("decoder5", "decoder4", "decoder3", "decoder2"), (32, 16, 8, 4), 16),
    ],
)
def test_default_pyramids(name, cls, kwargs, layers, channels, divisible):
    out_channels = FEATURES[-1] if name == "unet" else 2
    net = build_backbone(name, 3, 1, out_channels, FEATURES, img_size=(32, 32, 32), **kwargs)
    assert type(net) is cls
    pyramid = FeaturePyramid.from_network(net)
    assert pyramid.layers == layers
    assert pyramid.out_channels == channels
    assert pyramid.size_divisible == divisible
    levels = pyramid(torch.randn(1, 1, 32, 32, 32))
    sizes = [32 // 2 ** i for i in range(len(layers))][::-1]
    if name == "unet":  # UNet's bottom block keeps its input size (stride 1)
        sizes[0] = 2
    assert [tuple(f.shape[2:]) for f in levels] == [(s, s, s) for s in sizes]
    assert [f.shape[1] for f in levels] == list(channels)
    assert list(pyramid.state_dict()) == list(net.state_dict())  # the stock network's keys
    out = CoverNet(pyramid, levels=3, radius=2)(torch.randn(1, 1, 32, 32, 32), torch.randn(1, 1, 32, 32, 32))
    assert out["ddf"].shape == (1, 3, 32, 32, 32)


def test_unet_and_segresnet_pyramids_on_odd_sizes_and_2d():
    unet = FeaturePyramid.from_network(build_backbone("unet", 2, 1, 8, FEATURES))
    levels = unet(torch.randn(1, 1, 30, 20))  # padded to multiples of 16, cropped back
    assert [tuple(f.shape[2:]) for f in levels] == [(2, 2), (4, 3), (8, 5), (15, 10), (30, 20)]
    seg = FeaturePyramid.from_network(build_backbone("segresnet", 3, 1, 2, FEATURES))
    assert [tuple(f.shape[2:]) for f in seg(torch.randn(1, 1, 30, 32, 20))][-1] == (30, 32, 20)


def test_swinunetr_v2():
    net = build_backbone("swinunetr", 3, 1, 2, FEATURES, feature_size=12)
    assert isinstance(net, SwinUNETR) and net.swinViT.use_v2
    pyramid = FeaturePyramid.from_network(net)
    assert pyramid.out_channels == (96, 48, 24, 12, 12) and pyramid.size_divisible == 32


def test_build_backbone_errors():
    with pytest.raises(ValueError, match="unknown backbone 'vnet'; known: .*'segresnet'"):
        build_backbone("vnet")
    with pytest.raises(ValueError, match="unetr needs img_size \\(the patch size, 3 values\\), got None"):
        build_backbone("unetr", 3, 1, 2, FEATURES)
    with pytest.raises(ValueError, match="six widths"):
        build_backbone("unet", features=(8, 16))
    assert sorted(BACKBONES) == ["basic_unet", "segresnet", "swinunetr", "unet", "unetr"]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_levels_match_the_pyramids(name):
    kwargs = SMALL_VIT if name == "unetr" else {}
    net = build_backbone(name, 3, 1, 8, FEATURES, img_size=(32, 32, 32), **kwargs)
    assert BACKBONE_LEVELS[name] == FeaturePyramid.from_network(net).levels


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_finest_level_network_equals_the_pyramids_finest_level(name):
    from monai_cover.networks import Bypassed, finest_level_network

    kwargs = SMALL_VIT if name == "unetr" else {"feature_size": 12} if name == "swinunetr" else {}
    torch.manual_seed(0)
    net = build_backbone(name, 3, 1, 8, FEATURES, img_size=(64, 64, 64), **kwargs).eval()
    x = torch.randn(1, 1, 64, 64, 64)
    extractor = finest_level_network(net)
    assert list(extractor.state_dict()) == list(net.state_dict())  # weights files load strictly
    extractor.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(extractor(x), FeaturePyramid.from_network(net)(x)[-1])
        assert net(x).shape[1] == 8  # the original keeps its head
    assert (name == "unet") != any(isinstance(m, Bypassed) for m in extractor.modules())
    if name != "swinunetr":  # MONAI's SwinUNETR itself does not script
        with torch.no_grad():
            torch.testing.assert_close(torch.jit.script(extractor)(x), extractor(x))


def test_finest_level_network_refuses_unknown_networks():
    from monai_cover.networks import finest_level_network

    with pytest.raises(TypeError, match="no known task head for Conv3d; use monai_cover.networks.FeatureLevel"):
        finest_level_network(torch.nn.Conv3d(1, 2, 3))
