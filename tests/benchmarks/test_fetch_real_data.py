# SPDX-License-Identifier: Apache-2.0
"""benchmarks/data/fetch_real_data.py: the wheel sources written as NIfTI through the library's demo helpers
(monai_cover.data.demo, SimpleITKReader via LoadImage), the datalist, skipped sources and the InVesalius reader."""

from __future__ import annotations

import importlib.util
import io
import json
import plistlib
import tarfile
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np

from monai_cover.data import demo

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "fetch_real_data.py"
spec = importlib.util.spec_from_file_location("fetch_real_data", SCRIPT)
fetch_real_data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fetch_real_data)

HAS_WHEELS = all(importlib.util.find_spec(m) is not None for m in ("nilearn", "slicerio", "SimpleITK"))


def write_inv3(path: Path, volume_zyx: np.ndarray, masks_zyx: list[np.ndarray]) -> None:
    """A minimal InVesalius project: main.plist, matrix.dat and bordered uint8 masks."""
    files = {}
    main = {"matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": list(volume_zyx.shape)},
            "spacing": [0.5, 0.5, 2.0], "masks": {}}
    files["matrix.dat"] = volume_zyx.astype(np.int16).tobytes()
    for i, m in enumerate(masks_zyx):
        bordered = np.zeros(tuple(s + 1 for s in m.shape), dtype=np.uint8)
        bordered[0] = 1  # flag row, dropped by the reader
        bordered[1:, 1:, 1:] = m.astype(np.uint8) * 255
        files[f"mask_{i}.dat"] = bordered.tobytes()
        files[f"mask_{i}.plist"] = plistlib.dumps({"mask_file": f"mask_{i}.dat", "mask_shape": list(bordered.shape)})
        main["masks"][str(i)] = f"mask_{i}.plist"
    files["main.plist"] = plistlib.dumps(main)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"tmpdir/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


class TestReadInv3(unittest.TestCase):
    def test_round_trip(self):
        rng = np.random.default_rng(0)
        vol = rng.integers(-1000, 2000, size=(3, 4, 5)).astype(np.int16)
        bone = vol > 500
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "x.inv3"
            write_inv3(path, vol, [bone, vol > -200])
            volume, affine, masks, _ = fetch_real_data.read_inv3(path)
        np.testing.assert_array_equal(volume, vol.transpose(2, 1, 0))
        np.testing.assert_array_equal(masks[0], bone.transpose(2, 1, 0))
        np.testing.assert_allclose(np.diag(affine), [0.5, 0.5, 2.0, 1.0])


