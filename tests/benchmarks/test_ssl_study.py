# SPDX-License-Identifier: Apache-2.0
"""benchmarks/ssl_study.py: every init minus the default COVER, per read-out, averaged within a seed and paired by
seed, on constructed results whose differences are known."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("ssl_study", ROOT / "benchmarks" / "ssl_study.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)

SEEDS, KS = (0, 1, 2), (1, 2)
#: offset of each init from the default COVER, per seed (the variant is behind at seed 0 only)
OFFSET = {"cover": lambda s: 0.0, "cover_x": lambda s: 0.03 * s - 0.01, "scratch": lambda s: -0.2}


def results() -> dict:
    def dice(init, seed, k):  # k shifts every init alike: it must cancel in the paired differences
        return 0.5 + 0.05 * k + OFFSET[init](seed)

    runs = [{"init": i, "k": k, "seed": s, "dice_mean": dice(i, s, k)} for i in OFFSET for k in KS for s in SEEDS]
    probes = {i: [{"probe": probe, "levels": levels, "k": k, "seed": s, "probe_seed": p,
                   "dice_mean": dice(i, s, k) + (0.1 if probe == "knn" else 0.0) + 0.01 * p}
                  for probe, levels in (("linear", "finest"), ("linear", "concat"), ("knn", "finest"))
                  for k in KS for s in SEEDS for p in range(2)] for i in OFFSET}
    propagation = {i: [{"route": "features", "distance": d, "seed": s, "dice_mean": dice(i, s, 1) - 0.01 * d}
                       for d in (1, 2) for s in SEEDS] for i in OFFSET}
    for i in ("cover", "cover_x"):  # only COVER heads propagate through a field; the variant's is 0.05 better
        propagation[i] += [{"route": "field", "distance": 1, "seed": s, "dice_mean": 0.7 + (i == "cover_x") * 0.05}
                           for s in SEEDS]
    pretrain = {i: {str(s): {"curve": [{"step": 0, "local_w3": 0.2, "epe_ratio": 0.9},
                                       {"step": 200, "local_w3": 0.3 + (i == "cover_x") * 0.02 * s,
                                        "epe_ratio": 0.5 + (i == "cover_x") * 0.1}]} for s in SEEDS}
                for i in ("cover", "cover_x")}
    config = {"methods": ["cover", "cover_x"], "ks": list(KS), "seeds": list(SEEDS), "pretrain_per_seed": True}
    return {"config": config, "runs": runs, "probes": probes,
            "propagation": propagation, "pretrain": pretrain}


def test_every_read_out_is_paired_by_seed_against_the_default():
    table = study.study_table(results())
    assert list(table) == ["scratch", "cover_x"]
    x = table["cover_x"]
    # per seed -0.01, +0.02, +0.05: mean +0.02, ahead at 2 of 3 seeds, the same through every read-out
    for column in ("finetuning", "linear/finest", "linear/concat", "knn/finest", "propagation/features"):
        assert x[column]["mean"] == pytest.approx(0.02), column
        assert -0.01 - 1e-9 <= x[column]["low"] < 0.02 < x[column]["high"] <= 0.05 + 1e-9, column
    assert (x["finetuning"]["ahead"], x["finetuning"]["n"]) == (2, 3)
    assert (x["linear/finest"]["ahead"], x["linear/finest"]["n"]) == (4, 6)  # (pretraining, probe) seed pairs
    assert x["propagation/field"]["mean"] == pytest.approx(0.05) and x["propagation/field"]["n"] == 3
    assert x["local_w3"]["mean"] == pytest.approx(0.02) and x["epe_ratio"]["mean"] == pytest.approx(0.1)
    s = table["scratch"]
    assert s["finetuning"]["mean"] == pytest.approx(-0.2) and s["finetuning"]["ahead"] == 0
    assert s["propagation/field"] is None and s["local_w3"] is None  # no head, no pretraining


def test_incomplete_seeds_are_left_out_and_the_table_marks_sure_differences():
    r = results()
    r["runs"] = [x for x in r["runs"] if not (x["init"] == "cover_x" and x["seed"] == 0 and x["k"] == 2)]
    table = study.study_table(r)
    assert table["cover_x"]["finetuning"]["n"] == 2  # seed 0 lacks k = 2
    assert table["cover_x"]["finetuning"]["mean"] == pytest.approx(0.035)
    lines = study.study_lines(r)
    scratch = next(line for line in lines if line.startswith("| scratch |"))
    assert "**-0.200 [-0.200, -0.200] (0/3)**" in scratch  # the interval excludes 0: bold
    variant = next(line for line in lines if line.startswith("| cover_x |"))
    assert "| +0.020 [-0.010, +0.050] (2/3) |" in variant  # propagation, features: 3 seeds, not sure


def test_seeds_nested_in_a_pretraining_are_resampled_with_it():
    # 6 fine-tuning seeds on 3 pretrainings (seed s reads pretraining s mod 3); the variant's gain is set by the
    # pretraining alone: -0.01, +0.02, +0.05. Six seeds taken as independent would give a narrower interval.
    r = results()
    r["config"].update(seeds=[0, 1, 2, 3, 4, 5], pretrain_seeds=[0, 1, 2])
    r["runs"] = [{"init": i, "k": k, "seed": s, "dice_mean": 0.5 + 0.05 * k + OFFSET[i](s % 3)}
                 for i in OFFSET for k in KS for s in range(6)]
    x = study.study_table(r)["cover_x"]
    fine = x["finetuning"]
    assert fine["mean"] == pytest.approx(0.02) and (fine["groups"], fine["groups_ahead"]) == (3, 2)
    # all draws from one pretraining (1/27 > 2.5 %): the interval reaches the worst and the best pretraining
    assert fine["low"] == pytest.approx(-0.01) and fine["high"] == pytest.approx(0.05)
    flat = study.paired_bootstrap([OFFSET["cover_x"](s % 3) for s in range(6)], [0.0] * 6)
    assert fine["high"] - fine["low"] > 1.2 * (flat["high"] - flat["low"])
    # probes: 2 probe seeds on each pretraining, grouped by it
    assert (x["linear/finest"]["groups"], x["linear/finest"]["groups_ahead"], x["linear/finest"]["n"]) == (3, 2, 6)
    assert x["linear/finest"]["low"] == pytest.approx(-0.01) and x["linear/finest"]["high"] == pytest.approx(0.05)
    row = next(line for line in study.study_lines(r) if line.startswith("| cover_x |"))
    assert "(4/6; 2/3 pretrainings)" in row


def test_curve_gaps_follow_the_budget():
    """The variant's local_w3 is 0.02*seed above the default's at step 200 and equal at step 0: one gap, at 200,
    of mean 0.02 (seeds 0, 1, 2); a row without curves gives none."""
    res = results()
    gaps = study.curve_gaps(res, "cover_x", "cover")
    assert [g["step"] for g in gaps] == [200]
    assert gaps[0]["mean"] == pytest.approx(0.02) and gaps[0]["n"] == 3 and gaps[0]["ahead"] == 2
    res["pretrain"]["cover_x"]["0"]["curve"].insert(1, {"step": 100, "local_w3": 0.5})  # one seed only at 100
    gaps = study.curve_gaps(res, "cover_x", "cover")
    assert [g["step"] for g in gaps] == [200]  # the default has no step 100
    assert study.curve_gaps(res, "scratch", "cover") == []


def test_command_line_prints_the_table_and_the_curve(tmp_path, capsys):
    import json

    path = tmp_path / "results.json"
    path.write_text(json.dumps(results()), encoding="utf-8")
    assert study.main([str(path), "--base", "cover", "--curve", "cover_x"]) == 0
    out = capsys.readouterr().out
    assert "| cover_x |" in out and "minus `cover`" in out
    assert "- step 200: +0.020" in out
