#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""Label-efficiency benchmark of voxel-wise self-supervised pretraining: COVER vs voxel InfoNCE, PCRLv2, VoCo.

Pretrains every method on one unlabelled pool of real volumes, fine-tunes the same segmentation network from each
backbone (and from scratch) with ``k`` labelled patches, measures Dice per class on held-out labelled voxels, over
seeds, and writes ``results.json``, ``report.md``, ``dice_vs_k.png``, ``pretrain_loss.png`` (``report.py``; data in
``ssl_data.py``)::

    python benchmarks/ssl_benchmark.py --smoke --out runs/ssl_smoke          # CI-sized, < 90 s
    python benchmarks/ssl_benchmark.py --quick --out runs/ssl_quick          # 2-core CPU, ~11 min when idle
    python benchmarks/ssl_benchmark.py --full --device cuda --amp --out runs/ssl_full   # a GPU

This file is the protocol only: the methods are :func:`monai_cover.methods.build_method`'s, training is MONAI's
``SupervisedTrainer`` with the bundle's handlers, weights move by :func:`monai_cover.load_pretrained`, and images are
read by the pretraining bundle's own ``loader_transforms`` (``bundles/cover_pretrain_3d/configs/train.json``).

Protocol
--------
- **Data** (``benchmarks/data/fetch_real_data.py`` copies what installed wheels ship): the ICBM152 2009a T1 template
  with GM/WM/other labels (nilearn), the slicerio chest CT, the nibabel T1 and fMRI frame (plus any other volume of a
  given ``--data-dir`` datalist), through the bundle's ``loader_transforms`` with ``spacing`` and ``patch_size =
  crop`` set: RAS, ``spacing`` mm isotropic (linear), [0, 1] (CT: HU window [-1000, 1000]; MR: 0.5-99.5
  percentiles), padded (centred) to the bundle's ``crop_size = ceil(margin * crop)``. That chain reads "image" only:
  the label is read by the same ``LoadImaged`` and resampled (nearest) onto its image's grid (``ResampleToMatchd``).
- **Pretraining**: the *images* of all volumes (no labels). Same backbone (a stock ``BasicUNet``, five levels through
  :class:`monai_cover.networks.FeaturePyramid`), AdamW, gradient clipping 1.0, steps and volumes per step (each drawn
  uniformly from the pool) for every method. The pretext crops differ by design: COVER (``CoverNet`` and the
  library's default ``CoverLoss()``) and voxel InfoNCE share the same ``RandCoverPaird`` pairs (2 backbone passes
  per volume); PCRLv2 2 global + ``num_local`` local crops; VoCo a 2x2 base grid + 2 random crops (6 passes).
- **Labelled task**: MNI152 at ``spacing`` mm, classes other / grey matter / white matter (+ background), split
  spatially: patches from the left hemisphere (RAS axis 0 below the midline minus ~4 mm), Dice on the right one
  (sliding window). ``k`` nested patches of ``crop`` voxels with >= 30 % brain per seed, the same for every init.
- **Fine-tuning**: ``BasicUNet`` with the pretrained weights of every layer but ``final_conv`` (seeded identically
  for all; scratch loads nothing); AdamW, DiceCE, ``ft_steps`` steps of ``ft_batch`` of the k patches (intensity
  jitter only). Hyper-parameters are fixed per profile; nothing is tuned on the evaluation half.
- **Diagnostics**: :func:`monai_cover.metrics.dispersion.dispersion_report` of each backbone's finest features (and
  of the random init) on the evaluation half: intra/inter-class cosine, ratio, gap, effective rank.
- **Frozen-feature probes** (``--probe-seeds N``, ``ssl_probes.py``): each backbone frozen, linear probes on its finest
  level and hypercolumn and a kNN vote, fitted on N draws of k labelled patches, Dice on the same held-out half.
- **Label propagation** (``propagation``, ``ssl_propagation.py``): each method's own correspondence (COVER: its
  predicted field; every backbone: windowed nearest neighbours of its finest features; and the unchanged label) from
  held-out slices to slices 1-8 away (2D) or from the mirrored training hemisphere to the held-out one (3D).
- **Seeds**: ``seeds`` are fine-tuning seeds; ``pretrain_seeds`` (``--medium``: 3 pretrainings for 5 fine-tuning
  seeds) or one pretraining per seed. Probes and propagation run once per pretraining. COVER variants
  (:data:`VARIANTS`, e.g. ``cover_hybrid``) are methods of their own.

