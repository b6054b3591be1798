# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures of the bundle tests: the real ``python -m monai.bundle run`` command line in a
subprocess, with tiny overrides (32^3 patches, a tiny BasicUNet, 1-2 epochs, no workers)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import warnings
import zipfile
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


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    """Mount a tmpfs of ``size`` (``"2m"``, ``"250m"``) on ``folder`` (created): a disk that really fills up. Skips
    the test where mounting is not allowed; unmounts lazily (a failed writer may still hold a handle)."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                          text=True, encoding="utf-8", errors="replace")  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


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
        timeout=timeout, encoding="utf-8", errors="replace",
    )


def bundle_args(
    config_files: list[Path], bundle_root: Path, output_dir: Path, *overrides: str, launcher: list[str] | None = None
) -> list[str]:
    """``<launcher> -m monai.bundle run --config_file ... --bundle_root ... --output_dir ... <overrides>``;
    ``launcher`` defaults to this Python (e.g. ``[python, "-m", "torch.distributed.run", ...]`` for DDP)."""
    configs = str([str(c) for c in config_files]) if len(config_files) > 1 else str(config_files[0])
    args = [*(launcher or [sys.executable]), "-m", "monai.bundle", "run", "--config_file", configs]
    return args + ["--bundle_root", str(bundle_root), "--output_dir", str(output_dir), *overrides]


def bundle_run(
    config_files: list[Path],
    bundle_root: Path,
    output_dir: Path,
    *overrides: str,
    cwd: Path | None = None,
    launcher: list[str] | None = None,
):
    """Run :py:func:`bundle_args` to the end (see :py:func:`run_cmd`)."""
    args = bundle_args(config_files, bundle_root, output_dir, *overrides, launcher=launcher)
    return run_cmd(args, cwd=cwd or output_dir.parent)


def run_until_checkpoint(
    args: list[str], cwd: Path, path: Path, log: Path, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Start ``args``, wait until the checkpoint ``path`` is completely written, then SIGKILL the process (as a crash
    or an out-of-memory kill would end it). MONAI's ``CheckpointSaver`` writes in place, so the file exists before it
    is whole: wait until it is a whole zip archive (``torch.save``'s format, directory last). ``stdout`` of the
    result is the output (to a file, so a full pipe never blocks the process); ``returncode`` is ``-SIGKILL`` when
    the kill landed, or the exit status if the process ended first."""
    env = subprocess_env()
    env["PYTHONUNBUFFERED"] = "1"  # nothing left in a buffer when the process is killed
    deadline = time.monotonic() + timeout
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(args, cwd=str(cwd), env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                                encoding="utf-8", errors="replace")
        try:
            while proc.poll() is None and not _is_zip(path) and time.monotonic() < deadline:
                time.sleep(0.02)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return subprocess.CompletedProcess(args, proc.returncode, stdout=log.read_text(encoding="utf-8"))


def _is_zip(path: Path) -> bool:
    return path.is_file() and zipfile.is_zipfile(path)


def checkpoint_epochs(ckpt_dir: Path) -> list[int]:
    """Epochs of the complete ``checkpoint_epoch=<n>.pt`` files in ``ckpt_dir``, sorted."""
    names = (re.fullmatch(r"checkpoint_epoch=(\d+)\.pt", p.name) for p in ckpt_dir.glob("*.pt") if _is_zip(p))
    return sorted(int(m.group(1)) for m in names if m)


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


