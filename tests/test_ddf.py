# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from monai_cover.ddf import capture_range, compose_ddf, identity_grid, overlap_mask, sample_at, upsample_ddf, warp

SHAPES = [(9, 10), (7, 8, 9)]


def _smooth(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, *[3] * len(shape), generator=g, dtype=torch.float64)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return torch.nn.functional.interpolate(coarse, size=shape, mode=mode, align_corners=True)


class TestWarpConvention(unittest.TestCase):
    @parameterized.expand([(s,) for s in SHAPES])
    def test_zero_field_is_identity(self, shape):
        x = torch.rand(2, 3, *shape, dtype=torch.float64)
        out = warp(x, torch.zeros(2, len(shape), *shape, dtype=torch.float64))
        torch.testing.assert_close(out, x, atol=1e-12, rtol=0)

    def test_channel_i_moves_along_axis_i_in_voxels(self):
        x = torch.zeros(1, 1, 12, 13, 14)
        x[0, 0, 6, 7, 8] = 1.0
        for axis, shift in [(0, 2.0), (1, -3.0), (2, 1.0)]:
            ddf = torch.zeros(1, 3, 12, 13, 14)
            ddf[:, axis] = shift
            out = warp(x, ddf)
            peak = [int(i) for i in torch.nonzero(out[0, 0] > 0.99)[0]]
            expected = [6, 7, 8]
            expected[axis] -= int(shift)  # pull: out(p) = x(p + ddf) so the peak moves by -ddf
            self.assertEqual(peak, expected)

    def test_half_voxel_shift_is_linear(self):
        x = torch.zeros(1, 1, 8, 8)
        x[0, 0, 4, 4] = 1.0
        ddf = torch.zeros(1, 2, 8, 8)
        ddf[:, 0] = 0.5
        out = warp(x, ddf)
        self.assertAlmostEqual(out[0, 0, 3, 4].item(), 0.5, places=6)
        self.assertAlmostEqual(out[0, 0, 4, 4].item(), 0.5, places=6)

    def test_unbatched_and_dtype_promotion(self):
        x = torch.rand(2, 6, 7)
        ddf = torch.rand(2, 6, 7, dtype=torch.float64) - 0.5
        out = warp(x, ddf)
        self.assertEqual(out.shape, x.shape)
        self.assertEqual(out.dtype, torch.float64)
        torch.testing.assert_close(out, warp(x[None].double(), ddf[None])[0])

    def test_shape_mismatch_names_shapes(self):
        with self.assertRaisesRegex(ValueError, r"ddf must have shape \(1, 2, 6, 7\)"):
            warp(torch.rand(1, 1, 6, 7), torch.zeros(1, 2, 6, 8))

    @parameterized.expand(
        [(b, s, m, p) for b, s in ((1, (9, 10)), (2, (7, 8, 9)), (1, (9, 6, 7))) for m in ("bilinear", "nearest")
         for p in ("zeros", "border", "reflection")]
    )
    def test_matches_monai_warp(self, batch, shape, mode, padding):
        """Same values and gradients as MONAI's Warp (which the convention follows) with the same options."""
        import warnings

        from monai.networks.blocks import Warp

        g = torch.Generator().manual_seed(len(shape) + batch)
        x = torch.randn(batch, 3, *shape, generator=g).requires_grad_(True)
        ddf = (3 * torch.randn(batch, len(shape), *shape, generator=g)).requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = Warp(mode=mode, padding_mode=padding)(x, ddf)
        out = warp(x, ddf, mode=mode, padding_mode=padding)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
        if mode == "bilinear":
            seed = torch.randn(out.shape, generator=g)
            for got, exp in zip(torch.autograd.grad((out * seed).sum(), (x, ddf)),
                                torch.autograd.grad((expected * seed).sum(), (x, ddf))):
                torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-5)

    @parameterized.expand(
        [(1, (11, 6, 7), 3), (2, (5, 6, 7), 3), (1, (2, 5, 6), 4), (1, (7, 6, 5), 1), (1, (11, 5, 6), 8)]
    )
    def test_3d_cpu_slabs_equal_one_call(self, batch, shape, threads):
        """On CPU a 3D warp of a batch smaller than the thread count runs split into slabs (PyTorch's 3D sampler
        parallelises over the batch only): values equal one grid_sample call, gradients to rounding."""
        g = torch.Generator().manual_seed(threads)
        x = torch.randn(batch, 4, *shape, generator=g, dtype=torch.float64).requires_grad_(True)
        ddf = (2 * torch.randn(batch, 3, *shape, generator=g, dtype=torch.float64)).requires_grad_(True)
        points = identity_grid(shape, dtype=torch.float64)[None] + ddf
        grid = torch.stack([points[:, i] * 2 / (shape[i] - 1) - 1 for i in (2, 1, 0)], -1)
        expected = torch.nn.functional.grid_sample(x, grid, align_corners=True)
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            out = warp(x, ddf)
            seed = torch.randn(out.shape, generator=g, dtype=torch.float64)
            grads = torch.autograd.grad((out * seed).sum(), (x, ddf))
        finally:
            torch.set_num_threads(previous)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        for got, exp in zip(grads, torch.autograd.grad((expected * seed).sum(), (x, ddf))):
            torch.testing.assert_close(got, exp, rtol=1e-12, atol=1e-12)

    @parameterized.expand([(s,) for s in SHAPES])
    def test_sample_at_matches_warp(self, shape):
        x = _smooth(shape)[0]
        ddf = (torch.rand(len(shape), *shape, dtype=torch.float64) - 0.5) * 3
        points = identity_grid(shape, dtype=torch.float64) + ddf
        torch.testing.assert_close(sample_at(x, points), warp(x, ddf), atol=1e-12, rtol=0)

    def test_sample_at_reads_outside_output_grid(self):
        x = torch.arange(20.0).view(1, 4, 5)
        points = identity_grid((2, 2)) + torch.tensor([2.0, 3.0]).view(2, 1, 1)
        torch.testing.assert_close(sample_at(x, points), x[:, 2:4, 3:5])


