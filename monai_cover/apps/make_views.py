# SPDX-License-Identifier: Apache-2.0
"""Write one COVER training pair of a real volume as NIfTI files.

    python -m monai_cover.apps.make_views --out ./cover_views [--image PATH] [--seed 0] [--spatial-size 24 32 20]
                                          [--no-appearance]

Without ``--image`` it uses the real T1 volume shipped with nibabel (``nibabel/tests/data/anatomical.nii``,
33 x 41 x 25 voxels of 2 mm). Pipeline (MONAI ``Compose``): ``LoadImaged`` -> ``EnsureChannelFirstd`` ->
``ScaleIntensityd`` (to [0, 1]) -> :py:class:`~monai_cover.transforms.RandCoverPaird`. Output files, all
float32 with the crop's affine (NIfTI writer, channels last on disk):

- ``<name>_view_a.nii.gz``: appearance-augmented crop ``(H, W, D)``;
- ``<name>_view_b.nii.gz``: spatially augmented crop ``(H, W, D)``;
- ``<name>_ddf.nii.gz``: ``(H, W, D, 3)`` displacement in voxels, component ``i`` along array axis ``i``,
  ``view_b(p) = view_a_before_appearance(p + ddf(p))``;
- ``<name>_overlap.nii.gz``: ``(H, W, D)`` 1 where ``p + ddf(p)`` is inside the crop, else 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import nibabel
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, SaveImage, ScaleIntensityd
from monai.utils import set_determinism

from monai_cover.transforms import RandCoverPaird

__all__ = ["default_image", "make_views", "main"]

OUTPUT_KEYS = ("view_a", "view_b", "ddf", "overlap")


def default_image() -> str:
    """Path of the real T1 volume shipped with nibabel (33 x 41 x 25, 2 mm)."""
    return os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "anatomical.nii")


def make_views(
    image: str,
    out_dir: str,
    seed: int = 0,
    spatial_size: Sequence[int] | None = (24, 32, 20),
    appearance: bool = True,
) -> dict[str, object]:
    """Make one pair from the NIfTI ``image`` and save it under ``out_dir`` (``appearance=False`` leaves view A
    un-augmented, so ``view_b == warp(view_a, ddf)`` inside the overlap).

    Returns a dict with the four output paths (keys as :data:`OUTPUT_KEYS`), ``overlap_fraction`` and
    ``max_abs_ddf`` (voxels).
    """
    if not os.path.isfile(image):
        raise FileNotFoundError(f"--image: no such file: {image}")
    set_determinism(seed=seed)
    pipeline = Compose(
        [
            LoadImaged(keys="image", image_only=True),
            EnsureChannelFirstd(keys="image"),
            ScaleIntensityd(keys="image", minv=0.0, maxv=1.0),
            RandCoverPaird(keys="image", spatial_size=spatial_size, keep_input=False, appearance=appearance),
        ]
    )
    pipeline.set_random_state(seed=seed)
    data = pipeline({"image": image})
    os.makedirs(out_dir, exist_ok=True)
    result: dict[str, object] = {}
    for key in OUTPUT_KEYS:
        saver = SaveImage(
            output_dir=out_dir, output_postfix=key, output_ext=".nii.gz", output_dtype=torch.float32,
            resample=False, separate_folder=False, print_log=False, writer="NibabelWriter", savepath_in_metadict=True,
        )  # fmt: skip
        saver(data[key])
        result[key] = data[key].meta["saved_to"]
    ddf, overlap = data["ddf"], data["overlap"]
    result["overlap_fraction"] = float(overlap.float().mean())
    result["max_abs_ddf"] = float(ddf.abs().max())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_cover.apps.make_views", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--image", default=None, help="a 3D NIfTI image (default: nibabel's anatomical.nii)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--spatial-size", type=int, nargs=3, default=[24, 32, 20],
        help="crop size H W D in voxels (default 24 32 20; -1 = full axis)",
    )  # fmt: skip
    parser.add_argument("--no-appearance", action="store_true", help="switch off view A's appearance augmentation")
    args = parser.parse_args(argv)
    result = make_views(
        args.image or default_image(), args.out, seed=args.seed, spatial_size=args.spatial_size,
        appearance=not args.no_appearance,
    )  # fmt: skip
    for key in OUTPUT_KEYS:
        print(f"{key}: {result[key]}")
    print(f"overlap fraction: {result['overlap_fraction']:.4f}")
    print(f"max |ddf| (voxels): {result['max_abs_ddf']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
