# SPDX-License-Identifier: Apache-2.0
"""Fine-tuning always leaves ``models/model.pt`` and the settings that define it (``models/model_settings.json``): a
run shorter than ``val_interval`` validates its last epoch, and inference takes the trained class names and refuses
other settings (the real ``python -m monai.bundle run`` on the embedded demo CT)."""

from __future__ import annotations

import json

import pytest
from conftest import FINETUNE, TINY_FEATURES, bundle_run, write_volumes

NAMES = ["background", "bone", "cervical", "thoracic", "lumbar", "lung_r", "lung_l", "soft"]
TINY = ["--patch_size", "[32,32,32]", "--features", TINY_FEATURES, "--spacing", "[6.0,6.0,6.0]", "--batch_size", "1",
        "--num_samples", "1", "--num_workers", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("slicerio")
    out = tmp_path_factory.mktemp("finetune") / "run"
    proc = bundle_run([FINETUNE / "configs" / "train.json"], FINETUNE, out, "--pretrained", "false", *TINY,
                      "--epochs", "2", "--val_interval", "5", "--class_names", json.dumps(NAMES).replace(" ", ""))
    assert proc.returncode == 0, proc.stdout[-3000:]
    return out, proc


def test_short_run_validates_its_last_epoch_and_writes_model_pt(trained):
    out, proc = trained
    assert "validating the last epoch (2) as well" in proc.stdout
    assert "val_mean_dice" in proc.stdout
    for rel in ("models/model.pt", "models/model.safetensors", "models/model_final.pt"):
        assert (out / rel).is_file(), rel
    record = json.loads((out / "models" / "model_settings.json").read_text(encoding="utf-8"))
    assert record["class_names"] == NAMES and record["num_classes"] == 8
    assert record["spacing"] == [6.0, 6.0, 6.0] and record["features"] == json.loads(TINY_FEATURES)


def test_inference_takes_the_trained_class_names_and_refuses_other_settings(trained, tmp_path):
    out, _ = trained
    scans = write_volumes(tmp_path / "scans", n=1)
    config = [FINETUNE / "configs" / "inference.json"]  # on its own: the model is defined by the run's record
    # no --dataset_dir: the demo's names used to be written here
    proc = bundle_run(config, FINETUNE, out, "--infer_input", str(scans))
    assert proc.returncode == 0, proc.stdout[-3000:]
    written = json.loads((out / "segmentations" / "classes.json").read_text(encoding="utf-8"))
    assert list(written.values()) == NAMES
    wrong = bundle_run(config, FINETUNE, out, "--infer_input", str(scans),
                       "--num_classes", "5", "--spacing", "[2.0,2.0,2.0]")
    assert wrong.returncode != 0
    text = wrong.stdout
    assert "ERROR: 2 setting(s) differ from the run that trained" in text
    assert "num_classes: asked 5, trained with 8 (--num_classes 8)" in text
    assert "spacing: asked [2.0, 2.0, 2.0], trained with [6.0, 6.0, 6.0] (--spacing [6.0,6.0,6.0])" in text
    names = bundle_run(config, FINETUNE, out, "--infer_input", str(scans),
                       "--class_names", "['background','a','b','c','d','e','f','g']")
    assert names.returncode != 0 and "class_names: asked ['background', 'a'," in names.stdout


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
