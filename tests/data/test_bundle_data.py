# SPDX-License-Identifier: Apache-2.0
"""monai_cover.data: SimpleITK reader through MONAI's LoadImaged, dataset_dir discovery, intensity
scaling per modality, and the embedded real demo volumes."""

from __future__ import annotations

import json
import os
import tempfile
import unittest
import warnings

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from monai.data import NibabelReader
from monai.transforms import LoadImaged

from monai_cover.data import (
    SimpleITKReader,
    demo_available,
    find_volumes,
    get_datalist,
    split_datalist,
)
from monai_cover.transforms import ScaleIntensityByModalityd


def _load(path, reader):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LoadImaged("image", reader=reader, image_only=True, ensure_channel_first=True)({"image": path})["image"]


class TestSimpleITKReader(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        rng = np.random.default_rng(0)
        self.vol = rng.standard_normal((7, 9, 5)).astype(np.float32)
        affine = np.array([[-2.0, 0, 0, 10], [0, 1.5, 0, -4], [0, 0, 3.0, 7], [0, 0, 0, 1]])
        self.nii = os.path.join(self.tmp.name, "a.nii.gz")
        nib.save(nib.Nifti1Image(self.vol, affine), self.nii)

    def tearDown(self):
        self.tmp.cleanup()

    def test_same_as_nibabel(self):
        a, b = _load(self.nii, NibabelReader()), _load(self.nii, SimpleITKReader())
        self.assertEqual(tuple(a.shape), (1, 7, 9, 5))
        self.assertEqual(a.shape, b.shape)
        np.testing.assert_allclose(a.numpy(), b.numpy())
        np.testing.assert_allclose(np.asarray(a.affine), np.asarray(b.affine), atol=1e-5)

    def test_several_files_stack_as_channels_only_on_one_grid(self):
        other = os.path.join(self.tmp.name, "b.nii.gz")
        nib.save(nib.Nifti1Image(2 * self.vol, nib.load(self.nii).affine), other)
        both = _load([self.nii, other], SimpleITKReader())
        self.assertEqual(tuple(both.shape), (2, 7, 9, 5))
        np.testing.assert_allclose(both[1].numpy(), 2 * self.vol, rtol=1e-6)
        moved = os.path.join(self.tmp.name, "c.nii.gz")
        nib.save(nib.Nifti1Image(self.vol, np.diag([5.0, 5.0, 5.0, 1.0])), moved)
        with self.assertRaisesRegex(ValueError, "share one grid"):
            _load([self.nii, moved], SimpleITKReader())

    def test_nrrd_and_dicom_series(self):
        img = sitk.GetImageFromArray(self.vol.T.copy())
        img.SetSpacing((1.0, 2.0, 3.0))
        nrrd = os.path.join(self.tmp.name, "a.nrrd")
        sitk.WriteImage(img, nrrd)
        x = _load(nrrd, SimpleITKReader())
        np.testing.assert_allclose(x[0].numpy(), self.vol)
        np.testing.assert_allclose(np.diag(np.asarray(x.affine))[:3], [-1.0, -2.0, 3.0])  # LPS -> RAS
        # a DICOM series written slice by slice: the folder is one volume
        series = os.path.join(self.tmp.name, "dicom")
        os.makedirs(series)
        vol16 = (self.vol * 100).astype(np.int16)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for k in range(vol16.shape[2]):
            sl = sitk.GetImageFromArray(vol16[:, :, k].T.copy())  # 2D slice, size (i, j)
            sl.SetSpacing((1.0, 2.0))
            for tag, value in (
                ("0020|000e", "1.2.826.0.1.3680043.2.1125.1"),
                ("0020|0013", str(k + 1)),
                ("0020|0032", f"0\\0\\{3.0 * k}"),
                ("0020|0037", "1\\0\\0\\0\\1\\0"),
                ("0028|0030", "2\\1"),
                ("0018|0050", "3"),
                ("0008|0060", "CT"),
                ("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.{k + 1}"),
            ):
                sl.SetMetaData(tag, value)
            writer.SetFileName(os.path.join(series, f"s{k:03d}.dcm"))
            writer.Execute(sl)
        y = _load(series, SimpleITKReader())
        self.assertEqual(tuple(y.shape), (1, 7, 9, 5))
        np.testing.assert_allclose(y[0].numpy(), vol16.astype(np.float32))
        self.assertEqual(find_volumes(self.tmp.name), sorted([self.nii, nrrd, series]))
        # the series folder given directly (as --dataset_dir) is that one volume, not an empty folder
        self.assertEqual(find_volumes(series), [series])
        listed = get_datalist(series, val_fraction=0.0)
        self.assertEqual([it["image"] for it in listed["training"]], [series])


class TestDatalist(unittest.TestCase):
    def test_folder_json_and_split(self):
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(5):
                nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), os.path.join(tmp, f"v{i}.nii"))
            dl = get_datalist(tmp, val_fraction=0.2)
            self.assertEqual((len(dl["training"]), len(dl["validation"])), (4, 1))
            self.assertTrue(all(it["modality"] == "unknown" for it in dl["training"] + dl["validation"]))
            with open(os.path.join(tmp, "list.json"), "w", encoding="utf-8") as f:
                json.dump(
                    {"training": [{"image": "v0.nii"}, {"image": "v1.nii"}], "validation": [{"image": "v2.nii"}]}, f
                )
            dl = get_datalist(os.path.join(tmp, "list.json"), modality="CT")
            self.assertEqual(dl["validation"][0]["image"], os.path.join(tmp, "v2.nii"))
            self.assertEqual(dl["training"][0]["modality"], "CT")
            with self.assertRaises(ValueError):
                get_datalist(tmp, labels=True)  # a plain folder has no labels
            with self.assertRaises(FileNotFoundError):
                get_datalist(os.path.join(tmp, "missing"))
        self.assertEqual(split_datalist([{"i": 1}], 0.2), {"training": [{"i": 1}], "validation": []})
        items = [{"i": i} for i in range(10)]
        split = split_datalist(items, 0.2)  # the last 20 %, in order
        self.assertEqual([x["i"] for x in split["validation"]], [8, 9])
        self.assertEqual([x["i"] for x in split["training"]], list(range(8)))
        self.assertEqual([x["i"] for x in split_datalist(items[:2], 0.2)["validation"]], [1])  # at least one
        self.assertEqual(split_datalist(items, 0.0)["validation"], [])


