# SPDX-License-Identifier: Apache-2.0
"""Where the shipped bundles are: in a source checkout, ``bundles/`` next to the package; after ``pip install``
(wheel or sdist), the copy installed as data files under ``<prefix>/share/monai_cover/bundles``.

From a shell: ``python -m monai_cover.bundle path cover_pretrain_3d`` prints the bundle's folder, so a user who
installed the package without cloning runs::

    B=$(python -m monai_cover.bundle path cover_pretrain_3d)
    python -m monai.bundle run --config_file $B/configs/train.json --bundle_root $B --output_dir ./runs/pretrain
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

__all__ = ["BUNDLE_NAMES", "bundle_path", "bundles_dir", "installed_bundles_dir"]

#: the bundles this package ships
BUNDLE_NAMES = ("cover_pretrain_3d", "cover_finetune_3d", "cover_pretrain_2d", "cover_finetune_2d")
#: where ``setup.cfg``'s ``[options.data_files]`` installs them, relative to the installation prefix
DATA_SUBDIR = Path("share") / "monai_cover" / "bundles"


def _source_bundles() -> Path:
    return Path(__file__).resolve().parents[2] / "bundles"


def installed_bundles_dir() -> Path | None:
    """The installed copy of the bundles (``<prefix>/share/monai_cover/bundles``), found through the installed
    distribution's file list (any prefix: a venv, ``--user``, ``--prefix``), else the usual prefixes; ``None``
    when there is none."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        dist = distribution("monai_cover")
        for f in dist.files or []:
            parts = Path(str(f)).parts
            if parts[-3:] == ("cover_pretrain_3d", "configs", "metadata.json") and "bundles" in parts:
                folder = Path(str(dist.locate_file(f))).resolve().parents[2]
                if folder.is_dir():
                    return folder
    except (ImportError, PackageNotFoundError):  # pragma: no cover
        pass
    prefixes = [sysconfig.get_paths().get("data"), sys.prefix, sys.base_prefix]
    try:
        import site

        prefixes.append(site.getuserbase())
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    for prefix in prefixes:
        if prefix and (Path(prefix) / DATA_SUBDIR / "cover_pretrain_3d" / "configs" / "metadata.json").is_file():
            return Path(prefix) / DATA_SUBDIR
    return None


def bundles_dir() -> Path:
    """The folder holding the shipped bundles: the source checkout's ``bundles/`` (next to the ``monai_cover``
    package, so an editable install uses the files you edit), else the installed copy.

    Raises:
        FileNotFoundError: neither exists (a broken installation).
    """
    here = _source_bundles()
    if (here / "cover_pretrain_3d" / "configs" / "metadata.json").is_file():
        return here
    installed = installed_bundles_dir()
    if installed is not None:
        return installed
    raise FileNotFoundError(
        f"no bundles next to the package ({here}) nor installed under <prefix>/{DATA_SUBDIR.as_posix()}: reinstall "
        "monai_cover (`pip install monai_cover`), or clone the repository."
    )


def bundle_path(name: str = "cover_pretrain_3d") -> Path:
    """Folder of one shipped bundle, e.g. ``bundle_path("cover_finetune_3d")``."""
    root = bundles_dir()
    path = root / name
    if not (path / "configs" / "metadata.json").is_file():
        found = sorted(p.name for p in root.iterdir() if (p / "configs" / "metadata.json").is_file())
        raise FileNotFoundError(f"no bundle {name!r} in {root} (found {found}).")
    return path


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m monai_cover.bundle", description="Where the bundles shipped with monai_cover are."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_path = sub.add_parser("path", help="print the folder of a bundle (for --config_file/--bundle_root)")
    p_path.add_argument("name", nargs="?", default="cover_pretrain_3d", choices=BUNDLE_NAMES)
    sub.add_parser("list", help="print every shipped bundle and its folder")
    p_release = sub.add_parser("add-large-file", help="add a trained file to a bundle's large_files.yml (path, url, "
                               "sha256), as model-zoo downloads and checks it")
    p_release.add_argument("bundle_root", help="the bundle folder (holds configs/ and large_files.yml)")
    p_release.add_argument("file", help="the file, inside the bundle (e.g. <bundle>/models/model.pt)")
    p_release.add_argument("--url", required=True, help="where the uploaded file is served")
    args = parser.parse_args(argv)
    try:
        if args.command == "add-large-file":
            from monai_cover.bundle.release import LARGE_FILES, add_large_file

            entry = add_large_file(args.bundle_root, args.file, args.url)
            print(f"{LARGE_FILES}: {entry['path']} {entry['hash_type']} {entry['hash_val']}")
        elif args.command == "path":
            print(bundle_path(args.name))
        else:
            for name in BUNDLE_NAMES:
                print(f"{name}\t{bundle_path(name)}")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
