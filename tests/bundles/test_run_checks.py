# SPDX-License-Identifier: Apache-2.0
"""User mistakes end a bundle run with one ``ERROR:`` line, before the output folder's lock is taken or any data is
read, and the traceback goes to a log file (the real ``python -m monai.bundle run``)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import PRETRAIN, bundle_run

from monai_cover.bundle import OverrideError, check_run


@pytest.mark.parametrize("overrides, message", [
    (["--epochs", "-1"], "ERROR: --epochs -1: expected an integer >= 1."),
    (["--device", "cuda:7"], "ERROR: --device cuda:7: "),
    (["--dataset_dir", "EMPTY"], "ERROR: dataset_dir '{EMPTY}': no training volumes found."),
    (["--dataset_dir", "MISSING"], "ERROR: dataset_dir '{MISSING}' does not exist."),
])  # fmt: skip
def test_one_clean_error_line(overrides, message, tmp_path):
    (tmp_path / "empty").mkdir()
    names = {"EMPTY": str(tmp_path / "empty"), "MISSING": str(tmp_path / "missing")}
    overrides = [names.get(o, o) for o in overrides]
    out = tmp_path / "run"
    proc = bundle_run([PRETRAIN / "configs" / "train.json"], PRETRAIN, out, *overrides)
    assert proc.returncode != 0
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith(message.format(**names)), lines[-3:]
    assert lines[-2].startswith("(traceback in ") and "MONAI_COVER_DEBUG=1" in lines[-2]
    assert "Traceback (most recent call last)" not in proc.stdout and "Failed to evaluate" not in proc.stdout
    if "--dataset_dir" not in overrides:  # refused in initialize: no lock taken, nothing written
        assert not out.exists()


def test_check_run_messages(tmp_path):
    check_run("cpu", 3, tmp_path / "new" / "run")  # a folder that can be created: fine, nothing created
    assert not (tmp_path / "new").exists()
    with pytest.raises(OverrideError, match="no space left on its disk .* MB free, a run needs at least"):
        check_run("cpu", 3, tmp_path, min_free_bytes=2**62)
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(OverrideError, match="is a file, not a folder"):
        check_run("cpu", 3, tmp_path / "file" / "run")
    if not torch.cuda.is_available():
        with pytest.raises(OverrideError, match="sees no CUDA device; use --device cpu"):
            check_run("cuda", 3, tmp_path)
    with pytest.raises(OverrideError, match="2 problems:\n  --device 'tpu'.*\n  --epochs 2.5"):
        check_run("tpu", 2.5, tmp_path)


def test_a_patch_that_cannot_fit_is_refused_before_anything_is_read(tmp_path):
    """``--patch_size [1000,1000,1000]`` used to pass the data check (the demo pads), write 13 GB of cache and be
    killed for memory; now one ERROR line with the estimate, the memory and a patch that fits, nothing written."""
    import sys

    from conftest import bundle_args, run_cmd

    out = tmp_path / "run"
    args = bundle_args([PRETRAIN / "configs" / "train.json"], PRETRAIN, out, "--patch_size", "[1000,1000,1000]")
    # a parent of its own, so the peak resident memory is the bundle process's alone
    wrapper = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
               "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")
    proc = run_cmd([sys.executable, "-c", wrapper, *args], cwd=tmp_path)
    peak_kb = int(proc.stdout.rsplit("PEAK_KB", 1)[1].split()[0])
    proc.stdout = proc.stdout.rsplit("PEAK_KB", 1)[0]
    assert proc.returncode != 0
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("ERROR: --patch_size [1000,1000,1000]: one training step needs about "), last
    assert "more than 80% of the available memory (MemAvailable)" in last or "of the physical memory" in last
    fits = [int(v) for v in last.split("--patch_size [")[2].split("]")[0].split(",")]
    assert len(fits) == 3 and fits[0] % 16 == 0 and 16 <= fits[0] < 1000
    assert not out.exists()  # no lock, no data report, no cache
    assert peak_kb < 3 * 1024 * 1024  # the refusing process stayed under 3 GB resident


def test_check_resources_finds_the_largest_patch_that_fits():
    from monai_cover.bundle import check_resources, step_memory_bytes

    features = [32, 32, 64, 128, 256, 32]
    budget = 0.8 * 8 * 1024**3  # an 8 GB machine
    with pytest.raises(OverrideError) as e:
        check_resources([256] * 3, features, 1, 2, available=8 * 1024**3)
    side = int(str(e.value).split("--patch_size [")[2].split(",")[0])
    assert step_memory_bytes([side] * 3, features, 2) <= budget < step_memory_bytes([side + 16] * 3, features, 2)
    check_resources([side] * 3, features, 1, 2, available=8 * 1024**3)  # the suggestion itself passes
    assert step_memory_bytes([64] * 3, features, 4) == 2 * step_memory_bytes([64] * 3, features, 2)
    assert step_memory_bytes([64] * 3, features, 2, views=1) < step_memory_bytes([64] * 3, features, 2, views=2)


def test_a_full_disk_mid_run_keeps_every_written_file(tmp_path):
    """Fine-tuning into a 250 MB disk (a real tmpfs) that fills up at the fourth 66 MB checkpoint: one ERROR line
    that says "no space left" with the sizes, the earlier checkpoints and model.pt intact, no partial file."""
    import zipfile

    from conftest import FINETUNE, small_tmpfs

    with small_tmpfs(tmp_path / "disk", "250m") as disk:
        out = disk / "run"
        proc = bundle_run([FINETUNE / "configs" / "train.json"], FINETUNE, out, "--epochs", "6", "--pretrained",
                          "false", "--ckpt_n_saved", "6", "--val_interval", "1", cwd=tmp_path)  # fmt: skip
        assert proc.returncode != 0
        last = proc.stdout.strip().splitlines()[-1]
        assert last.startswith("ERROR: [Errno 28] no space left to write ") and "MB needed, " in last, last
        assert "checkpoint_epoch=" in last and "MB free on its disk" in last
        names = sorted(p.name for p in (out / "checkpoints").iterdir())
        assert names and all(n.startswith("checkpoint_epoch=") for n in names), names  # no temporary file left
        for p in (out / "checkpoints").iterdir():
            with zipfile.ZipFile(p) as archive:
                assert archive.testzip() is None  # whole: nothing written half
        assert (out / "models" / "model.pt").is_file()
        torch.load(out / "models" / "model.pt", weights_only=True)


def test_2d_pretrained_weights_into_the_3d_bundle_are_one_error(tmp_path):
    """Fine-tuning the 3-D bundle from a 2-D run's weights stops with one ERROR line that says 2-D vs 3-D (it used
    to load the norms and biases, leave every convolution random and train on)."""
    from conftest import FINETUNE, TINY_FEATURES
    from monai.networks.nets import BasicUNet

    pretrained = tmp_path / "pretrain_2d"
    (pretrained / "models").mkdir(parents=True)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=tuple(json.loads(TINY_FEATURES)))
    torch.save(net.state_dict(), pretrained / "models" / "model.pt")
    proc = bundle_run([FINETUNE / "configs" / "train.json"], FINETUNE, tmp_path / "run", "--epochs", "1",
                      "--features", TINY_FEATURES, "--pretrained_dir", str(pretrained))  # fmt: skip
    assert proc.returncode != 0
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("ERROR: pretrained backbone weights did not load completely"), last
    assert "The file holds a 2-D network" in last and "spatial_dims=2" in last
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained
