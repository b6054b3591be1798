# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import math
import unittest
import warnings

import torch
from parameterized import parameterized

from monai_cover.ddf import overlap_mask
from monai_cover.losses import CoverLoss, FeatureConsistencyLoss, VectorRegressionLoss


def hand_case():
    """B=2, 2x2 grid. Sample 0: errors |1|+|0| = 1 and |2|+|-1| = 3 on the two masked voxels; sample 1: error 1 at
    each of its 4 voxels, all masked."""
    target = torch.zeros(2, 2, 2, 2)
    target[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target[0, 1] = torch.tensor([[0.0, -1.0], [0.0, 0.0]])
    target[1, 0] = 1.0
    mask = torch.zeros(2, 1, 2, 2)
    mask[0, 0, 0] = 1.0
    mask[1] = 1.0
    return torch.zeros_like(target), target, mask


class TestVectorRegressionLoss(unittest.TestCase):
    def test_perfect_prediction(self):
        ddf = torch.randn(2, 3, 4, 5, 6)
        self.assertEqual(float(VectorRegressionLoss()(ddf, ddf.clone(), overlap_mask(ddf))), 0.0)

    @parameterized.expand([("mean", 8.0 / 6.0), ("sum", 8.0), ("none", [2.0, 1.0])])
    def test_hand_values(self, reduction, expected):
        pred, target, mask = hand_case()
        value = VectorRegressionLoss(reduction)(pred, target, mask)
        torch.testing.assert_close(value, torch.tensor(expected))

    def test_no_mask_and_channelless_mask(self):
        pred, target, mask = hand_case()
        torch.testing.assert_close(VectorRegressionLoss()(pred, target), torch.tensor((1 + 3 + 3 + 4 + 4) / 8.0))
        torch.testing.assert_close(VectorRegressionLoss()(pred, target, mask[:, 0]), torch.tensor(8.0 / 6.0))

    @parameterized.expand([("mean",), ("sum",), ("none",)])
    def test_empty_mask_is_zero_with_warning(self, reduction):
        pred = torch.randn(2, 2, 4, 4, requires_grad=True)
        with self.assertWarnsRegex(UserWarning, "empty"):
            value = VectorRegressionLoss(reduction)(pred, torch.randn(2, 2, 4, 4), torch.zeros(2, 1, 4, 4))
        self.assertTrue(torch.equal(value, torch.zeros_like(value)))
        value.sum().backward()
        self.assertTrue(torch.equal(pred.grad, torch.zeros_like(pred)))

    def test_nan_outside_mask_does_not_leak(self):
        pred = torch.zeros(1, 2, 2, 2, requires_grad=True)
        target = torch.full((1, 2, 2, 2), float("nan"))
        target[..., 0, 0] = 1.0
        mask = torch.zeros(1, 1, 2, 2)
        mask[..., 0, 0] = 1.0
        value = VectorRegressionLoss()(pred, target, mask)
        self.assertEqual(float(value.detach()), 2.0)
        value.backward()
        self.assertTrue(torch.isfinite(pred.grad).all())

    def test_shape_errors_name_shapes(self):
        loss = VectorRegressionLoss()
        with self.assertRaisesRegex(ValueError, r"\(1, 2, 4, 4\).*\(1, 2, 4, 5\)"):
            loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5))
        with self.assertRaisesRegex(ValueError, r"\(1, 3, 4, 4\)"):
            loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
        with self.assertRaisesRegex(ValueError, r"\(1, 1, 4, 4\).*\(1, 2, 4, 4\)"):
            loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
        with self.assertRaises(ValueError):
            VectorRegressionLoss("average")


