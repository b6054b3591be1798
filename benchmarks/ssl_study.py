# SPDX-License-Identifier: Apache-2.0
"""One table for a variant study: every initialisation of a (merged) ``ssl_benchmark.py`` run minus the default
COVER, one number per read-out, paired by seed.

Each read-out is first averaged within a seed over what the seed repeats (the ``k`` of fine-tuning and probes, the
distances of propagation), then the per-seed differences are bootstrapped with
:func:`monai_cover.metrics.paired_bootstrap`: fine-tuning over its seeds, probes over (pretraining seed, probe seed)
pairs, propagation and the pretext metrics over pretraining seeds. Fine-tuning and probe seeds are nested in the
pretrainings they read (5 fine-tuning seeds on 3 pretrainings, 10 probe seeds on each), so their intervals are
two-stage: pretrainings first, then the seeds within each. The interval then holds what another pretraining seed
would change, not only another draw of labelled patches.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from monai_cover.metrics import paired_bootstrap

_spec = importlib.util.spec_from_file_location("report", Path(__file__).resolve().parent / "report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)

#: (column, title): probe read-outs as ``probe/levels``
PROBES = (("linear/finest", "linear probe, finest"), ("linear/concat", "linear probe, hypercolumn"),
          ("knn/finest", "kNN, finest"))
#: pretext metrics at the end of pretraining (higher is better for local_w3, lower for epe_ratio)
PRETEXT = (("local_w3", "local correspondence w3"), ("epe_ratio", "EPE / EPE(zero)"))


def _per_seed(records: Sequence[dict], seed_fields: tuple[str, ...], **match) -> dict[tuple, float]:
    """``{seed key: mean dice_mean}`` of the records matching ``match``, averaged over everything else."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        if all(r.get(f) == v for f, v in match.items()):
            groups.setdefault(tuple(r[f] for f in seed_fields), []).append(r["dice_mean"])
    return {key: float(np.mean(v)) for key, v in groups.items()}


def _paired(mine: dict, theirs: dict, group: Callable[[tuple], object] | None = None) -> dict | None:
    """:func:`paired_bootstrap` over the seed keys both sides have; ``group(key)`` names the pretraining a key's
    seed is nested in (a two-stage bootstrap), ``None``: the keys are independent."""
    keys = sorted(set(mine) & set(theirs))
    if not keys:
        return None
    groups = [group(k) for k in keys] if group else None
    return paired_bootstrap([mine[k] for k in keys], [theirs[k] for k in keys], groups=groups)


def _finetuning(runs: Sequence[dict], init: str, cfg: dict) -> dict[tuple, float]:
    """``{(pretraining seed, fine-tuning seed): mean Dice over the ks}`` (seeds that have every ``k``); the
    pretraining is the record's ``pretrain_seed`` (older records: :func:`report.pretraining_seed`)."""
    per = {}
    for seed in {r["seed"] for r in runs if r["init"] == init}:
        mine = [r for r in runs if r["init"] == init and r["seed"] == seed and r["k"] in cfg["ks"]]
        if len(mine) == len(cfg["ks"]):
            pre = mine[0].get("pretrain_seed", report.pretraining_seed(cfg, seed))
            per[(pre, seed)] = float(np.mean([r["dice_mean"] for r in mine]))
    return per


def _pretext(pretrain: dict, init: str, metric: str, step: int | None = None) -> dict[tuple, float]:
    """``{(pretraining seed,): metric}`` at the curve point ``step`` (``None``: the last one)."""
    out = {}
    for seed, run in pretrain.get(init, {}).items():
        points = [p for p in run.get("curve") or [] if step is None or p["step"] == step]
        if points and metric in points[-1]:
            out[(seed,)] = points[-1][metric]
    return out


def curve_gaps(results: dict, row: str, base: str, metric: str = "local_w3") -> list[dict]:
    """``row`` minus ``base`` on a pretext ``metric`` at every curve point both have (step 0 left out), paired by
    pretraining seed: ``[{"step": s, **paired_bootstrap(...)}]`` -- whether a gap opens or closes with the budget."""
    pretrain = results.get("pretrain", {})
    steps = [sorted({p["step"] for run in pretrain.get(init, {}).values() for p in run.get("curve") or []})
             for init in (row, base)]
    gaps = []
    for step in sorted(set(steps[0]) & set(steps[1]) - {0}):
        paired = _paired(_pretext(pretrain, row, metric, step), _pretext(pretrain, base, metric, step))
        if paired is not None:
            gaps.append({"step": step, **paired})
    return gaps


