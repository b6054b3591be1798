# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import math
import unittest

import torch

from monai_cover.losses.voco import VoCoLoss


def onehot_bases(batch=1, n_base=4, width=6):
    return torch.eye(width)[:n_base][None].repeat(batch, 1, 1)


class TestVoCoLoss(unittest.TestCase):
    def test_minimum_zero_when_random_crop_equals_a_base(self):
        base = onehot_bases(2)
        rand = base[:, [2, 0]].clone()  # random crops equal to bases 2 and 0
        labels = torch.zeros(2, 2, 4)
        labels[:, 0, 2] = 1
        labels[:, 1, 0] = 1
        parts = VoCoLoss().components({"base_features": base, "random_features": rand}, {"voco_labels": labels})
        for key in ("pos", "neg", "reg", "total"):
            torch.testing.assert_close(parts[key], torch.zeros(2), atol=1e-6, rtol=0)

    def test_known_value_half_overlap(self):
        base = onehot_bases(1)
        rand = (base[:, 0] + base[:, 1])[:, None]  # cos = 1/√2 with bases 0 and 1, 0 with the others
        labels = torch.tensor([[[0.5, 0.5, 0.0, 0.0]]])
        parts = VoCoLoss().components({"base_features": base, "random_features": rand}, {"voco_labels": labels})
        expected_pos = -math.log(1 - abs(0.5 - 1 / math.sqrt(2)))  # Σ y log(.) / Σ y with equal terms
        self.assertAlmostEqual(float(parts["pos"]), expected_pos, places=5)
        self.assertAlmostEqual(float(parts["neg"]), 0.0, places=6)
        self.assertAlmostEqual(float(parts["reg"]), 0.0, places=6)

    def test_negative_and_regulariser_values(self):
        base = torch.ones(1, 3, 2)  # identical bases: every pair has cos 1 -> reg = 1
        rand = torch.ones(1, 1, 2)  # l = 1 everywhere
        labels = torch.tensor([[[1.0, 0.0, 0.0]]])
        parts = VoCoLoss().components({"base_features": base, "random_features": rand}, {"voco_labels": labels})
        self.assertAlmostEqual(float(parts["reg"]), 1.0, places=5)
        self.assertAlmostEqual(float(parts["neg"]), 1.0, places=5)
        self.assertAlmostEqual(float(parts["pos"]), 0.0, places=5)

    def test_projection_gradients_and_reduction(self):
        torch.manual_seed(0)
        base = torch.randn(2, 4, 8, requires_grad=True)
        rand = torch.randn(2, 3, 8, requires_grad=True)
        labels = torch.softmax(torch.randn(2, 3, 4), dim=2)
        loss = VoCoLoss(in_channels=8, projection_channels=(16, 16))
        value = loss({"base_features": base, "random_features": rand}, {"voco_labels": labels})
        value.backward()
        self.assertIsNotNone(base.grad)
        self.assertIsNotNone(rand.grad)
        self.assertTrue(all(p.grad is not None for p in loss.parameters()))
        none = VoCoLoss(reduction="none")({"base_features": base, "random_features": rand}, {"voco_labels": labels})
        self.assertEqual(tuple(none.shape), (2,))

    def test_validation(self):
        loss = VoCoLoss()
        with self.assertRaisesRegex(ValueError, r"\(2, 3, 4\)"):
            loss({"base_features": torch.zeros(2, 4, 5), "random_features": torch.zeros(2, 3, 5)},
                 {"voco_labels": torch.zeros(2, 4, 3)})
        with self.assertRaisesRegex(ValueError, "base_features"):
            loss({"random_features": torch.zeros(2, 3, 5)}, {"voco_labels": torch.zeros(2, 3, 4)})


if __name__ == "__main__":
    unittest.main()
