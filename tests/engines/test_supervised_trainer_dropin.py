# SPDX-License-Identifier: Apache-2.0
"""Drop-in proof: a stock MONAI BasicUNet pretrained by MONAI's own SupervisedTrainer with COVER.

Ours in the loop: only the batch preparation (CoverPrepareBatch) and the wrapper (CoverNet around a
FeaturePyramid); the data come from RandCoverPaird, the objective is CoverLoss.
"""

from __future__ import annotations

import unittest

import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.handlers import from_engine
from monai.networks.nets import BasicUNet
from monai.utils import set_determinism

from monai_cover.engines import CoverPrepareBatch
from monai_cover.losses import CoverLoss
from monai_cover.networks import FeaturePyramid
from monai_cover.networks.nets import CoverNet
from monai_cover.transforms import RandCoverPaird


def smooth_volume(size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, 6, 6, 6, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size,) * 3, mode="trilinear", align_corners=True)[0]


class TestSupervisedTrainerDropIn(unittest.TestCase):
    def setUp(self):
        set_determinism(0)

    def tearDown(self):
        set_determinism(None)

    def test_basic_unet_pretrains_with_cover(self):  # a few seconds on 2 CPU cores
        pair = RandCoverPaird(keys="image", spatial_size=(24, 24, 24), max_displacement=5.0, keep_input=False)
        pair.set_random_state(0)
        # a fixed set of pairs drawn once, so that a few iterations show the loss going down
        items = [pair({"image": smooth_volume(36, seed)}) for seed in range(2)]
        loader = DataLoader(Dataset(items), batch_size=2, shuffle=False, num_workers=0)

        unet = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(8, 8, 16, 16, 32, 8))
        network = CoverNet(FeaturePyramid.from_network(unet))
        trainer = SupervisedTrainer(
            device=torch.device("cpu"),
            max_epochs=6,
            train_data_loader=loader,
            network=network,
            optimizer=torch.optim.Adam(network.parameters(), lr=3e-3),
            loss_function=CoverLoss(),
            prepare_batch=CoverPrepareBatch(),
        )
        losses: list[float] = []
        get_loss = from_engine(["loss"], first=True)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(get_loss(e.state.output))))
        trainer.run()

        print("COVER drop-in losses:", [round(v, 4) for v in losses])
        self.assertEqual(len(losses), 6)
        self.assertTrue(all(torch.isfinite(torch.tensor(losses))))
        self.assertLess(sum(losses[-2:]) / 2, sum(losses[:2]) / 2, f"loss did not decrease: {losses}")
        self.assertLess(losses[-1], losses[0])
        # the pretrained weights load straight into a plain BasicUNet
        fresh = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(8, 8, 16, 16, 32, 8))
        fresh.load_state_dict(network.backbone.state_dict())
        torch.testing.assert_close(fresh.conv_0.conv_0.conv.weight, unet.conv_0.conv_0.conv.weight)


if __name__ == "__main__":
    unittest.main()
