# SPDX-License-Identifier: Apache-2.0
"""Releasing trained weights the model-zoo way: a bundle's ``large_files.yml`` lists each file too large for the
repository with the URL it is downloaded from and its hash, and model-zoo's CI downloads and checks it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import yaml

__all__ = ["LARGE_FILES", "add_large_file", "file_hash", "read_large_files"]

#: the file model-zoo reads in a bundle's root
LARGE_FILES = "large_files.yml"
HASH_TYPES = ("md5", "sha1", "sha256", "sha512")


def file_hash(path: str | os.PathLike, hash_type: str = "sha256") -> str:
    """Hex digest of a file (the ``hash_val`` model-zoo and ``monai.apps.utils.check_hash`` compare)."""
    if hash_type not in HASH_TYPES:
        raise ValueError(f"file_hash: hash_type must be one of {HASH_TYPES}, got {hash_type!r}.")
    digest = hashlib.new(hash_type)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_large_files(bundle_root: str | os.PathLike) -> list[dict]:
    """The entries of ``<bundle_root>/large_files.yml`` (``[]`` when it lists none)."""
    path = Path(bundle_root) / LARGE_FILES
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    entries = (data or {}).get("large_files") or []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: 'large_files' must be a list of entries, got {type(entries).__name__}.")
    return entries


def add_large_file(bundle_root: str | os.PathLike, file: str | os.PathLike, url: str,
                   hash_type: str = "sha256") -> dict:
    """Add (or replace, by path) the entry of ``file`` in ``<bundle_root>/large_files.yml``: its path relative to the
    bundle (e.g. ``models/model.pt``), the ``url`` it will be downloaded from, and its hash.

    Raises:
        ValueError: ``file`` is not inside ``bundle_root`` or does not exist; an empty ``url``.
    """
    root, file = Path(bundle_root).resolve(), Path(file).resolve()
    if not file.is_file():
        raise ValueError(f"add_large_file: {file} does not exist.")
    if root not in file.parents:
        raise ValueError(f"add_large_file: {file} is not inside the bundle {root}; copy it there first (e.g. "
                         "models/model.pt).")
    if not str(url).strip():
        raise ValueError("add_large_file: url is empty; upload the file first and give the address it is served at.")
    entry = {"path": file.relative_to(root).as_posix(), "url": str(url), "hash_val": file_hash(file, hash_type),
             "hash_type": hash_type}
    entries = [e for e in read_large_files(root) if e.get("path") != entry["path"]] + [entry]
    text = yaml.safe_dump({"large_files": entries}, sort_keys=False)
    (root / LARGE_FILES).write_text(text, encoding="utf-8")
    return entry