class TestComposeAndMask(unittest.TestCase):
    @parameterized.expand([(s,) for s in SHAPES])
    def test_compose_matches_sequential_warps(self, shape):
        # On a linear ramp linear interpolation is exact, so composing must equal warping twice.
        d = len(shape)
        grid = identity_grid((32,) * d, dtype=torch.float64)
        x = (grid * torch.tensor([1.0, -2.0, 0.5][:d], dtype=torch.float64).view(d, *[1] * d)).sum(0)[None, None]
        outer = torch.cat([_smooth((32,) * d, seed=1 + i) for i in range(d)], 1)
        inner = torch.cat([_smooth((32,) * d, seed=5 + i) for i in range(d)], 1) - 0.5
        sequential = warp(warp(x, outer), inner)
        composed = warp(x, compose_ddf(outer, inner))
        interior = (slice(None), slice(None), *[slice(2, -2)] * d)
        torch.testing.assert_close(composed[interior], sequential[interior], atol=1e-9, rtol=0)

    def test_compose_of_constants_adds(self):
        outer = torch.full((1, 2, 8, 8), 0.75)
        inner = torch.full((1, 2, 8, 8), -0.25)
        torch.testing.assert_close(compose_ddf(outer, inner, padding_mode="border"), torch.full_like(outer, 0.5))

    @parameterized.expand([(0,), (1,), (2,)])
    def test_mask_uses_every_axis(self, axis):
        ddf = torch.zeros(3, 5, 6, 7)
        ddf[axis] = 1.0  # the last slice along `axis` now points outside
        mask = overlap_mask(ddf)
        self.assertEqual(mask.shape, (1, 5, 6, 7))
        size = ddf.shape[1 + axis]
        outside = [slice(None)] * 4
        outside[1 + axis] = slice(size - 1, size)
        self.assertEqual(mask[tuple(outside)].sum().item(), 0.0)
        self.assertEqual(mask.sum().item(), 5 * 6 * 7 / size * (size - 1))

    def test_mask_boundaries_are_inclusive(self):
        ddf = torch.zeros(1, 2, 4, 4)
        ddf[0, 0, 0] = -1e-4
        mask = overlap_mask(ddf)
        self.assertEqual(mask[0, 0, 0].sum().item(), 0.0)
        self.assertEqual(mask[0, 0, 1:].sum().item(), 12.0)
        self.assertEqual(overlap_mask(torch.zeros(1, 2, 4, 4)).sum().item(), 16.0)

    def test_mask_rejects_bad_shape(self):
        with self.assertRaisesRegex(ValueError, "overlap_mask"):
            overlap_mask(torch.zeros(1, 3, 4, 4))


class TestUpsampleAndReach(unittest.TestCase):
    def test_constant_field_scales_by_two(self):
        ddf = torch.full((1, 3, 4, 4, 4), 1.5)
        up = upsample_ddf(ddf, (8, 8, 8))
        self.assertEqual(up.shape, (1, 3, 8, 8, 8))
        torch.testing.assert_close(up, torch.full_like(up, 3.0))

    def test_corners_aligned(self):
        ddf = torch.zeros(1, 2, 3, 3)
        ddf[0, 0, -1, -1] = 1.0
        up = upsample_ddf(ddf, (5, 5), scale=1.0)
        self.assertEqual(up[0, 0, -1, -1].item(), 1.0)
        self.assertEqual(up[0, 0, 0, 0].item(), 0.0)

    def test_capture_range(self):
        self.assertEqual(capture_range(), 62)
        self.assertEqual(capture_range(3, 5), 93)
        self.assertEqual(capture_range(1, 1), 1)
        with self.assertRaisesRegex(ValueError, "radius"):
            capture_range(0, 5)


if __name__ == "__main__":
    unittest.main()
