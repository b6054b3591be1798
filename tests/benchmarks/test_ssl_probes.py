# SPDX-License-Identifier: Apache-2.0
"""benchmarks/ssl_probes.py on a synthetic task shaped like the benchmark's (2D stacks and 3D halves): a backbone
whose features name the class scores Dice 1 through every probe, a noise backbone about chance, and the report's
paired comparisons say so."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


probes, ssl_data = _load("ssl_probes"), _load("ssl_data")
NUM_CLASSES = 4


class ClassCode(torch.nn.Module):
    """A two-level 'pyramid' whose finest level is the one-hot code of the intensity quartile (the task's class)
    and whose coarse level is its average pool; ``noise=True``: random features of the same shapes instead."""

    def __init__(self, noise: bool = False) -> None:
        super().__init__()
        self.noise, self.weight = noise, torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        code = F.one_hot((x[:, 0] * NUM_CLASSES).floor().clamp(0, NUM_CLASSES - 1).long(), NUM_CLASSES)
        fine = code.movedim(-1, 1).float()
        if self.noise:
            fine = torch.randn(fine.shape, generator=torch.Generator().manual_seed(int(x.sum() * 1000) % 9999))
        pool = F.avg_pool2d if x.ndim == 4 else F.avg_pool3d
        return [pool(fine, 2), fine]


def _task(shape):
    """``train_*``/``eval_*`` ``(1, *shape)``: diagonal stripes of intensity in [0, 1) and their quartile as the
    label, so that every patch of 8 voxels or more holds all four classes."""
    index = sum(torch.arange(s).view(-1, *([1] * (len(shape) - 1 - i))) for i, s in enumerate(shape))
    image = ((index + torch.tensor([[0], [3]]).view(2, *([1] * len(shape)))) % 8 + 0.5) / 8  # (2, *shape)
    label = (image * NUM_CLASSES).floor().long()
    return {"train_image": image[:1], "train_label": label[:1], "eval_image": image[1:], "eval_label": label[1:]}


CFG = {"ks": [1, 2], "probe_seeds": 3, "probe_voxels": 256, "probe_knn_k": 5, "probe_knn_eval_voxels": 2000,
       "probe_knn_levels": ("finest", "concat")}


@pytest.mark.parametrize("dims", [2, 3])
def test_probes_read_what_the_features_say(dims):
    shape, patch = ((24, 20, 6), (12, 12, 1)) if dims == 2 else ((20, 16, 12), (10, 10, 10))
    task = _task(shape)  # 2D: (1, X, Y, Z) stacks, each slice along the last axis its own image
    cfg = {**CFG, "spatial_dims": dims}

    def draw(label, size, count, seed):
        return ssl_data.draw_patches(label, size, count, seed, min_fg=0.0)

    good = probes.frozen_probes(ClassCode(), task, cfg, NUM_CLASSES, draw, patch)
    bad = probes.frozen_probes(ClassCode(noise=True), task, cfg, NUM_CLASSES, draw, patch)
    assert len(good) == 3 * 2 * 4  # seeds x ks x (linear finest/concat, knn finest/concat)
    assert {(r["probe"], r["levels"]) for r in good} == {("linear", "finest"), ("linear", "concat"),
                                                         ("knn", "finest"), ("knn", "concat")}
    linear_finest = [r["dice_mean"] for r in good if r["probe"] == "linear" and r["levels"] == "finest"]
    assert min(linear_finest) > 0.97
    assert min(r["dice_mean"] for r in good) > 0.8  # the hypercolumn and kNN too (coarse level: blurred code)
    assert max(r["dice_mean"] for r in bad if r["levels"] == "finest") < 0.5

    records = {"cover": [{**r, "seed": 0} for r in good], "scratch": [{**r, "seed": 0} for r in bad],
               "same": [{**r, "seed": 0} for r in good]}
    comps = probes.probe_comparisons(records)
    ahead = comps["scratch"]["linear/finest"][2]
    assert ahead["low"] > 0.3 and ahead["n"] == 3 and ahead["ahead"] == 3
    assert (ahead["groups"], ahead["groups_ahead"]) == (1, 1)  # 3 probe seeds, all on pretraining 0
    same = comps["same"]["knn/finest"][1]
    assert (same["mean"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    lines = probes.probe_report_lines(records, cfg["ks"])
    assert any(line.startswith("| cover | linear/concat |") for line in lines)
    assert any("cover minus scratch" in line for line in lines)


def test_benchmark_protocol_runs_the_probes_on_request():
    ssl = _load("ssl_benchmark")
    cfg = ssl.make_config(ssl.parse_args(["--smoke", "--out", "x", "--probe-seeds", "2", "--ks", "1", "2"]))
    assert cfg["probe_seeds"] == 2
    assert "probe_seeds" not in ssl.make_config(ssl.parse_args(["--smoke", "--out", "x"]))  # off unless asked
    task = {k: v.repeat(1, 2, 2, 2) for k, v in _task((16, 16, 16)).items()}  # (1, 32, 32, 32): the smoke crop
    records = ssl.frozen_probes(cfg, None, task, 0, torch.device("cpu"))  # the random init of seed 0
    assert len(records) == 2 * 2 * 3 and all(r["seed"] == 0 for r in records)
    assert all(0.0 <= r["dice_mean"] <= 1.0 and len(r["dice"]) == ssl.N_CLASSES - 1 for r in records)
    lines = probes.probe_report_lines({"scratch": records}, cfg["ks"])
    assert sum(line.startswith("| scratch |") for line in lines) == 3  # linear finest/concat, knn finest
