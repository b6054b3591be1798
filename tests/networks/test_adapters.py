# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import copy
import io
import unittest

import torch
import torch.nn as nn
from monai.networks.nets import BasicUNet, DynUNet, SwinUNETR

from monai_cover.networks import FeaturePyramid, default_pyramid_layers
from monai_cover.networks.nets import CoverNet

FEATURES = (4, 4, 8, 8, 16, 4)


def small_unet(dims: int = 3) -> BasicUNet:
    return BasicUNet(spatial_dims=dims, in_channels=1, out_channels=2, features=FEATURES)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(1, 6, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(6, 5, 2, stride=2)
        self.out = nn.Conv2d(5, 1, 1)

    def forward(self, x):
        return self.out(self.up(self.down(x)))


class TestFeaturePyramid(unittest.TestCase):
    def test_basic_unet_defaults(self):
        pyramid = FeaturePyramid.from_network(small_unet())
        self.assertEqual(pyramid.layers, ("down_4", "upcat_4", "upcat_3", "upcat_2", "upcat_1"))
        self.assertEqual(pyramid.out_channels, (16, 8, 8, 4, 4))
        self.assertEqual(pyramid.spatial_dims, 3)
        out = pyramid(torch.rand(2, 1, 32, 20, 36))  # padded to multiples of 16 and cropped back
        self.assertEqual([tuple(f.shape) for f in out][-1], (2, 4, 32, 20, 36))
        self.assertEqual([tuple(f.shape[2:]) for f in out[:-1]], [(2, 2, 3), (4, 3, 5), (8, 5, 9), (16, 10, 18)])
        for f, c in zip(out, pyramid.out_channels):
            self.assertEqual(f.shape[1], c)

    def test_swin_unetr_and_dynunet_defaults(self):
        swin = FeaturePyramid(SwinUNETR(in_channels=1, out_channels=2, feature_size=12, spatial_dims=2))
        self.assertEqual(swin.out_channels, (96, 48, 24, 12, 12))
        self.assertEqual(swin.size_divisible, 32)
        out = swin(torch.rand(1, 1, 20, 40))  # SwinUNETR itself needs multiples of 32
        self.assertEqual([tuple(f.shape[2:]) for f in out], [(2, 3), (3, 5), (5, 10), (10, 20), (20, 40)])
        dyn = DynUNet(
            2, 1, 2, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2], filters=[4, 8, 16]
        )
        layers, multiple = default_pyramid_layers(dyn)
        self.assertEqual(layers, ["bottleneck", "upsamples.0", "upsamples.1"])
        self.assertEqual(multiple, (4, 4))
        out = FeaturePyramid(dyn)(torch.rand(1, 1, 10, 13))
        self.assertEqual([tuple(f.shape) for f in out], [(1, 16, 3, 4), (1, 8, 5, 7), (1, 4, 10, 13)])

    def test_explicit_layers(self):
        pyramid = FeaturePyramid(TinyNet(), layers=["down", "up"], size_divisible=2)
        self.assertEqual((pyramid.out_channels, pyramid.spatial_dims), ((6, 5), 2))
        out = pyramid(torch.rand(3, 1, 8, 9))
        self.assertEqual([tuple(f.shape) for f in out], [(3, 6, 4, 5), (3, 5, 8, 9)])
        with self.assertRaisesRegex(TypeError, "layers="):
            FeaturePyramid(TinyNet())
        with self.assertRaisesRegex(ValueError, "no submodule"):
            FeaturePyramid(TinyNet(), layers=["down", "nope"])
        with self.assertRaisesRegex(ValueError, r"\(1, 1, 8\)"):
            pyramid(torch.rand(1, 1, 8))

    def test_state_dict_is_the_stock_networks(self):
        torch.manual_seed(0)
        unet = small_unet()
        cover = CoverNet(FeaturePyramid.from_network(unet))
        backbone_sd = cover.backbone.state_dict()
        self.assertEqual(list(backbone_sd), list(unet.state_dict()))
        self.assertEqual(list(cover.backbone_state_dict()), list(unet.state_dict()))
        self.assertTrue(all(k.startswith(("backbone.", "head.")) for k in cover.state_dict()))
        self.assertIn("backbone.conv_0.conv_0.conv.weight", cover.state_dict())
        # pretrained weights load straight into a plain BasicUNet (strict), through a file
        buf = io.BytesIO()
        torch.save(cover.backbone.state_dict(), buf)
        buf.seek(0)
        fresh = small_unet()
        fresh.load_state_dict(torch.load(buf, weights_only=True))
        for k, v in unet.state_dict().items():
            torch.testing.assert_close(fresh.state_dict()[k], v)
        # and back: a CoverNet state dict round-trips, a plain state dict loads into a pyramid
        other = CoverNet(FeaturePyramid.from_network(small_unet()))
        other.load_state_dict(cover.state_dict())
        torch.testing.assert_close(other.backbone.network.conv_0.conv_0.conv.weight, unet.conv_0.conv_0.conv.weight)
        FeaturePyramid(small_unet()).load_state_dict(unet.state_dict())

    def test_copy_and_remove_hooks(self):
        pyramid = FeaturePyramid.from_network(small_unet(2))
        x = torch.rand(1, 1, 32, 32)
        twin = copy.deepcopy(pyramid)
        for a, b in zip(pyramid(x), twin(x)):
            torch.testing.assert_close(a, b)
        pyramid.remove_hooks()
        with self.assertRaisesRegex(RuntimeError, "hooks"):
            pyramid(x)
        self.assertEqual(len(twin(x)), 5)


if __name__ == "__main__":
    unittest.main()
