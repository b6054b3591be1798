# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import itertools
import math
import unittest
from unittest import mock

import torch
from parameterized import parameterized

from monai_cover.networks.blocks import MixtureOfVectors, mixture_of_vectors


def reference_mov(query: torch.Tensor, key: torch.Tensor, radius: int, num_heads: int) -> torch.Tensor:
    """The VEU + MVI formula, one offset at a time, through plain autograd (float64 in the tests).

    Head h holds the channels c with c % num_heads == h; the neighbour of p at offset o is key[p + o]; neighbours
    outside the image are excluded from the softmax (logit -inf).
    """
    b, c, *spatial = query.shape
    head_dim = c // num_heads
    q = query.reshape(b, head_dim, num_heads, *spatial)
    k = key.reshape(b, head_dim, num_heads, *spatial)
    coords = torch.meshgrid(*[torch.arange(s) for s in spatial], indexing="ij")
    offsets = list(itertools.product(range(-radius, radius + 1), repeat=len(spatial)))
    logits = []
    for offset in offsets:
        neighbour = torch.roll(k, shifts=[-o for o in offset], dims=list(range(3, 3 + len(spatial))))
        inside = torch.ones(spatial, dtype=torch.bool)
        for x, o, s in zip(coords, offset, spatial):
            inside &= (x + o >= 0) & (x + o < s)
        score = (q * neighbour).sum(1) / math.sqrt(head_dim)
        logits.append(torch.where(inside, score, torch.full_like(score, float("-inf"))))
    prob = torch.softmax(torch.stack(logits, 2), dim=2)  # (B, heads, K, *S)
    vectors = torch.tensor(offsets, dtype=prob.dtype)  # (K, d)
    return torch.einsum("bhk...,kd->bhd...", prob, vectors).mean(1)


# (batch, channels, spatial, radius, heads, chunk_size)
CASES = [
    (2, 8, (5, 6, 7), 1, 1, None),
    (1, 8, (5, 6, 7), 2, 2, None),
    (2, 8, (5, 6, 7), 2, 4, 7),
    (1, 4, (5, 6, 7), 3, 2, 50),
    (1, 8, (4, 3, 5), 2, 1, 1),
    (2, 4, (7, 9), 1, 1, None),
    (1, 8, (7, 9), 2, 2, None),
    (2, 8, (7, 9), 2, 4, 4),
    (1, 4, (7, 9), 3, 1, None),
    (1, 12, (9, 7), 3, 4, 10),
    (1, 4, (2, 2, 3), 3, 2, None),  # offsets reaching beyond the whole image on some axes
    (2, 4, (3, 2), 3, 1, 7),
]


