# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import math
import unittest

import numpy as np
import torch
from parameterized import parameterized

from monai_cover.transforms.spatial import (
    DEFAULT_MAX_DISPLACEMENT,
    SpatialParams,
    default_spatial_ranges,
    max_abs_displacement,
    resample_crop,
    sample_spatial_params,
    spatial_ddf,
)


def _params(d, crop, origin=None, centre=None, **kw):
    base = dict(
        rotate=(0.0,) * (1 if d == 2 else 3),
        scale=(1.0,) * d,
        shear=(0.0,) * (d * (d - 1)),
        translate=(0.0,) * d,
        centre=tuple((c - 1) / 2 for c in crop) if centre is None else centre,
        crop_origin=(0,) * d if origin is None else origin,
        crop_size=crop,
    )
    base.update(kw)
    return SpatialParams(**base)


class TestSpatialDDF(unittest.TestCase):
    @parameterized.expand([(2, (7, 6)), (3, (5, 6, 4))])
    def test_identity_exact(self, d, crop):
        img = torch.rand(2, *[c + 3 for c in crop])
        p = _params(d, crop, origin=(1,) * d)
        self.assertTrue(p.is_identity())
        ddf = spatial_ddf(p)
        self.assertEqual(tuple(ddf.shape), (d, *crop))
        self.assertEqual(ddf.dtype, torch.float32)
        self.assertTrue(torch.equal(ddf, torch.zeros_like(ddf)))
        out = resample_crop(img, p)
        self.assertTrue(torch.equal(out, img[(slice(None), *[slice(1, 1 + c) for c in crop])]))

    def test_rotation_90_2d(self):
        crop = (9, 9)
        p = _params(2, crop, rotate=(math.pi / 2,))
        ddf = spatial_ddf(p)
        c = 4.0
        x0, x1 = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
        # A = R(90 deg) = [[0, -1], [1, 0]]: src0 = -(x1 - c) + c, src1 = (x0 - c) + c
        torch.testing.assert_close(ddf[0], -(x1 - c) + c - x0, atol=1e-5, rtol=0)
        torch.testing.assert_close(ddf[1], (x0 - c) + c - x1, atol=1e-5, rtol=0)
        img = torch.rand(1, 9, 9)
        out = resample_crop(img, p, ddf)
        # exact permutation of voxels: out(x0, x1) = img(8 - x1, x0)
        torch.testing.assert_close(out[0], img[0][8 - x1.long(), x0.long()], atol=1e-5, rtol=0)

    def test_integer_translation_reads_outside_crop(self):
        img = torch.rand(1, 20, 20, 20)
        p = _params(3, (6, 6, 6), origin=(7, 7, 7), centre=(9.5, 9.5, 9.5), translate=(2.0, -3.0, 4.0))
        ddf = spatial_ddf(p)
        self.assertTrue(torch.equal(ddf[0], torch.full((6, 6, 6), 2.0)))
        self.assertTrue(torch.equal(ddf[1], torch.full((6, 6, 6), -3.0)))
        out = resample_crop(img, p, ddf)
        torch.testing.assert_close(out, img[:, 9:15, 4:10, 11:17], atol=1e-6, rtol=0)

    def test_rotation_about_axis_2_keeps_axis_2(self):
        p = _params(3, (6, 7, 5), rotate=(0.0, 0.0, 0.3))
        ddf = spatial_ddf(p)
        self.assertEqual(float(ddf[2].abs().max()), 0.0)
        self.assertGreater(float(ddf[0].abs().max()), 0.5)

    @parameterized.expand([(2,), (3,)])
    def test_bound_helper(self, d):
        R = np.random.RandomState(3)
        ranges = default_spatial_ranges(d, elastic=False)
        crop = (20,) * d
        for _ in range(5):
            p = sample_spatial_params(R, (30,) * d, crop, ranges, max_displacement=None)
            bound = max_abs_displacement(p)
            actual = spatial_ddf(p).abs().reshape(d, -1).amax(1).double().numpy()
            np.testing.assert_allclose(bound, actual, atol=1e-3)  # exact for affine-only draws
        ranges_el = default_spatial_ranges(d, elastic=True, elastic_alpha_range=(3000, 3000))
        p = sample_spatial_params(R, (30,) * d, crop, ranges_el, max_displacement=None)
        self.assertIsNotNone(p.elastic)
        actual = spatial_ddf(p).abs().reshape(d, -1).amax(1).double().numpy()
        self.assertTrue(np.all(max_abs_displacement(p) >= actual - 1e-4))

    @parameterized.expand([(2, (64, 64), (96, 96)), (3, (24, 24, 24), (36, 36, 36))])
    def test_max_displacement_enforced(self, d, crop, shape):
        strong = default_spatial_ranges(d, rotate_range=1.0, scale_range=0.9, translate_range=0.5, elastic=True)
        draws = [
            sample_spatial_params(np.random.RandomState(s), shape, crop, strong, max_displacement=None)
            for s in range(4)
        ]
        unbounded = [float(spatial_ddf(p).abs().max()) for p in draws]
        self.assertGreater(max(unbounded), 8.0)
        for s in range(4):
            p = sample_spatial_params(np.random.RandomState(s), shape, crop, strong, max_displacement=8.0)
            self.assertLessEqual(float(spatial_ddf(p).abs().max()), 8.0 + 1e-3)
        self.assertEqual(DEFAULT_MAX_DISPLACEMENT, 62)

    def test_shrunk_zero_is_identity(self):
        R = np.random.RandomState(0)
        p = sample_spatial_params(R, (30, 30, 30), (20, 20, 20), default_spatial_ranges(3))
        self.assertFalse(p.is_identity())
        self.assertTrue(p.shrunk(0.0).is_identity())

    def test_deterministic_sampling(self):
        ranges = default_spatial_ranges(3)
        a = sample_spatial_params(np.random.RandomState(5), (30, 31, 32), (20, 21, 22), ranges)
        b = sample_spatial_params(np.random.RandomState(5), (30, 31, 32), (20, 21, 22), ranges)
        self.assertTrue(torch.equal(spatial_ddf(a), spatial_ddf(b)))
        self.assertTrue(all(0 <= o <= s - c for o, s, c in zip(a.crop_origin, (30, 31, 32), (20, 21, 22))))

    @parameterized.expand(
        [
            ({"rotate_range": -1.0}, "rotate_range"),
            ({"scale_range": 1.5}, "scale_range"),
            ({"shear_range": 2.0}, "shear_range"),
            ({"translate_range": [0.1, 0.1]}, "translate_range"),
            ({"elastic_sigma_range": (5.0, 1.0)}, "elastic_sigma_range"),
        ]
    )
    def test_bad_ranges(self, kwargs, name):
        with self.assertRaisesRegex(ValueError, name):
            default_spatial_ranges(3, **kwargs)


if __name__ == "__main__":
    unittest.main()
