# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import unittest

import torch
from monai.data import MetaTensor
from parameterized import parameterized

from monai_cover.transforms import AppearanceParams, RandCoverAppearance, apply_appearance

OFF = dict(noise_prob=0.0, blur_prob=0.0, contrast_prob=0.0, brightness_prob=0.0, gamma_prob=0.0, inpaint_prob=0.0)


def _only(**kw):
    cfg = dict(OFF)
    cfg.update(kw)
    return RandCoverAppearance(**cfg)


class TestAppearance(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.img = torch.rand(1, 20, 18, 16)

    def test_all_off_is_exact_copy(self):
        t = _only()
        t.set_random_state(0)
        out = t(self.img)
        self.assertTrue(torch.equal(out, self.img))
        self.assertTrue(t._params.is_identity())

    def test_noise(self):
        t = _only(noise_prob=1.0, noise_std_range=(0.05, 0.05))
        out = t.set_random_state(1)(self.img)
        diff = out - self.img
        self.assertAlmostEqual(float(diff.std()), 0.05, delta=0.005)
        again = t.set_random_state(1)(self.img)
        self.assertTrue(torch.equal(out, again))
        other = t.set_random_state(2)(self.img)
        self.assertFalse(torch.equal(out, other))

    def test_blur_is_real(self):
        t = _only(blur_prob=1.0, blur_sigma_range=(1.0, 1.0))
        out = t.set_random_state(0)(self.img)
        inner = (slice(None), slice(4, -4), slice(4, -4), slice(4, -4))
        self.assertLess(float(out[inner].std()), 0.5 * float(self.img[inner].std()))
        self.assertAlmostEqual(float(out[inner].mean()), float(self.img[inner].mean()), delta=0.02)

    def test_contrast_about_mean(self):
        t = _only(contrast_prob=1.0, contrast_range=(1.4, 1.4))
        out = t.set_random_state(0)(self.img)
        self.assertAlmostEqual(float(out.mean()), float(self.img.mean()), places=5)
        self.assertAlmostEqual(float(out.std() / self.img.std()), 1.4, places=4)

    def test_brightness(self):
        t = _only(brightness_prob=1.0, brightness_std=0.1)
        out = t.set_random_state(0)(self.img)
        shift = out - self.img
        self.assertAlmostEqual(float(shift.max() - shift.min()), 0.0, places=5)
        self.assertAlmostEqual(float(shift.mean()), t._params.brightness, places=5)
        self.assertNotEqual(t._params.brightness, 0.0)

    def test_gamma(self):
        t = _only(gamma_prob=1.0, gamma_range=(2.0, 2.0))
        out = t.set_random_state(0)(self.img)
        lo, hi = self.img.min(), self.img.max()
        expected = ((self.img - lo) / (hi - lo + 1e-7)) ** 2 * (hi - lo) + lo
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)

    def test_inpaint_boxes(self):
        img = torch.full((2, 30, 30), -5.0)
        t = _only(inpaint_prob=1.0, inpaint_max_boxes=10, inpaint_fill_range=(0.0, 1.0))
        out = t.set_random_state(4)(img)
        boxes = t._params.boxes
        self.assertTrue(1 <= len(boxes) <= 10)
        for start, size in boxes:
            self.assertTrue(all(3 <= n <= 4 for n in size))  # 0.1 .. 0.133 of 30
            patch = out[:, start[0] : start[0] + size[0], start[1] : start[1] + size[1]]
            self.assertTrue(bool(((patch >= 0) & (patch <= 1)).all()))
        changed = out != -5.0
        self.assertGreater(int(changed.sum()), 0)
        self.assertTrue(torch.equal(changed[0], changed[1]))  # boxes span all channels

    def test_per_sample_draws_differ(self):
        t = RandCoverAppearance()
        t.set_random_state(0)
        a, b = t.sample_params((20, 20, 20)), t.sample_params((20, 20, 20))
        self.assertNotEqual(a, b)

    def test_meta_and_dtype(self):
        img = MetaTensor((self.img * 100).to(torch.int16), affine=torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0])))
        out = RandCoverAppearance().set_random_state(0)(img)
        self.assertIsInstance(out, MetaTensor)
        self.assertEqual(out.dtype, torch.float32)
        torch.testing.assert_close(out.affine, img.affine)

    def test_apply_is_deterministic(self):
        p = AppearanceParams(noise_std=0.1, noise_seed=3, blur_sigma=0.5, contrast=0.7, brightness=0.2,
                             boxes=(((1, 2, 3), (4, 4, 4)),), fill_seed=9)  # fmt: skip
        self.assertTrue(torch.equal(apply_appearance(self.img, p), apply_appearance(self.img, p)))

    @parameterized.expand(
        [
            ({"noise_prob": 1.5}, "noise_prob"),
            ({"noise_std_range": (0.2, 0.1)}, "noise_std_range"),
            ({"brightness_std": -1.0}, "brightness_std"),
            ({"inpaint_size_range": (0.1, 2.0)}, "inpaint_size_range"),
            ({"gamma_prob": 0.5, "gamma_range": (0.0, 1.0)}, "gamma_range"),
        ]
    )
    def test_bad_args(self, kwargs, name):
        with self.assertRaisesRegex(ValueError, name):
            RandCoverAppearance(**kwargs)


if __name__ == "__main__":
    unittest.main()
