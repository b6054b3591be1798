# SPDX-License-Identifier: Apache-2.0
"""benchmarks/bench_voxel_infonce.py: the library's loss and the plain log-sum-exp form agree, and the report holds
one timed row per size with the ratio of the two medians."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_voxel_infonce.py"


def test_library_loss_matches_the_plain_form(tmp_path):
    out = tmp_path / "nce.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "64", "300", "--rounds", "1", "--threads", "1",
                           "--json", str(out)], cwd=str(ROOT), env=dict(os.environ, PYTHONWARNINGS="ignore"),
                          capture_output=True, text=True, timeout=300, encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["threads"] == 1
    assert [r["n"] for r in report["results"]] == [64, 300]
    for row in report["results"]:
        assert row["max_value_diff"] < 1e-4 and row["max_grad_diff"] < 1e-5
        assert row["plain_s"] > 0 and row["library_s"] > 0
        assert row["ratio"] == pytest.approx(row["plain_s"] / row["library_s"])
