# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import math
import unittest

import torch

from monai_cover.losses.pcrlv2 import PCRLv2Loss, cosine_beta, simsiam_similarity


def pyramid(batch, channels=(4, 2), sizes=((2, 2, 2), (4, 4, 4)), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, *s, generator=g) for c, s in zip(channels, sizes)]


class TestSimSiam(unittest.TestCase):
    def test_known_values_and_stop_gradient(self):
        p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
        z = torch.tensor([[3.0, 0.0], [0.0, 1.0]], requires_grad=True)
        value = simsiam_similarity(p, z, p, z)
        torch.testing.assert_close(value, torch.tensor([-1.0, -1.0]))
        value.sum().backward()
        self.assertIsNone(z.grad)  # projections are stop-gradient targets
        opposite = simsiam_similarity(p.detach(), -z.detach(), p.detach(), -z.detach())
        torch.testing.assert_close(opposite, torch.tensor([1.0, 1.0]))

    def test_shape_error(self):
        with self.assertRaisesRegex(ValueError, r"\(2, 3\)"):
            simsiam_similarity(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 3))

    def test_cosine_beta(self):
        self.assertAlmostEqual(cosine_beta(0, 240), 1.0)
        self.assertAlmostEqual(cosine_beta(120, 240), 0.5)
        self.assertAlmostEqual(cosine_beta(240, 240), 0.0)


class TestPCRLv2Loss(unittest.TestCase):
    def test_perfect_restoration_is_zero(self):
        """Finest level equal to the target and an identity restoration head: the restoration term is 0."""
        gt = torch.rand(2, 2, 1, 4, 4, 4)
        globals_ = []
        for i in range(2):
            pyr = pyramid(2, channels=(3, 1), seed=i)
            pyr[-1] = gt[:, i].clone()
            globals_.append(pyr)
        loss = PCRLv2Loss(in_channels=(3, 1), out_channels=1, scale_sampling="all", beta=0.0)
        with torch.no_grad():
            loss.final_restoration.weight.fill_(1.0)
            loss.final_restoration.bias.zero_()
        parts = loss.components({"global_pyramids": globals_}, {"pcrlv2_global_target": gt})
        torch.testing.assert_close(parts["restoration"], torch.zeros(2), atol=1e-7, rtol=0)
        self.assertTrue(bool((parts["global_similarity"] >= -1 - 1e-6).all()))
        self.assertTrue(bool((parts["global_similarity"] <= 1 + 1e-6).all()))
        torch.testing.assert_close(parts["local_similarity"], torch.zeros(2))
        torch.testing.assert_close(parts["total"], parts["global_similarity"])

    def test_restoration_value_known(self):
        """Zero restoration heads predict 0 (linear) or 0.5 (sigmoid): the MSE is mean(gt²) or mean((gt-0.5)²)."""
        gt = torch.rand(1, 2, 1, 4, 4, 4)
        globals_ = [pyramid(1, seed=0), pyramid(1, seed=1)]
        for act, offset in ((None, 0.0), ("sigmoid", 0.5)):
            loss = PCRLv2Loss(in_channels=(4, 2), out_channels=1, output_act=act, scale_sampling="all")
            with torch.no_grad():
                for conv in [loss.final_restoration] + [s.restoration for s in loss.scales]:
                    conv.weight.zero_()
                    conv.bias.zero_()
            parts = loss.components({"global_pyramids": globals_}, {"pcrlv2_global_target": gt})
            expected = (gt - offset).pow(2).mean()
            torch.testing.assert_close(parts["restoration"], expected.reshape(1), rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(parts["deep_supervision"], expected.reshape(1), rtol=1e-5, atol=1e-7)

    def test_end_to_end_gradients_random_scale(self):
        torch.manual_seed(0)
        globals_ = [[t.requires_grad_() for t in pyramid(1, seed=i)] for i in range(2)]
        locals_ = [pyramid(1, sizes=((1, 1, 1), (2, 2, 2)), seed=5 + j) for j in range(3)]
        loss = PCRLv2Loss(in_channels=(4, 2), out_channels=1, generator=torch.Generator().manual_seed(1))
        value = loss({"global_pyramids": globals_, "local_pyramids": locals_},
                     {"pcrlv2_global_target": torch.rand(1, 2, 1, 8, 8, 8)})
        self.assertEqual(value.ndim, 0)
        self.assertTrue(math.isfinite(float(value)))
        value.backward()
        self.assertTrue(all(t.grad is not None for t in globals_[0]))
        self.assertTrue(any(p.grad is not None for p in loss.parameters()))
        none = PCRLv2Loss(in_channels=(4, 2), reduction="none", scale_sampling="all")(
            {"global_pyramids": [pyramid(3), pyramid(3, seed=1)]},
            {"pcrlv2_global_target": torch.rand(3, 2, 1, 4, 4, 4)},
        )
        self.assertEqual(tuple(none.shape), (3,))

    def test_validation(self):
        loss = PCRLv2Loss(in_channels=(4, 2))
        with self.assertRaisesRegex(ValueError, "2 global pyramids"):
            loss({"global_pyramids": [pyramid(1)]}, {"pcrlv2_global_target": torch.rand(1, 2, 1, 4, 4, 4)})
        with self.assertRaisesRegex(ValueError, r"C_s = \[4, 2\]"):
            loss({"global_pyramids": [pyramid(1, channels=(4, 3)), pyramid(1)]},
                 {"pcrlv2_global_target": torch.rand(1, 2, 1, 4, 4, 4)})
        with self.assertRaisesRegex(ValueError, r"\(B=1, 2, 1, \*G\)"):
            loss({"global_pyramids": [pyramid(1), pyramid(1)]}, {"pcrlv2_global_target": torch.rand(1, 1, 4, 4, 4)})
        with self.assertRaises(ValueError):
            PCRLv2Loss(in_channels=(4,), scale_sampling="some")


if __name__ == "__main__":
    unittest.main()
