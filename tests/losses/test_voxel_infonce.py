# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import math
import unittest

import torch
from parameterized import parameterized

from monai_cover.ddf import overlap_mask, warp
from monai_cover.losses.voxel_infonce import VoxelInfoNCELoss, sample_overlap_voxels, voxel_nt_xent


def one_hot_pair(spatial=(4, 5), shift=(1, -1), batch=1):
    """View A: every voxel has its own one-hot feature; view B = warp(A, constant integer shift).

    Positives then match exactly and all negatives are orthogonal."""
    n_vox = math.prod(spatial)
    fa = torch.eye(n_vox).reshape(n_vox, *spatial)[None].repeat(batch, 1, *([1] * len(spatial)))
    ddf = torch.tensor(shift, dtype=torch.float32).view(1, -1, *([1] * len(spatial))).expand(batch, -1, *spatial)
    ddf = ddf.contiguous()
    overlap = overlap_mask(ddf)
    fb = warp(fa, ddf) * overlap  # outside the overlap: zero features (never sampled)
    return fa, fb, ddf, overlap


class TestVoxelNTXent(unittest.TestCase):
    def test_known_value_orthogonal(self):
        n, tau = 6, 0.1
        u = torch.eye(8)[:n]
        value = voxel_nt_xent(u, u.clone(), tau)
        expected = math.log(1 + 2 * (n - 1) * math.exp(-1 / tau))
        torch.testing.assert_close(value, torch.full((n,), expected), rtol=1e-5, atol=1e-6)

    def test_single_pair_and_full_exclusion_zero(self):
        u = torch.randn(1, 4)
        torch.testing.assert_close(voxel_nt_xent(u, u.clone()), torch.zeros(1), atol=1e-6, rtol=0)
        u, v = torch.randn(5, 4), torch.randn(5, 4)
        u_n = torch.nn.functional.normalize(u, dim=1)
        v_n = torch.nn.functional.normalize(v, dim=1)
        # all negatives excluded: ℓ = log e^{s/τ} - s/τ = 0 whatever the features
        value = voxel_nt_xent(u_n, v_n, 0.2, exclude=torch.ones(5, 5, dtype=torch.bool))
        torch.testing.assert_close(value, torch.zeros(5), atol=1e-5, rtol=0)

    @parameterized.expand([(300, 16, 0.1), (40, 8, 0.5), (9, 4, 0.03), (9, 4, 0.01)])
    def test_values_and_gradients_equal_the_plain_formula(self, n, dim, tau):
        """The shared-shift form (tau >= 0.025) and the fallback both equal log-sum-exp written out in float64."""
        gen = torch.Generator().manual_seed(n)
        u, v = torch.randn(n, dim, generator=gen), torch.randn(n, dim, generator=gen)
        v[0] = -u[0]  # an antipodal positive: its logit is the smallest possible, -1/tau
        weights = torch.rand(n, generator=gen)

        def plain(a, b):
            a, b = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
            eye = torch.eye(n, dtype=torch.bool)
            lse = [torch.logsumexp(torch.cat([x @ y.t(), (x @ x.t()).masked_fill(eye, -math.inf)], 1) / tau, 1)
                   for x, y in ((a, b), (b, a))]
            return 0.5 * (lse[0] + lse[1]) - (a * b).sum(1) / tau

        results = []
        for fn, dtype in ((lambda a, b: voxel_nt_xent(a, b, tau), torch.float32), (plain, torch.float64)):
            a, b = (x.detach().to(dtype).clone().requires_grad_(True) for x in (u, v))
            value = fn(a, b)
            (value * weights.to(dtype)).sum().backward()
            results.append((value.detach().double(), a.grad.double(), b.grad.double()))
        for got, ref in zip(results[0], results[1]):
            self.assertTrue(bool(torch.isfinite(got).all()))
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 / tau)

    def test_shared_shift_backward_passes_gradcheck(self):
        from monai_cover.losses.voxel_infonce import _SharedShiftNTXent

        gen = torch.Generator().manual_seed(0)
        u = torch.nn.functional.normalize(torch.randn(6, 3, generator=gen, dtype=torch.float64), dim=1)
        v = torch.nn.functional.normalize(torch.randn(6, 3, generator=gen, dtype=torch.float64), dim=1)
        u.requires_grad_(True)
        v.requires_grad_(True)
        self.assertTrue(torch.autograd.gradcheck(lambda a, b: _SharedShiftNTXent.apply(a, b, 0.2), (u, v)))

    def test_exclusion_mask_need_not_be_symmetric(self):
        """``exclude[n, m]`` drops m from n's negatives only: u's and v's sums read the mask by rows."""
        gen = torch.Generator().manual_seed(1)
        u, v = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
        exclude = torch.zeros(5, 5, dtype=torch.bool)
        exclude[0, 1] = True  # anchor 0 ignores voxel 1 in both views; anchor 1 still sees voxel 0
        got = voxel_nt_xent(u, v, 0.2, exclude=exclude)
        un, vn = torch.nn.functional.normalize(u, dim=1), torch.nn.functional.normalize(v, dim=1)
        for n in range(5):
            keep = [m for m in range(5) if not exclude[n, m]]
            sides = []
            for a, b in ((un, vn), (vn, un)):
                logits = torch.cat([a[n] @ b[keep].t(), a[n] @ a[[m for m in keep if m != n]].t()]) / 0.2
                sides.append(torch.logsumexp(logits, 0) - a[n] @ b[n] / 0.2)
            torch.testing.assert_close(got[n], 0.5 * (sides[0] + sides[1]), rtol=1e-5, atol=1e-5)

    def test_shape_error(self):
        with self.assertRaisesRegex(ValueError, r"\(3, 4\) and \(3, 5\)"):
            voxel_nt_xent(torch.zeros(3, 4), torch.zeros(3, 5))


