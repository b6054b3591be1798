#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""Frozen-feature probes of ``ssl_benchmark.py`` (issue 18): where each method puts its information, read without
fine-tuning. Loaded by path (``benchmarks/`` is not a package).

For one backbone (a pretrained or random ``BasicUNet`` in a ``FeaturePyramid``) the images run once each (the
training slices/volume that the patch draws touch, the evaluation slices/volume); then, for every probe seed (a new
draw of the ``k`` labelled patches and of the voxels in them) and every ``k``, a linear probe (ridge) on the finest
level and on the hypercolumn, and a kNN vote on the finest level, each scored as Dice per class on the whole held-out
half (kNN: on ``probe_knn_eval_voxels`` voxels drawn from it). :func:`probe_comparisons` pairs two inits by
(pretraining seed, probe seed) with :func:`monai_cover.metrics.paired_bootstrap`, pretrainings resampled first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from monai_cover.metrics import extract_pyramids, knn_dice, linear_probe_dice, paired_bootstrap

#: settings of the probes (a profile may override any of them): probe seeds, voxels drawn per labelled patch,
#: kNN neighbours, kNN levels and evaluation voxels per held-out image, ridge penalty
PROBE_DEFAULTS = {"probe_seeds": 10, "probe_voxels": 2048, "probe_knn_k": 10, "probe_knn_levels": ("finest",),
                  "probe_knn_eval_voxels": 5000, "probe_l2": 1e-2}
#: the seed of a probe's patch draw: apart from the fine-tuning draws (``draw_patches(..., seed)``)
PROBE_DRAW_OFFSET = 500


def _setting(cfg: dict, key: str):
    return cfg.get(key, PROBE_DEFAULTS[key])


def frozen_probes(
    backbone: torch.nn.Module,
    task: dict,
    cfg: dict,
    num_classes: int,
    draw_patches: Callable,
    patch_size: Sequence[int],
    device: torch.device | str = "cpu",
) -> list[dict]:
    """Probe records of one backbone on the benchmark's labelled ``task`` (``train_*``/``eval_*`` ``(1, *S)``;
    2D track: ``(1, X, Y, Z)`` stacks of slices along the last axis, ``cfg["spatial_dims"] == 2``).

    Args:
        backbone: a ``FeaturePyramid`` (or any network returning a pyramid coarse to fine).
        cfg: ``ks`` and the :data:`PROBE_DEFAULTS` keys.
        draw_patches: ``draw_patches(label, patch_size, count, seed)`` -> patch origins (``ssl_data.draw_patches``).
        patch_size: a labelled patch in the ``(1, *S)`` task volume (2D: ``(crop, crop, 1)``).

    Returns:
        ``[{"probe": "linear" | "knn", "levels": "finest" | "concat", "k", "probe_seed", "dice": [per class],
        "dice_mean"}]``.
    """
    two_d, ks = int(cfg.get("spatial_dims", 3)) == 2, sorted(int(k) for k in cfg["ks"])
    seeds = range(int(_setting(cfg, "probe_seeds")))
    draws = {s: draw_patches(task["train_label"], tuple(patch_size), max(ks), PROBE_DRAW_OFFSET + s) for s in seeds}
    # the training images the draws touch (2D: their slices; 3D: the training half), each through the backbone once
    if two_d:
        slices = sorted({int(box[-1]) for boxes in draws.values() for box in boxes})
        images = {z: (task["train_image"][..., z], task["train_label"][..., z]) for z in slices}
        evaluation = [(task["eval_image"][..., z], task["eval_label"][..., z])
                      for z in range(task["eval_image"].shape[-1])]
    else:
        images = {0: (task["train_image"], task["train_label"])}
        evaluation = [(task["eval_image"], task["eval_label"])]
    keys = list(images)
    train_pyramids = dict(zip(keys, extract_pyramids(backbone, [images[i][0] for i in keys], device)))
    eval_items = list(zip(extract_pyramids(backbone, [img for img, _ in evaluation], device),
                          [lab for _, lab in evaluation]))
    records = []
    for seed in seeds:
        for k in ks:
            train = [_patch_item(train_pyramids, images, box, patch_size, two_d) for box in draws[seed][:k]]
            runs = [("linear", levels) for levels in ("finest", "concat")]
            runs += [("knn", levels) for levels in _setting(cfg, "probe_knn_levels")]
            for probe, levels in runs:
                if probe == "linear":
                    dice = linear_probe_dice(train, eval_items, num_classes, levels, int(_setting(cfg, "probe_voxels")),
                                             seed=seed, l2=float(_setting(cfg, "probe_l2")))
                else:
                    dice = knn_dice(train, eval_items, num_classes, levels, int(_setting(cfg, "probe_voxels")),
                                    k=int(_setting(cfg, "probe_knn_k")), seed=seed,
                                    eval_voxels_per_image=int(_setting(cfg, "probe_knn_eval_voxels")))
                records.append({"probe": probe, "levels": levels, "k": k, "probe_seed": seed,
                                "dice": [float(v) for v in dice], "dice_mean": float(dice.mean())})
    return records