def study_table(results: dict, base: str = "cover") -> dict[str, dict[str, dict | None]]:
    """``{init: {column: paired_bootstrap(init, base) or None}}`` for every init but ``base`` (scratch first):
    columns ``finetuning``, the :data:`PROBES`, ``propagation/features`` (the finest features' windowed nearest
    neighbours), ``propagation/field`` (COVER variants' predicted fields, against the base's) and the
    :data:`PRETEXT` metrics. ``None`` where either side lacks the read-out."""
    cfg = results["config"]
    inits = [i for i in ["scratch", *cfg["methods"]] if i != base]
    probes, prop, pretrain = results.get("probes", {}), results.get("propagation", {}), results.get("pretrain", {})
    table: dict[str, dict[str, dict | None]] = {}
    for init in inits:
        row = {"finetuning": _paired(_finetuning(results["runs"], init, cfg), _finetuning(results["runs"], base, cfg),
                                     group=lambda key: key[0])}
        for column, _ in PROBES:
            probe, levels = column.split("/")
            fields, match = ("seed", "probe_seed"), dict(probe=probe, levels=levels)
            row[column] = _paired(_per_seed(probes.get(init, []), fields, **match),
                                  _per_seed(probes.get(base, []), fields, **match), group=lambda key: key[0])
        for route in ("features", "field"):
            row[f"propagation/{route}"] = _paired(_per_seed(prop.get(init, []), ("seed",), route=route),
                                                  _per_seed(prop.get(base, []), ("seed",), route=route))
        for metric, _ in PRETEXT:
            row[metric] = _paired(_pretext(pretrain, init, metric), _pretext(pretrain, base, metric))
        table[init] = row
    return table


def _cell(c: dict | None) -> str:
    if c is None:
        return "-"
    sure = c["low"] > 0 or c["high"] < 0
    ahead = f"{c['ahead']}/{c['n']}" + (f"; {c['groups_ahead']}/{c['groups']} pretrainings" if "groups" in c else "")
    text = f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] ({ahead})"
    return f"**{text}**" if sure else text


def study_lines(results: dict, base: str = "cover") -> list[str]:
    """Markdown: :func:`study_table` with a short legend."""
    table = study_table(results, base)
    columns = [("finetuning", "fine-tuning, mean over k"), *[(c, t + ", mean over k") for c, t in PROBES],
               ("propagation/features", "propagation, features"), ("propagation/field", "propagation, field"),
               *PRETEXT]
    lines = [f"### Every init minus `{base}`, one number per read-out", "",
             "Mean paired difference [95 % bootstrap interval] (pairs where the row is ahead / pairs; pretrainings "
             "where it is ahead on average / pretrainings); bold: the interval excludes 0. Fine-tuning: per seed, "
             "mean over k; probes: per (pretraining seed, probe seed), mean over k; both two-stage (pretrainings, "
             "then the seeds nested in each), so the interval holds the pretraining's variance; propagation: per "
             "pretraining seed, mean over distances; pretext metrics: per pretraining seed at its last step (for "
             "EPE / EPE(zero) lower is better).", "",
             "| init | " + " | ".join(t for _, t in columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for init, row in table.items():
        lines.append(f"| {init} | " + " | ".join(_cell(row[c]) for c, _ in columns) + " |")
    return lines


def main(argv=None) -> int:
    """``python benchmarks/ssl_study.py RESULTS.json --base cover_teacher_forced [--curve voxel_infonce]``: the study
    table against any base and, with ``--curve ROW``, ROW minus the base at every curve point."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("results", help="results.json of an ssl_benchmark.py track or of ssl_merge.py")
    p.add_argument("--base", default="cover")
    p.add_argument("--curve", default=None, metavar="ROW", help="ROW minus the base along pretraining")
    p.add_argument("--metric", default="local_w3", help="pretext metric for --curve")
    args = p.parse_args(argv)
    results = json.loads(Path(args.results).read_text(encoding="utf-8"))
    print("\n".join(study_lines(results, args.base)))
    if args.curve:
        print(f"\n`{args.curve}` minus `{args.base}`, {args.metric}, paired by pretraining seed:")
        for g in curve_gaps(results, args.curve, args.base, args.metric):
            print(f"- step {g['step']}: {_cell(g)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
