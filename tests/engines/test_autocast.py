# SPDX-License-Identifier: Apache-2.0
"""monai_cover.engines.autocast: the network's forward under CPU autocast where MONAI's engines only autocast CUDA,
and the bundles' engines wired to it (their own ``amp`` stays for CUDA)."""

from __future__ import annotations

import unittest

import torch
from monai.bundle import ConfigParser
from monai.inferers import SimpleInferer, SlidingWindowInferer

from monai_cover.bundle.paths import bundle_path
from monai_cover.engines import AutocastInferer, autocast_inferer


class TestAutocastInferer(unittest.TestCase):
    def test_forward_runs_in_bfloat16_on_cpu(self):
        net = torch.nn.Conv3d(1, 2, 3, padding=1)
        x = torch.rand(1, 1, 8, 8, 8)
        self.assertEqual(SimpleInferer()(x, net).dtype, torch.float32)
        out = AutocastInferer(SimpleInferer())(x, net)
        self.assertEqual(out.dtype, torch.bfloat16)
        torch.testing.assert_close(out.float(), net(x), rtol=0.02, atol=0.02)
        sliding = AutocastInferer(SlidingWindowInferer(roi_size=(4, 4, 4), sw_batch_size=2))(x, net)
        self.assertEqual(sliding.shape, (1, 2, 8, 8, 8))
        self.assertFalse(torch.is_autocast_enabled("cpu"))  # the context is left again

    def test_autocast_inferer_only_where_monai_does_not(self):
        inner = SimpleInferer()
        self.assertIs(autocast_inferer(inner, "cpu", amp=False), inner)
        self.assertIs(autocast_inferer(inner, torch.device("cuda:0"), amp=True), inner)  # the engine's amp does it
        wrapped = autocast_inferer(inner, "cpu", amp=True, dtype="float16")
        self.assertIsInstance(wrapped, AutocastInferer)
        self.assertEqual((wrapped.device_type, wrapped.dtype), ("cpu", torch.float16))
        with self.assertRaisesRegex(ValueError, r"dtype must be 'bfloat16' or 'float16', got 'float32'"):
            autocast_inferer(inner, "cpu", amp=True, dtype="float32")
        with self.assertRaisesRegex(TypeError, r"monai.inferers.Inferer, got Conv3d"):
            AutocastInferer(torch.nn.Conv3d(1, 1, 1))

    def test_bundles_autocast_their_cpu_runs(self):
        for name in ("cover_pretrain_3d", "cover_finetune_3d"):
            for amp in (True, False):
                parser = ConfigParser()
                parser.read_config(str(bundle_path(name) / "configs" / "train.json"))
                parser["device"], parser["amp"] = "$torch.device('cpu')", amp
                for engine in ("train#trainer", "validate#evaluator"):
                    inferer = parser.get_parsed_content(f"{engine}#inferer")
                    self.assertIs(isinstance(inferer, AutocastInferer), amp, (name, engine))
                    self.assertIs(parser.get_parsed_content(f"{engine}#amp"), False)  # no CUDA GradScaler on CPU
                parser["device"] = "$torch.device('cuda:0')"
                parser.parse()
                self.assertIs(parser.get_parsed_content("train#trainer#amp"), amp)
                self.assertNotIsInstance(parser.get_parsed_content("train#trainer#inferer"), AutocastInferer)


if __name__ == "__main__":
    unittest.main()
