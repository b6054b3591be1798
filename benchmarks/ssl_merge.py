#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""Merge runs of ``ssl_benchmark.py`` that share a protocol and differ in their methods, then compare every COVER
variant with every other initialisation, paired by seed, as one run would have.

A variant study runs the default suite once and each variant as a run of its own (``--methods cover_hybrid``): the
seeds fix the patches, head inits, batches and probe draws, so the runs pair up. Each run also trains scratch again;
the merge checks that every repeated record (same init, ``k``, seed) agrees and reports the largest difference (0 on
the same machine and thread count; fine-tuning drifts a little across thread counts).

Usage::

    python benchmarks/ssl_merge.py runs/ssl_medium runs/ssl_medium_hybrid --out runs/ssl_medium_merged

Each argument is a suite folder (``2d/``, ``3d/`` sub-folders with ``results.json``) or one profile's folder; the
tracks all runs have are merged. Writes ``OUT/<track>/results.json`` and ``OUT/report.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

if importlib.util.find_spec("monai_cover") is None:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report, ssl_probes, ssl_propagation = _load("report"), _load("ssl_probes"), _load("ssl_propagation")
ssl_study = _load("ssl_study")

#: config entries that may differ between merged runs (everything else must be equal); of ``variants``, each name
#: both runs define must have the same definition (a later run may know variants an earlier one did not); a run with
#: other ``seeds`` / ``pretrain_seeds`` adds seeds (its fine-tuning records keep the pretraining they read)
RUN_ONLY_KEYS = ("methods", "variants", "seeds", "pretrain_seeds")


def tracks_of(folder: Path) -> dict[str, Path]:
    """``{track: results.json}`` of a suite folder, or ``{"": results.json}`` of one profile's folder."""
    if (folder / "results.json").exists():
        return {"": folder / "results.json"}
    found = {p.parent.name: p for p in sorted(folder.glob("*/results.json"))}
    if not found:
        raise FileNotFoundError(f"ssl_merge: {folder} holds no results.json (nor */results.json).")
    return found


def _record_key(record: dict, fields: tuple[str, ...]) -> tuple:
    return tuple(record.get(f) for f in fields)


def merge_results(runs: list[dict], names: list[str]) -> tuple[dict, dict]:
    """One results dict from ``runs`` (same protocol); returns it and ``{"repeated": n, "max_difference": d,
    "by_init": {init: d}}`` over the records two runs both hold (fine-tuning runs, probes and propagation of the same
    init and seed): ``d`` is the largest absolute difference of their mean Dice.

    Raises:
        ValueError: naming the config entry (and both runs) where two runs' protocols differ.
    """
    base = runs[0]
    for other, name in zip(runs[1:], names[1:]):
        keys = (set(base["config"]) | set(other["config"])) - set(RUN_ONLY_KEYS)
        for key in sorted(keys):
            if base["config"].get(key) != other["config"].get(key):
                raise ValueError(f"ssl_merge: {names[0]} and {name} differ in config {key!r}: "
                                 f"{base['config'].get(key)!r} vs {other['config'].get(key)!r}; only "
                                 f"{list(RUN_ONLY_KEYS)} may differ.")
        known, more = base["config"].get("variants", {}), other["config"].get("variants", {})
        for variant in sorted(set(known) & set(more)):
            if known[variant] != more[variant]:
                raise ValueError(f"ssl_merge: {names[0]} and {name} define variant {variant!r} differently: "
                                 f"{known[variant]!r} vs {more[variant]!r}.")
    merged = {"config": dict(base["config"]), "data": base["data"], "environment": base["environment"],
              "pretrain": {}, "runs": [], "diagnostics": {}, "probes": {}, "propagation": {},
              "sources": names, "timings": {name: r.get("timings", {}) for name, r in zip(names, runs)}}
    methods: list[str] = []
    check: dict = {"repeated": 0, "max_difference": 0.0, "by_init": {}}

    def add_records(target: list, seen: dict, records: list, fields: tuple[str, ...], init: str | None = None) -> None:
        for r in records:
            key = _record_key(r, fields)
            if key in seen:
                difference = abs(seen[key] - r["dice_mean"])
                name = init or r["init"]
                check["repeated"] += 1
                check["max_difference"] = max(check["max_difference"], difference)
                check["by_init"][name] = max(check["by_init"].get(name, 0.0), difference)
            else:
                seen[key] = r["dice_mean"]
                target.append(r)

    seen_runs: dict = {}
    seen_reads: dict = {}
    for results in runs:
        methods += [m for m in results["config"]["methods"] if m not in methods]
        for method, per_seed in results["pretrain"].items():
            kept = merged["pretrain"].setdefault(method, {})
            for seed, run in per_seed.items():
                kept.setdefault(seed, run)
        cfg = results["config"]
        runs_read = [{**r, "pretrain_seed": r.get("pretrain_seed", report.pretraining_seed(cfg, r["seed"]))}
                     for r in results["runs"]]
        add_records(merged["runs"], seen_runs, runs_read, ("init", "k", "seed"))
        for init, per_seed in results.get("diagnostics", {}).items():
            merged["diagnostics"].setdefault(init, {}).update(per_seed)
        for part, fields in (("probes", ("probe", "levels", "k", "seed", "probe_seed")),
                             ("propagation", ("route", "distance", "seed"))):
            for init, records in results.get(part, {}).items():
                add_records(merged[part].setdefault(init, []), seen_reads.setdefault((part, init), {}), records,
                            fields, init)
    merged["config"]["methods"] = methods
    for key in ("seeds", "pretrain_seeds"):  # every run's seeds, in order of first appearance
        if any(r["config"].get(key) for r in runs):
            merged["config"][key] = list(dict.fromkeys(s for r in runs for s in r["config"].get(key) or []))
    merged["config"]["variants"] = {k: v for r in runs for k, v in r["config"].get("variants", {}).items()}
    inits = ["scratch", *methods]
    merged["summary"] = report.summarise(merged["runs"], inits, merged["config"]["ks"])
    return merged, check