class TestMixtureOfVectors(unittest.TestCase):
    @parameterized.expand(CASES)
    def test_matches_reference(self, batch, channels, spatial, radius, heads, chunk):
        gen = torch.Generator().manual_seed(radius * 100 + heads * 10 + len(spatial))
        shape = (batch, channels, *spatial)
        q = torch.randn(shape, generator=gen, dtype=torch.float64).mul_(2).requires_grad_(True)
        k = torch.randn(shape, generator=gen, dtype=torch.float64).mul_(2).requires_grad_(True)
        g = torch.randn(batch, len(spatial), *spatial, generator=gen, dtype=torch.float64)
        expected = reference_mov(q, k, radius, heads)
        exp_dq, exp_dk = torch.autograd.grad((expected * g).sum(), (q, k))
        out = mixture_of_vectors(q, k, radius=radius, num_heads=heads, chunk_size=chunk)
        self.assertEqual(out.shape, (batch, len(spatial), *spatial))
        self.assertEqual(out.dtype, torch.float64)
        dq, dk = torch.autograd.grad((out * g).sum(), (q, k))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(dq, exp_dq, rtol=0, atol=1e-5)
        torch.testing.assert_close(dk, exp_dk, rtol=0, atol=1e-5)

    @parameterized.expand([((1, 8, 5, 6, 7), 2, 2, 9), ((2, 8, 7, 9), 3, 4, None)])
    def test_channel_chain_path_non_contiguous(self, shape, radius, heads, chunk):
        """Large volumes use a per-channel multiply-accumulate chain: force it on a small case, with strided inputs."""
        gen = torch.Generator().manual_seed(4)
        big = (shape[0], shape[1], *(2 * s for s in shape[2:]))
        window = (slice(None), slice(None)) + (slice(None, None, 2),) * (len(shape) - 2)
        q = torch.randn(big, generator=gen, dtype=torch.float64)[window].requires_grad_(True)
        k = torch.randn(big, generator=gen, dtype=torch.float64)[window].requires_grad_(True)
        g = torch.randn(shape[0], len(shape) - 2, *shape[2:], generator=gen, dtype=torch.float64)
        expected = reference_mov(q, k, radius, heads)
        exp_grads = torch.autograd.grad((expected * g).sum(), (q, k))
        with mock.patch("monai_cover.networks.blocks.mixture_of_vectors._PRODUCT_IN_CACHE", 0):
            out = mixture_of_vectors(q, k, radius=radius, num_heads=heads, chunk_size=chunk)
            grads = torch.autograd.grad((out * g).sum(), (q, k))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
        for got, exp in zip(grads, exp_grads):
            torch.testing.assert_close(got, exp, rtol=0, atol=1e-5)

    def test_float32_chunked_equals_single_buffer(self):
        gen = torch.Generator().manual_seed(1)
        q = torch.randn(2, 8, 6, 7, 8, generator=gen).requires_grad_(True)
        k = torch.randn(2, 8, 6, 7, 8, generator=gen).requires_grad_(True)
        g = torch.randn(2, 3, 6, 7, 8, generator=gen)
        results = []
        for chunk in (125, 16, 1):
            out = mixture_of_vectors(q, k, 2, 2, chunk_size=chunk)
            self.assertEqual(out.dtype, torch.float32)
            results.append((out, *torch.autograd.grad((out * g).sum(), (q, k))))
        for other in results[1:]:
            for a, b in zip(results[0], other):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    @parameterized.expand([((1, 4, 3, 3, 4), 1, 2, None), ((1, 6, 5, 4), 2, 3, 3)])
    def test_gradcheck(self, shape, radius, heads, chunk):
        gen = torch.Generator().manual_seed(0)
        q = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
        k = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
        self.assertTrue(
            torch.autograd.gradcheck(lambda a, b: mixture_of_vectors(a, b, radius, heads, chunk_size=chunk), (q, k))
        )

    @parameterized.expand([(3, 0), (3, 1), (3, 2), (2, 0), (2, 1)])
    def test_one_voxel_shift(self, dims, axis):
        """key(p + e_axis) == query(p) with peaked features -> ddf_axis == +1, other channels 0 (interior)."""
        gen = torch.Generator().manual_seed(7 + axis)
        spatial = (10, 11, 12)[:dims]
        # unit-norm random features scaled by 30: the matching logit beats every other one by > 30
        query = torch.nn.functional.normalize(torch.randn(1, 64, *spatial, generator=gen), dim=1) * 30.0
        key = torch.roll(query, shifts=1, dims=2 + axis)
        ddf = MixtureOfVectors(dims, radius=2, num_heads=1)(query, key)
        interior = (slice(None), slice(None)) + (slice(2, -2),) * dims
        expected = torch.zeros_like(ddf)
        expected[:, axis] = 1.0
        torch.testing.assert_close(ddf[interior], expected[interior], rtol=0, atol=1e-4)

    def test_heads_are_interleaved(self):
        """Channel c belongs to head c % num_heads: even channels shifted by +e0, odd ones by -e1 -> (0.5, -0.5)."""
        gen = torch.Generator().manual_seed(9)
        feats = torch.nn.functional.normalize(torch.randn(1, 2, 64, 10, 11, generator=gen), dim=2) * 30.0
        query = feats.transpose(1, 2).reshape(1, 128, 10, 11)  # channel 2 * i + h = feature i of head h
        key_heads = torch.stack([torch.roll(feats[:, 0], 1, dims=2), torch.roll(feats[:, 1], -1, dims=3)], 1)
        key = key_heads.transpose(1, 2).reshape(1, 128, 10, 11)
        ddf = mixture_of_vectors(query, key, radius=2, num_heads=2)
        interior = (slice(None), slice(None), slice(2, -2), slice(2, -2))
        expected = torch.tensor([0.5, -0.5]).view(1, 2, 1, 1).expand_as(ddf)
        torch.testing.assert_close(ddf[interior], expected[interior], rtol=0, atol=1e-4)

    def test_bounded_by_radius(self):
        gen = torch.Generator().manual_seed(3)
        for radius, shape in ((1, (2, 8, 6, 7, 8)), (3, (1, 8, 9, 10))):
            q = 10 * torch.randn(shape, generator=gen)
            k = 10 * torch.randn(shape, generator=gen)
            ddf = mixture_of_vectors(q, k, radius=radius, num_heads=2)
            self.assertTrue(torch.isfinite(ddf).all())
            self.assertLessEqual(ddf.abs().max().item(), radius + 1e-6)

    def test_outside_neighbours_excluded_for_very_negative_logits(self):
        """All logits far below -1000: in-image neighbours must still take the whole weight (no -1000 fill)."""
        gen = torch.Generator().manual_seed(5)
        k = torch.randn(1, 8, 6, 7, 8, generator=gen).abs() + 1.0
        q = -100.0 * k  # every in-image logit is strongly negative
        ddf = mixture_of_vectors(q, k, radius=2, num_heads=1)
        self.assertTrue(torch.isfinite(ddf).all())
        # at the first corner every in-image offset is >= 0 on every axis, at the last corner <= 0
        self.assertGreaterEqual(ddf[0, :, 0, 0, 0].min().item(), 0.0)
        self.assertLessEqual(ddf[0, :, -1, -1, -1].max().item(), 0.0)

    def test_autocast_bf16_cpu(self):
        """Under CPU autocast (bf16 inputs) the op runs in float32: finite and within 0.1 voxel of float32."""
        gen = torch.Generator().manual_seed(11)
        q = torch.randn(2, 16, 6, 7, 8, generator=gen)
        k = torch.randn(2, 16, 6, 7, 8, generator=gen)
        ref = mixture_of_vectors(q, k, 2, 4)
        q16 = q.bfloat16().requires_grad_(True)
        k16 = k.bfloat16().requires_grad_(True)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            out = MixtureOfVectors(3, radius=2, num_heads=4)(q16, k16)
        self.assertEqual(out.dtype, torch.float32)
        self.assertTrue(torch.isfinite(out).all())
        # bf16 rounding of the features (8 bits) moves the logits by ~1e-2: displacements agree to 0.1 voxel
        torch.testing.assert_close(out, ref, rtol=0, atol=0.1)
        self.assertLess((out - ref).abs().mean().item(), 0.02)
        out.sum().backward()
        self.assertEqual(q16.grad.dtype, torch.bfloat16)
        self.assertTrue(torch.isfinite(q16.grad.float()).all() and torch.isfinite(k16.grad.float()).all())

    @unittest.skipUnless(torch.cuda.is_available(), "needs CUDA")
    def test_cuda_matches_cpu(self):
        gen = torch.Generator().manual_seed(2)
        q = torch.randn(2, 8, 9, 10, 11, generator=gen)
        k = torch.randn(2, 8, 9, 10, 11, generator=gen)
        expected = mixture_of_vectors(q, k, 2, 2)
        out = mixture_of_vectors(q.cuda(), k.cuda(), 2, 2, chunk_size=30)
        torch.testing.assert_close(out.cpu(), expected, rtol=1e-4, atol=1e-4)

    def test_module(self):
        mov = MixtureOfVectors(spatial_dims=2, radius=3, num_heads=2)
        self.assertEqual(len(list(mov.parameters())), 0)
        self.assertIn("radius=3", repr(mov))
        out = mov(torch.randn(3, 4, 8, 9), torch.randn(3, 4, 8, 9))
        self.assertEqual(out.shape, (3, 2, 8, 9))
        self.assertEqual(out.dtype, torch.float32)

    def test_validation(self):
        x3 = torch.randn(1, 8, 4, 5, 6)
        with self.assertRaisesRegex(ValueError, r"same shape.*\(1, 8, 4, 5, 6\).*\(1, 8, 4, 5, 5\)"):
            mixture_of_vectors(x3, torch.randn(1, 8, 4, 5, 5))
        with self.assertRaisesRegex(ValueError, r"\(1, 8, 4, 5, 6\).*divisible by num_heads=3"):
            mixture_of_vectors(x3, x3, num_heads=3)
        with self.assertRaisesRegex(ValueError, r"radius must be an integer >= 1, got 0"):
            mixture_of_vectors(x3, x3, radius=0)
        with self.assertRaisesRegex(ValueError, r"2 or 3 spatial dims.*\(1, 8, 4\)"):
            mixture_of_vectors(torch.randn(1, 8, 4), torch.randn(1, 8, 4))
        with self.assertRaisesRegex(ValueError, r"chunk_size"):
            mixture_of_vectors(x3, x3, chunk_size=0)
        with self.assertRaisesRegex(ValueError, r"3 spatial dims.*\(1, 8, 4, 5\)"):
            MixtureOfVectors(3)(torch.randn(1, 8, 4, 5), torch.randn(1, 8, 4, 5))
        with self.assertRaisesRegex(ValueError, r"spatial_dims must be 2 or 3, got 1"):
            MixtureOfVectors(1)
        with self.assertRaisesRegex(ValueError, r"radius must be an integer >= 1, got 0"):
            MixtureOfVectors(3, radius=0)


    def test_metatensor_inputs_give_plain_result(self):
        from monai.data import MetaTensor

        q, k = torch.randn(1, 8, 5, 6, 4), torch.randn(1, 8, 5, 6, 4)
        out = MixtureOfVectors(3, num_heads=2)(MetaTensor(q), MetaTensor(k))
        torch.testing.assert_close(out, mixture_of_vectors(q, k, num_heads=2))

if __name__ == "__main__":
    unittest.main()
