# SPDX-License-Identifier: Apache-2.0
"""Model-zoo release files: every bundle has ``large_files.yml`` and ``docs/data_license.txt``, and
``python -m monai_cover.bundle add-large-file`` writes an entry whose hash MONAI's own ``check_hash`` accepts."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import BUNDLES, REPO
from monai.apps.utils import check_hash

from monai_cover.bundle import BUNDLE_NAMES
from monai_cover.bundle.release import add_large_file, read_large_files


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_every_bundle_has_its_release_files(name):
    bundle = BUNDLES / name
    data = yaml.safe_load((bundle / "large_files.yml").read_text(encoding="utf-8"))
    assert data == {"large_files": []}  # nothing released yet; the docs say how
    license_text = (bundle / "docs" / "data_license.txt").read_text(encoding="utf-8")
    assert "nilearn" in license_text and "slicerio" in license_text
    readme = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    assert "## Releasing weights" in readme and "add-large-file" in readme
    setup = (REPO / "setup.cfg").read_text(encoding="utf-8")
    assert f"bundles/{name}/large_files.yml" in setup and f"bundles/{name}/docs/*.txt" in setup


def test_add_large_file_entry_passes_monais_hash_check(tmp_path):
    bundle = tmp_path / "cover_pretrain_3d"
    shutil.copytree(BUNDLES / "cover_pretrain_3d", bundle)
    (bundle / "models").mkdir()
    model = bundle / "models" / "model.pt"
    torch.save({"w": torch.arange(10.0)}, model)
    proc = subprocess.run([sys.executable, "-m", "monai_cover.bundle", "add-large-file", str(bundle), str(model),
                           "--url", "https://example.org/model.pt"], capture_output=True, encoding="utf-8",
                          errors="replace", timeout=300, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr
    entries = read_large_files(bundle)
    assert [(e["path"], e["url"], e["hash_type"]) for e in entries] == [
        ("models/model.pt", "https://example.org/model.pt", "sha256")]
    assert proc.stdout.strip() == f"large_files.yml: models/model.pt sha256 {entries[0]['hash_val']}"
    assert check_hash(str(model), entries[0]["hash_val"], entries[0]["hash_type"])
    # a new model replaces the entry of the same path; MONAI's check rejects the old hash for it
    old = entries[0]["hash_val"]
    torch.save({"w": torch.arange(11.0)}, model)
    assert not check_hash(str(model), old, "sha256")
    add_large_file(bundle, model, "https://example.org/model-v2.pt")
    entries = read_large_files(bundle)
    assert len(entries) == 1 and entries[0]["url"].endswith("v2.pt") and check_hash(str(model), entries[0]["hash_val"],
                                                                                    "sha256")


def test_add_large_file_errors(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    outside = tmp_path / "model.pt"
    outside.write_bytes(b"x")
    with pytest.raises(ValueError, match="is not inside the bundle"):
        add_large_file(bundle, outside, "https://example.org/m.pt")
    with pytest.raises(ValueError, match="does not exist"):
        add_large_file(bundle, bundle / "missing.pt", "https://example.org/m.pt")
    (bundle / "m.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="url is empty"):
        add_large_file(bundle, bundle / "m.pt", " ")
    proc = subprocess.run([sys.executable, "-m", "monai_cover.bundle", "add-large-file", str(bundle), str(outside),
                           "--url", "u"], capture_output=True, encoding="utf-8", errors="replace", timeout=300,
                          cwd=str(REPO))
    assert proc.returncode == 1 and proc.stderr.startswith("error: add_large_file:")
