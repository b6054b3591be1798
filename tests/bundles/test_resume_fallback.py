# SPDX-License-Identifier: Apache-2.0
"""A resume through the real ``python -m monai.bundle run`` whose newest checkpoint is corrupted inside (size kept):
the run says which file it skipped and why, and continues from the intact one before it."""

from __future__ import annotations

import torch
from conftest import PRETRAIN, TINY_PRETRAIN, bundle_run, checkpoint_epochs, write_volumes


def test_resume_skips_a_corrupted_checkpoint(tmp_path):
    data = write_volumes(tmp_path / "data")
    out = tmp_path / "run"
    config = [PRETRAIN / "configs" / "train.json"]
    common = [*TINY_PRETRAIN, "--dataset_dir", str(data), "--ckpt_n_saved", "2"]
    first = bundle_run(config, PRETRAIN, out, *common, "--epochs", "2")
    assert first.returncode == 0, first.stdout[-3000:]
    assert checkpoint_epochs(out / "checkpoints") == [1, 2]
    newest = out / "checkpoints" / "checkpoint_epoch=2.pt"
    size = newest.stat().st_size
    data_bytes = bytearray(newest.read_bytes())
    weight = torch.load(newest, weights_only=True)["model"]["backbone.conv_0.conv_0.conv.weight"]
    at = data_bytes.index(weight.numpy().tobytes()[:32])
    data_bytes[at : at + 16] = b"\xff" * 16  # a flipped block inside a stored tensor
    newest.write_bytes(bytes(data_bytes))
    assert newest.stat().st_size == size

    second = bundle_run(config, PRETRAIN, out, *common, "--epochs", "3")
    assert second.returncode == 0, second.stdout[-3000:]
    assert f"resume: skipping {newest} (corrupted inside: member" in second.stdout
    assert "checkpoint_epoch=1.pt" in second.stdout  # the checkpoint it resumed from
    assert "Epoch: 2/3" in second.stdout and "Epoch: 1/3" not in second.stdout  # continued after epoch 1
    assert 3 in checkpoint_epochs(out / "checkpoints")
