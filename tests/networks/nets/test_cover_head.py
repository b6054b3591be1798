# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from monai_cover.ddf import compose_ddf, warp
from monai_cover.networks.nets import CoverHead, default_num_heads


def identity_head(spatial_dims: int, channels: int, levels: int, radius: int = 2) -> CoverHead:
    """A head whose projections are the identity (1x1 conv = I, no norm), one head of ``channels`` per level."""
    head = CoverHead(spatial_dims, (channels,) * levels, head_dim=channels, num_heads=1, radius=radius, norm=None)
    with torch.no_grad():
        for proj in head.projections:
            conv = proj[0]
            conv.weight.zero_()
            conv.bias.zero_()
            eye = torch.eye(channels).view(channels, channels, *([1] * spatial_dims))
            conv.weight.copy_(eye)
    return head


def shifted_pyramid(spatial_dims: int, channels: int, sizes: list[int], shifts: list[tuple[int, ...]], seed: int = 0):
    """Random peaked features for view B per level, and view A = B moved so that A(p + t) = B(p) (t = shift)."""
    g = torch.Generator().manual_seed(seed)
    feats_a, feats_b = [], []
    for size, shift in zip(sizes, shifts):
        fb = 4.0 * torch.randn(1, channels, *([size] * spatial_dims), generator=g)
        fa = torch.roll(fb, shifts=shift, dims=tuple(range(2, 2 + spatial_dims)))  # fa(p + t) = fb(p)
        feats_a.append(fa)
        feats_b.append(fb)
    return feats_a, feats_b