class TestFeatureConsistencyLoss(unittest.TestCase):
    def test_identical_features_zero(self):
        f = torch.randn(2, 5, 6, 7)
        ddf = torch.zeros(2, 2, 6, 7)
        self.assertAlmostEqual(float(FeatureConsistencyLoss()(f, f.clone(), ddf, overlap_mask(ddf))), 0.0, places=6)

    def test_shifted_features_warped_by_true_ddf_zero(self):
        # A(p + e0) = B(p): the true field is +1 along axis 0; in the overlap the warped A equals B
        fb = torch.randn(1, 4, 6, 5, 4)
        fa = torch.roll(fb, 1, dims=2)
        ddf = torch.zeros(1, 3, 6, 5, 4)
        ddf[:, 0] = 1.0
        mask = overlap_mask(ddf)
        self.assertEqual(float(mask.sum()), 5 * 5 * 4)
        self.assertAlmostEqual(float(FeatureConsistencyLoss()(fb, fa, ddf, mask)), 0.0, places=5)
        self.assertGreater(float(FeatureConsistencyLoss()(fb, fa, torch.zeros_like(ddf), mask)), 0.1)

    def test_hand_values(self):
        fb = torch.zeros(2, 2, 2, 2)
        fb[:, 0] = 1.0  # (1, 0)
        fa = torch.ones(2, 2, 2, 2)  # (1, 1): cos = 1/sqrt(2)
        fa[1, 1] = -1.0  # sample 1: (1, -1), also 1/sqrt(2)
        fa[1, :, 0, 0] = torch.tensor([-1.0, 0.0])  # sample 1, voxel (0, 0): cos = -1
        ddf = torch.zeros(2, 2, 2, 2)
        mask = torch.ones(2, 1, 2, 2)
        mask[0, 0, 1] = 0.0
        c = 1.0 - 1.0 / math.sqrt(2.0)
        loss = FeatureConsistencyLoss("none")(fb, fa, ddf, mask)
        torch.testing.assert_close(loss, torch.tensor([c, (3 * c + 2.0) / 4]))
        torch.testing.assert_close(FeatureConsistencyLoss()(fb, fa, ddf, mask), torch.tensor((5 * c + 2.0) / 6))
        torch.testing.assert_close(FeatureConsistencyLoss("sum")(fb, fa, ddf, mask), torch.tensor(5 * c + 2.0))

    def test_empty_mask_gradients_and_errors(self):
        fb = torch.randn(1, 3, 4, 4, requires_grad=True)
        fa = torch.randn(1, 3, 4, 4, requires_grad=True)
        ddf = torch.randn(1, 2, 4, 4)
        with self.assertWarnsRegex(UserWarning, "empty"):
            value = FeatureConsistencyLoss()(fb, fa, ddf, torch.zeros(1, 1, 4, 4))
        self.assertEqual(float(value.detach()), 0.0)
        value = FeatureConsistencyLoss()(fb, fa, ddf, overlap_mask(ddf))
        value.backward()
        self.assertTrue(torch.isfinite(fb.grad).all() and torch.isfinite(fa.grad).all())
        with self.assertRaisesRegex(ValueError, r"\(1, 3, 4, 4\).*\(1, 3, 4, 5\)"):
            FeatureConsistencyLoss()(fb, torch.zeros(1, 3, 4, 5), ddf)
        with self.assertRaisesRegex(ValueError, r"\(1, 2, 4, 4\).*\(1, 3, 4, 4\)"):
            FeatureConsistencyLoss()(fb, fa, torch.zeros(1, 3, 4, 4))


