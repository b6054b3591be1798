# SPDX-License-Identifier: Apache-2.0
"""Text is read and written as UTF-8 whatever the locale: on a machine whose locale is ASCII (``LC_ALL=C`` with
``PYTHONUTF8=0``), ``open``/``read_text``/``write_text`` and ``subprocess(text=True)`` without an ``encoding``
decode with ASCII and fail on the first progress bar or ``+-`` sign. ruff's PLW1514 checks ``open``; this checks
the calls it cannot see (methods of a path held in a variable, ``subprocess``), and a bundle run in that locale."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    p for d in ("monai_cover", "benchmarks", "tests", "bundles") for p in (REPO / d).rglob("*.py")
)
SUBPROCESS = {"run", "Popen", "check_output", "check_call", "call"}


def _text_calls_without_encoding(source: str) -> list[int]:
    """Lines of the calls in ``source`` that read or write text with the locale's encoding."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or "encoding" in {k.arg for k in node.keywords}:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        kwargs = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
        if name in ("read_text", "write_text"):
            lines.append(node.lineno)
        elif name == "fdopen" and not any(isinstance(a, ast.Constant) and "b" in str(a.value) for a in node.args):
            lines.append(node.lineno)
        elif name in SUBPROCESS and (kwargs.get("text") is True or kwargs.get("universal_newlines") is True):
            lines.append(node.lineno)
    return lines


def test_the_scan_finds_each_kind_of_call():
    source = "p.read_text()\nq.write_text('x')\nsubprocess.run(a, text=True)\nos.fdopen(fd, 'w')\n"
    source += "p.read_text(encoding='utf-8')\nsubprocess.run(a, encoding='utf-8')\nos.fdopen(fd, 'wb')\n"
    assert _text_calls_without_encoding(source) == [1, 2, 3, 4]


def test_every_text_call_names_its_encoding():
    found = [f"{p.relative_to(REPO)}:{line}" for p in SOURCES
             for line in _text_calls_without_encoding(p.read_text(encoding="utf-8"))]
    assert not found, f"text read or written with the locale's encoding (add encoding='utf-8'): {found}"


def test_bundle_configs_are_ascii():
    """MONAI's ConfigParser opens config files with the locale's encoding."""
    configs = sorted((REPO / "bundles").glob("*/configs/*.json"))
    assert len(configs) >= 8
    not_ascii = [str(p.relative_to(REPO)) for p in configs if not p.read_bytes().isascii()]
    assert not not_ascii, f"non-ASCII bytes in {not_ascii}: MONAI reads configs with the locale's encoding"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX locale")
def test_embedded_pretraining_demo_runs_in_an_ascii_locale(tmp_path):
    """The demo run with an ASCII locale, the progress bar on UTF-8 stderr (``PYTHONIOENCODING``) as CI sets it."""
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONIOENCODING="utf-8", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    bundle = REPO / "bundles" / "cover_pretrain_3d"
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "train.json"),
         "--bundle_root", str(bundle), "--output_dir", str(out), "--epochs", "1", "--num_workers", "0"],
        cwd=str(tmp_path), env=env, capture_output=True, timeout=600,
    )  # fmt: skip
    log = (proc.stdout + proc.stderr).decode("utf-8", errors="replace")
    assert proc.returncode == 0, log[-3000:]
    assert (out / "models" / "model.pt").is_file()
    assert (out / "data_report.json").is_file() and (out / "data_report.md").is_file()
