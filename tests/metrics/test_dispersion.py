# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import math
import unittest

import torch

from monai_cover.metrics.dispersion import (
    _has_collapse,
    dispersion_report,
    effective_rank,
    extract_features,
    feature_dispersion,
    format_dispersion,
)


def clustered(theta: float, per_class: int = 50, dims: int = 4):
    """Two classes; every voxel of class 1 is (1, 0, ...), of class 2 is (cos θ, sin θ, ...), scaled randomly."""
    v1 = torch.zeros(dims)
    v1[0] = 1
    v2 = torch.zeros(dims)
    v2[0], v2[1] = math.cos(theta), math.sin(theta)
    scale = torch.rand(2 * per_class, 1) + 0.5
    feats = torch.cat([v1.repeat(per_class, 1), v2.repeat(per_class, 1)]) * scale
    labels = torch.tensor([1] * per_class + [2] * per_class)
    return feats, labels


class TestEffectiveRank(unittest.TestCase):
    def test_equal_singular_values_give_k(self):
        # columns ±1 of a Hadamard matrix: zero mean and orthogonal, so centring changes nothing
        h = torch.tensor([[1.0]])
        for _ in range(3):
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)  # 8 x 8
        for k in (1, 3, 5):
            basis = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))[0][:k]  # (k, 16) orthonormal rows
            feats = h[:, 1:k + 1].double() @ basis
            self.assertAlmostEqual(effective_rank(feats), k, places=6)

    def test_random_rank_k_close_to_k(self):
        g = torch.Generator().manual_seed(0)
        feats = torch.randn(4000, 3, generator=g) @ torch.randn(3, 32, generator=g)  # rank 3, unequal spectrum
        white = torch.randn(4000, 3, generator=g) @ torch.linalg.qr(torch.randn(32, 3, generator=g))[0].t()
        self.assertAlmostEqual(effective_rank(white), 3.0, delta=0.1)
        self.assertLessEqual(effective_rank(feats), 3.0 + 1e-6)
        self.assertEqual(effective_rank(torch.zeros(5, 3)), 0.0)

    @unittest.skipUnless(_has_collapse, "MONAI EmbeddingCollapseMetric not available")
    def test_matches_monai(self):
        from monai.metrics import EmbeddingCollapseMetric

        feats = torch.randn(200, 16) @ torch.diag(torch.linspace(0.1, 2, 16))
        score = EmbeddingCollapseMetric(reduction="none")(feats)["effective_rank_score"]
        monai_rank = (1 - float(score)) * min(feats.shape[0] - 1, feats.shape[1])
        self.assertAlmostEqual(effective_rank(feats), monai_rank, places=3)


class TestFeatureDispersion(unittest.TestCase):
    def test_perfect_clusters_known_inter(self):
        theta = math.pi / 3
        feats, labels = clustered(theta)
        r = feature_dispersion(feats, labels)
        self.assertAlmostEqual(r["intra_cosine"], 1.0, places=6)
        self.assertAlmostEqual(r["inter_cosine"], math.cos(theta), places=6)
        self.assertAlmostEqual(r["ratio"], 1 / math.cos(theta), places=5)
        self.assertAlmostEqual(r["gap"], 1 - math.cos(theta), places=6)
        self.assertLessEqual(r["effective_rank"], 2.0 + 1e-9)  # the features span two directions
        self.assertGreater(r["effective_rank"], 1.0)
        self.assertEqual(r["classes"], [1, 2])
        self.assertEqual(r["per_class"][1]["count"], 50)
        self.assertAlmostEqual(r["inter_matrix"][0][1], math.cos(theta), places=6)
        if _has_collapse:
            self.assertAlmostEqual(r["embedding_collapse"]["centroid_similarity"], (1 + math.cos(theta)) / 2, places=5)

    def test_orthogonal_clusters_ratio_nan(self):
        r = feature_dispersion(*clustered(math.pi / 2), collapse_metric=False)
        self.assertAlmostEqual(r["inter_cosine"], 0.0, places=6)
        self.assertTrue(math.isnan(r["ratio"]))
        self.assertIsNone(r["embedding_collapse"])

    def test_maps_background_and_exact_pairwise_mean(self):
        g = torch.Generator().manual_seed(1)
        feats = torch.randn(2, 3, 4, 5, 2, generator=g)
        labels = torch.randint(0, 3, (2, 1, 4, 5, 2), generator=g)
        r = feature_dispersion(feats, labels, ignore_background=True)
        self.assertEqual(r["classes"], [1, 2])
        flat = feats.permute(0, 2, 3, 4, 1).reshape(-1, 3)
        lab = labels.reshape(-1)
        z = torch.nn.functional.normalize(flat.double(), dim=1)
        z1, z2 = z[lab == 1], z[lab == 2]
        s11 = z1 @ z1.t()
        n1 = z1.shape[0]
        intra1 = (s11.sum() - s11.diagonal().sum()) / (n1 * (n1 - 1))
        self.assertAlmostEqual(r["per_class"][1]["intra_cosine"], float(intra1), places=6)
        self.assertAlmostEqual(r["inter_cosine"], float((z1 @ z2.t()).mean()), places=6)
        with_bg = feature_dispersion(feats, labels, ignore_background=False, collapse_metric=False)
        self.assertEqual(with_bg["classes"], [0, 1, 2])

    def test_sampling_and_coarse_features(self):
        feats = torch.randn(1, 4, 8, 8, 8)
        labels = torch.zeros(1, 1, 16, 16, 16, dtype=torch.long)
        labels[..., :8, :, :] = 1
        labels[..., 8:, :, :] = 2
        r = feature_dispersion(feats, labels, max_voxels=100, generator=torch.Generator().manual_seed(0))
        self.assertEqual(r["num_voxels"], 512)
        self.assertEqual(r["num_sampled"], 100)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "at least 2 labelled voxels"):
            feature_dispersion(torch.randn(3, 2), torch.zeros(3))
        with self.assertRaisesRegex(ValueError, r"\(1, 1, \*S\)|\(B, 1, \*S\)"):
            feature_dispersion(torch.randn(1, 2, 4, 4), torch.zeros(2, 1, 4, 4))


class TestExtractFeatures(unittest.TestCase):
    def test_pyramid_backbone_and_report(self):
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv3d(1, 3, 1)

            def forward(self, x):
                fine = self.conv(x)
                return [torch.nn.functional.avg_pool3d(fine, 2), fine]

        net = Net().train()
        image = torch.rand(1, 8, 8, 8)
        feats = extract_features(net, image)
        self.assertEqual(tuple(feats.shape), (1, 3, 8, 8, 8))
        self.assertTrue(net.training)
        sw = extract_features(net, image, roi_size=(4, 4, 4))
        torch.testing.assert_close(sw, feats, atol=1e-5, rtol=1e-5)
        coarse = extract_features(net, image[None], level=0)
        self.assertEqual(tuple(coarse.shape), (1, 3, 4, 4, 4))
        label = torch.zeros(1, 8, 8, 8, dtype=torch.long)
        label[:, :4] = 1
        label[:, 4:] = 2
        report = dispersion_report(net, image, label, collapse_metric=False)
        self.assertEqual(report["num_voxels"], 512)
        table = format_dispersion({"toy": report})
        self.assertIn("| toy |", table)


if __name__ == "__main__":
    unittest.main()
