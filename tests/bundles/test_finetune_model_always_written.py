# SPDX-License-Identifier: Apache-2.0
"""Fine-tuning always leaves ``models/model.pt``: a run shorter than ``val_interval`` validates its last epoch (the
real ``python -m monai.bundle run`` on the embedded demo CT)."""

from __future__ import annotations

import pytest
from conftest import FINETUNE, TINY_FEATURES, bundle_run


def test_short_run_validates_its_last_epoch_and_writes_model_pt(tmp_path):
    pytest.importorskip("slicerio")
    out = tmp_path / "run"
    proc = bundle_run([FINETUNE / "configs" / "train.json"], FINETUNE, out, "--pretrained", "false",
                      "--patch_size", "[32,32,32]", "--features", TINY_FEATURES, "--spacing", "[6.0,6.0,6.0]",
                      "--batch_size", "1", "--num_samples", "1", "--num_workers", "0", "--epochs", "2",
                      "--val_interval", "5")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "validating the last epoch (2) as well" in proc.stdout
    assert "val_mean_dice" in proc.stdout
    for rel in ("models/model.pt", "models/model.safetensors", "models/model_final.pt"):
        assert (out / rel).is_file(), rel


def test_without_validation_the_final_model_is_written_with_a_warning(tmp_path, caplog):
    import logging

    import torch
    from ignite.engine import Engine

    from monai_cover.handlers import ValidateAtEndHandler

    net = torch.nn.Conv3d(1, 2, 1)
    engine = Engine(lambda e, b: None)
    model = tmp_path / "models" / "model.pt"
    ValidateAtEndHandler(None, 5, model, net).attach(engine)
    with caplog.at_level(logging.WARNING, logger="monai_cover.handlers.training"):
        engine.run([0], max_epochs=2)
    saved = torch.load(model, weights_only=True)
    assert saved.keys() == net.state_dict().keys() and torch.equal(saved["weight"], net.weight)
    assert any("no validation ran" in r.message and "final model (epoch 2)" in r.message for r in caplog.records)
    # a model written by the validator is kept as it is
    model.write_bytes(b"best")
    engine.run([0], max_epochs=3)
    assert model.read_bytes() == b"best"
