# SPDX-License-Identifier: Apache-2.0
"""monai_cover.bundle.device: the pretraining bundle's crop, batch and workers per device. Without CUDA the CUDA
branch is checked against stated device sizes (``torch.cuda.get_device_properties`` answered with a given total);
``test_cuda_batch_fits_the_device`` runs the real step on a GPU (``gpu_check``)."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import unittest
from types import SimpleNamespace
from unittest import mock

import torch
from monai.bundle import ConfigParser

from monai_cover.bundle import (
    batch_size_for_device,
    estimate_pair_bytes,
    keep_freed_memory,
    num_workers_for_device,
    patch_size_for_device,
)
from monai_cover.bundle.paths import bundle_path

GB = 1e9


def _gpu(total_bytes: float):
    return mock.patch("torch.cuda.get_device_properties", return_value=SimpleNamespace(total_memory=int(total_bytes)))


class TestDeviceDefaults(unittest.TestCase):
    def test_patch_size(self):
        self.assertEqual(patch_size_for_device("cpu"), [32, 32, 32])  # the CPU demo stays as it is
        self.assertEqual(patch_size_for_device(torch.device("cuda:1")), [96, 96, 96])
        self.assertEqual(patch_size_for_device("cuda", spatial_dims=2), [96, 96])

    def test_estimate_is_linear_in_voxels_and_width(self):
        small, big = estimate_pair_bytes((48,) * 3), estimate_pair_bytes((64,) * 3)
        self.assertAlmostEqual((big - small) / (64**3 - 48**3), 4.1e3, delta=1)  # bytes per voxel, float32
        # the CPU calibration (benchmarks/bench_memory.py): 0.79 GB at 48^3 and 1.40 GB at 64^3 per pair
        self.assertAlmostEqual(small / GB, 0.79, delta=0.05)
        self.assertAlmostEqual(big / GB, 1.40, delta=0.05)
        self.assertAlmostEqual(estimate_pair_bytes((96,) * 3, amp=True) / estimate_pair_bytes((96,) * 3), 0.6)
        wide = estimate_pair_bytes((64,) * 3, features=(64, 64, 128, 256, 512, 64))
        self.assertAlmostEqual((wide - 0.34e9) / (big - 0.34e9), 2.0, places=6)

    def test_batch_size(self):
        self.assertEqual(batch_size_for_device("cpu", (96,) * 3), 1)
        pair = estimate_pair_bytes((96,) * 3, amp=True)  # ~2.4 GB
        for total, expected in ((16 * GB, 3), (24 * GB, 5), (80 * GB, 8), (2 * GB, 1)):
            with _gpu(total):
                got = batch_size_for_device("cuda", (96,) * 3, amp=True)
            self.assertEqual(got, max(1, min(8, int(0.5 * int(total) // pair))), msg=total)
            self.assertEqual(got, expected, msg=total)
        with _gpu(80 * GB):
            self.assertEqual(batch_size_for_device("cuda", (96,) * 3, amp=True, max_batch=4), 4)
            self.assertEqual(batch_size_for_device("cuda", (128,) * 3, amp=False), 4)  # 40 GB // 8.9 GB
        with self.assertRaisesRegex(ValueError, r"memory_fraction must be in \(0, 1\], got 1.5"):
            batch_size_for_device("cpu", (32,) * 3, memory_fraction=1.5)
        with self.assertRaisesRegex(ValueError, "max_batch and num_samples must be >= 1, got 0 and 1"):
            batch_size_for_device("cpu", (32,) * 3, max_batch=0)
        with _gpu(24 * GB):  # volumes per step: 2 pairs each halve what fits (5 pairs -> 2 volumes)
            self.assertEqual(batch_size_for_device("cuda", (96,) * 3, amp=True, num_samples=2), 2)

    def test_num_workers(self):
        self.assertEqual(num_workers_for_device("cpu"), 0)
        with mock.patch("os.sched_getaffinity", return_value=set(range(16)), create=True):
            with mock.patch.dict("os.environ", {"LOCAL_WORLD_SIZE": "1"}):
                self.assertEqual(num_workers_for_device("cuda"), 8)  # 15 left, at most 8
            with mock.patch.dict("os.environ", {"LOCAL_WORLD_SIZE": "4"}):
                self.assertEqual(num_workers_for_device("cuda"), 3)  # 16 // 4 - 1
            with mock.patch.dict("os.environ", {"LOCAL_WORLD_SIZE": "16"}):
                self.assertEqual(num_workers_for_device("cuda"), 0)

    def test_bundle_defaults_follow_the_device(self):
        config = bundle_path("cover_pretrain_3d") / "configs" / "train.json"
        parser = ConfigParser()
        parser.read_config(str(config))
        if not torch.cuda.is_available():
            self.assertEqual(parser.get_parsed_content("patch_size"), [32, 32, 32])  # the CPU demo, unchanged
            self.assertEqual(parser.get_parsed_content("batch_size"), 1)
            self.assertEqual(parser.get_parsed_content("num_workers"), 0)
        parser = ConfigParser()
        parser.read_config(str(config))
        parser["device"] = "$torch.device('cuda:0')"  # what a CUDA machine evaluates, with an 80 GB device
        with _gpu(80 * GB), mock.patch("os.sched_getaffinity", return_value=set(range(16)), create=True):
            self.assertEqual(parser.get_parsed_content("patch_size"), [96, 96, 96])
            # 40 GB hold 10 fp32 pairs of 96^3 (16 in bf16), 2 pairs (num_samples) per volume: 5 (8) volumes
            self.assertEqual(parser.get_parsed_content("batch_size"), 8 if parser.get_parsed_content("amp") else 5)
            self.assertEqual(parser.get_parsed_content("head_levels"), 4)  # matched to 96^3
            self.assertEqual(parser.get_parsed_content("max_displacement"), 30)
        parser = ConfigParser()
        parser.read_config(str(config))
        parser["device"], parser["batch_size"] = "$torch.device('cuda:0')", 3  # an explicit setting wins
        self.assertEqual(parser.get_parsed_content("batch_size"), 3)

    @unittest.skipUnless(sys.platform.startswith("linux"), "glibc's mallopt")
    def test_keep_freed_memory_keeps_a_freed_block_resident(self):
        """In a fresh process: a freed 256 MiB tensor leaves the RSS by default and stays resident after the call."""
        script = textwrap.dedent("""
            import sys, torch
            from monai_cover.bundle import keep_freed_memory
            def rss():
                return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024
            applied = keep_freed_memory("cpu") if sys.argv[1] == "keep" else False
            base = rss()
            x = torch.ones(64 * 2**20)  # 256 MiB, touched
            del x
            print(applied, (rss() - base) / 2**20)
        """)
        results = {}
        for mode in ("default", "keep"):
            out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True,
                                 encoding="utf-8", errors="replace")
            applied, kept_mib = out.stdout.split()
            results[mode] = (applied == "True", float(kept_mib))
        self.assertEqual(results["default"][0], False)
        self.assertLess(results["default"][1], 64)  # given back to the OS on free
        self.assertEqual(results["keep"][0], True)
        self.assertGreater(results["keep"][1], 200)  # kept for the next step

    def test_keep_freed_memory_only_for_cpu_and_when_enabled(self):
        self.assertFalse(keep_freed_memory("cuda:0"))
        self.assertFalse(keep_freed_memory(torch.device("cpu"), enabled=False))
        for name in ("cover_pretrain_3d", "cover_finetune_3d"):
            parser = ConfigParser()
            parser.read_config(str(bundle_path(name) / "configs" / "train.json"))
            self.assertIs(parser.get_parsed_content("keep_freed_memory"), True)
            self.assertTrue(any("keep_freed_memory(@device" in str(x) for x in parser["initialize"]), name)

    @unittest.skipUnless(torch.cuda.is_available(), "needs CUDA")
    def test_cuda_batch_fits_the_device(self):
        from monai.networks.nets import BasicUNet

        from monai_cover.ddf import overlap_mask
        from monai_cover.losses import CoverLoss
        from monai_cover.networks import CoverNet, FeaturePyramid, levels_for_size

        device, patch = torch.device("cuda:0"), (96, 96, 96)
        batch = batch_size_for_device(device, patch, amp=True)
        net = CoverNet(FeaturePyramid(BasicUNet(3, 1, 1, features=(32, 32, 64, 128, 256, 32))),
                       levels=levels_for_size(patch)).to(device)
        torch.cuda.reset_peak_memory_stats(device)
        a, b = torch.rand(batch, 1, *patch, device=device), torch.rand(batch, 1, *patch, device=device)
        ddf = 3 * torch.randn(batch, 3, *patch, device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            value = CoverLoss()(net(a, b), {"ddf": ddf, "overlap": overlap_mask(ddf)})
        value.backward()
        peak, total = torch.cuda.max_memory_allocated(device), torch.cuda.get_device_properties(device).total_memory
        self.assertTrue(math.isfinite(float(value)))
        self.assertLess(peak, 0.9 * total, msg=f"batch {batch}: peak {peak / GB:.1f} GB of {total / GB:.1f} GB")


if __name__ == "__main__":
    unittest.main()
