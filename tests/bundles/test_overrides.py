# SPDX-License-Identifier: Apache-2.0
"""monai_cover.bundle.check_overrides on command lines as ``python -m monai.bundle run`` receives them (``argv``
given, nothing run): unknown keys with the closest key, nested keys, MONAI's own run arguments, typed values, merged
config files, ``--args_file``, and nothing checked outside a bundle command line."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import FINETUNE, PRETRAIN

from monai_cover.bundle import OverrideError, as_bool, bundle_command_line, check_overrides

MAIN = "/site-packages/monai/bundle/__main__.py"
TRAIN = str(PRETRAIN / "configs" / "train.json")
CHECKS = json.loads((PRETRAIN / "configs" / "train.json").read_text(encoding="utf-8"))["override_checks"]


def _argv(*args, config=TRAIN):
    return [MAIN, "run", "--config_file", config, "--bundle_root", str(PRETRAIN), *args]


def _check(*args, config=TRAIN, checks=CHECKS, **kwargs):
    return check_overrides(checks, argv=_argv(*args, config=config), **kwargs)


def test_command_line_parsed_as_fire_does():
    pairs = bundle_command_line([MAIN, "run", "training", "--epochs", "2", "--amp=false", "--flag", "--hu_window",
                                 "[-500,500]", "--x-y", "-3", "--spacing", "[1.5,1.5,1.5]"])  # fmt: skip
    assert pairs == {"_positional": ["training"], "epochs": 2, "amp": "false", "flag": True, "hu_window": [-500, 500],
                     "x_y": -3, "spacing": [1.5, 1.5, 1.5]}  # fmt: skip
    assert bundle_command_line(["/usr/bin/pytest", "run", "--epochs", "2"]) is None
    assert bundle_command_line([MAIN, "verify_metadata", "--meta_file", "m.json"]) is None
    assert check_overrides(CHECKS, argv=["pytest", "-q"]) == {}  # not a bundle command line: nothing checked


def test_valid_overrides_pass_and_are_returned(caplog):
    with caplog.at_level(logging.INFO, logger="monai_cover.bundle.overrides"):
        got = _check(
            "--epochs", "2", "--amp", "False", "--resume", "0", "--modality", "ct", "--patch_size", "[64,64,64]",
            "--method", "voco", "--method_loss_kwargs#num_samples", "512", "--network_def#features", "[4,4,8,8,16,8]",
            "--validate#evaluator#amp", "false", "--train#handlers#0#tag_name", "lr", "--meta_file", "m.json",
            "--logging_file", "l.conf", "--run_id", "run", "--init_id", "initialize", "--final_id", "finalize",
            "--workflow_type", "train", "--_meta_#version", "0.2.0", "--learning_rate", "1e-3", "--val_fraction", "0",
        )  # fmt: skip
    assert got["epochs"] == 2 and got["method_loss_kwargs#num_samples"] == 512
    assert "meta_file" not in got and "_meta_#version" not in got
    assert "amp=False" in caplog.text and "resume=0 (read as False)" in caplog.text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epoch", "2"], "--epoch: the config has no key 'epoch' (did you mean --epochs?)."),
        (["--Epochs", "2"], "--Epochs: the config has no key 'Epochs' (did you mean --epochs?)."),
        (["--lerning_rate", "1"], "(did you mean --learning_rate?)"),
        (["--totally_new", "1"], "--totally_new: the config has no key 'totally_new'."),
        (["--amp", "yes please"], "--amp 'yes please': expected a boolean (true/false/True/False/1/0)."),
        (["--modality", "PET"], "--modality 'PET': accepted values are '', 'CT', 'MR', 'MRI'."),
        (["--dataset_type", "disk"], "--dataset_type 'disk': accepted values are 'auto', 'cache', 'persistent'."),
        (["--on_bad_file", "ignore"], "--on_bad_file 'ignore': accepted values are 'error', 'skip'."),
        (["--epochs", "2.5"], "--epochs 2.5: expected an integer (default 8)."),
        (["--epochs", "many"], "--epochs 'many': expected an integer (default 8)."),
        (["--learning_rate", "fast"], "--learning_rate 'fast': expected a number (default 0.0003)."),
        (["--spacing", "2"], "--spacing 2: expected a list"),
        (["--resume", "maybe"], "--resume 'maybe': expected a boolean"),
        (["--train#trainer#max_epoch", "2"], "monai.engines.SupervisedTrainer takes no argument 'max_epoch' (did you "
                                             "mean --train#trainer#max_epochs?)."),  # fmt: skip
        (["--train#dataloader#batch_sise", "2"], None),  # DataLoader takes **kwargs: MONAI/PyTorch decide
        (["--validate#handlers#9#x", "1"], "'validate#handlers' is a list of"),
        (["--train#preprocessingg", "1"], "'train' has no key 'preprocessingg' (did you mean --train#preprocessing?)"),
    ],
)
def test_rejected_overrides_name_the_key(args, message):
    if message is None:
        _check(*args)
        return
    with pytest.raises(OverrideError) as info:
        _check(*args)
    text = str(info.value)
    assert text.startswith("1 command-line override(s) rejected:") and message in text, text
    assert "docs/README.md" in text and "--strict_overrides false" in text


def test_all_problems_in_one_message_and_strict_off_warns(caplog):
    with pytest.raises(OverrideError, match=r"^3 command-line override\(s\) rejected"):
        _check("--epoch", "2", "--amp", "flase", "--modality", "PET")
    with caplog.at_level(logging.WARNING, logger="monai_cover.bundle.overrides"):
        got = _check("--epoch", "2", "--strict_overrides", "false")
    assert got["epoch"] == 2 and "did you mean --epochs?" in caplog.text


def test_merged_config_files_args_file_and_tracking(tmp_path):
    both = str([TRAIN, str(PRETRAIN / "configs" / "multi_gpu_train.json")])
    _check("--train#sampler#shuffle", "false", "--dist_backend", "gloo", config=both)  # keys of the second file
    with pytest.raises(OverrideError, match="no key 'dist_backend'"):
        _check("--dist_backend", "gloo")  # not in train.json alone
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"epoch": 3, "config_file": TRAIN}), encoding="utf-8")
    with pytest.raises(OverrideError, match="did you mean --epochs"):
        check_overrides(CHECKS, argv=[MAIN, "run", "--args_file", str(args)])
    _check("--tracking", "mlflow", "--experiment_name", "x", "--run_name", "y")  # the tracking settings are MONAI's
    finetune = str(FINETUNE / "configs" / "train.json")
    checks = json.loads((FINETUNE / "configs" / "train.json").read_text(encoding="utf-8"))["override_checks"]
    _check("--pretrained", "false", "--class_names", "['a','b']", config=finetune, checks=checks)
    _check("--class_names", "a,b", config=finetune, checks=checks)  # Fire reads a,b as the tuple ('a', 'b')
    with pytest.raises(OverrideError, match="--class_names 'ribs': expected a list"):
        _check("--class_names", "ribs", config=finetune, checks=checks)


@pytest.mark.parametrize("value, expected", [(True, True), ("true", True), ("True", True), ("1", True), (1, True),
                                             (False, False), ("false", False), ("False", False), ("0", False),
                                             (0, False)])  # fmt: skip
def test_as_bool(value, expected):
    assert as_bool(value) is expected


def test_as_bool_refuses_anything_else():
    with pytest.raises(OverrideError, match=r"--amp: expected a boolean .* got 'nope'"):
        as_bool("nope", "amp")
    with pytest.raises(OverrideError):
        as_bool(2, "amp")


@pytest.mark.parametrize("bundle", [PRETRAIN, FINETUNE])
def test_every_top_level_key_is_documented(bundle):
    """Every key a command line can override (the top-level keys of every config file) is named in the bundle's
    README, and the README's override table lists the values `override_checks` accepts."""
    readme = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    for config in sorted((bundle / "configs").glob("*.json")):
        if config.name == "metadata.json":
            continue
        for key in json.loads(config.read_text(encoding="utf-8")):
            assert f"`{key}`" in readme, f"{bundle.name}/docs/README.md does not mention `{key}` ({config.name})"
    checks = json.loads((bundle / "configs" / "train.json").read_text(encoding="utf-8"))["override_checks"]
    for key, spec in checks.items():
        if isinstance(spec, list):
            for value in spec:
                assert f"`{value}`" in readme or not value, f"`{key}` value `{value}` not in the README"


