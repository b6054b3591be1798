#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""Where does COVER's 2D default put its displacement accuracy, and do the fine-level options of issue 18 move it?

Trains each configuration of ``benchmarks/pretext_study.py`` (same data, crops, batch 8, BasicUNet(32, 32, 64, 128,
256, 32) via FeaturePyramid, 4 head levels at 96^2, AdamW 1e-3, gradient clipping 1.0, seed 0) and reports on the
16 held-out pairs, at step 0 and at the end:

- the EPE/zero after each head level (coarse 1/8 -> finest 1/1) and each level's share of the EPE gain
  (``monai_cover.metrics.LevelEPEMetric``); the issue's acceptance: the two finest levels carry >= 15 %; and the
  most they could carry on top of the coarse levels as trained, correcting everything within their reach of
  ``radius * (1 + 2)`` pixels per axis (``LevelEPEMetric.reach_bound``); and, per level, the direction (cosine) and
  the fraction (scale) of the best correction within its reach that it makes (``level_corrections``); and the split
  of a head whose every level matched perfectly within its reach, on the same pairs (``oracle_level_fields``);
- finest-level local correspondence: the best cosine match among the pixels within 3 per axis of the true match
  lies within 1 (``t1``) / 2 (``t2``) pixels of it (``CorrespondenceAccuracyMetric(window=3)``);
- the share of each loss term's gradient that reaches ``upcat_1``, the block whose output a segmenter reads.

    python benchmarks/per_level_study.py --steps 400 --out benchmarks/results/per_level_2026-12-06

Outputs in ``--out``: ``results.json`` (every curve, from pretext_study.run_config), ``report.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("monai_cover") is None:  # run from a checkout without installing the package
    sys.path.insert(0, str(ROOT))


def _study():
    spec = importlib.util.spec_from_file_location("pretext_study", ROOT / "benchmarks" / "pretext_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fmt(values, digits=2) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)


def write_report(out: Path, results: dict, command: str) -> None:
    lines = [
        "# Per-level EPE split and fine-level options, 2D", "",
        f"`{command}`", "",
        f"{results['steps']} AdamW steps per configuration (lr 1e-3, batch 8, 96x96 crops, BasicUNet(32, 32, 64, 128, "
        f"256, 32) via FeaturePyramid, 4 head levels 1/8 -> 1/1, gradient clipping 1.0, seed {results['seed']}); "
        "16 held-out pairs from other slice positions. Levels are listed coarse (1/8) to fine (1/1). The last column: "
        "the two finest levels' share for a head whose every level matched perfectly within its reach "
        "(`oracle_level_fields`), on the same pairs.", "",
        "| config | step | EPE/zero | EPE/zero after each level | share of the EPE gain per level | two finest | "
        "two finest at most (reach / matches in window) | correction cosine / scale, levels 1/4 -> 1/1 | "
        "local corr. w3 t1 / t2 | NN corr. (2 px) | eff. rank | two finest, perfect head |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        for point in (run["curve"][0], run["curve"][-1]):
            shares = point.get("gain_share", [])
            two = sum(shares[-2:]) if shares else float("nan")
            oracle = point.get("oracle_gain_share", [])
            ratios = _fmt(point.get("level_epe", []), 3)
            lines.append(
                f"| {run['name']} | {point['step']} | {point['epe_ratio']:.3f} | {ratios} | "
                f"{_fmt(shares)} | {two:.1%} | {point.get('reach_bound', float('nan')):.1%} / "
                f"{point.get('reach_bound_in_window', float('nan')):.1%} | "
                f"cos {_fmt(point.get('correction_cosine', []))}; scale {_fmt(point.get('correction_scale', []))} | "
                f"{point['local_w3_t1']:.3f} / {point['local_w3_t2']:.3f} | "
                f"{point['nn_corr']:.3f} | {point['rank']:.1f} | {sum(oracle[-2:]) if oracle else float('nan'):.1%} |"
            )
    lines += ["", "Share of each weighted loss term's gradient norm (sum over the BasicUNet blocks = 1) reaching "
              "`upcat_1` (finest decoder block), on 4 held-out pairs:", "",
              "| config | step | " + " | ".join(["term", "share at upcat_1", "share at upcat_2", "share at down_4"])
              + " |", "|---|---|---|---|---|---|"]
    for run in results["runs"]:
        for point in (run["curve"][0], run["curve"][-1]):
            for term, share in point.get("grad_share", {}).items():
                lines.append(f"| {run['name']} | {point['step']} | {term} | {share.get('upcat_1', float('nan')):.3f} | "
                             f"{share.get('upcat_2', float('nan')):.3f} | {share.get('down_4', float('nan')):.3f} |")
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["default", "deep_sup", "projector"])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--evals", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=str(ROOT / "runs" / "real_data"))
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    study = _study()
    unknown = [c for c in args.configs if c not in study.CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; known: {sorted(study.CONFIGS)}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/per_level_study.py " + " ".join(argv if argv is not None else sys.argv[1:])
    train, val = study.load_images("2d", Path(args.data_dir))
    results = {"track": "2d", "steps": args.steps, "seed": args.seed, "runs": []}
    for name in args.configs:
        results["runs"].append(study.run_config(name, "2d", train, val, args.steps, args.evals, args.seed))
        (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
        write_report(out, results, command)
    print((out / "report.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