class TestVoxelInfoNCELoss(unittest.TestCase):
    @parameterized.expand([((4, 5), (1, -1)), ((3, 4, 3), (0, 1, -1))])
    def test_perfect_correspondence_is_minimum(self, spatial, shift):
        fa, fb, ddf, overlap = one_hot_pair(spatial, shift)
        n = int(overlap.sum())
        tau = 0.1
        loss = VoxelInfoNCELoss(num_samples=1000, temperature=tau)
        value = loss({"features_a": fa, "features_b": fb}, {"ddf": ddf, "overlap": overlap})
        expected = math.log(1 + 2 * (n - 1) * math.exp(-1 / tau))
        self.assertAlmostEqual(float(value), expected, places=5)
        # a wrong correspondence (field off by one voxel) costs more
        wrong = loss({"features_a": fa, "features_b": fb}, {"ddf": ddf + 1.0, "overlap": overlap_mask(ddf + 1.0)})
        self.assertGreater(float(wrong), float(value) + 1.0)

    def test_missing_overlap_computed_and_batch(self):
        fa, fb, ddf, overlap = one_hot_pair((4, 4), (1, 0), batch=2)
        loss = VoxelInfoNCELoss(num_samples=5, reduction="none", temperature=0.5)
        per_anchor = loss({"features_a": fa, "features_b": fb}, {"ddf": ddf})
        self.assertEqual(tuple(per_anchor.shape), (10,))
        # the same one-hot features in both images: each anchor has one orthogonal-free twin
        self.assertTrue(torch.isfinite(per_anchor).all())

    def test_exclusion_radius_removes_all_negatives(self):
        fa, fb, ddf, overlap = one_hot_pair((4, 4), (1, 1))
        loss = VoxelInfoNCELoss(num_samples=100, exclusion_radius=100.0)
        value = loss({"features_a": fa, "features_b": fb}, {"ddf": ddf, "overlap": overlap})
        self.assertAlmostEqual(float(value), 0.0, places=5)
        # a small radius lowers the loss (fewer negatives) but keeps it positive
        full = VoxelInfoNCELoss(num_samples=100, temperature=1.0)({"features_a": fa, "features_b": fb},
                                                                  {"ddf": ddf, "overlap": overlap})
        near = VoxelInfoNCELoss(num_samples=100, temperature=1.0, exclusion_radius=1.0)(
            {"features_a": fa, "features_b": fb}, {"ddf": ddf, "overlap": overlap})
        self.assertLess(float(near), float(full))
        self.assertGreater(float(near), 0.0)

    def test_sampling_deterministic_and_inside_overlap(self):
        overlap = torch.zeros(2, 1, 6, 6)
        overlap[0, 0, :3] = 1
        overlap[1, 0, 2:4, 2:4] = 1
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        b1, i1 = sample_overlap_voxels(overlap, 5, g1)
        b2, i2 = sample_overlap_voxels(overlap, 5, g2)
        torch.testing.assert_close(i1, i2)
        self.assertEqual(b1.tolist(), [0] * 5 + [1] * 4)
        self.assertTrue(bool((overlap.flatten(1)[b1, i1] > 0).all()))
        self.assertEqual(len(set(i1[:5].tolist())), 5)

    def test_head_gradients_and_parameters(self):
        torch.manual_seed(0)
        fa = torch.randn(2, 8, 6, 6, 4, requires_grad=True)
        fb = torch.randn(2, 8, 6, 6, 4, requires_grad=True)
        ddf = torch.randn(2, 3, 6, 6, 4) * 0.5
        loss = VoxelInfoNCELoss(in_channels=8, projection_channels=(16, 4), num_samples=20)
        self.assertGreater(len(list(loss.parameters())), 0)
        value = loss({"features_a": fa, "features_b": fb}, {"ddf": ddf, "overlap": overlap_mask(ddf)})
        self.assertEqual(value.ndim, 0)
        value.backward()
        self.assertIsNotNone(fa.grad)
        self.assertIsNotNone(fb.grad)
        self.assertTrue(all(p.grad is not None for p in loss.parameters()))

    def test_no_overlap_gives_zero(self):
        fa = torch.randn(1, 3, 4, 4, requires_grad=True)
        ddf = torch.full((1, 2, 4, 4), 10.0)
        value = VoxelInfoNCELoss()({"features_a": fa, "features_b": fa * 2}, {"ddf": ddf})
        self.assertEqual(value.item(), 0.0)
        value.backward()

    def test_validation_messages(self):
        loss = VoxelInfoNCELoss(in_channels=4)
        with self.assertRaisesRegex(ValueError, "keys"):
            loss({"features_a": torch.zeros(1, 4, 4, 4)}, {"ddf": torch.zeros(1, 2, 4, 4)})
        with self.assertRaisesRegex(ValueError, r"\(1, 2, 4, 4\)"):
            loss({"features_a": torch.zeros(1, 4, 4, 4), "features_b": torch.zeros(1, 4, 4, 4)},
                 {"ddf": torch.zeros(1, 3, 4, 4)})
        with self.assertRaisesRegex(ValueError, "4 feature channels"):
            loss({"features_a": torch.zeros(1, 3, 4, 4), "features_b": torch.zeros(1, 3, 4, 4)},
                 {"ddf": torch.zeros(1, 2, 4, 4)})
        with self.assertRaises(ValueError):
            VoxelInfoNCELoss(temperature=0)


if __name__ == "__main__":
    unittest.main()