Limitations (also in ``report.md``): one labelled, smooth, near-symmetric template, so the split measures transfer
across hemispheres, not subjects; a tiny pool and short budgets (differences small next to seed variance); the
evaluation image is in the unlabelled pool. PCRLv2's local crops are ``crop`` (not 16^3): the stock BasicUNet's
instance norm needs more than one voxel at its 1/16 level.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

if importlib.util.find_spec("monai_cover") is None:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from monai_cover.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ssl_training", ROOT / "benchmarks" / "ssl_training.py")
training = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(training)
_load_script, report, _data, _probes = training.load_script, training.report, training._data, training._probes
pretraining_seed = report.pretraining_seed
loader_chains, load_pool_and_task, draw_patches = _data.loader_chains, _data.load_pool_and_task, _data.draw_patches
PretextSamples, patch_batches, BUNDLE_CONFIG = _data.PretextSamples, _data.patch_batches, _data.BUNDLE_CONFIG
LABEL_NAMES, N_CLASSES = training.LABEL_NAMES, training.N_CLASSES
crop_shape, make_unet, pair_kwargs, cover_levels, build = (training.crop_shape, training.make_unet,
                                                           training.pair_kwargs, training.cover_levels, training.build)
make_trainer, validation_pairs, pretext_metrics, pretrain = (training.make_trainer, training.validation_pairs,
                                                             training.pretext_metrics, training.pretrain)
init_segmenter, patch_shape, finetune_and_evaluate = (training.init_segmenter, training.patch_shape,
                                                      training.finetune_and_evaluate)
diagnostics, frozen_probes, propagation = training.diagnostics, training.frozen_probes, training.propagation
_propagation = training._propagation
INITS = ("scratch",) + METHODS
#: COVER variants a profile may list among its methods: ``{"net": CoverNet kwargs, "loss": CoverLoss kwargs}``;
#: issue 18's fine-level options on top of the default: cover_hybrid: L_vec + voxel InfoNCE on the finest level in
#: place of L_con + spread; cover_deep_sup: L_vec on every level's cumulative field (weight 1 each);
#: cover_projector: L_con + spread on a 1x1-conv projector (C -> 64 -> 32) instead of the backbone's features;
#: cover_teacher_forced: teacher-forced residuals at the two finest levels (weight 1)
VARIANTS = {"cover_hybrid": {"loss": {"consistency_weight": 0.0, "spread_weight": 0.0, "infonce_weight": 1.0,
                                      "infonce_kwargs": {"num_samples": 512}}},
            "cover_deep_sup": {"net": {"return_fields": True}, "loss": {"level_weights": 1.0}},
            "cover_projector": {"net": {"feature_projector": (64, 32)},
                                "loss": {"features_a_key": "projected_a", "features_b_key": "projected_b"}},
            "cover_teacher_forced": {"net": {"teacher_forced_levels": 2}, "loss": {"residual_weight": 1.0}}}
#: the paper's objective (L_vec + L_con, no spread term) with the suite's head and learning rate
VARIANTS["cover_paper"] = {"loss": {"spread_weight": 0.0}}
#: teacher forcing scored as matching (the attention against the residual's offset distribution, cross-entropy),
#: and the L1 form with residuals up to the head's radius (2 voxels) instead of half of it
VARIANTS["cover_teacher_forced_offsets"] = {"net": {"teacher_forced_levels": 2, "teacher_forced_target": "offsets"},
                                            "loss": {"residual_weight": 1.0}}
VARIANTS["cover_teacher_forced_wide"] = {"net": {"teacher_forced_levels": 2, "max_residual": 2.0},
                                         "loss": {"residual_weight": 1.0}}
#: the paper's preferred 7x7(x7) neighbourhood at every level (radius 3), with the teacher forcing of the bundles;
#: the views keep the radius-2 bound, so the pairs are the other methods'
VARIANTS["cover_teacher_forced_radius3"] = {"net": {"teacher_forced_levels": 2, "radius": 3},
                                            "loss": {"residual_weight": 1.0}}
#: the bundles' objective with the hybrid's negatives added, not swapped in: voxel InfoNCE on the finest level next to
#: L_con and the spread term (is the gap to InfoNCE's matching the missing negatives?)
VARIANTS["cover_teacher_forced_infonce"] = {
    "net": {**VARIANTS["cover_teacher_forced"]["net"]},
    "loss": {**VARIANTS["cover_teacher_forced"]["loss"], "infonce_weight": 1.0, "infonce_kwargs": {"num_samples": 512}}}