def write_bad_files(folder: Path, good: Path) -> dict[str, Path]:
    """Next to real volumes, the files a new user's folder holds, written for real: a ``.nii.gz`` cut to its first
    third (truncated gzip), a volume with a NaN, a 2-D NIfTI, a 10^3 volume, a PNG and a ``.txt``.
    ``good`` is a whole ``.nii.gz`` to cut. Returns ``{what: path}``."""
    import nibabel as nib
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    raw = good.read_bytes()
    names = {"truncated": "truncated.nii.gz", "nan": "nan.nii.gz", "flat": "flat2d.nii.gz", "tiny": "tiny.nii.gz",
             "png": "photo.png", "txt": "notes.txt"}  # fmt: skip
    paths = {k: folder / n for k, n in names.items()}
    paths["truncated"].write_bytes(raw[: len(raw) // 3])
    vol = np.asarray(nib.load(str(good)).dataobj, dtype=np.float32).copy()
    vol[5, 6, 7] = np.nan
    nib.save(nib.Nifti1Image(vol, np.diag([2.0, 2.0, 2.0, 1.0])), str(paths["nan"]))
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.random((40, 44)).astype(np.float32), np.eye(4)), str(paths["flat"]))
    tiny = rng.random((10, 10, 10)).astype(np.float32)
    nib.save(nib.Nifti1Image(tiny, np.diag([2.0, 2.0, 2.0, 1.0])), str(paths["tiny"]))
    Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(paths["png"])
    paths["txt"].write_text("scan notes\n", encoding="utf-8")
    return paths


def dead_pid() -> int:
    """The pid of a process that has ended (started and waited for here)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_stale_lock(output_dir: Path) -> int:
    """A lock file as a killed run leaves it (its pid no longer runs); returns that pid."""
    import json
    import socket

    from monai_cover.bundle import LOCK_NAME

    output_dir.mkdir(parents=True, exist_ok=True)
    pid = dead_pid()
    info = {"pid": pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00", "command": "killed"}
    (output_dir / LOCK_NAME).write_text(json.dumps(info), encoding="utf-8")
    return pid


def read_events(log_dir: Path):
    """TensorBoard's ``EventAccumulator`` over every event file in ``log_dir`` (images included), reloaded."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


#: epochs of the run that is killed: far more than it lives through, so it cannot finish before the kill
KILLED_EPOCHS = 50


def kill_and_resume(config_files: list[Path], bundle_root: Path, out: Path, common: list[str], work: Path,
                    log_name: str) -> tuple[subprocess.CompletedProcess, list[int], int, subprocess.CompletedProcess]:
    """Run the bundle for ``KILLED_EPOCHS`` epochs, SIGKILL it once ``checkpoints/checkpoint_epoch=1.pt`` is whole
    (:py:func:`run_until_checkpoint`, output in ``work/log_name``), then run it again to one epoch past its newest
    complete checkpoint: ``(first, killed_at, epochs, second)``, ``killed_at`` the epochs of the checkpoints the
    killed run left, ``epochs`` the resumed run's ``--epochs``."""
    args = bundle_args(config_files, bundle_root, out, *common, "--epochs", str(KILLED_EPOCHS))
    first = run_until_checkpoint(args, work, out / "checkpoints" / "checkpoint_epoch=1.pt", work / log_name)
    killed_at = checkpoint_epochs(out / "checkpoints")
    epochs = (killed_at[-1] if killed_at else 1) + 1
    second = bundle_run(config_files, bundle_root, out, *common, "--epochs", str(epochs), cwd=work)
    return first, killed_at, epochs, second


@pytest.fixture(scope="session")
def pretrain_run(tmp_path_factory):
    """A pretraining run on a folder of small volumes, SIGKILLed once ``checkpoints/checkpoint_epoch=1.pt`` is
    written, then resumed with ``--epochs`` one more than its newest complete checkpoint (2 unless the kill came
    late): ``{"output_dir", "first", "killed_at", "resumed_epochs", "second", "bundle_before", "bundle_after"}``;
    ``killed_at`` lists the epochs of the complete checkpoints the killed run left. Both runs keep one checkpoint
    (``--ckpt_n_saved 1``), so that the resumed run must delete the killed run's."""
    work = tmp_path_factory.mktemp("pretrain")
    data = write_volumes(work / "data")
    out = work / "cover_pretrain_3d"
    before = snapshot(PRETRAIN)
    config = [PRETRAIN / "configs" / "train.json"]
    common = [*TINY_PRETRAIN, "--dataset_dir", str(data), "--ckpt_n_saved", "1"]
    first, killed_at, epochs, second = kill_and_resume(config, PRETRAIN, out, common, work, "killed_run.log")
    return {
        "output_dir": out,
        "first": first,
        "killed_at": killed_at,
        "resumed_epochs": epochs,
        "second": second,
        "bundle_before": before,
        "bundle_after": snapshot(PRETRAIN),
    }