class TestCoverHead(unittest.TestCase):
    def test_single_level_shift_by_one(self):
        # view A = view B shifted by one voxel along axis 0: A(p + e0) = B(p) -> ddf = (1, 0)
        head = identity_head(2, 32, levels=1)
        fa, fb = shifted_pyramid(2, 32, [12], [(1, 0)])
        ddf = head(fa, fb)
        self.assertEqual(tuple(ddf.shape), (1, 2, 12, 12))
        self.assertEqual(ddf.dtype, torch.float32)
        interior = ddf[..., 2:-2, 2:-2]
        torch.testing.assert_close(interior[:, 0], torch.ones_like(interior[:, 0]), atol=1e-4, rtol=0)
        torch.testing.assert_close(interior[:, 1], torch.zeros_like(interior[:, 1]), atol=1e-4, rtol=0)

    @parameterized.expand(
        [
            # spatial_dims, sizes coarse->fine, full-resolution shift
            (2, [8, 16, 32], (4, -4)),
            (2, [4, 8, 16, 32], (8, 0)),
            (3, [8, 16], (2, 0, -2)),
        ]
    )
    def test_vpa_recovers_pyramid_shift(self, dims, sizes, shift):
        # each level's A is its B shifted by shift / 2**k: the coarsest level finds its shift, every finer level is
        # aligned by the running field (its own estimate is 0), and x2 alignment + composition give the full shift
        levels = len(sizes)
        per_level = [tuple(s // 2 ** (levels - 1 - i) for s in shift) for i in range(levels)]
        head = identity_head(dims, 32, levels)
        fa, fb = shifted_pyramid(dims, 32, sizes, per_level)
        ddf = head(fa, fb)
        self.assertEqual(tuple(ddf.shape), (1, dims, *([sizes[-1]] * dims)))
        margin = max(abs(s) for s in shift) + 2 ** (levels - 1)
        interior = ddf[(slice(None), slice(None)) + (slice(margin, -margin),) * dims]
        for axis, value in enumerate(shift):
            torch.testing.assert_close(
                interior[:, axis], torch.full_like(interior[:, axis], float(value)), atol=1e-3, rtol=0
            )

    def test_equal_level_sizes_scale_one(self):
        # two levels of the same size: no x2 scaling; level 0 finds the shift, level 1 is aligned by it
        head = identity_head(2, 32, levels=2)
        fa, fb = shifted_pyramid(2, 32, [12, 12], [(0, 1), (0, 1)])
        ddf = head(fa, fb)[..., 3:-3, 3:-3]
        torch.testing.assert_close(ddf[:, 1], torch.ones_like(ddf[:, 1]), atol=1e-3, rtol=0)
        torch.testing.assert_close(ddf[:, 0], torch.zeros_like(ddf[:, 0]), atol=1e-3, rtol=0)

    def test_reference_defaults_and_capture_range(self):
        head = CoverHead(3, (512, 256, 128, 64, 32))
        self.assertEqual(head.num_heads, (4, 4, 4, 1, 1))
        self.assertEqual(head.head_dim, (8,) * 5)
        self.assertEqual([p.out_channels for p in head.projections], [32, 32, 32, 8, 8])
        self.assertIsInstance(head.projections[0][1], torch.nn.GroupNorm)
        self.assertEqual(head.projections[0][1].num_groups, 1)
        self.assertEqual(head.capture_range, 62)
        self.assertEqual(CoverHead(3, (512, 256, 128, 64, 32), radius=3).capture_range, 93)
        self.assertEqual(CoverHead(2, (8,)).capture_range, 2)
        self.assertAlmostEqual(sum(p.numel() for p in head.parameters()) / 1e6, 0.03, places=2)
        self.assertEqual(default_num_heads(1), (1,))
        self.assertEqual(default_num_heads(3), (4, 1, 1))

    def test_odd_sizes_and_gradients(self):
        head = CoverHead(3, (16, 8, 8), head_dim=4, num_heads=(2, 1, 1))
        sizes = [(3, 4, 5), (5, 8, 9), (10, 15, 17)]
        fa = [torch.randn(2, c, *s, requires_grad=True) for c, s in zip((16, 8, 8), sizes)]
        fb = [torch.randn(2, c, *s, requires_grad=True) for c, s in zip((16, 8, 8), sizes)]
        ddf = head(fa, fb)
        self.assertEqual(tuple(ddf.shape), (2, 3, 10, 15, 17))
        self.assertLessEqual(float(ddf.detach().abs().max()), head.capture_range)
        ddf.square().mean().backward()
        for t in fa + fb:
            self.assertTrue(torch.isfinite(t.grad).all())
        self.assertTrue(all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters()))

    def test_equals_the_documented_vpa(self):
        # the head warps each level's projection of A; the docstring's VPA warps A's features and projects them
        # after: the same values (float64, random projections with bias and affine norm, displacements that leave
        # the image)
        torch.manual_seed(3)
        head = CoverHead(3, (16, 8, 8), head_dim=4, num_heads=(2, 1, 1), radius=1).double()
        with torch.no_grad():
            for p in head.parameters():
                p.normal_()
        sizes = [(3, 4, 5), (5, 8, 9), (10, 15, 17)]
        fa = [torch.randn(1, c, *s, dtype=torch.float64) for c, s in zip((16, 8, 8), sizes)]
        fb = [torch.randn(1, c, *s, dtype=torch.float64) for c, s in zip((16, 8, 8), sizes)]
        phi = None
        for level in range(3):
            a = fa[level] if phi is None else warp(fa[level], phi)
            projected = head.projections[level](torch.cat([fb[level], a]))
            w = head.mixtures[level](projected[:1], projected[1:])
            if level < 2:
                w = head._up(w, sizes[level], sizes[level + 1])
                phi = w if phi is None else compose_ddf(head._up(phi, sizes[level], sizes[level + 1]), w)
            else:
                phi = compose_ddf(phi, w)
        self.assertGreater(float(phi.detach().abs().max()), 1.0)
        torch.testing.assert_close(head(fa, fb), phi, rtol=0, atol=1e-9)

    def test_autocast_float32_output(self):
        head = CoverHead(2, (16, 8), head_dim=4, num_heads=(2, 1))
        fa = [torch.randn(1, 16, 6, 6), torch.randn(1, 8, 12, 12)]
        fb = [torch.randn(1, 16, 6, 6), torch.randn(1, 8, 12, 12)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ddf = head(fa, fb)
        self.assertEqual(ddf.dtype, torch.float32)
        self.assertTrue(torch.isfinite(ddf).all())

    def test_errors_name_shapes(self):
        with self.assertRaisesRegex(ValueError, "num_heads"):
            CoverHead(2, (16, 8), num_heads=(4, 4, 1))
        with self.assertRaisesRegex(ValueError, "spatial_dims"):
            CoverHead(4, (16,))
        with self.assertRaisesRegex(ValueError, "radius"):
            CoverHead(2, (16,), radius=0)
        head = CoverHead(2, (16, 8), head_dim=4, num_heads=1)
        fa = [torch.randn(1, 16, 6, 6), torch.randn(1, 8, 12, 12)]
        with self.assertRaisesRegex(ValueError, r"\(1, 8, 12, 11\)"):
            head(fa, [fa[0], torch.randn(1, 8, 12, 11)])
        with self.assertRaisesRegex(ValueError, "expected 2 feature levels"):
            head(fa[:1], fa[:1])
        with self.assertRaisesRegex(ValueError, r"\(1, 7, 12, 12\)"):
            bad = [fa[0], torch.randn(1, 7, 12, 12)]
            head(bad, bad)
        with self.assertRaisesRegex(ValueError, "coarse to fine"):
            rev = [torch.randn(1, 16, 12, 12), torch.randn(1, 8, 6, 6)]
            head(rev, rev)


if __name__ == "__main__":
    unittest.main()