def variant_lines(results: dict) -> list[str]:
    """Markdown: every init minus the default COVER in one table (``ssl_study.py``); for every COVER variant (a
    method whose name starts with ``cover``), fine-tuning and probes minus every other init, paired by seed; then
    the propagation table and the pretext metrics."""
    cfg = results["config"]
    lines = [*ssl_study.study_lines(results), ""] if "cover" in cfg["methods"] else []
    ks, cols = cfg["ks"], [str(k) for k in cfg["ks"]] + (["all"] if len(cfg["ks"]) > 1 else [])
    for ref in [m for m in cfg["methods"] if m.startswith("cover")]:
        comps = report.comparisons(results["runs"], ks, ref=ref)
        lines += [f"### Fine-tuning: {ref} minus each init (mean Dice, [95 % interval over seeds], seeds ahead)", ""]
        lines += report._table([f"{ref} minus"] + [f"k={c}" if c != "all" else "all k" for c in cols],
                               [[o] + [report.comparison_cell(c.get(col)) for col in cols] for o, c in comps.items()])
        if results.get("probes"):
            probe_lines = ssl_probes.probe_report_lines(results["probes"], ks, ref=ref)
            start = next(i for i, line in enumerate(probe_lines) if line.startswith("### "))
            lines += ["", *[line.replace("### ", "#### Probes: ", 1) for line in probe_lines[start:]], ""]
    if results.get("probes"):  # the mean Dice of every probe and init (the differences are above)
        probe_lines = ssl_probes.probe_report_lines(results["probes"], ks)
        lines += probe_lines[:next((i for i, line in enumerate(probe_lines) if line.startswith("### ")),
                                   len(probe_lines))]
    if results.get("propagation"):
        lines += ["", *ssl_propagation.propagation_report_lines(results["propagation"])]
    lines += ["", "Pretext metrics on held-out pairs, start -> end of pretraining (mean over seeds):", "",
              *report.curve_table(results["pretrain"]), ""]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (suite or single profile)")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    if len(args.runs) < 2:
        p.error("give at least two run folders to merge")
    per_run = [tracks_of(folder) for folder in args.runs]
    tracks = [t for t in per_run[0] if all(t in r for r in per_run[1:])]
    if not tracks:
        raise SystemExit(f"ssl_merge: the runs share no track: {[sorted(r) for r in per_run]}")
    names = [str(folder) for folder in args.runs]
    lines = ["# Merged runs of ssl_benchmark.py", "", "Sources: " + ", ".join(f"`{n}`" for n in names), ""]
    for track in tracks:
        loaded = [json.loads(r[track].read_text(encoding="utf-8")) for r in per_run]
        merged, check = merge_results(loaded, names)
        out = args.out / track if track else args.out
        out.mkdir(parents=True, exist_ok=True)
        report.write_json(out / "results.json", {**merged, "repeated_records": check})
        lines += [f"## Track {track or merged['config']['profile']}: {merged['config']['profile']}, methods "
                  f"{', '.join(merged['config']['methods'])}", "",
                  f"Records in more than one run: {check['repeated']}, largest Dice difference between copies "
                  f"{check['max_difference']:.2e} (" + ", ".join(f"{i} {d:.2e}" for i, d in check["by_init"].items())
                  + "; the first run's copy is kept).", "", *variant_lines(merged)]
    path = args.out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(path.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
