# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import math
import unittest

import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.transforms import Compose, DeleteItemsd
from monai.utils import set_determinism
from parameterized import parameterized

from monai_cover.baselines import PRETEXT_TASKS, build_pretext


class TinyPyramid(torch.nn.Module):
    """(N, 1, *S) -> [(N, 4, *S/2), (N, 2, *S)]."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv3d(1, 2, 3, padding=1)
        self.b = torch.nn.Conv3d(2, 4, 1)

    def forward(self, x):
        fine = torch.relu(self.a(x))
        return [self.b(torch.nn.functional.max_pool3d(fine, 2)), fine]


CASES = [
    ("pcrlv2", {"global_size": (8, 8, 8), "local_size": (4, 4, 4), "num_local": 2}, {"scale_sampling": "all"}),
    ("voco", {"grid": (2, 2), "num_random": 2, "roi_size": (8, 8, 8)}, {"projection_channels": (8, 8)}),
]


class TestRegistry(unittest.TestCase):
    @parameterized.expand(CASES)
    def test_one_trainer_epoch(self, name, transform_kwargs, loss_kwargs):
        set_determinism(0)
        task = build_pretext(name, TinyPyramid(), pyramid_channels=(4, 2), transform_kwargs=transform_kwargs,
                             loss_kwargs=loss_kwargs)
        data = [{"image": torch.rand(1, 16, 16, 8)} for _ in range(2)]
        loader = DataLoader(Dataset(data, Compose([task.transform, DeleteItemsd("image")])), batch_size=2)
        trainer = SupervisedTrainer(
            device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=task.network,
            optimizer=torch.optim.Adam(task.parameters(), 1e-3), loss_function=task.loss,
            prepare_batch=task.prepare_batch, decollate=False,
        )
        trainer.run()
        self.assertTrue(math.isfinite(float(trainer.state.output["loss"])))
        set_determinism(None)

    def test_unknown(self):
        self.assertEqual(sorted(PRETEXT_TASKS), ["pcrlv2", "voco"])
        with self.assertRaisesRegex(KeyError, "known"):
            build_pretext("simclr", TinyPyramid(), (4, 2))


if __name__ == "__main__":
    unittest.main()