#: the bundles' objective with 4 heads of 8 on every level: the reference's single 8-wide head on the two finest levels
#: reads an 8-dimensional projection of the backbone's features (a quarter of the bundles' 32 channels), so the
#: displacement signal shapes only that subspace of what a segmenter reads
VARIANTS["cover_teacher_forced_heads4"] = {
    "net": {**VARIANTS["cover_teacher_forced"]["net"], "num_heads": 4},
    "loss": {**VARIANTS["cover_teacher_forced"]["loss"]}}
#: both displacement signals for the fine levels at once
VARIANTS["cover_deep_sup_teacher_forced"] = {
    "net": {**VARIANTS["cover_deep_sup"]["net"], **VARIANTS["cover_teacher_forced"]["net"]},
    "loss": {**VARIANTS["cover_deep_sup"]["loss"], **VARIANTS["cover_teacher_forced"]["loss"]}}

# A profile is a plain dict (a new one: ``{**PROFILES["quick"], ...}``; its ``--name`` flag comes for free). Units:
# spacing mm, crop voxels per axis, *_steps optimiser steps, *_batch volumes/patches per step, warmup_steps 0 = constant
# lr. ``method_kwargs[name]`` updates the library's per-method defaults (:func:`monai_cover.methods.method_kwargs`).
COMMON: dict[str, Any] = dict(spatial_dims=3, pretrain_batch=1, ft_batch=2, lr=1e-3, ft_lr=1e-3, weight_decay=1e-5,
                              grad_clip=1.0, warmup_steps=0, sw_overlap=0.0, sw_batch=4, workers=0, cover_levels=None,
                              methods=METHODS, curve_points=0, curve_pairs=8, variants=VARIANTS)
PROFILES: dict[str, dict[str, Any]] = {
    # CI-sized: every method end to end on tiny sizes (one seed, one k, a couple of steps)
    "smoke": {**COMMON, "spacing": 3.0, "crop": 32, "features": (2, 2, 4, 4, 8, 2), "pretrain_steps": 2, "ft_steps": 2,
              "ft_batch": 1, "ks": (1,), "seeds": (0,), "diag_voxels": 500, "pretrain_per_seed": True,
              "curve_points": 1, "curve_pairs": 2, "propagation": True, "prop_sources": 1, "prop_distances": (1, 2),
              "method_kwargs": {"voxel_infonce": {"loss_kwargs": {"num_samples": 64, "projection_channels": [16, 16]}},
                                "pcrlv2": {"transform_kwargs": {"num_local": 1}},
                                "voco": {"loss_kwargs": {"projection_channels": [32, 32]}}}},
    # 2-core CPU: one pretraining (seed 0; the seeds repeat patch draw, head init, batch order), 100 fine-tuning steps
    # per (init, k, seed); idle: ~4.5 min pretraining (0.45 s/step COVER, 0.14-0.25 others) + 6 min fine-tuning
    "quick": {**COMMON, "spacing": 2.0, "crop": 32, "features": (8, 8, 16, 32, 64, 8), "pretrain_steps": 250,
              "ft_steps": 100, "ks": (1, 2, 4), "seeds": (0, 1), "diag_voxels": 4000, "pretrain_per_seed": False,
              "method_kwargs": {"voxel_infonce": {"loss_kwargs": {"num_samples": 512, "projection_channels": [64, 64]}},
                                "voco": {"loss_kwargs": {"projection_channels": [256, 256]}}}},
    # a GPU (--device cuda --amp): a reference-width BasicUNet, 48^3 crops at 1.5 mm (from the 1 mm template),
    # thousands of steps, 3 seeds, one pretraining per seed
    "full": {**COMMON, "spacing": 1.5, "crop": 48, "features": (32, 32, 64, 128, 256, 32), "pretrain_steps": 3000,
             "pretrain_batch": 4, "lr": 3e-4, "ft_steps": 500, "ks": (1, 2, 4, 8), "seeds": (0, 1, 2),
             "sw_overlap": 0.25, "diag_voxels": 20000, "workers": 4, "pretrain_per_seed": True, "method_kwargs": {
                 "voxel_infonce": {"loss_kwargs": {"num_samples": 1024, "projection_channels": [256, 128]}},
                 "voco": {"loss_kwargs": {"projection_channels": [1024, 1024]}}}},
}
# --medium: a 2D and a 3D track on 2 CPU cores within an hour: COVER and voxel InfoNCE (the comparisons that
# matter; ``--methods cover cover_hybrid voxel_infonce`` adds the hybrid, 1.25 s a 2D step) with 3 pretraining seeds
# each, pretext metrics on held-out pairs at 6 points of every pretraining (``curve_points``); per pretraining, frozen
# probes over 10 probe seeds and label propagation; fine-tuning with 5 seeds (seed s reads pretraining s mod 3). 2D:
# 96^2 crops of axial slices at 2 mm, the pretext study's 2D setting (BasicUNet(32, ..., 256), batch 8, lr 1e-3);
# fine-tuning on k labelled slices of the lower half of the MNI template, Dice on the upper half. 3D: the --quick
# network and budget.
MEDIUM = {"seeds": (0, 1, 2, 3, 4), "pretrain_seeds": (0, 1, 2), "pretrain_per_seed": True, "probe_seeds": 10,
          "propagation": True, "methods": ("cover", "voxel_infonce"), "curve_points": 5}
