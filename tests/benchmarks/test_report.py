# SPDX-License-Identifier: Apache-2.0
"""benchmarks/report.py on hand-made run records with known summaries, paired differences and report rows."""

from __future__ import annotations

import importlib.util
import json
import math
import tempfile
import time
import unittest
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "report.py"
spec = importlib.util.spec_from_file_location("ssl_report", SCRIPT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

HAS_MPL = importlib.util.find_spec("matplotlib") is not None
CLASSES = ("other", "grey matter", "white matter")


def run(init: str, k: int, seed: int, dice: tuple[float, float, float]) -> dict:
    return {"init": init, "k": k, "seed": seed, "dice": dict(zip(CLASSES, dice)), "dice_mean": float(np.mean(dice)),
            "ft_seconds": 1.0, "eval_seconds": 0.5}


# cover minus scratch at k=1: seeds 0, 1, 2 -> +0.1, -0.05, +0.2; seed 3 only has cover (unpaired)
RUNS = [
    run("scratch", 1, 0, (0.3, 0.3, 0.3)), run("cover", 1, 0, (0.4, 0.4, 0.4)),
    run("scratch", 1, 1, (0.5, 0.5, 0.5)), run("cover", 1, 1, (0.45, 0.45, 0.45)),
    run("scratch", 1, 2, (0.2, 0.2, 0.2)), run("cover", 1, 2, (0.4, 0.4, 0.4)),
    run("cover", 1, 3, (0.9, 0.9, 0.9)),
    run("scratch", 2, 0, (0.6, 0.2, 0.1)), run("cover", 2, 0, (0.7, 0.3, 0.2)),
]  # fmt: skip


def diag(**kw) -> dict:
    base = {"intra_cosine": 0.5, "inter_cosine": 0.4, "ratio": 1.25, "gap": 0.1, "effective_rank": 3.0, "max_rank": 8,
            "num_voxels": 100}
    return {**base, **kw}


def results_for(runs: list[dict], methods: list[str], ks: list[int]) -> dict:
    return {
        "config": {"profile": "smoke", "device": "cpu", "seeds": [0, 1, 2, 3], "ks": ks, "methods": methods,
                   "features": (2, 2, 4, 4, 8, 2), "crop": 32, "spacing": 3.0, "cover_levels": None,
                   "pretrain_steps": 4, "lr": 1e-3, "weight_decay": 1e-5, "grad_clip": 1.0, "pretrain_batch": 1,
                   "pretrain_per_seed": False, "ft_steps": 2, "ft_lr": 1e-3, "ft_batch": 1, "sw_overlap": 0.0},
        "environment": {"threads": 2, "loadavg_start": None},
        "data": {"pool": ["a", "b"], "split": {"train": [0, 32], "eval": [34, 66]},
                 "labels": {1: "other", 2: "grey matter", 3: "white matter"}},
        "timings": {"data_seconds": 1.0},
        "pretrain": {"cover": {"0": {"losses": [4.0, 3.0, 2.0, 1.0], "seconds": 2.0,
                                     "terms": {"vector": [3, 2, 1, 0.5], "consistency": [1, 1, 1, 0.5],
                                               "zero_ddf_l1": [2, 2, 2, 2.0]}}}},
        "runs": runs,
        "diagnostics": {"scratch": {"0": diag()}, "cover": {"0": diag(ratio=2.0), "1": diag(ratio=4.0)}},
        "summary": report.summarise(runs, ["scratch", *methods], ks),
    }


class TestSummaries(unittest.TestCase):
    def test_mean_std(self):
        self.assertEqual(report.mean_std([1.0, 2.0, 3.0]), (2.0, 1.0))  # sample std (ddof 1)
        self.assertEqual(report.mean_std([0.25]), (0.25, 0.0))
        with self.assertRaisesRegex(ValueError, "empty"):
            report.mean_std([])

    def test_summarise(self):
        s = report.summarise(RUNS, ["scratch", "cover", "voco"], [1, 2, 4])
        self.assertEqual(list(s), ["scratch", "cover", "voco"])
        self.assertEqual(s["voco"], {})
        self.assertEqual(sorted(s["cover"]), ["1", "2"])  # no run at k=4
        c1 = s["cover"]["1"]
        self.assertEqual(c1["n"], 4)
        self.assertAlmostEqual(c1["mean"], (0.4 + 0.45 + 0.4 + 0.9) / 4)
        self.assertAlmostEqual(c1["std"], float(np.std([0.4, 0.45, 0.4, 0.9], ddof=1)))
        self.assertEqual(list(c1["seeds"]), ["0", "1", "2", "3"])
        np.testing.assert_allclose(list(c1["seeds"].values()), [0.4, 0.45, 0.4, 0.9])
        c2 = s["cover"]["2"]
        self.assertEqual(c2["per_class"]["grey matter"], {"mean": 0.3, "std": 0.0})
        self.assertAlmostEqual(c2["mean"], 0.4)

    def test_comparisons_paired_by_seed(self):
        c = report.comparisons(RUNS, [1, 2])
        self.assertEqual(list(c), ["scratch"])
        k1 = c["scratch"]["1"]
        diffs = [0.1, -0.05, 0.2]  # seed 3 has no scratch run: left out
        self.assertEqual((k1["n"], k1["wins"]), (3, 2))
        self.assertAlmostEqual(k1["mean"], float(np.mean(diffs)))
        self.assertAlmostEqual(k1["std"], float(np.std(diffs, ddof=1)))
        self.assertAlmostEqual(c["scratch"]["2"]["mean"], 0.1)
        self.assertEqual(c["scratch"]["2"]["wins"], 1)
        self.assertEqual(report.comparisons(RUNS, [1], ref="scratch")["cover"]["1"]["wins"], 1)

    def test_bootstrap_ci(self):
        np.testing.assert_allclose(report.bootstrap_ci([0.2, 0.2, 0.2]), (0.2, 0.2), atol=1e-12)  # no spread
        lo, hi = report.bootstrap_ci([0.0, 1.0])  # resampled means of two values are 0, 0.5 or 1
        self.assertEqual((lo, hi), (0.0, 1.0))
        values = np.random.default_rng(0).normal(0.3, 0.1, size=400)
        lo, hi = report.bootstrap_ci(values)
        half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)  # the normal interval, for many values
        self.assertAlmostEqual(lo, values.mean() - half, delta=0.004)
        self.assertAlmostEqual(hi, values.mean() + half, delta=0.004)
        self.assertEqual(report.bootstrap_ci(values, seed=3), report.bootstrap_ci(values, seed=3))  # seeded
        narrow = report.bootstrap_ci(values, level=0.5)
        self.assertTrue(lo < narrow[0] < narrow[1] < hi)
        with self.assertRaisesRegex(ValueError, "empty"):
            report.bootstrap_ci([])
        with self.assertRaisesRegex(ValueError, r"level must be in \(0, 1\), got 95"):
            report.bootstrap_ci([1.0], level=95)

    def test_comparisons_intervals_and_all_k(self):
        runs = [run(i, k, s, (d,) * 3) for i, k, s, d in (
            ("cover", 1, 0, 0.5), ("scratch", 1, 0, 0.4), ("cover", 2, 0, 0.6), ("scratch", 2, 0, 0.3),
            ("cover", 1, 1, 0.5), ("scratch", 1, 1, 0.6), ("cover", 2, 1, 0.7), ("scratch", 2, 1, 0.6),
            ("cover", 1, 2, 0.9), ("scratch", 1, 2, 0.1))]  # seed 2 lacks k=2: not in "all"
        c = report.comparisons(runs, [1, 2])["scratch"]
        k1 = [0.1, -0.1, 0.8]
        self.assertAlmostEqual(c["1"]["mean"], float(np.mean(k1)))
        np.testing.assert_allclose((c["1"]["ci_low"], c["1"]["ci_high"]), report.bootstrap_ci(k1), atol=1e-12)
        self.assertLessEqual(c["1"]["ci_low"], c["1"]["mean"])
        self.assertGreaterEqual(c["1"]["ci_high"], c["1"]["mean"])
        self.assertEqual((c["all"]["n"], c["all"]["wins"]), (2, 1))  # seed 0: (0.1 + 0.3) / 2 wins; seed 1: 0
        self.assertAlmostEqual(c["all"]["mean"], (0.2 + 0.0) / 2)
        self.assertNotIn("all", report.comparisons(runs, [1])["scratch"])  # one k: nothing to pool

    def test_mean_diagnostics_skips_missing(self):
        m = report.mean_diagnostics({"0": diag(ratio=2.0, gap=math.nan), "1": diag(ratio=4.0, gap=None, max_rank=9)})
        self.assertEqual(m["ratio"], 3.0)
        self.assertTrue(math.isnan(m["gap"]))  # no finite value left
        self.assertEqual((m["max_rank"], m["num_voxels"]), (8, 100))  # the first seed's

    def test_jsonable(self):
        x = {1: (np.float32(0.5), float("nan"), float("inf")), "a": [np.int64(3), {"b": -float("inf")}]}
        y = report.jsonable(x)
        self.assertEqual(y, {"1": [0.5, None, None], "a": [3, {"b": None}]})
        self.assertIsInstance(y["a"][0], int)
        json.dumps(y, allow_nan=False)


