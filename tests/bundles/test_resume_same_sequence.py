# SPDX-License-Identifier: Apache-2.0
"""A resumed pretraining run continues the uninterrupted run's random sequence: run 1 epoch, resume to 2, and get
the same epoch-2 losses and the same final weights as one 2-epoch run (seeded, CPU, the real command line)."""

from __future__ import annotations

import re
import shutil

import torch
from conftest import PRETRAIN, TINY_PRETRAIN, bundle_run, write_volumes

CONFIG = [PRETRAIN / "configs" / "train.json"]


def _losses(stdout: str, epoch: int) -> list[str]:
    return re.findall(rf"Epoch: {epoch}/\d+, Iter: \d+/\d+ -- train_loss: ([\d.]+)", stdout)


def test_resumed_losses_and_weights_equal_the_uninterrupted_run(tmp_path):
    data = write_volumes(tmp_path / "data", n=4)
    common = [*TINY_PRETRAIN, "--dataset_dir", str(data), "--ckpt_n_saved", "3"]

    whole = bundle_run(CONFIG, PRETRAIN, tmp_path / "whole", *common, "--epochs", "2")
    assert whole.returncode == 0, whole.stdout[-3000:]
    expected = _losses(whole.stdout, 2)
    assert len(expected) >= 2

    first = bundle_run(CONFIG, PRETRAIN, tmp_path / "resumed", *common, "--epochs", "1")
    assert first.returncode == 0, first.stdout[-3000:]
    assert _losses(first.stdout, 1) == _losses(whole.stdout, 1)
    shutil.copytree(tmp_path / "resumed", tmp_path / "no_rng")  # the same state, its random states removed below
    second = bundle_run(CONFIG, PRETRAIN, tmp_path / "resumed", *common, "--epochs", "2")
    assert second.returncode == 0, second.stdout[-3000:]
    assert "Restored all variables from" in second.stdout
    assert _losses(second.stdout, 2) == expected
    a = torch.load(tmp_path / "whole" / "models" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "models" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # the check can fail: without the random states (an older checkpoint) the resumed run draws other samples
    ckpt = tmp_path / "no_rng" / "checkpoints" / "checkpoint_epoch=1.pt"
    state = torch.load(ckpt, weights_only=False)
    del state["rng"]
    torch.save(state, ckpt)
    other = bundle_run(CONFIG, PRETRAIN, tmp_path / "no_rng", *common, "--epochs", "2")
    assert other.returncode == 0, other.stdout[-3000:]
    assert "has no random states" in other.stdout
    assert _losses(other.stdout, 2) != expected