PROFILES["medium_2d"] = {
    **COMMON, **MEDIUM, "spatial_dims": 2, "slice_axis": 2, "min_slice_fg": 0.25, "spacing": 2.0, "crop": 96,
    "features": (32, 32, 64, 128, 256, 32), "pretrain_batch": 8, "pretrain_steps": 200, "ft_steps": 100,
    "ft_batch": 4, "ks": (1, 2, 4), "diag_voxels": 4000, "curve_pairs": 16,
    "probe_knn_eval_voxels": 1000,  # per held-out slice (37 of them): the kNN vote was 4/5 of the probes' time
    "method_kwargs": {"voxel_infonce": {"loss_kwargs": {"num_samples": 512, "projection_channels": [64, 64]}}}}
PROFILES["medium_3d"] = {**PROFILES["quick"], **MEDIUM, "curve_pairs": 8}
# CI-sized 2D track: every method on slices of the same volumes
PROFILES["smoke_2d"] = {**PROFILES["smoke"], "spatial_dims": 2, "slice_axis": 2, "min_slice_fg": 0.25,
                        "pretrain_batch": 2}
#: a suite runs profiles one after the other, each in its own sub-folder (``OUT/2d``, ``OUT/3d``), then one report
SUITES = {"medium": {"2d": "medium_2d", "3d": "medium_3d"}, "smoke_suite": {"2d": "smoke_2d", "3d": "smoke"}}

#: command-line options overriding the profile entry of the same name (``--pretrain-steps``): (type, nargs, help)
OVERRIDES = {"ks": (int, "+", "labelled patch counts k"), "seeds": (int, "+", "seeds (patch draw, head init, batches)"),
             "pretrain_seeds": (int, "+", "pretraining seeds, read by the fine-tuning seeds in turn (more seeds "
                                "for a study: --pretrain-seeds 3 4 5 --seeds 5 6 7 8 9, merged with ssl_merge.py)"),
             "pretrain_steps": (int, None, None), "ft_steps": (int, None, None), "ft_lr": (float, None, None),
             "lr": (float, None, "pretraining lr (all methods)"),
             "workers": (int, None, "DataLoader workers for the pretext transforms"),
             "probe_seeds": (int, None, "frozen-feature probes (ssl_probes.py) with N probe seeds; 0/unset: none"),
             "cover_levels": (int, None, "COVER head on the N finest pyramid levels (default: levels_for_size(crop), "
                              "3 for 32^3; capture range 2*(2^N-1) voxels)"),
             "features": (int, "+", "BasicUNet features, 6 channel counts (the last: the decoder's finest level, the "
                          "features the probes read; e.g. 16 16 32 64 128 16 for a wider 3D track)")}


