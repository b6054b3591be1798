# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import unittest

import numpy as np
import torch
from monai.data import MetaTensor
from parameterized import parameterized

from monai_cover.ddf import warp
from monai_cover.transforms import CoverPair, RandCoverPair

NO_SPATIAL = dict(rotate_range=0.0, scale_range=0.0, shear_range=0.0, translate_range=0.0, elastic=False)


def smooth_image(shape, channels=1):
    """Low-frequency test image (C, *shape), values in about [-3, 3]."""
    axes = torch.meshgrid(*[torch.linspace(0.0, 1.0, int(s)) for s in shape], indexing="ij")
    chans = [sum(torch.sin((2.0 + c + i) * x + 0.5 * i) for i, x in enumerate(axes)) for c in range(channels)]
    return torch.stack(chans, 0)


def crop_of(img, pair_t):
    p = pair_t.spatial_params
    return img[(slice(None), *[slice(o, o + c) for o, c in zip(p.crop_origin, p.crop_size)])]


class TestRandCoverPair(unittest.TestCase):
    @parameterized.expand(
        [
            ("2d_affine", (40, 36), (24, 22), False),
            ("2d_elastic", (40, 36), (24, 22), True),
            ("3d_affine", (30, 28, 26), (18, 16, 14), False),
            ("3d_elastic", (30, 28, 26), (18, 16, 14), True),
        ]
    )
    def test_warp_reproduces_view_b(self, _, shape, crop, elastic):
        img = smooth_image(shape, channels=2)
        t = RandCoverPair(
            spatial_size=crop, appearance=False, elastic=elastic, elastic_alpha_range=(2000.0, 3000.0),
            rotate_range=0.3, scale_range=0.2, translate_range=0.1,
        )  # fmt: skip
        checked = 0
        for seed in range(3):
            out = t.set_random_state(seed)(img)
            self.assertIsInstance(out, CoverPair)
            self.assertFalse(t.spatial_params.is_identity())
            self.assertEqual(tuple(out.ddf.shape), (len(shape), *crop))
            self.assertEqual(tuple(out.overlap.shape), (1, *crop))
            self.assertEqual(tuple(out.view_b.shape), (2, *crop))
            geom_a = crop_of(img, t)
            self.assertTrue(torch.equal(out.view_a.as_tensor(), geom_a))  # appearance off
            mask = out.overlap.as_tensor() > 0
            if int(mask.sum()) < 10:
                continue
            checked += 1
            self.assertGreater(float(out.ddf.abs().max()), 0.5)
            warped = warp(geom_a, out.ddf.as_tensor())
            err = ((warped - out.view_b.as_tensor()).abs() * mask).max()
            self.assertLess(float(err), 1e-4)
            # outside the overlap view B is not a warp of the crop (it reads the rest of the image)
        self.assertGreaterEqual(checked, 2)

    @parameterized.expand(
        [
            ("zero_ranges_crop", dict(NO_SPATIAL), (20, 18, 16), (12, 10, 8)),
            ("spatial_prob_0", dict(spatial_prob=0.0), (20, 18, 16), (12, 10, 8)),
            ("zero_ranges_2d_full", dict(NO_SPATIAL), (21, 17), None),
        ]
    )
    def test_identity_exact(self, _, kwargs, shape, crop):
        img = torch.rand(1, *shape)
        out = RandCoverPair(spatial_size=crop, appearance=False, **kwargs).set_random_state(0)(img)
        self.assertTrue(torch.equal(out.ddf, torch.zeros_like(out.ddf)))
        self.assertTrue(torch.equal(out.view_b, out.view_a))
        self.assertTrue(torch.equal(out.overlap, torch.ones_like(out.overlap)))
        if crop is None:
            self.assertTrue(torch.equal(out.view_a.as_tensor(), img))

    @parameterized.expand([(axis, sign) for axis in range(3) for sign in (1, -1)])
    def test_mask_every_axis(self, axis, sign):
        """Only one axis leaves the image: the mask must cut along that axis alone."""
        shape = (12, 10, 16)
        img = torch.rand(1, *shape) + 1.0
        translate = [0.0, 0.0, 0.0]
        translate[axis] = (sign * 0.25, sign * 0.25)  # fraction of the (full-image) region
        t = RandCoverPair(spatial_size=None, appearance=False, rotate_range=0.0, scale_range=0.0, shear_range=0.0,
                          translate_range=translate, elastic=False, max_displacement=None)  # fmt: skip
        out = t.set_random_state(0)(img)
        shift = sign * 0.25 * shape[axis]
        self.assertAlmostEqual(float(out.ddf[axis].mean()), shift, places=5)
        coord = torch.arange(shape[axis], dtype=torch.float32) + shift
        inside = ((coord >= 0) & (coord <= shape[axis] - 1)).float()
        expected = inside.view(*[shape[axis] if k == axis else 1 for k in range(3)]).expand(shape)
        self.assertTrue(torch.equal(out.overlap[0].as_tensor(), expected))
        self.assertLess(float(expected.mean()), 1.0)
        # view B is zero where the source point is a voxel or more outside the image (zero padding)
        far = ((coord <= -1) | (coord >= shape[axis])).view(*[shape[axis] if k == axis else 1 for k in range(3)])
        far = far.expand(shape)
        self.assertTrue(bool(far.any()))
        self.assertLess(float(out.view_b[0][far].abs().max()), 1e-5)
        self.assertGreater(float(out.view_b[0][expected > 0].abs().min()), 0.99)

    def test_seeds(self):
        img = smooth_image((24, 22, 20))
        t = RandCoverPair(spatial_size=(16, 16, 12))
        a = t.set_random_state(7)(img)
        b = t.set_random_state(7)(img)
        c = t.set_random_state(8)(img)
        for x, y in zip(a, b):
            self.assertTrue(torch.equal(x, y))
        self.assertFalse(torch.equal(a.ddf, c.ddf))
        self.assertFalse(torch.equal(a.view_a, c.view_a))
        # successive calls draw new parameters
        d = t(img)
        self.assertFalse(torch.equal(c.ddf, d.ddf))

    def test_randomize_false_reuses_draw(self):
        img = smooth_image((24, 22))
        t = RandCoverPair(spatial_size=(16, 16)).set_random_state(1)
        a = t(img)
        b = t(img, randomize=False)
        for x, y in zip(a, b):
            self.assertTrue(torch.equal(x, y))

    def test_meta_affine(self):
        affine = torch.tensor([[0.0, 0.0, 2.0, 5.0], [0.0, -1.5, 0.0, 7.0], [1.0, 0.0, 0.0, -3.0], [0, 0, 0, 1.0]])
        img = MetaTensor(torch.rand(1, 20, 18, 16), affine=affine, meta={"filename_or_obj": "case1.nii.gz"})
        t = RandCoverPair(spatial_size=(10, 12, 8))
        out = t.set_random_state(0)(img)
        origin = torch.tensor([*t.spatial_params.crop_origin, 1.0], dtype=torch.float64)
        expected = affine.double().clone()
        expected[:, 3] = affine.double() @ origin
        for x in out:
            self.assertIsInstance(x, MetaTensor)
            self.assertEqual(x.dtype, torch.float32)
            torch.testing.assert_close(x.affine.double(), expected)
            self.assertEqual(x.meta["filename_or_obj"], "case1.nii.gz")
        torch.testing.assert_close(img.affine.double(), affine.double())  # input untouched

    def test_max_displacement_default_and_custom(self):
        img = torch.rand(1, 80, 80)
        strong = RandCoverPair(spatial_size=(64, 64), appearance=False, max_displacement=None, scale_range=0.9)
        small = RandCoverPair(spatial_size=(64, 64), appearance=False, max_displacement=4.0, scale_range=0.9)
        self.assertEqual(RandCoverPair().max_displacement, 62.0)
        worst = max(float(strong.set_random_state(s)(img).ddf.abs().max()) for s in range(3))
        self.assertGreater(worst, 4.0)
        for s in range(3):
            self.assertLessEqual(float(small.set_random_state(s)(img).ddf.abs().max()), 4.0 + 1e-3)

    def test_integer_input_converted(self):
        img = torch.randint(0, 100, (1, 16, 16, 16), dtype=torch.int16)
        out = RandCoverPair(spatial_size=8).set_random_state(0)(img)
        self.assertEqual(out.view_a.dtype, torch.float32)
        self.assertEqual(out.view_b.dtype, torch.float32)
        out_np = RandCoverPair(spatial_size=8).set_random_state(0)(img.numpy().astype(np.uint8))
        self.assertEqual(tuple(out_np.ddf.shape), (3, 8, 8, 8))

    @parameterized.expand(
        [
            ("rank", torch.rand(16, 16), None, ValueError, r"\(C, H, W\) or \(C, H, W, D\).*\(16, 16\)"),
            ("rank5", torch.rand(1, 1, 8, 8, 8), None, ValueError, r"\(1, 1, 8, 8, 8\)"),
            ("crop", torch.rand(1, 16, 16), (20, 8), ValueError, r"larger than the image.*\(16, 16\)"),
            ("nan", torch.full((1, 8, 8), float("nan")), None, ValueError, "NaN or inf"),
            ("inf", torch.tensor([[[0.0, float("inf")], [0.0, 0.0]]]), None, ValueError, "NaN or inf"),
            ("zero", torch.rand(1, 0, 8, 8), None, ValueError, "zero-size"),
            ("complex", torch.rand(1, 8, 8, dtype=torch.complex64), None, TypeError, "complex"),
            ("dims", torch.rand(1, 16, 16), (8, 8, 8), ValueError, "spatial_size"),
            ("list", [[[1.0]]], None, TypeError, "list"),
        ]
    )
    def test_bad_input(self, _, img, crop, err, msg):
        with self.assertRaisesRegex(err, msg):
            RandCoverPair(spatial_size=crop)(img)

    @parameterized.expand(
        [
            ({"margin": 0.5}, "margin"),
            ({"spatial_prob": 2.0}, "spatial_prob"),
            ({"max_displacement": -1.0}, "max_displacement"),
            ({"max_redraws": 0}, "max_redraws"),
            ({"rotate_range": [0.1, 0.1]}, "rotate_range"),
            ({"spatial_size": "abc"}, "spatial_size"),
        ]
    )
    def test_bad_args(self, kwargs, name):
        with self.assertRaisesRegex(ValueError, name):
            RandCoverPair(**kwargs)

    def test_range_for_other_dims(self):
        t = RandCoverPair(translate_range=[0.1, 0.1, 0.1])  # only fits 3D
        t(torch.rand(1, 10, 10, 10))
        with self.assertRaisesRegex(ValueError, "2D"):
            t(torch.rand(1, 10, 10))

    @unittest.skipUnless(torch.cuda.is_available(), "needs CUDA")
    def test_cuda(self):
        img = smooth_image((30, 28, 26)).cuda()
        t = RandCoverPair(spatial_size=(16, 16, 16))
        out = t.set_random_state(0)(img)
        for x in out:
            self.assertEqual(x.device.type, "cuda")
        again = t.set_random_state(0)(img)
        for x, y in zip(out, again):
            self.assertTrue(torch.equal(x, y))
        cpu = t.set_random_state(0)(img.cpu())
        torch.testing.assert_close(cpu.ddf, out.ddf.cpu(), atol=1e-4, rtol=0)


if __name__ == "__main__":
    unittest.main()
