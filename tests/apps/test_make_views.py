# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import unittest

import torch
from monai.transforms import EnsureChannelFirst, LoadImage
from parameterized import parameterized

from monai_cover.ddf import overlap_mask, warp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class TestMakeViews(unittest.TestCase):
    @parameterized.expand([("default", []), ("no_appearance", ["--no-appearance"])])
    def test_subprocess_outputs(self, _, extra):
        with tempfile.TemporaryDirectory() as tmp:
            out_dir = os.path.join(tmp, "views")
            env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
            proc = subprocess.run(
                [sys.executable, "-m", "monai_cover.apps.make_views", "--out", out_dir, "--seed", "3", *extra],
                capture_output=True, text=True, env=env, timeout=240, cwd=tmp, encoding="utf-8", errors="replace",
            )  # fmt: skip
            self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
            self.assertIn("overlap fraction", proc.stdout)
            self.assertIn("max |ddf|", proc.stdout)
            loader = LoadImage(image_only=True)
            names = {k: os.path.join(out_dir, f"anatomical_{k}.nii.gz") for k in ("view_a", "view_b", "ddf", "overlap")}
            for key, path in names.items():
                self.assertIn(path, proc.stdout)
                self.assertTrue(os.path.isfile(path), key)
            view_a = loader(names["view_a"])
            view_b = loader(names["view_b"])
            ddf = EnsureChannelFirst(channel_dim=-1)(loader(names["ddf"]))
            overlap = loader(names["overlap"])
        self.assertEqual(tuple(view_a.shape), (24, 32, 20))
        self.assertEqual(tuple(view_b.shape), (24, 32, 20))
        self.assertEqual(tuple(ddf.shape), (3, 24, 32, 20))
        torch.testing.assert_close(view_a.affine, view_b.affine)
        torch.testing.assert_close(ddf.affine, view_a.affine)
        self.assertEqual(float(view_a.affine[0, 0]), -2.0)  # nibabel's anatomical.nii has 2 mm voxels, x flipped
        # the saved mask is the overlap of the saved field, and the field is a real deformation
        torch.testing.assert_close(overlap[None].float(), overlap_mask(ddf.as_tensor().float()))
        self.assertGreater(float(ddf.abs().max()), 0.5)
        self.assertGreater(float(overlap.mean()), 0.2)
        warped = warp(view_a.as_tensor()[None], ddf.as_tensor())[0]
        err = float(((warped - view_b.as_tensor()).abs() * overlap.as_tensor()).max())
        if extra:  # view A un-augmented: view B is exactly its warp inside the overlap
            self.assertLess(err, 1e-4)
        else:  # appearance changes view A, so the relation no longer holds
            self.assertGreater(err, 1e-3)


if __name__ == "__main__":
    unittest.main()
