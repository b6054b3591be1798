# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import math
import unittest

import torch
from parameterized import parameterized

from monai_cover.networks.nets import PyramidUNet
from monai_cover.networks.utils import crop_pyramid, pad_to_divisible

SMALL = (4, 8, 8, 16, 16)


class TestPyramidUNet(unittest.TestCase):
    @parameterized.expand(
        [
            (2, (32, 32)),
            (2, (20, 37)),  # not multiples of 16
            (3, (16, 16, 16)),
            (3, (17, 9, 24)),
        ]
    )
    def test_pyramid_shapes(self, dims, size):
        net = PyramidUNet(dims, in_channels=2, channels=SMALL)
        self.assertEqual(net.out_channels, (16, 16, 8, 8, 4))
        out = net(torch.rand(2, 2, *size))
        self.assertEqual(len(out), 5)
        for j, f in enumerate(out):
            factor = 2 ** (4 - j)
            self.assertEqual(tuple(f.shape), (2, net.out_channels[j], *[math.ceil(s / factor) for s in size]))
        self.assertEqual(tuple(out[-1].shape[2:]), size)

    def test_reference_architecture(self):
        net = PyramidUNet(3)
        self.assertEqual(net.out_channels, (512, 256, 128, 64, 32))
        self.assertAlmostEqual(sum(p.numel() for p in net.parameters()) / 1e6, 23.54, places=2)
        norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
        self.assertTrue(all(m.num_groups == m.num_channels // 8 for m in norms))
        acts = [m for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)]
        self.assertTrue(acts and all(m.negative_slope == 0.2 for m in acts))
        self.assertAlmostEqual(sum(p.numel() for p in PyramidUNet(2).parameters()) / 1e6, 7.85, places=2)

    def test_padding_then_crop(self):
        # an odd-sized input gives the explicitly padded input's pyramid, every level cropped from voxel 0
        torch.manual_seed(0)
        net = PyramidUNet(2, channels=(4, 8, 8)).eval()
        x = torch.rand(1, 1, 10, 13)
        out = net(x)
        padded = torch.nn.functional.pad(x, (0, 3, 0, 2))  # to (12, 16), multiples of 4
        ref = net(padded)
        self.assertEqual([tuple(f.shape[2:]) for f in out], [(3, 4), (5, 7), (10, 13)])
        for o, r in zip(out, ref):
            torch.testing.assert_close(o, r[(..., *[slice(0, s) for s in o.shape[2:]])])

    @parameterized.expand([(2, (12, 10)), (3, (8, 6, 7))])
    def test_same_output_as_with_interpolate(self, dims, size):
        # the decoder upsamples by separable passes on CPU; the reference decoder calls F.interpolate
        import monai_cover.networks.nets.pyramid_unet as module

        torch.manual_seed(0)
        net = PyramidUNet(dims, 1, (4, 8, 8)).double()
        x = torch.randn(2, 1, *size, dtype=torch.float64, requires_grad=True)
        got = net(x)
        (grad,) = torch.autograd.grad(sum(f.sum() for f in got), x)
        modes = {2: "bilinear", 3: "trilinear"}
        original = module.resize_linear
        module.resize_linear = lambda h, s: torch.nn.functional.interpolate(h, size=s, mode=modes[dims])
        try:
            expected = net(x)
            (grad_expected,) = torch.autograd.grad(sum(f.sum() for f in expected), x)
        finally:
            module.resize_linear = original
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        torch.testing.assert_close(grad, grad_expected, rtol=0, atol=1e-10)

    def test_helpers(self):
        x = torch.arange(2 * 5 * 7, dtype=torch.float32).view(1, 2, 5, 7)
        p = pad_to_divisible(x, 4)
        self.assertEqual(tuple(p.shape), (1, 2, 8, 8))
        torch.testing.assert_close(p[..., :5, :7], x)
        self.assertIs(pad_to_divisible(p, (4, 8)), p)
        self.assertEqual(tuple(pad_to_divisible(x, 4, mode="reflect").shape), (1, 2, 8, 8))
        levels = [torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4), p]
        cropped = crop_pyramid(levels, (5, 7), (8, 8))
        self.assertEqual([tuple(c.shape[2:]) for c in cropped], [(2, 2), (3, 4), (5, 7)])

    def test_gradients_and_errors(self):
        net = PyramidUNet(2, channels=(4, 8, 8))
        out = net(torch.rand(1, 1, 12, 12))
        sum(f.mean() for f in out).backward()
        self.assertTrue(all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters()))
        with self.assertRaisesRegex(ValueError, r"\(1, 2, 12, 12\)"):
            net(torch.rand(1, 2, 12, 12))
        with self.assertRaisesRegex(ValueError, "spatial_dims"):
            PyramidUNet(1)
        with self.assertRaisesRegex(ValueError, "channels"):
            PyramidUNet(2, channels=())


if __name__ == "__main__":
    unittest.main()