# ============================================================================================== main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    prof = p.add_mutually_exclusive_group()
    for name in (*PROFILES, *SUITES):
        text = f"suite: {', '.join(SUITES[name].values())}" if name in SUITES else f"profile {name!r}"
        prof.add_argument(f"--{name.replace('_', '-')}", dest="profile", action="store_const", const=name, help=text)
    p.set_defaults(profile="quick")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data-dir", default=None, help="fetched data (datalist.json); default OUT/data (fetched)")
    p.add_argument("--methods", nargs="+", default=None, choices=(*METHODS, *VARIANTS),
                   help="default: the profile's")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    for key, (kind, nargs, text) in OVERRIDES.items():
        p.add_argument("--" + key.replace("_", "-"), type=kind, nargs=nargs, default=None, help=text)
    p.add_argument("--pretrain-once", action="store_true", help="pretrain with the first seed only")
    p.add_argument("--pair-kwargs", default={}, type=json.loads,
                   help="JSON of RandCoverPaird arguments for the COVER/InfoNCE views (e.g. ranges, elastic)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def make_config(args: argparse.Namespace, profile: str | None = None) -> dict:
    """The settings of ``profile`` (default ``args.profile``) updated by the command-line :data:`OVERRIDES` and the
    run's options."""
    profile = profile or args.profile
    cfg = copy.deepcopy(PROFILES[profile])
    cfg.update({k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None})
    features = tuple(cfg["features"])
    if len(features) != 6 or min(features) < 1:
        raise ValueError(f"--features: BasicUNet takes 6 positive channel counts, got {list(features)}.")
    cfg.update(profile=profile, device=args.device, amp=bool(args.amp),
               methods=list(args.methods or cfg["methods"]), pair_kwargs=args.pair_kwargs,
               ks=[int(k) for k in cfg["ks"]], seeds=[int(s) for s in cfg["seeds"]], features=features,
               pretrain_per_seed=cfg["pretrain_per_seed"] and not args.pretrain_once)
    return cfg


def seed_plan(cfg: dict) -> list[tuple[int, int, bool]]:
    """``(fine-tuning seed, its pretraining seed, first)`` in run order; ``first``: the first seed to read that
    pretraining, which also runs its probes and propagation (once per pretraining, tagged with its seed)."""
    plan, seen = [], set()
    for seed in cfg["seeds"]:
        pre = pretraining_seed(cfg, seed)
        plan.append((seed, pre, pre not in seen))
        seen.add(pre)
    return plan


def curve_images(cfg: dict, pool: list, task: dict) -> tuple[list, str]:
    """Images of the held-out pretext pairs and what they are: 2D, the evaluation slices of the labelled volume
    (not in the pretraining pool) with at least ``min_slice_fg`` of a crop in foreground; 3D, the pool's volumes
    (new pairs, another seed)."""
    if int(cfg.get("spatial_dims", 3)) == 3:
        return [v for _, v in pool], "new pairs of the pool's volumes"
    stack = task["eval_image"]
    note = "evaluation slices of the labelled volume (held out of pretraining)"
    return [stack[..., z] for z in training.foreground_slices(cfg, stack)], note


def run_profile(cfg: dict, data_dir: Path, out: Path, device, log) -> Path:
    """Pretrain, fine-tune and evaluate every initialisation of ``cfg`` on the data in ``data_dir``; write
    ``results.json`` (after every seed), ``report.md`` and the plots in ``out``; return the report's path."""
    t_start, env = time.time(), report.environment()
    amp = cfg["amp"] and device.type == "cuda"
    out.mkdir(parents=True, exist_ok=True)
    datalist = json.loads((data_dir / "datalist.json").read_text(encoding="utf-8"))
    pool, task, info = load_pool_and_task(datalist, data_dir, cfg)
    names = sorted({n.split("[")[0] for n, _ in pool})
    log(f"data ({cfg['profile']}): pool {len(pool)} images from {names}, split {task['split']}")
    val_images, val_note = curve_images(cfg, pool, task)
    val_pairs = validation_pairs(cfg, val_images) if cfg.get("curve_points") else None
    results: dict[str, Any] = {
        "config": cfg, "environment": {**env, "threads": torch.get_num_threads()}, "pretrain": {}, "runs": [],
        "diagnostics": {}, "timings": {"data_seconds": time.time() - t_start},
        "data": {"pool": names, "pool_images": len(pool), "volumes": info, "split": task["split"],
                 "labels": LABEL_NAMES, "data_dir": str(data_dir), "curve_pairs": val_note,
                 "loader": f"{BUNDLE_CONFIG.relative_to(ROOT)}#loader_transforms"}}
    states: dict[tuple[str, int], tuple] = {}  # (init, pretraining seed) -> (backbone state, CoverNet state)
    for seed, pre_seed, first in seed_plan(cfg):
        for method in cfg["methods"]:
            if (method, pre_seed) not in states:
                log(f"pretraining {method} (seed {pre_seed})")
                state, losses, secs, terms, curve, net = pretrain(method, cfg, pool, pre_seed, device, amp, log,
                                                                  val_pairs)
                states[(method, pre_seed)] = (state, net)
                results["pretrain"].setdefault(method, {})[str(pre_seed)] = {"losses": losses, "seconds": secs,
                                                                             "terms": terms, "curve": curve}
        states[("scratch", pre_seed)] = (None, None)
        boxes = draw_patches(task["train_label"], patch_shape(cfg), max(cfg["ks"]), seed)
        for init in ("scratch", *cfg["methods"]):
            state, net = states[(init, pre_seed)]
            results["diagnostics"].setdefault(init, {})[str(seed)] = diagnostics(cfg, state, task, seed, device)
            if cfg.get("probe_seeds") and first:
                results.setdefault("probes", {}).setdefault(init, []).extend(
                    frozen_probes(cfg, state, task, pre_seed, device))
            if cfg.get("propagation") and first:
                t = time.time()
                results.setdefault("propagation", {}).setdefault(init, []).extend(
                    propagation(cfg, init, state, net, task, pre_seed, device))
                results["timings"]["propagation_seconds"] = results["timings"].get("propagation_seconds", 0) + (
                    time.time() - t)
            for k in cfg["ks"]:
                r = finetune_and_evaluate(cfg, state, task, boxes[:k], seed, device, amp)
                r.update(init=init, k=k, seed=seed, pretrain_seed=pre_seed, patches=[list(b) for b in boxes[:k]])
                results["runs"].append(r)
                log(f"  {init:>13} seed {seed} k={k}: Dice {r['dice_mean']:.4f} "
                    f"{ {c: round(v, 3) for c, v in r['dice'].items()} } (ft {r['ft_seconds']:.0f} s)")
        results["summary"] = report.summarise(results["runs"], ("scratch", *cfg["methods"]), cfg["ks"])
        report.write_json(out / "results.json", results)  # partial results after every seed
    path = report.finish(out, results, t_start)
    tables = _probes.probe_report_lines(results["probes"], cfg["ks"]) if results.get("probes") else []
    if results.get("propagation"):
        tables += ["", *_propagation.propagation_report_lines(results["propagation"])]
    if tables:  # the read-outs' tables after the fine-tuning report
        path.write_text(path.read_text(encoding="utf-8") + "\n" + "\n".join(tables) + "\n", encoding="utf-8")
    log(f"{cfg['profile']} done in {results['timings']['total_seconds']:.0f} s; report: {path}")
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.time()
    torch.set_num_threads(max(1, args.threads))
    device, out = torch.device(args.device), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.time() - t_start:7.1f} s] {msg}", flush=True)

    tracks = SUITES.get(args.profile, {"": args.profile})
    configs = {track: make_config(args, profile) for track, profile in tracks.items()}
    data_dir = Path(args.data_dir) if args.data_dir else out / "data"
    if not (data_dir / "datalist.json").exists():  # fetch what the installed wheels ship
        fine = min(c["spacing"] for c in configs.values()) < 2
        _load_script("fetch_real_data", ROOT / "benchmarks" / "data" / "fetch_real_data.py").fetch(
            data_dir, sources=("nilearn", "slicerio", "nibabel"), mni_resolution=1 if fine else 2,
            verbose=not args.quiet)
    paths = {track: run_profile(cfg, data_dir, out / track if track else out, device, log)
             for track, cfg in configs.items()}
    if args.profile in SUITES:
        results = {t: json.loads((p.parent / "results.json").read_text(encoding="utf-8")) for t, p in paths.items()}
        path = report.write_suite_report(out, args.profile, results, time.time() - t_start)
        readouts = [line for t, r in results.items() for line in [f"## Track {t}: read-outs", "", *(
            _probes.probe_report_lines(r["probes"], r["config"]["ks"]) if r.get("probes") else []), "", *(
            _propagation.propagation_report_lines(r["propagation"]) if r.get("propagation") else []), ""]]
        path.write_text(path.read_text(encoding="utf-8") + "\n".join(readouts), encoding="utf-8")
    else:
        path = paths[""]
    log(f"done in {time.time() - t_start:.0f} s; report: {path}")
    if not args.quiet:
        print(path.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
