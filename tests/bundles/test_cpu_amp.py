# SPDX-License-Identifier: Apache-2.0
"""``--amp true`` on a CPU runs the network in bfloat16 through the real command line. MONAI's engines autocast CUDA
only, so before ``monai_cover.engines.autocast_inferer`` the setting was dropped with a warning and the run stayed
float32."""

from __future__ import annotations

import pytest
import torch
from conftest import PRETRAIN, TINY_PRETRAIN, bundle_run

from monai_cover.handlers import read_loss_summary


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
def test_amp_on_cpu_changes_the_numerics_a_little(tmp_path):
    first = {}
    for amp in ("true", "false"):
        out = tmp_path / f"amp_{amp}"
        proc = bundle_run([PRETRAIN / "configs" / "train.json"], PRETRAIN, out, *TINY_PRETRAIN, "--epochs", "1",
                          "--amp", amp)
        assert proc.returncode == 0, proc.stdout[-3000:]
        first[amp] = read_loss_summary(out / "loss_summary.txt")[0]["first"]
    gap = abs(first["true"] - first["false"]) / abs(first["false"])
    assert 1e-6 < gap < 1e-2, first  # same seed and data: only bf16 rounding tells the runs apart
