# SPDX-License-Identifier: Apache-2.0
"""The bundles after ``pip install`` without a clone: a wheel built from the repository (offline:
``pip wheel --no-deps --no-build-isolation``) holds both bundles' configs, docs and licence, and from that wheel
installed (not editable) into a fresh prefix, ``bundle_path()`` and ``python -m monai_cover.bundle path`` find them
and MONAI parses the installed config."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import BUNDLES, REPO, subprocess_env

PACKAGE_FILES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "monai_cover", "bundles")


def _shipped(bundle: Path) -> set[str]:
    return {
        str(p.relative_to(BUNDLES.parent))
        for p in bundle.rglob("*")
        if p.is_file() and p.suffix in (".json", ".conf", ".md", "")
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("setuptools")  # builds the wheel itself (bdist_wheel), offline
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in PACKAGE_FILES:  # build from a copy, so no build/ or egg-info lands in the working tree
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", str(src), "-w",
         str(work / "dist")], capture_output=True, text=True, timeout=600, env=subprocess_env(),
             encoding="utf-8", errors="replace",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (found,) = (work / "dist").glob("monai_cover-*.whl")
    return work, found


def test_wheel_holds_the_bundles(wheel):
    _, path = wheel
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    data = {n.split(".data/data/share/monai_cover/", 1)[1] for n in names if ".data/data/share/monai_cover/" in n}
    for bundle in ("cover_pretrain_3d", "cover_finetune_3d", "cover_pretrain_2d", "cover_finetune_2d"):
        expected = _shipped(BUNDLES / bundle)
        assert expected and expected <= data, sorted(expected - data)
    assert {"bundles/cover_pretrain_3d/configs/train.json", "bundles/cover_finetune_3d/configs/inference.json",
            "bundles/cover_pretrain_2d/configs/train.json", "bundles/cover_finetune_2d/configs/inference.json",
            "bundles/schema/metadata_schema.json"} <= data  # fmt: skip
    assert "monai_cover/bundle/paths.py" in names


def test_installed_package_finds_and_parses_its_bundles(wheel):
    work, path = wheel
    prefix = work / "prefix"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "--prefix",
         str(prefix), str(path)],
        capture_output=True, text=True, timeout=600, env=subprocess_env(), encoding="utf-8", errors="replace",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    purelib = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    env = subprocess_env()
    env["PYTHONPATH"] = purelib  # the installed copy only, not the repository
    code = (
        "import monai_cover, warnings; from monai_cover.bundle import bundle_path; from monai.bundle import "
        "ConfigParser\n"
        "print(monai_cover.__file__); print(bundle_path('cover_pretrain_3d'))\n"
        "print(bundle_path('cover_finetune_3d'))\n"
        "p = ConfigParser(); warnings.simplefilter('ignore')\n"
        "p.read_config(str(bundle_path('cover_pretrain_3d') / 'configs' / 'train.json'))\n"
        "p.update({'bundle_root': str(bundle_path('cover_pretrain_3d')), 'features': [4, 4, 8, 8, 16, 8]})\n"
        "print(type(p.get_parsed_content('network_def')).__name__)\n"
        "q = ConfigParser(); cfg = [bundle_path(b) / 'configs' / 'train.json' for b in ('cover_pretrain_3d', "
        "'cover_pretrain_2d')]\n"
        "q.read_config([str(c) for c in cfg]); q.update({'features': [4, 4, 8, 8, 16, 8]})\n"
        "import torch; net2d = q.get_parsed_content('network_def')\n"
        "print(sum(isinstance(m, torch.nn.Conv2d) for m in net2d.modules()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(work), env=env, capture_output=True, text=True,
                          timeout=600, encoding="utf-8", errors="replace")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    module, pretrain, finetune, net, convs_2d = proc.stdout.strip().splitlines()[-5:]
    assert module.startswith(purelib)  # not the repository's package
    share = prefix / "share" / "monai_cover" / "bundles"
    assert Path(pretrain) == share / "cover_pretrain_3d" and Path(finetune) == share / "cover_finetune_3d"
    assert net == "BasicUNet"
    assert int(convs_2d) > 10  # the installed 2-D override over the installed 3-D base builds a 2-D BasicUNet
    proc = subprocess.run([sys.executable, "-m", "monai_cover.bundle", "path", "cover_finetune_3d"], cwd=str(work),
                          env=env, capture_output=True, timeout=600, encoding="utf-8", errors="replace")  # fmt: skip
    assert proc.returncode == 0 and Path(proc.stdout.strip()) == share / "cover_finetune_3d", proc.stderr
