# SPDX-License-Identifier: Apache-2.0
"""A tiny labelled dataset in nnU-Net's raw layout, to try the hand-off end to end with no data at hand: smooth
MR-like volumes (40x40x36 voxels, 1 x 1 x 1.5 mm) with a bright sphere, labelled 1."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["DEMO_DATASET", "write_demo_dataset"]

DEMO_DATASET = "Dataset501_Tiny"
_SHAPE = (40, 40, 36)
_SPACING = (1.0, 1.0, 1.5)


def _case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in _SHAPE], indexing="ij"))
    centre = rng.uniform(-0.3, 0.3, 3)[:, None, None, None]
    inside = np.sqrt(((grid - centre) ** 2).sum(0)) < 0.5
    image = 100 + 300 * inside + 50 * np.sin(6 * grid[0]) + rng.normal(0, 10, _SHAPE)
    return image.astype(np.float32), inside.astype(np.uint8)


def write_demo_dataset(raw_root: str | os.PathLike, cases: int = 5, seed: int = 0,
                       name: str = DEMO_DATASET) -> Path:
    """Write ``<raw_root>/<name>/`` (``imagesTr/case_XXX_0000.nii.gz``, ``labelsTr/case_XXX.nii.gz``,
    ``dataset.json``) as ``nnUNetv2_plan_and_preprocess -d 501`` expects it with ``nnUNet_raw=raw_root``. Five cases
    (the default) let nnU-Net's 5-fold split run; fewer need fold ``all``.

    Raises:
        FileExistsError: the dataset folder exists already.
    """
    import nibabel as nib

    folder = Path(raw_root) / name
    if folder.exists():
        raise FileExistsError(f"write_demo_dataset: {folder} exists already.")
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    affine = np.diag([*_SPACING, 1.0])
    for i in range(int(cases)):
        image, label = _case(rng)
        nib.save(nib.Nifti1Image(image, affine), str(folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(folder / "labelsTr" / f"case_{i:03d}.nii.gz"))
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "sphere": 1}, "numTraining": int(cases),
            "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
    return folder
