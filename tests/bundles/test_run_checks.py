# SPDX-License-Identifier: Apache-2.0
"""User mistakes end a bundle run with one ``ERROR:`` line, before the output folder's lock is taken or any data is
read, and the traceback goes to a log file (the real ``python -m monai.bundle run``)."""

from __future__ import annotations

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
    (tmp_path / "file").write_text("x")
    with pytest.raises(OverrideError, match="is a file, not a folder"):
        check_run("cpu", 3, tmp_path / "file" / "run")
    if not torch.cuda.is_available():
        with pytest.raises(OverrideError, match="sees no CUDA device; use --device cpu"):
            check_run("cuda", 3, tmp_path)
    with pytest.raises(OverrideError, match="2 problems:\n  --device 'tpu'.*\n  --epochs 2.5"):
        check_run("tpu", 2.5, tmp_path)