def test_check_backbone_names_the_override_file_it_needs():
    from monai_cover.bundle import BACKBONE_OVERRIDES, check_backbone

    assert check_backbone("basic_unet", [TRAIN]) == "basic_unet"
    nnunet = str(PRETRAIN / "configs" / "nnunet.json")
    assert check_backbone("nnunet", [TRAIN, nnunet]) == "nnunet"
    assert check_backbone("nnunet", []) == "nnunet"  # not on a bundle command line: nothing to check
    with pytest.raises(OverrideError) as e:
        check_backbone("nnunet", [TRAIN])
    assert str(e.value) == (f"--backbone nnunet needs the override file {nnunet} merged over {TRAIN}: pass "
                            f"--config_file \"['{TRAIN}','{nnunet}']\".")
    with pytest.raises(OverrideError, match="'vnet' is not one of \\['basic_unet', 'nnunet', 'segresnet', 'swinunetr', "
                                            "'unet', 'unetr'\\]"):
        check_backbone("vnet", [TRAIN])
    assert check_backbone("segresnet", [TRAIN]) == "segresnet"  # stock networks need no override file
    train_checks = json.loads((PRETRAIN / "configs" / "train.json").read_text(encoding="utf-8"))["override_checks"]
    assert train_checks["backbone"] == sorted(BACKBONE_OVERRIDES)
