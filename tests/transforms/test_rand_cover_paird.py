# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import os
import tempfile
import unittest

import nibabel as nib
import numpy as np
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityd
from monai.utils import set_determinism
from parameterized import parameterized

from monai_cover.ddf import warp
from monai_cover.transforms import RandCoverPairD, RandCoverPaird, RandCoverPairDict


class TestRandCoverPaird(unittest.TestCase):
    def tearDown(self):
        set_determinism(seed=None)

    def test_default_keys(self):
        data = {"image": torch.rand(1, 20, 18, 16), "label": "kept"}
        out = RandCoverPaird(spatial_size=(12, 10, 8)).set_random_state(0)(data)
        self.assertEqual(set(out), {"image", "label", "view_a", "view_b", "ddf", "overlap"})
        self.assertEqual(tuple(out["view_a"].shape), (1, 12, 10, 8))
        self.assertEqual(tuple(out["ddf"].shape), (3, 12, 10, 8))
        self.assertEqual(tuple(out["overlap"].shape), (1, 12, 10, 8))
        self.assertIs(out["image"], data["image"])

    def test_custom_keys_and_drop_input(self):
        t = RandCoverPaird(keys="img", view_a_key="a", view_b_key="b", ddf_key="flow", overlap_key="mask",
                           keep_input=False, spatial_size=8)  # fmt: skip
        out = t.set_random_state(0)({"img": torch.rand(2, 12, 12)})
        self.assertEqual(set(out), {"a", "b", "flow", "mask"})
        self.assertEqual(tuple(out["flow"].shape), (2, 8, 8))

    def test_matches_array_form_and_aliases(self):
        self.assertIs(RandCoverPairD, RandCoverPaird)
        self.assertIs(RandCoverPairDict, RandCoverPaird)
        img = torch.rand(1, 16, 16, 16)
        a = RandCoverPaird(spatial_size=10).set_random_state(3)({"image": img})
        b = RandCoverPaird(spatial_size=10).pair.set_random_state(3)(img)
        self.assertTrue(torch.equal(a["ddf"], b.ddf))
        self.assertTrue(torch.equal(a["view_a"], b.view_a))

    @parameterized.expand(
        [
            (torch.rand(8, 8), ValueError, "key 'image'.*\\(8, 8\\)"),
            (torch.full((1, 8, 8), float("nan")), ValueError, "key 'image'.*NaN"),
            (torch.rand(1, 8, 8, dtype=torch.complex64), TypeError, "key 'image'.*complex"),
        ]
    )
    def test_errors_name_the_key(self, img, err, msg):
        with self.assertRaisesRegex(err, msg):
            RandCoverPaird()({"image": img})
        with self.assertRaisesRegex(ValueError, "key 'image'.*larger"):
            RandCoverPaird(spatial_size=20)({"image": torch.rand(1, 8, 8)})

    def test_bad_args(self):
        with self.assertRaisesRegex(ValueError, "exactly one"):
            RandCoverPaird(keys=["a", "b"])
        with self.assertRaisesRegex(ValueError, "distinct"):
            RandCoverPaird(view_a_key="x", view_b_key="x")
        with self.assertRaises(KeyError):
            RandCoverPaird()({"other": torch.rand(1, 8, 8)})
        self.assertEqual(RandCoverPaird(allow_missing_keys=True)({"other": 1}), {"other": 1})

    def test_nifti_end_to_end(self):
        rng = np.random.RandomState(0)
        axes = np.meshgrid(*[np.linspace(0, 1, s) for s in (22, 20, 18)], indexing="ij")
        vol = (100 * (np.sin(3 * axes[0]) + np.cos(2 * axes[1]) + axes[2] ** 2) + rng.rand(22, 20, 18)).astype(np.int16)
        affine = np.array([[-1.5, 0, 0, 30.0], [0, 2.0, 0, -20.0], [0, 0, 2.5, 5.0], [0, 0, 0, 1]])
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "vol.nii.gz")
            nib.save(nib.Nifti1Image(vol, affine), path)
            pipeline = Compose(
                [
                    LoadImaged(keys="image", image_only=True),
                    EnsureChannelFirstd(keys="image"),
                    ScaleIntensityd(keys="image"),
                    RandCoverPaird(keys="image", spatial_size=(14, 12, 10), appearance=False),
                ]
            )
            pipeline.set_random_state(1)
            out = pipeline({"image": path})
        self.assertIsInstance(out["view_b"], MetaTensor)
        pair = pipeline.transforms[-1].pair
        origin = np.array([*pair.spatial_params.crop_origin, 1.0])
        expected = affine.copy()
        expected[:, 3] = affine @ origin
        np.testing.assert_allclose(out["ddf"].affine.numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(out["view_b"].affine.numpy(), expected, atol=1e-5)
        self.assertTrue(str(out["view_a"].meta["filename_or_obj"]).endswith("vol.nii.gz"))
        mask = out["overlap"].as_tensor() > 0
        self.assertGreater(int(mask.sum()), 100)
        warped = warp(out["view_a"].as_tensor(), out["ddf"].as_tensor())
        self.assertLess(float(((warped - out["view_b"].as_tensor()).abs() * mask).max()), 1e-4)

    def test_dataloader_workers_deterministic(self):
        images = [{"image": torch.rand(1, 16, 14, 12, generator=torch.Generator().manual_seed(i))} for i in range(4)]
        transform = Compose([RandCoverPaird(spatial_size=(10, 10, 8), keep_input=False)])

        def run():
            set_determinism(seed=0)
            loader = DataLoader(Dataset(images, transform), batch_size=2, num_workers=2, shuffle=False)
            return [batch for batch in loader]

        first, second = run(), run()
        self.assertEqual(len(first), 2)
        for b1, b2 in zip(first, second):
            for key in ("view_a", "view_b", "ddf", "overlap"):
                self.assertTrue(torch.equal(b1[key], b2[key]), key)
        self.assertEqual(tuple(first[0]["ddf"].shape), (2, 3, 10, 10, 8))
        self.assertFalse(torch.equal(first[0]["ddf"][0], first[0]["ddf"][1]))  # per-sample draws
        self.assertFalse(torch.equal(first[0]["ddf"], first[1]["ddf"]))  # workers differ


if __name__ == "__main__":
    unittest.main()
