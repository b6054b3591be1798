# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import unittest

import torch

from monai_cover.networks.nets import CoverHead, CoverNet, PyramidUNet, TwoViewFeatures


class TestCoverNet(unittest.TestCase):
    def test_outputs_and_head_from_backbone(self):
        backbone = PyramidUNet(3, channels=(4, 8, 8, 16))
        net = CoverNet(backbone, radius=1, head_dim=4)
        self.assertEqual(net.head.in_channels, (16, 8, 8, 4))
        self.assertEqual(net.head.num_heads, (4, 4, 1, 1))
        self.assertEqual(net.head.capture_range, 15)
        view_a, view_b = torch.rand(2, 1, 16, 12, 20), torch.rand(2, 1, 16, 12, 20)
        out = net(view_a, view_b)
        self.assertEqual(set(out), {"ddf", "features_a", "features_b"})
        self.assertEqual(tuple(out["ddf"].shape), (2, 3, 16, 12, 20))
        self.assertEqual(out["ddf"].dtype, torch.float32)
        self.assertEqual(tuple(out["features_a"].shape), (2, 4, 16, 12, 20))
        # one batched pass == two separate passes (GroupNorm is per sample)
        torch.testing.assert_close(out["features_a"], backbone(view_a)[-1], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out["features_b"], backbone(view_b)[-1], atol=1e-5, rtol=1e-4)
        (out["ddf"].abs().mean() + out["features_a"].mean()).backward()
        self.assertTrue(all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None))

    def test_identical_views_give_small_field_2d(self):
        net = CoverNet(PyramidUNet(2, channels=(8, 8)), CoverHead(2, (8, 8), head_dim=8, num_heads=1))
        x = torch.rand(1, 1, 16, 16)
        self.assertEqual(tuple(net(x, x)["ddf"].shape), (1, 2, 16, 16))

    def test_errors(self):
        net = CoverNet(PyramidUNet(2, channels=(4, 8)))
        with self.assertRaisesRegex(ValueError, r"\(1, 1, 8, 8\).*\(1, 1, 8, 9\)"):
            net(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))
        with self.assertRaisesRegex(ValueError, "head_kwargs"):
            CoverNet(PyramidUNet(2, channels=(4, 8)), CoverHead(2, (8, 4)), radius=3)
        with self.assertRaisesRegex(ValueError, "out_channels"):
            CoverNet(torch.nn.Identity())


class TestTwoViewFeatures(unittest.TestCase):
    def test_same_features_as_cover_net_without_a_head(self):
        torch.manual_seed(0)
        backbone = PyramidUNet(spatial_dims=2, in_channels=1, channels=(4, 8, 8, 8, 8))
        cover, features = CoverNet(backbone), TwoViewFeatures(backbone)
        a, b = torch.rand(2, 1, 20, 18), torch.rand(2, 1, 20, 18)
        with torch.no_grad():
            full, light = cover(a, b), features(a, b)
        self.assertEqual(sorted(light), ["features_a", "features_b"])
        torch.testing.assert_close(light["features_a"], full["features_a"])
        torch.testing.assert_close(light["features_b"], full["features_b"])
        self.assertEqual(set(features.state_dict()), {f"backbone.{k}" for k in backbone.state_dict()})

    def test_shape_mismatch_names_the_class(self):
        net = TwoViewFeatures(PyramidUNet(spatial_dims=2, in_channels=1, channels=(4, 8, 8, 8, 8)))
        with self.assertRaisesRegex(ValueError, r"TwoViewFeatures: view_a \(1, 1, 16, 16\)"):
            net(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 17))


if __name__ == "__main__":
    unittest.main()
