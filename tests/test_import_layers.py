# SPDX-License-Identifier: Apache-2.0
"""The package is layered and imports only point down: a lower layer never imports a higher one (function-level
imports included), nothing imports the benchmarks, and the core runs without Ignite installed."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "monai_cover"

#: layer of each top-level module or subpackage of monai_cover, bottom (0) to top
LAYERS = {
    "ddf": 0,
    "weights": 1,
    "transforms": 1,
    "networks": 1,
    "losses": 1,
    "data": 1,
    "metrics": 2,
    "engines": 3,
    "handlers": 3,
    "baselines": 3,
    "methods": 4,
    "apps": 5,
    "bundle": 5,
    # the optional nnU-Net hand-off ([nnunet] extra): nothing else in the package imports it
    "nnunet": 6,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _layer(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if parts[0] != "monai_cover" or len(parts) < 2:
        return None
    if parts[1] not in LAYERS:
        return None  # a name imported from the package root (e.g. __version__)
    return parts[1], LAYERS[parts[1]]


def _violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        own = _layer(name)
        for line, module in _imports(path):
            if module.split(".")[0] == "benchmarks":
                where = path.relative_to(PACKAGE.parent)
                found.append(f"{where}:{line} imports {module} (benchmarks are not a library)")
            target = _layer(module)
            if own is None or target is None:
                continue
            if target[1] > own[1]:
                found.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} ({own[0]}, layer {own[1]}) imports {module} "
                    f"({target[0]}, layer {target[1]})"
                )
    return found


def test_every_module_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.name != "__init__.py"}
    tops = {t for t in tops if not t.startswith("__")}
    assert tops <= set(LAYERS), f"modules without a layer: {sorted(tops - set(LAYERS))}; add them to LAYERS"


def test_imports_only_point_down():
    violations = _violations()
    assert not violations, "upward imports:\n" + "\n".join(violations)


def test_nothing_imports_the_nnunet_extra():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
             for path in sorted(PACKAGE.rglob("*.py")) if "nnunet" not in path.relative_to(PACKAGE).parts
             for line, module in _imports(path) if module.startswith("monai_cover.nnunet")]
    assert not found, "\n".join(found)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "monai_cover"
    (fake / "losses").mkdir(parents=True)
    (fake / "__init__.py").write_text("", encoding="utf-8")
    (fake / "losses" / "__init__.py").write_text("", encoding="utf-8")
    (fake / "losses" / "bad.py").write_text("def f():\n    from ..handlers import metrics\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert any("handlers" in v and "layer 1" in v for v in _violations())


_BLOCK_IGNITE = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoIgnite(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "ignite" or name.startswith("ignite."):
                raise ImportError("ignite is blocked for this test")
            return None

    sys.meta_path.insert(0, NoIgnite())
    """
)


@pytest.mark.parametrize(
    "module", ["monai_cover", "monai_cover.losses", "monai_cover.networks", "monai_cover.transforms",
               "monai_cover.metrics", "monai_cover.ddf"]
)
def test_core_imports_without_ignite(module):
    code = _BLOCK_IGNITE + f"import {module}\nassert 'ignite' not in sys.modules\nprint('ok')\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(PACKAGE.parent),
                          timeout=300, encoding="utf-8", errors="replace")
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