class TestScaleIntensityByModality(unittest.TestCase):
    def test_modes(self):
        img = torch.linspace(-2000, 2000, 1001).reshape(1, 1001, 1, 1)
        ct = ScaleIntensityByModalityd("image", mode="auto")({"image": img, "modality": "CT"})["image"]
        self.assertAlmostEqual(float(ct.min()), 0.0)
        self.assertAlmostEqual(float(ct[0, 500, 0, 0]), 0.5, places=5)  # 0 HU at the middle of [-1000, 1000]
        mr = ScaleIntensityByModalityd("image", mode="auto", percentiles=(10, 90))({"image": img, "modality": "MR"})
        self.assertAlmostEqual(float(mr["image"][0, 100, 0, 0]), 0.0, places=2)
        self.assertAlmostEqual(float(mr["image"][0, 900, 0, 0]), 1.0, places=2)
        none = ScaleIntensityByModalityd("image", mode="none")({"image": img})["image"]
        self.assertTrue(torch.equal(none, img))
        with self.assertRaises(ValueError):
            ScaleIntensityByModalityd("image", mode="pet")


@unittest.skipUnless(demo_available(), "needs the demo extra: pip install monai_cover[demo]")
class TestDemoData(unittest.TestCase):
    def test_demo_lists_are_real_volumes(self):
        from monai_cover.data import chest_ct_label_names

        with tempfile.TemporaryDirectory() as tmp:
            dl = get_datalist("", cache_dir=tmp)
            self.assertEqual(len(dl["training"]), 3)
            self.assertEqual([it["name"] for it in dl["validation"]], ["anatomical_t1"])
            self.assertEqual({it["modality"] for it in dl["training"]}, {"CT", "MR"})
            mni = _load(dl["training"][0]["image"], NibabelReader())
            self.assertEqual(tuple(mni.shape), (1, 99, 117, 95))
            seg = get_datalist("", cache_dir=tmp, labels=True)
            label = _load(seg["training"][0]["label"], SimpleITKReader())
            image = _load(seg["training"][0]["image"], SimpleITKReader())
            self.assertEqual(label.shape, image.shape)
            self.assertEqual(sorted(np.unique(label.numpy()).astype(int).tolist()), list(range(8)))
        names = chest_ct_label_names()
        self.assertEqual(names[5], "right lung")
        self.assertEqual(len(names), 8)


if __name__ == "__main__":
    unittest.main()
