# SPDX-License-Identifier: Apache-2.0
"""benchmarks/ssl_merge.py: runs of one protocol with different methods merge into one set of paired comparisons;
repeated records (scratch in every run) are checked against each other; runs of different protocols are refused."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "ssl_merge.py"
_spec = importlib.util.spec_from_file_location("ssl_merge", SCRIPT)
merge = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(merge)

SEEDS, KS = (0, 1, 2), (1, 2)
#: mean Dice of every (init, k, seed): scratch 0.5, cover 0.6, voxel_infonce 0.55, cover_hybrid 0.6 + 0.01 * seed
DICE = {"scratch": lambda s: 0.5, "cover": lambda s: 0.6, "voxel_infonce": lambda s: 0.55,
        "cover_hybrid": lambda s: 0.6 + 0.01 * s, "cover_x": lambda s: 0.6}


def fake_run(methods: tuple[str, ...], scratch_offset: float = 0.0, steps: int = 200) -> dict:
    inits = ("scratch", *methods)

    def dice(init, s):
        return DICE[init](s) + (scratch_offset if init == "scratch" else 0.0)

    runs = [{"init": i, "k": k, "seed": s, "dice_mean": dice(i, s), "dice": {"a": dice(i, s)}}
            for i in inits for k in KS for s in SEEDS]
    probes = {i: [{"probe": "linear", "levels": "finest", "k": k, "seed": s, "probe_seed": p,
                   "dice_mean": dice(i, s) - 0.1} for k in KS for s in SEEDS for p in range(2)] for i in inits}
    propagation = {i: [{"route": "features", "distance": 1, "seed": s, "dice_mean": dice(i, s)} for s in SEEDS]
                   for i in inits}
    for m in methods:
        if m.startswith("cover"):
            propagation[m] += [{"route": "field", "distance": 1, "seed": s, "dice_mean": 0.7} for s in SEEDS]
    curve = [{"step": 0, "local_w3": 0.2}, {"step": steps, "local_w3": 0.3}]
    pretrain = {m: {str(s): {"losses": [2.0, 1.0], "seconds": 1.0, "terms": {}, "curve": curve} for s in SEEDS}
                for m in methods}
    return {"config": {"profile": "medium_2d", "methods": list(methods), "ks": list(KS), "seeds": list(SEEDS),
                       "pretrain_steps": steps, "pretrain_per_seed": True},
            "data": {}, "environment": {}, "pretrain": pretrain, "runs": runs, "probes": probes,
            "propagation": propagation, "diagnostics": {}, "timings": {"total_seconds": 60.0}}


def write_suite(folder: Path, results: dict) -> Path:
    (folder / "2d").mkdir(parents=True)
    (folder / "2d" / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return folder


def test_merge_pairs_the_variant_with_every_init_and_checks_the_repeated_scratch():
    merged, check = merge.merge_results([fake_run(("cover", "voxel_infonce")), fake_run(("cover_hybrid",))],
                                        ["a", "b"])
    assert merged["config"]["methods"] == ["cover", "voxel_infonce", "cover_hybrid"]
    # scratch is in both runs: 6 fine-tuning runs, 12 probe records, 3 propagation records
    assert check == {"repeated": 6 + 12 + 3, "max_difference": 0.0, "by_init": {"scratch": 0.0}}
    assert len(merged["runs"]) == 4 * len(KS) * len(SEEDS)
    comps = merge.report.comparisons(merged["runs"], list(KS), ref="cover_hybrid")
    assert comps["cover"]["1"]["mean"] == pytest.approx(0.01)  # (0 + 0.01 + 0.02) / 3
    assert comps["cover"]["1"]["wins"] == 2
    assert comps["voxel_infonce"]["all"]["mean"] == pytest.approx(0.06)
    assert set(merged["pretrain"]) == {"cover", "voxel_infonce", "cover_hybrid"}

    _, check = merge.merge_results([fake_run(("cover",)), fake_run(("cover_hybrid",), scratch_offset=0.02)],
                                   ["a", "b"])
    assert check["max_difference"] == pytest.approx(0.02) and check["by_init"] == {"scratch": pytest.approx(0.02)}


def test_runs_of_different_protocols_are_refused():
    with pytest.raises(ValueError, match=r"a and b differ in config 'pretrain_steps': 200 vs 400"):
        merge.merge_results([fake_run(("cover",)), fake_run(("cover_hybrid",), steps=400)], ["a", "b"])


def test_runs_may_know_more_variants_but_not_define_one_differently():
    hybrid = {"loss": {"infonce_weight": 1.0}}
    a, b = fake_run(("cover",)), fake_run(("cover_hybrid",))
    a["config"]["variants"] = {"cover_hybrid": hybrid}
    b["config"]["variants"] = {"cover_hybrid": hybrid, "cover_deep_sup": {"loss": {"level_weights": 1.0}}}
    merged, _ = merge.merge_results([a, b], ["a", "b"])
    assert merged["config"]["variants"] == b["config"]["variants"]
    b["config"]["variants"]["cover_hybrid"] = {"loss": {"infonce_weight": 0.5}}
    with pytest.raises(ValueError, match=r"a and b define variant 'cover_hybrid' differently: .*1\.0.* vs .*0\.5"):
        merge.merge_results([a, b], ["a", "b"])


def test_a_run_with_more_seeds_adds_pretrainings_and_keeps_what_each_seed_read():
    # run a: fine-tuning seeds 0-2 on pretrainings [0, 1] (seed 2 reads 0); run b: seeds 5-7 on [3, 4] (7 reads 3)
    a, b = fake_run(("cover", "cover_x")), fake_run(("cover", "cover_x"))
    a["config"]["pretrain_seeds"] = [0, 1]
    b["config"].update(seeds=[5, 6, 7], pretrain_seeds=[3, 4])
    for rec in b["runs"]:
        rec["seed"] += 5
    for run, shift in ((a, 0), (b, 3)):  # read-outs once per pretraining, tagged with it
        for part in ("probes", "propagation"):
            run[part] = {i: [{**r, "seed": r["seed"] + shift} for r in recs if r["seed"] < 2]
                         for i, recs in run[part].items()}
    gain = {0: 0.02, 1: 0.04, 3: -0.01, 4: 0.01}  # cover_x minus cover, set by the pretraining alone
    for run in (a, b):
        for rec in run["runs"]:
            if rec["init"] == "cover_x":
                rec["dice_mean"] = 0.6 + gain[merge.report.pretraining_seed(run["config"], rec["seed"])]
    merged, check = merge.merge_results([a, b], ["a", "b"])
    assert merged["config"]["seeds"] == [0, 1, 2, 5, 6, 7] and merged["config"]["pretrain_seeds"] == [0, 1, 3, 4]
    assert check["repeated"] == 0  # no seed in both runs
    assert sorted({r["seed"] for r in merged["probes"]["cover_x"]}) == [0, 1, 3, 4]
    read = {r["seed"]: r["pretrain_seed"] for r in merged["runs"] if r["init"] == "cover_x"}
    assert read == {0: 0, 1: 1, 2: 0, 5: 3, 6: 4, 7: 3}  # from each run's own config, not the merged one
    fine = merge.ssl_study.study_table(merged)["cover_x"]["finetuning"]
    assert fine["n"] == 6 and fine["groups"] == 4 and fine["groups_ahead"] == 3
    assert fine["mean"] == pytest.approx((0.02 + 0.04 + 0.02 - 0.01 + 0.01 - 0.01) / 6)


def test_command_line_writes_the_variant_tables(tmp_path):
    a = write_suite(tmp_path / "a", fake_run(("cover", "voxel_infonce")))
    b = write_suite(tmp_path / "b", fake_run(("cover_hybrid",)))
    out = tmp_path / "merged"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(a), str(b), "--out", str(out)], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=300, encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "largest Dice difference between copies 0.00e+00 (scratch 0.00e+00;" in text
    assert "### Fine-tuning: cover_hybrid minus each init" in text
    # the hybrid's linear probe minus COVER's, paired by (pretraining seed, probe seed): +0.01, ahead on 4 of 6
    assert "| linear/finest | +0.0100 [" in text and "(4/6)" in text
    assert "| cover_hybrid (field) - voxel_infonce (features) |" in text
    saved = json.loads((out / "2d" / "results.json").read_text(encoding="utf-8"))
    assert saved["sources"] == [str(a), str(b)] and saved["repeated_records"]["repeated"] == 21
    bad = subprocess.run([sys.executable, str(SCRIPT), str(a), "--out", str(out)], cwd=str(ROOT),
                         capture_output=True, text=True, timeout=300, encoding="utf-8", errors="replace")
    assert bad.returncode == 2 and "at least two run folders" in bad.stderr
