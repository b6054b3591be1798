# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import unittest

import numpy as np
import torch
from monai.utils import set_determinism

from monai_cover.baselines import (
    PCRLv2Cropd,
    PCRLv2Net,
    VoCoCropd,
    VoCoNet,
    box_intersection,
    box_iou,
    crop_resize,
    voco_position_labels,
)
from monai_cover.losses.pcrlv2 import PCRLv2Loss
from monai_cover.losses.voco import VoCoLoss
from monai_cover.networks.utils import as_pyramid


class ToyPyramid(torch.nn.Module):
    """(N, 1, *S) -> [coarse (N, 4, *S/2), fine (N, 2, *S)]."""

    def __init__(self):
        super().__init__()
        self.fine = torch.nn.Conv3d(1, 2, 3, padding=1)
        self.coarse = torch.nn.Conv3d(2, 4, 3, padding=1)

    def forward(self, x):
        fine = self.fine(x)
        return [self.coarse(torch.nn.functional.avg_pool3d(fine, 2)), fine]


class TestUtils(unittest.TestCase):
    def test_boxes(self):
        a, b = ((0, 0), (4, 4)), ((2, 2), (4, 4))
        self.assertEqual(box_intersection(a, b), 4)
        self.assertAlmostEqual(box_iou(a, b), 4 / 28)
        self.assertEqual(box_iou(a, a), 1.0)
        self.assertEqual(box_intersection(a, ((4, 0), (2, 2))), 0)

    def test_crop_resize(self):
        img = torch.arange(2 * 6 * 5, dtype=torch.float32).reshape(2, 6, 5)
        torch.testing.assert_close(crop_resize(img, ((1, 2), (3, 2))), img[:, 1:4, 2:4])
        self.assertEqual(tuple(crop_resize(img, ((0, 0), (6, 5)), (3, 4)).shape), (2, 3, 4))
        with self.assertRaisesRegex(ValueError, "not inside"):
            crop_resize(img, ((4, 0), (3, 2)))

    def test_as_pyramid(self):
        t = torch.zeros(1, 2, 3)
        self.assertEqual(len(as_pyramid(t)), 1)
        self.assertEqual(len(as_pyramid((t, t))), 2)
        self.assertEqual(len(as_pyramid({"features": [t, t, t]}, key="features")), 3)
        with self.assertRaises(TypeError):
            as_pyramid("nope")


class TestPCRLv2Cropd(unittest.TestCase):
    def test_shapes_iou_and_determinism(self):
        img = torch.rand(1, 40, 36, 24)
        outs = []
        for _ in range(2):
            t = PCRLv2Cropd(global_size=(16, 16, 8), local_size=(8, 8, 8), num_local=3, min_iou=0.3)
            t.set_random_state(7)
            outs.append(t({"image": img}))
        d = outs[0]
        self.assertEqual(tuple(d["pcrlv2_global_input"].shape), (2, 1, 16, 16, 8))
        self.assertEqual(tuple(d["pcrlv2_global_target"].shape), (2, 1, 16, 16, 8))
        self.assertEqual(tuple(d["pcrlv2_local_input"].shape), (3, 1, 8, 8, 8))
        boxes = d["pcrlv2_global_boxes"].tolist()
        self.assertGreater(box_iou(tuple(map(tuple, boxes[0])), tuple(map(tuple, boxes[1]))), 0.3)
        for key in d:
            torch.testing.assert_close(torch.as_tensor(d[key]), torch.as_tensor(outs[1][key]))

    def test_target_is_clean_crop_and_errors(self):
        img = torch.rand(1, 20, 20)
        t = PCRLv2Cropd(global_size=(20, 20), local_size=(4, 4), global_scale=(1.0, 1.0), flip_prob=0.0,
                        global_corruption=None, local_corruption=None, num_local=1)
        d = t({"image": img})
        torch.testing.assert_close(d["pcrlv2_global_target"][0], img)
        torch.testing.assert_close(d["pcrlv2_global_input"], d["pcrlv2_global_target"])
        with self.assertRaisesRegex(ValueError, "2 spatial dims"):
            t({"image": torch.rand(1, 8, 8, 8)})
        with self.assertRaises(ValueError):
            PCRLv2Cropd(global_scale=(0.0, 1.0))

    def test_net_and_loss_end_to_end(self):
        set_determinism(0)
        t = PCRLv2Cropd(global_size=(8, 8, 8), local_size=(4, 4, 4), num_local=2)
        batch = [t({"image": torch.rand(1, 24, 24, 16)}) for _ in range(2)]
        gi = torch.stack([b["pcrlv2_global_input"] for b in batch])
        li = torch.stack([b["pcrlv2_local_input"] for b in batch])
        gt = torch.stack([b["pcrlv2_global_target"] for b in batch])
        out = PCRLv2Net(ToyPyramid())(gi, li)
        self.assertEqual(len(out["global_pyramids"]), 2)
        self.assertEqual(len(out["local_pyramids"]), 2)
        self.assertEqual(tuple(out["global_pyramids"][1][0].shape), (2, 4, 4, 4, 4))
        value = PCRLv2Loss(in_channels=(4, 2))(out, {"pcrlv2_global_target": gt})
        value.backward()
        set_determinism(None)


class TestVoCoCropd(unittest.TestCase):
    def test_labels_and_bases(self):
        img = torch.arange(16 * 12 * 4, dtype=torch.float32).reshape(1, 16, 12, 4)
        t = VoCoCropd(grid=(4, 3), num_random=5, roi_size=(4, 4, 4))
        t.set_random_state(3)
        d = t({"image": img})
        self.assertEqual(tuple(d["voco_base"].shape), (12, 1, 4, 4, 4))
        self.assertEqual(tuple(d["voco_random"].shape), (5, 1, 4, 4, 4))
        torch.testing.assert_close(d["voco_labels"].sum(1), torch.ones(5))
        # tile size equals roi_size here, so base crop (i, j) is the plain sub-block
        torch.testing.assert_close(d["voco_base"][1 * 3 + 2], img[:, 4:8, 8:12, :])

    def test_position_labels_known(self):
        bases = [((0, 0), (4, 4)), ((0, 4), (4, 4))]
        labels = voco_position_labels([((0, 2), (4, 4)), ((0, 0), (4, 4))], bases)
        torch.testing.assert_close(labels, torch.tensor([[0.5, 0.5], [1.0, 0.0]]))

    def test_net_and_loss_end_to_end(self):
        t = VoCoCropd(grid=(2, 2), num_random=2, roi_size=(8, 8, 8))
        t.set_random_state(0)
        batch = [t({"image": torch.rand(1, 24, 24, 8)}) for _ in range(2)]
        base = torch.stack([b["voco_base"] for b in batch])
        rand = torch.stack([b["voco_random"] for b in batch])
        labels = torch.stack([b["voco_labels"] for b in batch])
        out = VoCoNet(ToyPyramid())(base, rand)
        self.assertEqual(tuple(out["base_features"].shape), (2, 4, 6))
        self.assertEqual(tuple(out["random_features"].shape), (2, 2, 6))
        value = VoCoLoss(in_channels=6, projection_channels=(8, 8))(out, {"voco_labels": labels})
        value.backward()
        self.assertTrue(np.isfinite(float(value)))
        with self.assertRaisesRegex(ValueError, "smaller than grid"):
            VoCoCropd(grid=(8, 8), roi_size=(4, 4))({"image": torch.rand(1, 4, 4)})


if __name__ == "__main__":
    unittest.main()
