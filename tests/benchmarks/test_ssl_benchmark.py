# SPDX-License-Identifier: Apache-2.0
"""CI-sized end-to-end run of benchmarks/ssl_benchmark.py (``--smoke``) as a subprocess: every method pretrains,
fine-tunes and is evaluated, and the report files carry the expected fields."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "ssl_benchmark.py"
HAS_DATA = all(importlib.util.find_spec(m) is not None for m in ("nilearn", "slicerio", "SimpleITK", "nibabel"))
HAS_MPL = importlib.util.find_spec("matplotlib") is not None
METHODS = ("cover", "voxel_infonce", "pcrlv2", "voco")
INITS = ("scratch",) + METHODS


@unittest.skipUnless(HAS_DATA, "needs nilearn, slicerio, SimpleITK and nibabel for the real volumes")
class TestSSLBenchmarkSmoke(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.out = Path(cls.tmp.name) / "run"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        start = time.time()
        cls.proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(cls.out), "--quiet"],
                                  cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600)
        cls.seconds = time.time() - start
        cls.results = None
        if cls.proc.returncode == 0 and (cls.out / "results.json").exists():
            with open(cls.out / "results.json") as f:
                cls.results = json.load(f)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _results(self) -> dict:
        self.assertEqual(self.proc.returncode, 0, msg=f"stdout:\n{self.proc.stdout[-3000:]}\nstderr:\n"
                                                      f"{self.proc.stderr[-3000:]}")
        self.assertIsNotNone(self.results)
        return self.results

    def test_runs_in_ci_budget(self):
        self._results()
        # the smoke profile itself takes ~40 s on a loaded 2-core CPU; leave slack for a busy CI machine
        self.assertLess(self.seconds, 300)

    def test_every_method_end_to_end(self):
        r = self._results()
        cfg = r["config"]
        self.assertEqual(cfg["profile"], "smoke")
        self.assertEqual(sorted(r["pretrain"]), sorted(METHODS))
        for method in METHODS:
            for run in r["pretrain"][method].values():
                self.assertEqual(len(run["losses"]), cfg["pretrain_steps"])
                self.assertTrue(all(math.isfinite(v) for v in run["losses"]))
                self.assertGreater(run["seconds"], 0)
        runs = r["runs"]
        self.assertEqual(len(runs), len(INITS) * len(cfg["ks"]) * len(cfg["seeds"]))
        for run in runs:
            self.assertIn(run["init"], INITS)
            self.assertEqual(sorted(run["dice"]), sorted(["other", "grey matter", "white matter"]))
            for v in run["dice"].values():
                self.assertGreaterEqual(v, 0.0)
                self.assertLessEqual(v, 1.0)
            self.assertAlmostEqual(run["dice_mean"], sum(run["dice"].values()) / 3, places=6)
            self.assertEqual(len(run["patches"]), run["k"])
        # identical labelled patches for every initialisation at a given seed and k
        for k in cfg["ks"]:
            patches = {json.dumps(run["patches"]) for run in runs if run["k"] == k and run["seed"] == cfg["seeds"][0]}
            self.assertEqual(len(patches), 1)

    def test_summary_and_diagnostics_fields(self):
        r = self._results()
        for init in INITS:
            for k in r["config"]["ks"]:
                s = r["summary"][init][str(k)]
                for key in ("mean", "std", "n", "seeds", "per_class"):
                    self.assertIn(key, s)
            self.assertIn(init, r["diagnostics"])
            for diag in r["diagnostics"][init].values():
                for key in ("intra_cosine", "inter_cosine", "ratio", "gap", "effective_rank", "max_rank"):
                    self.assertIn(key, diag)
                self.assertGreaterEqual(diag["effective_rank"], 0.0)
        self.assertEqual(sorted(r["comparisons"]), sorted(set(INITS) - {"cover"}))
        for key in ("data_seconds", "pretrain_seconds", "finetune_seconds", "total_seconds"):
            self.assertIn(key, r["timings"])
        self.assertEqual(r["data"]["split"]["axis"], 0)
        self.assertLessEqual(r["data"]["split"]["train"][1], r["data"]["split"]["eval"][0])

    def test_report_files(self):
        self._results()
        report = (self.out / "report.md").read_text()
        for text in ("Mean Dice", "| init |", "Over-dispersion", "intra cos", "eff. rank", "Limitations", "k=1"):
            self.assertIn(text, report)
        for init in INITS:
            self.assertIn(f"| {init} |", report)
        if HAS_MPL:
            for name in ("dice_vs_k.png", "pretrain_loss.png"):
                path = self.out / name
                self.assertTrue(path.exists(), name)
                self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
            self.assertEqual(sorted(self.results["plots"]), ["dice_vs_k.png", "pretrain_loss.png"])


if __name__ == "__main__":
    unittest.main()
