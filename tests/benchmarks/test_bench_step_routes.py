# SPDX-License-Identifier: Apache-2.0
"""benchmarks/bench_step_routes.py: every variant is the same step with one route switched back, so its loss equals
that of the step with every route on (within bf16 against fp32); the slowdowns are relative to that step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_step_routes.py"


def test_routes_change_speed_not_result(tmp_path):
    out = tmp_path / "routes.json"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--size", "16", "--steps", "1", "--threads", "1",
                           "--keep-freed-memory", "--json", str(out)],
                          cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600,
                              encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text(encoding="utf-8"))
    assert r["keep_freed_memory"] is sys.platform.startswith("linux")
    routes = r["routes"]
    assert set(routes) == {"all routes on", "mov loop", "warp one call", "warp then project",
                           "interpolate upsampling", "torch cosine", "fp32"}
    assert routes["all routes on"]["slowdown"] == pytest.approx(1.0)
    # the same bf16 step with another implementation of one part
    for name in ("mov loop", "warp one call", "warp then project", "interpolate upsampling", "torch cosine"):
        assert routes[name]["loss_relative_difference"] < 1e-3, name
    assert 0 < routes["fp32"]["loss_relative_difference"] < 1e-2  # bf16 moves the loss a little, not a lot
