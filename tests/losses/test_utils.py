# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import unittest

import torch
import torch.nn.functional as F
from parameterized import parameterized

from monai_cover.losses.utils import channel_cosine


class TestChannelCosine(unittest.TestCase):
    @parameterized.expand([((2, 5, 6, 7),), ((1, 8, 4, 5, 6),), ((3, 1, 9),)])
    def test_matches_torch_cosine_similarity(self, shape):
        g = torch.Generator().manual_seed(len(shape))
        a = torch.randn(shape, generator=g, dtype=torch.float64)
        b = torch.randn(shape, generator=g, dtype=torch.float64)
        a[0, :, 0] = 0.0  # zero vectors: their norm is clamped to eps and the cosine is 0
        b[-1, :, -1] = 0.0
        a.requires_grad_(True)
        b.requires_grad_(True)
        seed = torch.randn(shape[0], 1, *shape[2:], generator=g, dtype=torch.float64)
        expected = F.cosine_similarity(a, b, dim=1, eps=1e-8).unsqueeze(1)
        out = channel_cosine(a, b, eps=1e-8)
        self.assertEqual(out.shape, expected.shape)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        self.assertEqual(out[0, 0, 0].abs().max().item(), 0.0)
        self.assertEqual(out[-1, 0, -1].abs().max().item(), 0.0)
        for got, exp in zip(torch.autograd.grad((out * seed).sum(), (a, b)),
                            torch.autograd.grad((expected * seed).sum(), (a, b))):
            torch.testing.assert_close(got, exp, rtol=1e-9, atol=1e-9)

    def test_gradcheck_and_one_side_detached(self):
        g = torch.Generator().manual_seed(3)
        a = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
        b = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
        self.assertTrue(torch.autograd.gradcheck(lambda x, y: channel_cosine(x, y), (a, b)))
        (grad_a,) = torch.autograd.grad(channel_cosine(a, b.detach()).sum(), (a,))
        (expected,) = torch.autograd.grad(F.cosine_similarity(a, b.detach(), dim=1).sum(), (a,))
        torch.testing.assert_close(grad_a, expected)

    def test_float32_many_channels(self):
        g = torch.Generator().manual_seed(4)
        a, b = torch.randn(2, 64, 9, 10, 11, generator=g), torch.randn(2, 64, 9, 10, 11, generator=g)
        b[:, :, :4] += 3 * a[:, :, :4]  # cosines near 1 as well as near 0
        expected = F.cosine_similarity(a, b, dim=1).unsqueeze(1)
        torch.testing.assert_close(channel_cosine(a, b), expected, rtol=0, atol=2e-6)

    def test_float32_and_shape_errors(self):
        a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4, dtype=torch.float64)
        self.assertEqual(channel_cosine(a, b).dtype, torch.float64)
        with self.assertRaisesRegex(ValueError, r"channel_cosine.*\(2, 3, 4, 4\).*\(2, 3, 4, 5\)"):
            channel_cosine(a, torch.randn(2, 3, 4, 5))


if __name__ == "__main__":
    unittest.main()
