# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures of the bundle tests: the real ``python -m monai.bundle run`` command line in a
subprocess, with tiny overrides (32^3 patches, a tiny BasicUNet, 1-2 epochs, no workers)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
PRETRAIN = BUNDLES / "cover_pretrain_3d"
FINETUNE = BUNDLES / "cover_finetune_3d"
SCHEMA = BUNDLES / "schema" / "metadata_schema.json"

#: tiny BasicUNet: the layer names (and so the key names) of the default one, far fewer channels
TINY_FEATURES = "[4,4,8,8,16,8]"
TINY_PRETRAIN = [
    "--patch_size",
    "[32,32,32]",
    "--features",
    TINY_FEATURES,
    "--batch_size",
    "1",
    "--num_samples",
    "1",
    "--val_num_samples",
    "1",
    "--num_workers",
    "0",
    "--val_interval",
    "1",
    "--warmup_epochs",
    "1",
]


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONWARNINGS"] = "ignore"
    return env


def run_cmd(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command, return the completed process (stdout and stderr merged into ``stdout``)."""
    return subprocess.run(
        args,
        cwd=str(cwd),
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def bundle_run(
    config_files: list[Path],
    bundle_root: Path,
    output_dir: Path,
    *overrides: str,
    cwd: Path | None = None,
    launcher: list[str] | None = None,
):
    """``<launcher> -m monai.bundle run --config_file ... --bundle_root ... --output_dir ... <overrides>``;
    ``launcher`` defaults to this Python (e.g. ``[python, "-m", "torch.distributed.run", ...]`` for DDP)."""
    configs = str([str(c) for c in config_files]) if len(config_files) > 1 else str(config_files[0])
    args = [*(launcher or [sys.executable]), "-m", "monai.bundle", "run", "--config_file", configs]
    args += ["--bundle_root", str(bundle_root), "--output_dir", str(output_dir), *overrides]
    return run_cmd(args, cwd=cwd or output_dir.parent)


def verify_net(net_id: str, meta_file: Path, config_file: Path, **override) -> None:
    """``monai.bundle.verify_net_in_out`` on CPU with ``n=2`` (inputs of 32 voxels per axis)."""
    from monai.bundle import verify_net_in_out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        verify_net_in_out(
            net_id=net_id, meta_file=str(meta_file), config_file=str(config_file), device="cpu", n=2, **override
        )


def snapshot(folder: Path) -> dict:
    """``{relative path: (size, mtime_ns)}`` of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def write_volumes(folder: Path, n: int = 3, shape=(40, 44, 36), seed: int = 0) -> Path:
    """Write ``n`` small smooth random volumes as NIfTI (and one NRRD, read through SimpleITK)."""
    import nibabel as nib
    import SimpleITK as sitk
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    for i in range(n):
        coarse = torch.randn(1, 1, 6, 6, 6, generator=gen)
        vol = torch.nn.functional.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)
        vol = (vol[0, 0] * 100).numpy().astype(np.float32)
        if i == n - 1:
            img = sitk.GetImageFromArray(vol.T.copy())  # sitk arrays are (z, y, x)
            img.SetSpacing((2.0, 2.0, 2.0))
            sitk.WriteImage(img, str(folder / f"vol{i}.nrrd"))
        else:
            nib.save(nib.Nifti1Image(vol, np.diag([2.0, 2.0, 2.0, 1.0])), str(folder / f"vol{i}.nii.gz"))
    return folder


@pytest.fixture(scope="session")
def pretrain_run(tmp_path_factory):
    """A pretraining run on a folder of small volumes that is killed after epoch 1 and resumed to
    epoch 2: ``{"output_dir", "first", "second", "bundle_before", "bundle_after"}``."""
    work = tmp_path_factory.mktemp("pretrain")
    data = write_volumes(work / "data")
    out = work / "cover_pretrain_3d"
    before = snapshot(PRETRAIN)
    common = [*TINY_PRETRAIN, "--dataset_dir", str(data), "--epochs", "2"]
    first = bundle_run(
        [PRETRAIN / "configs" / "train.json"], PRETRAIN, out, *common, "--stop_after_epoch", "1", cwd=work
    )
    second = bundle_run([PRETRAIN / "configs" / "train.json"], PRETRAIN, out, *common, cwd=work)
    return {
        "output_dir": out,
        "first": first,
        "second": second,
        "bundle_before": before,
        "bundle_after": snapshot(PRETRAIN),
    }