def _patch_item(pyramids: dict, images: dict, box: Sequence[int], patch_size: Sequence[int], two_d: bool) -> tuple:
    """``(pyramid, label, mask)`` of one labelled patch at origin ``box`` of the task volume."""
    key = int(box[-1]) if two_d else 0
    label = images[key][1]
    window = tuple(slice(int(o), int(o) + int(c)) for o, c in zip(box, patch_size))
    mask = torch.zeros(label.shape, dtype=torch.bool)
    if two_d:
        mask[(slice(None), *window[:-1])] = True  # the slice's in-plane window
    else:
        mask[(slice(None), *window)] = True
    return pyramids[key], label, mask


def probe_table(records: dict[str, list[dict]], ks: Sequence[int]) -> dict:
    """``{init: {"probe/levels": {k: {"mean", "std", "n"}}}}`` of the mean Dice over (pretraining seed, probe seed)
    records, from ``{init: [record + {"seed"}]}``."""
    table: dict = {}
    for init, recs in records.items():
        for r in recs:
            table.setdefault(init, {}).setdefault(f"{r['probe']}/{r['levels']}", {}).setdefault(r["k"], []).append(
                r["dice_mean"])
    return {i: {p: {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)} for k, v in row.items()}
                for p, row in rows.items()} for i, rows in table.items()}


def probe_comparisons(records: dict[str, list[dict]], ref: str = "cover") -> dict:
    """``ref`` minus each other init, paired by (pretraining seed, probe seed) and resampled in two stages
    (pretrainings, then the probe seeds on each): ``{other: {"probe/levels": {k: paired_bootstrap(...)}}}``."""
    if ref not in records:
        return {}

    def by_pair(recs: list[dict]) -> dict:
        return {(r["probe"], r["levels"], r["k"], r["seed"], r["probe_seed"]): r["dice_mean"] for r in recs}

    mine, out = by_pair(records[ref]), {}
    for other, recs in records.items():
        if other == ref:
            continue
        theirs, groups = by_pair(recs), {}
        for key in sorted(set(mine) & set(theirs)):
            groups.setdefault((f"{key[0]}/{key[1]}", key[2]), []).append((mine[key], theirs[key], key[3]))
        for (probe, k), pairs in groups.items():
            a, b, pretraining = zip(*pairs)
            out.setdefault(other, {}).setdefault(probe, {})[k] = paired_bootstrap(a, b, groups=pretraining)
    return out


def probe_report_lines(records: dict[str, list[dict]], ks: Sequence[int], ref: str = "cover") -> list[str]:
    """Markdown lines: mean Dice of every probe per init and ``k``, and ``ref`` minus every other init with 95 %
    two-stage bootstrap intervals over the (pretraining seed, probe seed) pairs."""
    table, comps = probe_table(records, ks), probe_comparisons(records, ref)
    head = ["init", "probe"] + [f"k={k}" for k in ks]
    lines = ["## Frozen-feature probes (backbone frozen; mean Dice over pretraining x probe seeds)", "",
             "linear: ridge on standardised features; knn: cosine vote; finest: the last pyramid level; concat: the "
             "hypercolumn (all levels upsampled and concatenated).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for init, rows in table.items():
        for probe, cells in rows.items():
            lines.append("| " + " | ".join([init, probe] + [f"{cells[k]['mean']:.4f} +/- {cells[k]['std']:.4f} "
                                                            f"(n={cells[k]['n']})" if k in cells else "-" for k in ks])
                         + " |")
    for other, rows in comps.items():
        lines += ["", f"### {ref} minus {other}: mean [95 % interval, pretrainings then probe seeds resampled] "
                      f"(pairs where {ref} is ahead / pairs)", "",
                  "| probe | " + " | ".join(f"k={k}" for k in ks) + " |", "|" + "---|" * (len(ks) + 1)]
        for probe, cells in rows.items():
            lines.append("| " + " | ".join([probe] + [
                f"{c['mean']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}] ({c['ahead']}/{c['n']})" if (c := cells.get(k))
                else "-" for k in ks]) + " |")
    return lines
