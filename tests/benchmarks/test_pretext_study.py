# SPDX-License-Identifier: Apache-2.0
"""benchmarks/pretext_study.py end to end at a tiny budget on real slices: curves, table and plot."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HAS_DATA = all(importlib.util.find_spec(m) is not None for m in ("nilearn", "slicerio", "matplotlib"))


@pytest.mark.skipif(not HAS_DATA, reason="needs nilearn, slicerio (real volumes) and matplotlib")
def test_two_configs_two_steps(tmp_path):
    out = tmp_path / "study"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "pretext_study.py"), "--track", "2d", "--steps", "2",
           "--evals", "1", "--configs", "paper", "default", "--data-dir", str(tmp_path / "data"), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600,
                          encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [r["name"] for r in results["runs"]] == ["paper", "default"]
    paper, default = results["runs"]
    assert paper["levels"] == 5 and default["levels"] == 4  # 96^2 crops: the coarsest level keeps >= 8 pixels
    for run in results["runs"]:
        assert [c["step"] for c in run["curve"]] == [0, 2]
        for point in run["curve"]:
            assert 0 < point["epe_ratio"] < 3 and 0 <= point["nn_corr"] <= 1
            assert 1 <= point["rank"] <= 32 and -1 <= point["cosine"] <= 1
            if run["levels"] > 2:  # what the two finest levels could carry, at least what they do carry
                assert sum(point["gain_share"][-2:]) <= point["reach_bound"] <= 1
                assert 0 <= point["reach_bound_in_window"] <= point["reach_bound"]
                assert len(point["correction_cosine"]) == len(point["correction_scale"]) == run["levels"] - 1
                assert all(-1 <= c <= 1 for c in point["correction_cosine"])
            # a perfect head's split: one share per level, summing to 1, a property of the pairs, not of training
            assert len(point["oracle_gain_share"]) == run["levels"]
            assert math.isclose(sum(point["oracle_gain_share"]), 1.0, abs_tol=1e-9)
            assert point["oracle_gain_share"] == run["curve"][0]["oracle_gain_share"]
        assert len(run["losses"]) == 2 and all(math.isfinite(v) for v in run["losses"])
    table = (out / "report.md").read_text(encoding="utf-8")
    assert "| paper | 5 |" in table and "| default | 4 |" in table
    assert (out / "curves.png").stat().st_size > 10_000
