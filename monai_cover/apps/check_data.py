# SPDX-License-Identifier: Apache-2.0
"""Check a data set before training on it: every file read in full, as the bundles read it.

    python -m monai_cover.apps.check_data PATH_OR_DATALIST [--patch_size 96 96 96] [--spacing 1.5 1.5 1.5]
        [--margin 1.5] [--on_bad_file error|skip] [--nonfinite error|replace] [--pad_small] [--labels]
        [--num_classes 8] [--modality CT] [--val_fraction 0.2] [--output_dir DIR] [--num_workers 4]
        [--spatial_dims 2 [--slice_volumes auto|always|never] [--slice_axis 2]]

``PATH_OR_DATALIST`` is what the bundles take as ``--dataset_dir``: a folder of volumes, a datalist JSON, a folder
holding ``dataset.json``, a Decathlon folder (empty string: the embedded demo). The defaults are those of the
``cover_pretrain_3d`` bundle (2 mm, 32^3 patches, margin 1.5); pass the values you will train with.
``--spatial_dims 2`` checks as the 2-D bundles do (pictures, single-file DICOM, 2-D NIfTI, volumes to slice; no
resampling or patch-size check; RGB reported as converted to grey).

It runs :py:func:`monai_cover.data.check_datalist` (the check every bundle runs before training): each file is read
by the reader the pipeline uses (nibabel for NIfTI, SimpleITK for NRRD/MetaImage/DICOM series), completely
decompressed, and checked for dimensionality, channels, NaN/inf, shape and spacing before and after resampling,
the intensity range and its size against the patch. It prints a table, writes ``data_report.json`` and
``data_report.md`` into ``--output_dir`` (default: the current folder) and ends with one line: *found N, training on
M, validating on K, skipped S (reasons)*. Files that are not volumes are listed as ignored.

Exit status: 0 when every volume can be used (or ``--on_bad_file skip``), 1 when some cannot (each is named, with
the reason), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _ints_or_floats(values: Sequence[str], cast):
    """``["96", "96", "96"]`` or ``["[96,96,96]"]`` -> a list of ``cast``."""
    text = " ".join(values).strip()
    if text.startswith("["):
        return [cast(v) for v in json.loads(text)]
    return [cast(v) for v in text.replace(",", " ").split()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monai_cover.apps.check_data",
        description="Read every file of a data set as the bundles do and report what would be trained on.",
    )
    parser.add_argument("dataset", help="folder of volumes, datalist JSON, Decathlon folder ('' = embedded demo)")
    parser.add_argument("--patch_size", nargs="+", default=["32", "32", "32"], help="view size (voxels)")
    parser.add_argument("--spacing", nargs="+", default=["2", "2", "2"], help="resampling (mm)")
    parser.add_argument("--margin", type=float, default=1.5, help="crop = ceil(margin x patch_size)")
    parser.add_argument("--on_bad_file", choices=("error", "skip"), default="error")
    parser.add_argument("--nonfinite", choices=("error", "replace"), default="error")
    parser.add_argument("--pad_small", action="store_true", help="pad volumes smaller than the patch")
    parser.add_argument("--labels", action="store_true", help="segmentation data (image/label pairs)")
    parser.add_argument("--num_classes", type=int, default=None, help=(
        "label values must be < num_classes (with --labels; default: the fine-tuning bundle's, 8 in 3-D and 4 in "
        "2-D, so this check agrees with the bundle's)"))
    parser.add_argument("--modality", default="", help="CT or MR, for items without their own")
    parser.add_argument("--intensity", default="auto", choices=("auto", "ct", "mri", "none"),
                        help="the bundles' intensity mode: the report says which scaling each file gets and why")
    parser.add_argument("--val_fraction", type=float, default=0.2)
    parser.add_argument("--output_dir", default=".", help="where data_report.json/.md are written")
    parser.add_argument("--num_workers", type=int, default=0, help="threads reading files")
    parser.add_argument("--cache_dir", default=None, help="where the embedded demo writes its NIfTI copies")
    parser.add_argument("--spatial_dims", type=int, choices=(2, 3), default=3, help="2: as the 2-D bundles")
    parser.add_argument("--slice_volumes", choices=("auto", "always", "never"), default="auto", help="2-D only")
    parser.add_argument("--slice_axis", type=int, choices=(0, 1, 2), default=2, help="2-D only")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    from monai_cover.data import DataCheckError, check_datalist, get_datalist, image_readers_2d

    try:
        patch = _ints_or_floats(args.patch_size, int)
        spacing = _ints_or_floats(args.spacing, float)
    except ValueError as e:
        parser.error(f"--patch_size/--spacing: {e}")
    crop = [int(math.ceil(args.margin * p)) for p in patch]
    try:
        datalist = get_datalist(
            args.dataset,
            cache_dir=args.cache_dir or f"{args.output_dir}/cache",
            val_fraction=args.val_fraction,
            labels=args.labels,
            modality=args.modality,
            spatial_dims=args.spatial_dims,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    num_classes = args.num_classes
    if args.labels and num_classes is None:
        num_classes, why = _bundle_num_classes(datalist.get("info", {}), args.spatial_dims)
        print(f"data check | label values checked against num_classes {num_classes} ({why})")
    two_d = {}
    if args.spatial_dims == 2:
        two_d = dict(readers=image_readers_2d(), spatial_dims=2, axcodes=None, slice_axis=args.slice_axis,
                     slice_volumes="never" if args.labels else args.slice_volumes, to_gray=True)  # fmt: skip
        spacing, patch, crop = None, None, None
    try:
        check_datalist(
            datalist,
            keys="image",
            label_key="label" if args.labels else None,
            spacing=spacing,
            patch_size=patch,
            crop_size=crop if not args.labels else patch,
            **two_d,
            pad_small=args.pad_small,
            on_bad_file=args.on_bad_file,
            nonfinite=args.nonfinite,
            num_classes=num_classes,
            intensity=args.intensity,
            dataset_type="auto",
            output_dir=args.output_dir,
            num_workers=args.num_workers,
            reuse=False,
        )
    except DataCheckError as e:
        print(f"\n{e}", file=sys.stderr)
        return 1
    print(f"report: {args.output_dir}/data_report.json, {args.output_dir}/data_report.md")
    return 0


def _bundle_num_classes(info: dict, spatial_dims: int) -> tuple[int, str]:
    """``num_classes`` as the fine-tuning bundle takes it without ``--num_classes`` (its default), so that this
    check and the bundle's agree; the data's own label names (a Decathlon ``dataset.json``) are mentioned when their
    count differs."""
    default = 4 if int(spatial_dims) == 2 else 8
    why = f"cover_finetune_{spatial_dims}d's default, as the bundle checks them"
    labels = info.get("labels") if isinstance(info, dict) else None
    if labels and len(labels) != default:
        why += f"; the data's dataset.json names {len(labels)} labels: pass --num_classes {len(labels)} to both"
    return default, why


if __name__ == "__main__":
    sys.exit(main())