class TestCoverLoss(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.true = 1.5 * torch.randn(2, 2, 8, 8)
        self.target = {"ddf": self.true, "overlap": overlap_mask(self.true)}
        self.pred = {
            "ddf": torch.randn(2, 2, 8, 8, requires_grad=True),
            "features_a": torch.randn(2, 6, 8, 8, requires_grad=True),
            "features_b": torch.randn(2, 6, 8, 8, requires_grad=True),
        }

    def test_weighted_sum_of_terms(self):
        vec = VectorRegressionLoss()(self.pred["ddf"], self.true, self.target["overlap"])
        fb, fa = self.pred["features_b"], self.pred["features_a"]
        con = FeatureConsistencyLoss()(fb, fa, self.true, self.target["overlap"])
        torch.testing.assert_close(CoverLoss.paper()(self.pred, self.target), vec + con)
        loss = CoverLoss(vector_weight=0.5, consistency_weight=2.0, spread_weight=0.0)
        torch.testing.assert_close(loss(self.pred, self.target), 0.5 * vec + 2.0 * con)
        terms = loss.terms(self.pred, self.target)
        self.assertEqual(sorted(terms), ["consistency", "vector"])
        torch.testing.assert_close(terms["vector"], vec)
        torch.testing.assert_close(terms["consistency"], con)
        self.assertEqual(list(CoverLoss(vector_weight=0.0).terms(self.pred, self.target)), ["consistency", "spread"])
        self.assertEqual(CoverLoss().spread_weight, 1.0)  # our default; CoverLoss.paper() has none
        # the overlap defaults to the one of the true field; "none" gives one value per sample
        torch.testing.assert_close(CoverLoss.paper()(self.pred, {"ddf": self.true}), vec + con)
        self.assertEqual(tuple(CoverLoss(reduction="none")(self.pred, self.target).shape), (2,))
        only_vec = CoverLoss(consistency_weight=0.0, spread_weight=0.0)({"ddf": self.pred["ddf"]}, self.target)
        torch.testing.assert_close(only_vec, vec)

    def test_gradients_and_custom_keys(self):
        loss = CoverLoss(ddf_key="flow", target_ddf_key="gt", overlap_key="eps")
        pred = {"flow": self.pred["ddf"], "features_a": self.pred["features_a"], "features_b": self.pred["features_b"]}
        value = loss(pred, {"gt": self.true, "eps": self.target["overlap"]})
        value.backward()
        for t in self.pred.values():
            self.assertTrue(t.grad is not None and torch.isfinite(t.grad).all())
        with self.assertRaisesRegex(KeyError, "'flow'"):
            loss(self.pred, {"gt": self.true})
        with self.assertRaisesRegex(TypeError, "mappings"):
            CoverLoss()(self.pred["ddf"], self.true)
        with self.assertRaisesRegex(ValueError, "vector_weight"):
            CoverLoss(vector_weight=-1)

    def test_empty_overlap_and_autocast(self):
        target = {"ddf": self.true, "overlap": torch.zeros(2, 1, 8, 8)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = CoverLoss()(self.pred, target)
        self.assertEqual(float(value.detach()), 0.0)
        self.assertTrue(any("empty" in str(w.message) for w in caught))
        pred = {k: v.detach().bfloat16() for k, v in self.pred.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = CoverLoss()(pred, self.target)
        self.assertEqual(value.dtype, torch.float32)
        self.assertTrue(torch.isfinite(value))


if __name__ == "__main__":
    unittest.main()


class TestCollapseGuards(unittest.TestCase):
    def setUp(self):
        gen = torch.Generator().manual_seed(3)
        self.fa = torch.randn(2, 4, 6, 6, generator=gen, requires_grad=True)
        self.fb = torch.randn(2, 4, 6, 6, generator=gen, requires_grad=True)
        self.ddf = torch.zeros(2, 2, 6, 6)
        self.mask = torch.ones(2, 1, 6, 6)

    def test_stop_gradient_blocks_one_view(self):
        for side, blocked, flowing in (("a", self.fa, self.fb), ("b", self.fb, self.fa)):
            self.fa.grad = self.fb.grad = None
            FeatureConsistencyLoss(stop_gradient=side)(self.fb, self.fa, self.ddf, self.mask).backward()
            self.assertIsNone(blocked.grad)
            self.assertGreater(float(flowing.grad.abs().sum()), 0)
        with self.assertRaisesRegex(ValueError, "stop_gradient"):
            FeatureConsistencyLoss(stop_gradient="both")

    def test_spread_loss_values(self):
        from monai_cover.losses import FeatureSpreadLoss

        # unit-variance decorrelated channels: no variance penalty, small covariance
        loss = FeatureSpreadLoss(num_samples=10_000, covariance_weight=1.0, eps=0.0)
        gen = torch.Generator().manual_seed(0)
        spread = torch.randn(1, 3, 40, 40, generator=gen)
        self.assertLess(float(loss(spread, spread)), 0.05)
        # constant features: every channel has std 0, the variance term is gamma = 1, no covariance
        constant = torch.ones(1, 3, 8, 8)
        self.assertAlmostEqual(float(loss(constant, constant)), 1.0, places=5)
        # two identical channels of std 2: no variance penalty, covariance 4 twice over 2 channels
        twin = torch.randn(1, 1, 50, 50, generator=gen)
        twin = 2 * (twin - twin.mean()) / twin.std()
        pair = torch.cat([twin, twin], dim=1)
        self.assertAlmostEqual(float(loss(pair, pair)), 2 * 16 / 2, delta=0.5)

    def test_cover_loss_presets_and_spread_term(self):
        out = {"ddf": torch.zeros(2, 2, 6, 6), "features_a": self.fa, "features_b": self.fb}
        target = {"ddf": self.ddf, "overlap": self.mask}
        paper = CoverLoss.paper()
        self.assertEqual((paper.vector_weight, paper.consistency_weight, paper.spread_weight), (1.0, 1.0, 0.0))
        self.assertIsNone(paper.consistency_loss.stop_gradient)
        guarded = CoverLoss(spread_weight=0.5, consistency_stop_gradient="a", spread_kwargs={"num_samples": 100})
        torch.manual_seed(0)
        terms = guarded.terms(out, target)
        self.assertEqual(sorted(terms), ["consistency", "spread", "vector"])
        torch.manual_seed(0)
        value = guarded(out, target)
        torch.testing.assert_close(value, terms["vector"] + terms["consistency"] + 0.5 * terms["spread"])
        with self.assertRaisesRegex(ValueError, "spread_weight"):
            CoverLoss(spread_weight=-1)


def test_formula_names_the_terms_it_sums():
    from monai_cover.methods import build_method
    from monai_cover.networks import FeaturePyramid
    from monai_cover.networks.nets import CoverNet

    assert CoverLoss().formula == "L_vec + L_con + L_spread"
    assert CoverLoss.paper().formula == "L_vec + L_con"
    assert CoverLoss(spread_weight=0.5, vector_weight=2).formula == "2*L_vec + L_con + 0.5*L_spread"
    assert CoverLoss(vector_weight=0, consistency_weight=0, spread_weight=0).formula == "0"
    from monai.networks.nets import BasicUNet

    pyramid = FeaturePyramid(BasicUNet(spatial_dims=2, features=(4, 4, 8, 8, 16, 4)))
    from monai_cover.engines import CoverPrepareBatch
    from monai_cover.transforms import RandCoverPaird

    method = build_method("cover", pyramid, cover_net=CoverNet(pyramid, levels=2), cover_loss=CoverLoss(),
                          transform=RandCoverPaird(keys="image", spatial_size=(32, 32)),
                          cover_prepare_batch=CoverPrepareBatch())
    assert method.loss_title == "COVER pretraining loss (L_vec + L_con + L_spread)"  # loss_summary.txt's heading
