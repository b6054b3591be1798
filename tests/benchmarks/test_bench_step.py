# SPDX-License-Identifier: Apache-2.0
"""benchmarks/bench_step.py --reference: the reference step is the same network with the per-offset-loop mixture,
so its first loss equals ours in float32 and stays within 1e-3 (relative) under bf16 autocast; the JSON carries the
timings and the ratio. (The speed itself is a benchmark figure, not a test.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_step.py"


def _run(tmp_path: Path, *flags: str) -> dict:
    out = tmp_path / "step.json"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--size", "16", "--steps", "1", "--warmup", "0",
                           "--channels", "8,16,32,64,128", "--threads", "1", "--reference", "--json", str(out),
                           *flags], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600,
                               encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "speed-up reference / ours:" in proc.stdout
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("flags, tolerance", [((), 1e-5), (("--amp", "bf16", "--channels-last"), 1e-3)])
def test_reference_step_matches(tmp_path, flags, tolerance):
    r = _run(tmp_path, *flags)
    assert r["first_loss_relative_difference"] <= tolerance
    assert len(r["reference_steps"]) == len(r["steps"]) == 1
    assert r["reference_ratio"] == pytest.approx(r["reference_steps"][0] / r["step_s"])
    assert r["channels_last"] == ("--channels-last" in flags)


def test_memory_children(tmp_path):
    """--memory runs one step of each variant in a fresh process and reports its peak RSS above its starting RSS."""
    r = _run(tmp_path, "--memory", "--keep-freed-memory")
    assert r["keep_freed_memory"] is sys.platform.startswith("linux")
    for variant in ("ours", "reference"):
        m = r["memory"][variant]
        assert m["peak_bytes"] >= m["before_bytes"] > 100 * 2**20  # torch alone holds more than 100 MiB
    memory = r["memory"]
    assert memory["ratio"] == pytest.approx(memory["ours"]["peak_bytes"] / memory["reference"]["peak_bytes"])