class TestFetch(unittest.TestCase):
    @unittest.skipUnless(HAS_WHEELS, "nilearn, slicerio and SimpleITK are needed")
    def test_wheel_sources_and_datalist(self):
        from monai.data import load_decathlon_datalist
        from monai.transforms import LoadImaged

        with tempfile.TemporaryDirectory() as tmp:
            summary = fetch_real_data.fetch(tmp, ["nilearn", "slicerio", "nibabel"], mni_resolution=2, verbose=False)
            names = [r["name"] for r in summary["records"]]
            self.assertEqual(names, ["mni152_t1", "chest_ct", "nibabel_anatomical_t1", "nibabel_epi_frame0"])
            datalist = json.loads((Path(tmp) / "datalist.json").read_text(encoding="utf-8"))
            self.assertEqual([it["name"] for it in datalist["validation"]], ["nibabel_anatomical_t1"])
            self.assertEqual([it["name"] for it in datalist["labelled"]], ["mni152_t1", "chest_ct"])
            self.assertEqual(len(datalist["training"]), 3)
            chest = load_decathlon_datalist(str(Path(tmp) / "datalist.json"), data_list_key="labelled", base_dir=tmp)[1]
            d = LoadImaged(["image", "label"], image_only=True, ensure_channel_first=True)(chest)
            self.assertEqual(tuple(d["image"].shape), (1, 128, 128, 34))
            self.assertEqual(tuple(d["label"].shape), (1, 128, 128, 34))
            label, image = d["label"].numpy().astype(int), d["image"].numpy()
            self.assertEqual(sorted(np.unique(label).tolist()), list(range(8)))
            self.assertEqual(datalist["label_names"]["chest_ct"]["5"], "right lung")
            self.assertLess(float(image[np.isin(label, [5, 6])].mean()), -500.0)  # lungs are air: aligned
            self.assertGreater(float(image[label == 1].mean()), 100.0)  # ribs are bone
            mni = next(r for r in summary["records"] if r["name"] == "mni152_t1")
            self.assertEqual(mni["label_values"], [0, 1, 2, 3])
            self.assertEqual(datalist["label_names"]["mni152_t1"]["2"], "grey matter")
            self.assertTrue((Path(tmp) / "fetch_summary.json").exists())
            # the files hold exactly the library's demo volumes (same arrays, same affines)
            expected = {"mni152_t1": (*demo.mni152_t1(2), demo.mni152_tissue_labels(2)[0]),
                        "nibabel_anatomical_t1": (*demo.demo_volume("anatomical_t1"), None),
                        "nibabel_epi_frame0": (*demo.demo_volume("epi_example4d"), None),
                        "chest_ct": (*demo.demo_volume("chest_ct"), None)}
            for name, (array, affine, label) in expected.items():
                img = nib.load(str(Path(tmp) / "images" / f"{name}.nii.gz"))
                np.testing.assert_array_equal(np.asarray(img.dataobj), array, err_msg=name)
                np.testing.assert_allclose(img.affine, affine, atol=1e-6, err_msg=name)
                if label is not None:
                    np.testing.assert_array_equal(np.asarray(nib.load(str(Path(tmp) / "labels" / f"{name}.nii.gz"))
                                                             .dataobj), label)

    @unittest.skipUnless(HAS_WHEELS, "slicerio and SimpleITK are needed")
    def test_read_volume_is_simpleitk_in_ras(self):
        import SimpleITK as sitk

        path = demo.demo_segmentation_datalist()["training"][0]["image"]
        array, affine = demo.read_volume(path)
        img = sitk.ReadImage(path)
        np.testing.assert_array_equal(array, sitk.GetArrayFromImage(img).transpose(2, 1, 0).astype(np.float32))
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
        lps[:3, 3] = img.GetOrigin()
        np.testing.assert_allclose(affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)  # ITK's LPS to RAS

    @unittest.skipUnless(HAS_WHEELS, "slicerio and SimpleITK are needed")
    def test_slicerio_label_off_the_ct_grid(self):
        image = (np.zeros((4, 4, 2), np.float32), np.eye(4))
        with tempfile.TemporaryDirectory() as tmp, mock.patch.object(
                demo, "read_volume", side_effect=[image, (np.zeros((4, 4, 3), np.float32), np.eye(4))]):
            with self.assertRaisesRegex(RuntimeError, r"segmentation \(4, 4, 3\) is not on the CT's grid \(4, 4, 2\)"):
                fetch_real_data.fetch(tmp, ["slicerio"], verbose=False)

    def test_apt_source_skipped_without_apt(self):
        no_apt = mock.patch.object(fetch_real_data.shutil, "which", return_value=None)
        not_installed = mock.patch.object(fetch_real_data, "ITK_DATA", "nonexistent/dir")
        with tempfile.TemporaryDirectory() as tmp, no_apt, not_installed:
            summary = fetch_real_data.fetch(tmp, ["nibabel", "itk"], verbose=False)
        self.assertIn("itk", summary["skipped"])
        self.assertEqual(len(summary["records"]), 2)

    def test_unknown_source(self):
        with tempfile.TemporaryDirectory() as tmp, self.assertRaises(ValueError):
            fetch_real_data.fetch(tmp, ["nope"], verbose=False)


if __name__ == "__main__":
    unittest.main()
