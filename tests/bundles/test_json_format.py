# SPDX-License-Identifier: Apache-2.0
"""The bundles' files as model-zoo's pre-commit leaves them: pre-commit-hooks' own ``pretty-format-json --indent=4
--no-sort-keys``, ``end-of-file-fixer`` and ``trailing-whitespace-fixer`` (run on copies) change nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BUNDLES

FILES = sorted(p for p in BUNDLES.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".conf", ".yml", ".txt"))


def _hook(name: str) -> str:
    found = Path(sys.executable).parent / name
    if not found.exists():
        found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: pip install pre-commit-hooks (in the [test] extra)")
    return str(found)


@pytest.mark.parametrize("hook, args, suffixes", [
    ("pretty-format-json", ["--indent=4", "--no-sort-keys"], (".json",)),
    ("end-of-file-fixer", [], (".json", ".md", ".conf", ".yml", ".txt")),
    ("trailing-whitespace-fixer", [], (".json", ".md", ".conf", ".yml", ".txt")),
])  # fmt: skip
def test_bundle_files_pass_model_zoo_pre_commit(hook, args, suffixes, tmp_path):
    copies = []
    for path in FILES:
        if path.suffix in suffixes:
            copy = tmp_path / path.relative_to(BUNDLES)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, copy)
            copies.append(copy)
    assert len(copies) >= 10
    proc = subprocess.run([_hook(hook), *args, *map(str, copies)], capture_output=True, encoding="utf-8",
                          errors="replace", timeout=300)
    changed = [str(c.relative_to(tmp_path)) for c in copies if c.read_bytes() != (BUNDLES / c.relative_to(tmp_path))
               .read_bytes()]  # fmt: skip
    assert proc.returncode == 0 and not changed, f"{hook} would change {changed}:\n{proc.stdout[-3000:]}"


def test_the_check_sees_a_badly_formatted_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": [1, 2]}', encoding="utf-8")
    proc = subprocess.run([_hook("pretty-format-json"), "--indent=4", "--no-sort-keys", str(bad)],
                          capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 1