class TestReportFiles(unittest.TestCase):
    def test_report_tables(self):
        res = results_for(RUNS, ["cover"], [1, 2])
        res["comparisons"] = report.comparisons(RUNS, [1, 2])
        res["timings"].update(total_seconds=120.0, cpu_seconds=60.0)
        with tempfile.TemporaryDirectory() as tmp:
            text = report.write_report(tmp, res).read_text(encoding="utf-8")
        s = res["summary"]["cover"]["1"]
        self.assertIn(f"| cover | {s['mean']:.4f} +/- {s['std']:.4f} (n=4) | 0.4000 +/- 0.0000 (n=1) |", text)
        self.assertIn("| scratch | 0.3333 +/- 0.1528 (n=3) | 0.3000 +/- 0.0000 (n=1) |", text)
        self.assertIn("| cover | 2 | 0.7000 +/- 0.0000 | 0.3000 +/- 0.0000 | 0.2000 +/- 0.0000 |", text)
        self.assertIn("| scratch | 1 | 0.3000 | 0.5000 | 0.2000 | nan |", text)  # per seed; seed 3 missing
        lo, hi = report.bootstrap_ci([0.1, -0.05, 0.2])
        self.assertIn(f"| scratch | +0.0833 [{lo:+.4f}, {hi:+.4f}] (2/3) | +0.1000 [+0.1000, +0.1000] (1/1) | "
                      "+0.1000 [+0.1000, +0.1000] (1/1) |", text)  # all k: seed 0 alone has both k
        self.assertIn("| cover | 2.0 | 4.0000 | 1.0000 |", text)  # pretraining: seconds, first, last 10 %
        self.assertIn("vector L1 0.500 voxels vs 2.000 for predicting zero displacement", text)
        self.assertIn("total wall time 2.0 min, CPU time 1.0 min", text)
        for heading in ("## Mean Dice (other, grey matter, white matter)", "## Over-dispersion", "## Limitations"):
            self.assertIn(heading, text)
        self.assertIn("| cover | 0.500 | 0.400 | 3.000 |", text)  # mean ratio of the two cover seeds

    def test_finish_completes_and_writes(self):
        with tempfile.TemporaryDirectory() as tmp:
            res = results_for(RUNS, ["cover"], [1, 2])
            path = report.finish(tmp, res, started=time.time() - 5.0)
            self.assertEqual(path, Path(tmp) / "report.md")
            self.assertAlmostEqual(res["comparisons"]["scratch"]["1"]["mean"], 0.25 / 3)
            self.assertEqual(res["diagnostics_mean"]["cover"]["ratio"], 3.0)
            self.assertEqual(res["timings"]["pretrain_seconds"], {"cover": 2.0})
            self.assertEqual(res["timings"]["finetune_seconds"], 1.5 * len(RUNS))
            self.assertGreaterEqual(res["timings"]["total_seconds"], 5.0)
            saved = json.loads((Path(tmp) / "results.json").read_text(encoding="utf-8"))
            self.assertEqual(saved["summary"]["cover"]["2"]["n"], 1)
            if HAS_MPL:
                self.assertEqual(saved["plots"], ["dice_vs_k.png", "pretrain_loss.png"])
                for name in saved["plots"]:
                    self.assertEqual((Path(tmp) / name).read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
        no_cover = results_for([r for r in RUNS if r["init"] == "scratch"], ["voco"], [1])
        with tempfile.TemporaryDirectory() as tmp:
            report.finish(tmp, no_cover, started=time.time())
        self.assertNotIn("comparisons", no_cover)  # paired differences are COVER minus the others


if __name__ == "__main__":
    unittest.main()


def test_which_pretraining_each_fine_tuning_seed_reads():
    medium = {"seeds": [0, 1, 2, 3, 4], "pretrain_seeds": [0, 1, 2], "pretrain_per_seed": True}
    assert [report.pretraining_seed(medium, s) for s in medium["seeds"]] == [0, 1, 2, 0, 1]
    more = {"seeds": [5, 6, 7, 8, 9], "pretrain_seeds": [3, 4, 5], "pretrain_per_seed": True}
    assert [report.pretraining_seed(more, s) for s in more["seeds"]] == [3, 4, 5, 3, 4]  # in turn, not s mod 3
    assert report.pretraining_note(more) == ("3 pretrainings per method (seeds [3, 4, 5]), read in turn by "
                                             "fine-tuning seeds [5, 6, 7, 8, 9]")
    once = {"seeds": [2, 3], "pretrain_per_seed": False}
    assert [report.pretraining_seed(once, s) for s in once["seeds"]] == [2, 2]
    assert report.pretraining_note(once) == "pretrained once (first seed)"
