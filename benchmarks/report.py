# SPDX-License-Identifier: Apache-2.0
"""Reporting for ``benchmarks/ssl_benchmark.py``: summaries over seeds, paired comparisons, the markdown report,
the plots and JSON helpers. Nothing here trains or reads images; every function takes the benchmark's plain
records so that it can be tested with known values.

A *run* record is ``{"init": str, "k": int, "seed": int, "dice": {class name: float}, "dice_mean": float, ...}``
(Dice in [0, 1]); a *diagnostics* record is what :func:`monai_cover.metrics.dispersion.dispersion_report` returns.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["bootstrap_ci", "comparisons", "cpu_seconds", "environment", "finish", "jsonable", "loadavg",
           "mean_diagnostics", "mean_std", "summarise", "write_json", "write_plots", "write_report",
           "write_suite_report"]

DIAG_KEYS = ("intra_cosine", "inter_cosine", "ratio", "gap", "effective_rank")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, sample standard deviation (ddof 1))`` of ``values``; the std is 0 for a single value.

    Raises:
        ValueError: ``values`` is empty.
    """
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("mean_std: values is empty.")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def bootstrap_ci(values: Sequence[float], level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> tuple[float,
                                                                                                         float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement ``n_boot`` times, seeded).
    With few values it is narrow (n = 3 has 10 distinct resamples): read it with ``n``.

    Raises:
        ValueError: ``values`` is empty or ``level`` is not in (0, 1).
    """
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("bootstrap_ci: values is empty.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_ci: level must be in (0, 1), got {level}.")
    means = np.random.default_rng(seed).choice(arr, size=(int(n_boot), arr.size), replace=True).mean(1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def summarise(runs: Sequence[dict], inits: Sequence[str], ks: Sequence[int]) -> dict:
    """Per initialisation and ``k``: mean Dice over seeds.

    Returns:
        ``{init: {str(k): {"mean", "std", "n", "seeds": {str(seed): dice_mean}, "per_class": {class: {"mean",
        "std"}}}}}``, with every init of ``inits`` (in that order) and only the ``k`` that have runs.
    """
    summary: dict = {}
    for init in inits:
        summary[init] = {}
        for k in ks:
            sel = [r for r in runs if r["init"] == init and r["k"] == k]
            if not sel:
                continue
            mean, std = mean_std([r["dice_mean"] for r in sel])
            per_class = {c: dict(zip(("mean", "std"), mean_std([r["dice"][c] for r in sel]))) for c in sel[0]["dice"]}
            summary[init][str(k)] = {"mean": mean, "std": std, "n": len(sel),
                                     "seeds": {str(r["seed"]): r["dice_mean"] for r in sel}, "per_class": per_class}
    return summary


def comparisons(runs: Sequence[dict], ks: Sequence[int], ref: str = "cover") -> dict:
    """Paired differences of mean Dice, ``ref`` minus each other initialisation, over the seeds both have at the same
    ``k`` (same seed = same labelled patches, same head init and batch order; with one pretraining per seed, a
    seed is also a pretraining seed), with a 95 % bootstrap interval of the mean over seeds. ``"all"``: per seed,
    the difference averaged over the ``k`` (seeds that have every ``k``), then the same statistics.

    Returns:
        ``{other: {str(k) or "all": {"mean", "std", "ci_low", "ci_high", "wins" (seeds where ref > other),
        "n"}}}`` (others sorted by name).
    """
    out: dict = {}
    by = {(r["init"], r["k"], r["seed"]): r["dice_mean"] for r in runs}
    seeds = sorted({s for (_, _, s) in by})

    def stats(diffs: list[float]) -> dict:
        mean, std = mean_std(diffs)
        low, high = bootstrap_ci(diffs)
        return {"mean": mean, "std": std, "ci_low": low, "ci_high": high, "wins": int(sum(d > 0 for d in diffs)),
                "n": len(diffs)}

    for other in sorted({r["init"] for r in runs} - {ref}):
        out[other] = {}
        per_seed: dict[int, list[float]] = {}
        for k in ks:
            pairs = [(s, by[(ref, k, s)] - by[(other, k, s)]) for s in seeds
                     if (ref, k, s) in by and (other, k, s) in by]
            for s, d in pairs:
                per_seed.setdefault(s, []).append(d)
            if pairs:
                out[other][str(k)] = stats([d for _, d in pairs])
        pooled = [float(np.mean(v)) for v in per_seed.values() if len(v) == len(ks)]
        if pooled and len(ks) > 1:
            out[other]["all"] = stats(pooled)
    return out


def mean_diagnostics(per_seed: dict) -> dict:
    """Mean over seeds of the dispersion statistics :data:`DIAG_KEYS` (``None``/NaN values left out; NaN when none
    is left), plus ``max_rank`` and ``num_voxels`` of the first seed. ``per_seed``: ``{seed: diagnostics record}``."""
    vals = {k: [d[k] for d in per_seed.values() if d[k] is not None and not (isinstance(d[k], float)
                                                                            and math.isnan(d[k]))] for k in DIAG_KEYS}
    first = next(iter(per_seed.values()))
    out = {k: (float(np.mean(v)) if v else math.nan) for k, v in vals.items()}
    out.update(max_rank=first["max_rank"], num_voxels=first["num_voxels"])
    return out


def jsonable(x: Any) -> Any:
    """``x`` with dict keys as strings, tuples as lists, numpy scalars as Python numbers and non-finite floats as
    ``None`` (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str | Path, results: dict) -> None:
    """Write ``jsonable(results)`` to ``path`` (indent 1)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(jsonable(results), f, indent=1)


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 min load averages (``None`` where unsupported): other jobs on the cores lengthen wall times."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def environment() -> dict:
    """Versions (python, torch, monai) and the load average now (``loadavg_start``)."""
    import monai
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
            "loadavg_start": loadavg()}


def cpu_seconds() -> float | None:
    """User + system CPU time of this process and its finished children (``None`` where unsupported)."""
    try:
        import resource
    except ImportError:
        return None
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def dice_tables(results: dict) -> list[str]:
    """Markdown lines: mean Dice per init and k, per class, per seed, and the paired comparisons (if any)."""
    cfg, summary, ks = results["config"], results["summary"], results["config"]["ks"]
    classes = [str(c) for c in results["data"]["labels"].values()]
    inits = [i for i in summary if summary[i]]
    cells = {(i, k): summary[i].get(str(k)) for i in inits for k in ks}
    lines = [f"## Mean Dice ({', '.join(classes)}) on the held-out {held_out(cfg)}, mean +/- std over seeds", ""]
    lines += _table(["init"] + [f"k={k}" for k in ks], [[i] + ["-" if cells[i, k] is None else
                    f"{cells[i, k]['mean']:.4f} +/- {cells[i, k]['std']:.4f} (n={cells[i, k]['n']})" for k in ks]
                    for i in inits])
    present = [(i, k, cells[i, k]) for i in inits for k in ks if cells[i, k]]
    lines += ["", "### Per class (mean +/- std over seeds)", ""]
    lines += _table(["init", "k", *classes], [[i, str(k)] + [f"{s['per_class'][c]['mean']:.4f} +/- "
                    f"{s['per_class'][c]['std']:.4f}" for c in classes] for i, k, s in present])
    lines += ["", "### Per seed (mean Dice)", ""]
    lines += _table(["init", "k"] + [f"seed {sd}" for sd in cfg["seeds"]], [[i, str(k)] + [
        f"{s['seeds'].get(str(sd), math.nan):.4f}" for sd in cfg["seeds"]] for i, k, s in present])
    if results.get("comparisons"):
        lines += ["", "### COVER minus each other initialisation", "",
                  "Paired by seed: mean difference [95 % bootstrap interval over seeds] (seeds where COVER is ahead / "
                  "seeds). `all k`: per seed, the difference averaged over k.", ""]
        lines += comparison_table(results["comparisons"], ks)
    return lines


def held_out(cfg: dict) -> str:
    """What the Dice is measured on, for the report's sentences."""
    return "slices (upper half of the brain)" if int(cfg.get("spatial_dims", 3)) == 2 else "hemisphere"


def comparison_cell(c: dict | None) -> str:
    if not c:
        return "-"
    return f"{c['mean']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] ({c['wins']}/{c['n']})"


def comparison_table(comps: dict, ks: Sequence[int]) -> list[str]:
    """Markdown lines: one row per other initialisation, one column per ``k`` and ``all k``."""
    cols = [str(k) for k in ks] + (["all"] if len(ks) > 1 else [])
    return _table(["COVER minus"] + [f"k={c}" if c != "all" else "all k" for c in cols],
                  [[other] + [comparison_cell(c.get(col)) for col in cols] for other, c in comps.items()])


def pretrain_table(pretrain: dict) -> list[str]:
    """Markdown lines: per method, mean seconds per pretraining run, first loss and mean of the last 10 % of steps
    (mean over pretraining seeds), and COVER's vector loss against the zero-displacement baseline."""
    rows = []
    for method, per_seed in pretrain.items():
        curves = [v["losses"] for v in per_seed.values()]
        tail = max(1, len(curves[0]) // 10)
        rows.append([method, f"{np.mean([v['seconds'] for v in per_seed.values()]):.1f}",
                     f"{np.mean([c[0] for c in curves]):.4f}", f"{np.mean([np.mean(c[-tail:]) for c in curves]):.4f}"])
    lines = _table(["method", "seconds per run (mean)", "first loss", "last loss (mean of last 10 %)"], rows)
    for seed, run in pretrain.get("cover", {}).items():
        t = run.get("terms") or {}
        if t.get("vector"):
            tail = max(1, len(t["vector"]) // 10)
            lines.append(f"\nCOVER seed {seed}, mean of the last {tail} steps: vector L1 "
                         f"{np.mean(t['vector'][-tail:]):.3f} voxels vs {np.mean(t['zero_ddf_l1'][-tail:]):.3f} for "
                         "predicting zero displacement; " + ", ".join(f"{k} {np.mean(v[-tail:]):.3f}" for k, v in
                                                                      t.items() if k not in ("vector", "zero_ddf_l1"))
                         + ".")
    return lines


LIMITATIONS = [
    "- One labelled volume (a population template): the left/right split measures transfer across the two "
    "hemispheres of one smooth, near-symmetric image, not across subjects.",
    "- Tiny unlabelled pool and short budgets: differences between methods are small relative to seed variance at "
    "this scale; the `--full` profile (GPU) is the one to draw conclusions from.",
    "- The evaluation image is in the unlabelled pretraining pool (never its labels).",
    "- The methods see different crops by design (see results.json `config`); steps and volumes per step are equal, "
    "backbone passes per step are not (COVER/InfoNCE 2, PCRLv2 2+locals, VoCo 6 per volume).",
]
LIMITATIONS_2D = [
    "- One labelled volume (a population template): the split by slice position measures transfer from the lower "
    "to the upper half of one brain (different anatomy, same subject), not across subjects.",
    LIMITATIONS[1],
    "- The evaluation slices are held out of the unlabelled pretraining pool; the training slices are in it.",
    "- The methods see different crops by design (see results.json `config`); steps and images per step are equal, "
    "backbone passes per step are not.",
]


CURVE_KEYS = ("epe_ratio", "nn_corr", "local_w3", "rank", "cosine", "overlap_cos")


def curve_table(pretrain: dict) -> list[str]:
    """Markdown lines: per method, each pretext metric at the first and last point of its curve (mean over seeds)."""
    rows = []
    for method, per_seed in pretrain.items():
        curves = [run["curve"] for run in per_seed.values() if run.get("curve")]
        if not curves:
            continue
        cells = []
        for key in CURVE_KEYS:
            first = [c[0][key] for c in curves if key in c[0]]
            last = [c[-1][key] for c in curves if key in c[-1]]
            cells.append(f"{np.mean(first):.3f} -> {np.mean(last):.3f}" if first and last else "-")
        rows.append([method, str(curves[0][-1]["step"]), str(len(curves))] + cells)
    return _table(["method", "last step", "seeds", *[f"{k} (start -> end)" for k in CURVE_KEYS]], rows)


def write_report(out: str | Path, results: dict) -> Path:
    """Write ``out/report.md`` from the benchmark's ``results`` (config, data, environment, timings, summary,
    comparisons, diagnostics, pretrain) and return its path."""
    from monai_cover.metrics.dispersion import format_dispersion

    cfg, timings, env, data = results["config"], results["timings"], results["environment"], results["data"]
    dims = int(cfg.get("spatial_dims", 3))
    crop = "x".join([str(cfg["crop"])] * dims)
    if dims == 2:
        task = (f"k labelled {crop} crops of k axial slices (axis {data['split']['axis']}) of the MNI152 template's "
                f"lower half (slices {data['split']['train']}); Dice on the upper half (slices "
                f"{data['split']['eval']}, scored as one stack), sliding window")
        pool = (f"{data.get('pool_images', '?')} slices with >= {cfg['min_slice_fg']:.0%} of a crop in foreground "
                f"of {', '.join(data['pool'])} (not the MNI evaluation slices)")
    else:
        task = (f"k labelled {crop} patches from the left hemisphere of the MNI152 template (axis 0 voxels "
                f"{data['split']['train']}); Dice on the right hemisphere (voxels {data['split']['eval']}), sliding "
                "window")
        pool = ", ".join(data["pool"])
    lines = [
        f"# Voxel-wise SSL label-efficiency benchmark ({dims}D)", "",
        f"Profile `{cfg['profile']}`; device `{cfg['device']}`; seeds {cfg['seeds']}; total wall time "
        f"{timings['total_seconds'] / 60:.1f} min, CPU time {(timings.get('cpu_seconds') or 0) / 60:.1f} min over "
        f"{env['threads']} thread(s) (load average at start/end: {env.get('loadavg_start')} / "
        f"{env.get('loadavg_end')}; other jobs sharing the cores lengthen the wall time).", "",
        "## Protocol",
        f"- Data: the pretraining bundle's loader chain (`{data.get('loader', 'loader_transforms')}`) at "
        f"{cfg['spacing']} mm; labels resampled (nearest) onto each image's grid.",
        f"- Backbone: MONAI `BasicUNet(spatial_dims={dims}, features={tuple(cfg['features'])})`, pyramid via "
        f"`FeaturePyramid`; crops {crop} at {cfg['spacing']} mm. COVER head on "
        f"{cfg.get('cover_levels') or 'the crop-matched number of'} pyramid levels (radius 2).",
        f"- Pretraining (MONAI `SupervisedTrainer`): {cfg['pretrain_steps']} AdamW steps (lr {cfg['lr']}, wd "
        f"{cfg['weight_decay']}, clip {cfg['grad_clip']}), {cfg['pretrain_batch']} image(s) per step, pool = "
        f"{pool} "
        f"({pretraining_note(cfg)}).",
        f"- Fine-tuning (MONAI `SupervisedTrainer`): {cfg['ft_steps']} AdamW steps (lr {cfg['ft_lr']}), batch "
        f"{cfg['ft_batch']}, DiceCE, {task}, overlap {cfg['sw_overlap']}.",
        "- Same patches, same seeded head init and same fine-tuning for every initialisation; only the backbone "
        "weights differ.", "",
    ]
    lines += dice_tables(results)
    lines += ["", "## Over-dispersion diagnostics of the pretrained backbones", "",
              f"Finest backbone features (before fine-tuning) on the held-out {held_out(cfg)}, classes "
              + "/".join(str(c) for c in data["labels"].values()) + "; mean over seeds. Higher ratio/gap = same-class "
              f"voxels closer than different-class voxels; effective rank out of {cfg['features'][-1]} channels.", ""]
    diag = {i: mean_diagnostics(results["diagnostics"][i]) for i in results["summary"] if i in results["diagnostics"]}
    if diag:
        lines.append(format_dispersion(diag))
    lines += ["", "## Pretraining", ""] + pretrain_table(results["pretrain"])
    if any(run.get("curve") for per_seed in results["pretrain"].values() for run in per_seed.values()):
        lines += ["", f"### Pretext metrics on held-out pairs ({data.get('curve_pairs', 'held-out pairs')})", "",
                  "Mean over pretraining seeds at the first and last evaluation (the curves: `pretext_curves.png`). "
                  "`epe_ratio`: end-point error of COVER's field / that of predicting zero; `nn_corr`: nearest-"
                  "neighbour correspondence of the finest features within 2 voxels; `local_w3`: the best match "
                  "among the voxels within 3 of the true one lands within 1 of it; `rank` / `cosine`: effective "
                  f"rank (of {cfg['features'][-1]}) and mean pairwise cosine of the finest features.", ""]
        lines += curve_table(results["pretrain"])
    lines += ["", "Plots: `dice_vs_k.png`, `pretrain_loss.png`" + (", `pretext_curves.png`." if any(
        run.get("curve") for per_seed in results["pretrain"].values() for run in per_seed.values()) else "."),
        "", "## Limitations", "", *(LIMITATIONS_2D if dims == 2 else LIMITATIONS), ""]
    path = Path(out) / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_plots(out: str | Path, results: dict) -> list[str]:
    """``dice_vs_k.png`` (mean ± std Dice per init against k, log2 axis) and ``pretrain_loss.png`` (each method's
    loss per step, raw and smoothed over 5 % of the steps; COVER's vector loss and zero-displacement L1 dashed) in
    ``out``; returns their names, or ``[]`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out = Path(out)
    ks, summary = results["config"]["ks"], results["summary"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for init in [i for i in summary if summary[i]]:
        kk = [k for k in ks if str(k) in summary[init]]
        ax.errorbar(kk, [summary[init][str(k)]["mean"] for k in kk], yerr=[summary[init][str(k)]["std"] for k in kk],
                    marker="o", capsize=3, label=init)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set(xlabel="labelled patches k" if int(results["config"].get("spatial_dims", 3)) == 3 else "labelled slices k",
           ylabel=f"mean Dice (held-out {held_out(results['config']).split(' (')[0]})",
           title=f"Dice vs k ({results['config']['profile']}, {len(results['config']['seeds'])} seed(s))")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "dice_vs_k.png", dpi=120)
    plt.close(fig)
    methods = list(results["pretrain"])
    fig, axes = plt.subplots(1, max(1, len(methods)), figsize=(4 * max(1, len(methods)), 3.2), squeeze=False)
    for ax, method in zip(axes[0], methods):
        for seed, run in results["pretrain"][method].items():
            y = np.asarray(run["losses"], dtype=float)
            w = max(1, len(y) // 20)
            ax.plot(y, alpha=0.25)
            ax.plot(np.arange(len(y) - w + 1) + (w - 1), np.convolve(y, np.ones(w) / w, "valid"), label=f"seed {seed}")
            for name, style in (("vector", "--"), ("zero_ddf_l1", ":")):
                curve = np.asarray((run.get("terms") or {}).get(name, []), dtype=float)
                if curve.size >= w:
                    ax.plot(np.arange(curve.size - w + 1) + (w - 1), np.convolve(curve, np.ones(w) / w, "valid"),
                            style, label=f"{name} (seed {seed})")
        ax.set(title=method, xlabel="step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("pretraining loss")
    fig.tight_layout()
    fig.savefig(out / "pretrain_loss.png", dpi=120)
    plt.close(fig)
    names = ["dice_vs_k.png", "pretrain_loss.png"]
    if any(run.get("curve") for per_seed in results["pretrain"].values() for run in per_seed.values()):
        fig, axes = plt.subplots(1, 5, figsize=(20, 3.4))
        for ax, key in zip(axes, CURVE_KEYS[:5]):
            for i, (method, per_seed) in enumerate(results["pretrain"].items()):
                for j, (seed, run) in enumerate(per_seed.items()):
                    pts = [(c["step"], c[key]) for c in run.get("curve") or [] if key in c]
                    if pts:
                        ax.plot(*zip(*pts), marker=".", color=f"C{i}", alpha=0.8,
                                label=method if j == 0 else None)
            ax.set(title=key, xlabel="pretraining step")
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7)  # every method has nn_corr (only COVER has epe_ratio)
        fig.suptitle("pretext metrics on held-out pairs (one line per pretraining seed)")
        fig.tight_layout()
        fig.savefig(out / "pretext_curves.png", dpi=110)
        plt.close(fig)
        names.append("pretext_curves.png")
    return names


def finish(out: str | Path, results: dict, started: float) -> Path:
    """Complete ``results`` in place (``comparisons`` when COVER ran, ``diagnostics_mean``, timings since ``started``
    (``time.time()``), CPU time, final load average), then write ``report.md``, the plots and ``results.json`` in
    ``out``; returns the report's path."""
    cfg, runs = results["config"], results["runs"]
    if "cover" in cfg["methods"]:
        results["comparisons"] = comparisons(runs, cfg["ks"])
    results["diagnostics_mean"] = {i: mean_diagnostics(d) for i, d in results["diagnostics"].items()}
    results["timings"].update(
        pretrain_seconds={m: sum(v["seconds"] for v in r.values()) for m, r in results["pretrain"].items()},
        finetune_seconds=sum(r["ft_seconds"] + r["eval_seconds"] for r in runs), total_seconds=time.time() - started,
        cpu_seconds=cpu_seconds())
    results["environment"]["loadavg_end"] = loadavg()
    path = write_report(out, results)
    results["plots"] = write_plots(out, results)
    write_json(Path(out) / "results.json", results)
    return path


def pretraining_seed(cfg: dict, seed: int) -> int:
    """The pretraining behind fine-tuning seed ``seed``: ``cfg["pretrain_seeds"]`` in turn (more fine-tuning seeds
    than pretrainings), else ``seed`` itself (``pretrain_per_seed``) or the first seed."""
    if cfg.get("pretrain_seeds"):
        pre = [int(s) for s in cfg["pretrain_seeds"]]
        return pre[list(cfg["seeds"]).index(seed) % len(pre)]
    return seed if cfg["pretrain_per_seed"] else cfg["seeds"][0]


def pretraining_note(cfg: dict) -> str:
    """How the fine-tuning seeds map to pretrainings."""
    if cfg.get("pretrain_seeds"):
        return f"{len(cfg['pretrain_seeds'])} pretrainings per method (seeds {list(cfg['pretrain_seeds'])}), read " \
               f"in turn by fine-tuning seeds {list(cfg['seeds'])}"
    return "one pretraining per seed" if cfg["pretrain_per_seed"] else "pretrained once (first seed)"


def write_suite_report(out: str | Path, name: str, tracks: dict[str, dict], seconds: float) -> Path:
    """``out/report.md`` of a suite (e.g. ``--medium``): per track (``{track: results}``, each also reported in
    ``out/<track>/``), the paired comparisons with their intervals, the mean Dice per init and k, and the pretext
    metrics; returns its path."""
    lines = [f"# Voxel-wise SSL label-efficiency benchmark, suite `{name}`", "",
             f"Total wall time {seconds / 60:.1f} min. Each track has its full report, plots and `results.json` in "
             "its folder; this page puts the answers side by side.", ""]
    for track, results in tracks.items():
        cfg = results["config"]
        lines += [f"## Track {track}: {results['config']['profile']} ({len(cfg['seeds'])} seeds, "
                  f"{pretraining_note(cfg)}, {cfg['pretrain_steps']} pretraining steps, {cfg['ft_steps']} "
                  f"fine-tuning steps; [report]({track}/report.md))", "",
                  "COVER minus each initialisation, mean Dice on the held-out "
                  f"{held_out(cfg)}: mean [95 % bootstrap interval over seeds] (seeds where COVER is ahead / seeds)",
                  ""]
        lines += comparison_table(results.get("comparisons", {}), cfg["ks"])
        summary = results["summary"]
        lines += ["", "Mean Dice +/- std over seeds:", ""]
        lines += _table(["init"] + [f"k={k}" for k in cfg["ks"]], [[i] + [
            f"{summary[i][str(k)]['mean']:.4f} +/- {summary[i][str(k)]['std']:.4f}" if str(k) in summary[i] else "-"
            for k in cfg["ks"]] for i in summary if summary[i]])
        table = curve_table(results["pretrain"])
        if len(table) > 2:
            lines += ["", "Pretext metrics on held-out pairs, start -> end of pretraining (mean over seeds):", ""]
            lines += table
        lines += ["", f"![Dice vs k]({track}/dice_vs_k.png)", ""]
    path = Path(out) / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
