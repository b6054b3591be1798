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
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if importlib.util.find_spec("monai_cover") is None:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ignite.engine import Events
from monai.engines import PrepareBatchDefault, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.handlers import LrScheduleHandler
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import BasicUNet
from monai.networks.utils import one_hot
from monai.optimizers import WarmupCosineSchedule

from monai_cover import load_pretrained
from monai_cover.data.demo import MNI152_TISSUE_NAMES
from monai_cover.ddf import capture_range
from monai_cover.engines import CoverPrepareBatch
from monai_cover.handlers import GradientClipHandler
from monai_cover.losses import CoverLoss
from monai_cover.methods import METHODS, build_method, method_kwargs
from monai_cover.metrics.dispersion import dispersion_report
from monai_cover.networks import CoverNet, FeaturePyramid, TwoViewFeatures, levels_for_size
from monai_cover.transforms import RandCoverPaird

ROOT = Path(__file__).resolve().parents[1]


def _load_script(name: str, path: Path):
    """A module of ``benchmarks/`` by path (no package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _load_script("ssl_report", ROOT / "benchmarks" / "report.py")
_data = _load_script("ssl_data", ROOT / "benchmarks" / "ssl_data.py")
loader_chains, load_pool_and_task, draw_patches = _data.loader_chains, _data.load_pool_and_task, _data.draw_patches
PretextSamples, patch_batches, BUNDLE_CONFIG = _data.PretextSamples, _data.patch_batches, _data.BUNDLE_CONFIG
_probes = _load_script("ssl_probes", ROOT / "benchmarks" / "ssl_probes.py")  # frozen-feature probes (issue 18)
INITS = ("scratch",) + METHODS
LABEL_NAMES = {k: v for k, v in MNI152_TISSUE_NAMES.items() if k}  # the fetched MNI labels: other, GM, WM
N_CLASSES = len(MNI152_TISSUE_NAMES)  # background + 3

# A profile is a plain dict (a new one: ``{**PROFILES["quick"], ...}``; its ``--name`` flag comes for free). Units:
# spacing mm, crop voxels per axis, *_steps optimiser steps, *_batch volumes/patches per step, warmup_steps 0 = constant
# lr. ``method_kwargs[name]`` updates the library's per-method defaults (:func:`monai_cover.methods.method_kwargs`).
COMMON: dict[str, Any] = dict(spatial_dims=3, pretrain_batch=1, ft_batch=2, lr=1e-3, ft_lr=1e-3, weight_decay=1e-5,
                              grad_clip=1.0, warmup_steps=0, sw_overlap=0.0, sw_batch=4, workers=0, cover_levels=None,
                              methods=METHODS, curve_points=0, curve_pairs=8)
PROFILES: dict[str, dict[str, Any]] = {
    # CI-sized: every method end to end on tiny sizes (one seed, one k, a couple of steps)
    "smoke": {**COMMON, "spacing": 3.0, "crop": 32, "features": (2, 2, 4, 4, 8, 2), "pretrain_steps": 2, "ft_steps": 2,
              "ft_batch": 1, "ks": (1,), "seeds": (0,), "diag_voxels": 500, "pretrain_per_seed": True,
              "curve_points": 1, "curve_pairs": 2,
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
# --medium: a 2D and a 3D track on 2 CPU cores within an hour, 3 pretraining seeds of COVER and voxel InfoNCE (the
# comparisons that matter), pretext metrics on held-out pairs at 6 points of every pretraining (``curve_points``).
# 2D: 96^2 crops of axial slices at 2 mm, the pretext study's 2D setting (BasicUNet(32, ..., 256), batch 8, lr 1e-3);
# fine-tuning on k labelled slices of the lower half of the MNI template, Dice on the upper half.
PROFILES["medium_2d"] = {
    **COMMON, "spatial_dims": 2, "slice_axis": 2, "min_slice_fg": 0.25, "spacing": 2.0, "crop": 96,
    "features": (32, 32, 64, 128, 256, 32), "pretrain_batch": 8, "pretrain_steps": 200, "ft_steps": 100,
    "ft_batch": 4, "ks": (1, 2, 4), "seeds": (0, 1, 2), "diag_voxels": 4000, "pretrain_per_seed": True,
    "methods": ("cover", "voxel_infonce"), "curve_points": 5, "curve_pairs": 16,
    "method_kwargs": {"voxel_infonce": {"loss_kwargs": {"num_samples": 512, "projection_channels": [64, 64]}}}}
PROFILES["medium_3d"] = {**PROFILES["quick"], "seeds": (0, 1, 2), "pretrain_per_seed": True,
                         "methods": ("cover", "voxel_infonce"), "curve_points": 5, "curve_pairs": 8}
# CI-sized 2D track: every method on slices of the same volumes
PROFILES["smoke_2d"] = {**PROFILES["smoke"], "spatial_dims": 2, "slice_axis": 2, "min_slice_fg": 0.25,
                        "pretrain_batch": 2}
#: a suite runs profiles one after the other, each in its own sub-folder (``OUT/2d``, ``OUT/3d``), then one report
SUITES = {"medium": {"2d": "medium_2d", "3d": "medium_3d"}, "smoke_suite": {"2d": "smoke_2d", "3d": "smoke"}}

#: command-line options overriding the profile entry of the same name (``--pretrain-steps``): (type, nargs, help)
OVERRIDES = {"ks": (int, "+", "labelled patch counts k"), "seeds": (int, "+", "seeds (patch draw, head init, batches)"),
             "pretrain_steps": (int, None, None), "ft_steps": (int, None, None), "ft_lr": (float, None, None),
             "lr": (float, None, "pretraining lr (all methods)"),
             "workers": (int, None, "DataLoader workers for the pretext transforms"),
             "probe_seeds": (int, None, "frozen-feature probes (ssl_probes.py) with N probe seeds; 0/unset: none"),
             "cover_levels": (int, None, "COVER head on the N finest pyramid levels (default: levels_for_size(crop), "
                              "3 for 32^3; capture range 2*(2^N-1) voxels)")}


# ============================================================================================== training
def crop_shape(cfg: dict) -> tuple[int, ...]:
    """The crop of the track: ``(crop,) * spatial_dims``."""
    return (int(cfg["crop"]),) * int(cfg.get("spatial_dims", 3))


def make_unet(cfg: dict) -> torch.nn.Module:
    return BasicUNet(spatial_dims=int(cfg.get("spatial_dims", 3)), in_channels=1, out_channels=N_CLASSES,
                     features=tuple(cfg["features"]))


def pair_kwargs(cfg: dict, levels: int) -> dict:
    """``RandCoverPaird`` arguments of COVER and voxel InfoNCE: views bounded by the head's reach
    ``capture_range(2, levels)``, updated by ``cfg["pair_kwargs"]``."""
    return {"max_displacement": capture_range(2, levels), **cfg.get("pair_kwargs", {})}


def cover_levels(cfg: dict) -> int:
    """COVER's head levels: ``cfg["cover_levels"]`` or the library's default, matched to the crop."""
    return int(cfg.get("cover_levels") or levels_for_size(crop_shape(cfg)))


def build(name: str, cfg: dict):
    """``(unet, method)``: a fresh :func:`make_unet` and :func:`monai_cover.methods.build_method` around its
    ``FeaturePyramid`` (COVER's head on the ``cover_levels`` finest levels, default ``levels_for_size(crop)``), the
    library's per-method defaults updated by ``cfg["method_kwargs"][name]``, COVER and voxel InfoNCE on the same
    ``RandCoverPaird`` pairs, bounded by the head's reach ``capture_range(2, levels)``."""
    crop, levels = crop_shape(cfg), cover_levels(cfg)
    unet = make_unet(cfg)
    backbone = FeaturePyramid(unet, levels=levels if name == "cover" else None)
    pair = RandCoverPaird(keys="image", spatial_size=crop, keep_input=False,
                          **pair_kwargs(cfg, levels)) if name in ("cover", "voxel_infonce") else None
    cover = dict(cover_net=CoverNet(backbone), cover_loss=CoverLoss()) if name == "cover" else {}
    return unet, build_method(name, backbone, cover_prepare_batch=CoverPrepareBatch(), pair_transform=pair, **cover,
                              **method_kwargs(name, crop, **cfg["method_kwargs"].get(name, {})))


def make_trainer(network, loss, optimizer, prepare_batch, data, steps: int, device, amp: bool, handlers=()):
    """MONAI's ``SupervisedTrainer``: ``steps`` iterations of ``data`` (one epoch), bfloat16 autocast on CUDA when
    ``amp``, outputs left collated (``engine.state.output["loss"]``, ``["pred"]``, ``["label"]``)."""
    return SupervisedTrainer(device=device, max_epochs=1, epoch_length=int(steps), train_data_loader=data,
                             network=network, optimizer=optimizer, loss_function=loss, prepare_batch=prepare_batch,
                             train_handlers=list(handlers), amp=amp, amp_kwargs={"dtype": torch.bfloat16},
                             decollate=False, optim_set_to_none=True)


def validation_pairs(cfg: dict, images: list, seed: int = 4321) -> list[dict]:
    """``cfg["curve_pairs"]`` held-out COVER pairs ``{"view_a", "view_b", "ddf", "overlap"}`` (each ``(1, ...)``)
    of ``images`` (``(1, *S)`` tensors), drawn by the pretraining's own ``RandCoverPaird`` settings, seeded."""
    pair = RandCoverPaird(keys="image", spatial_size=crop_shape(cfg), keep_input=False,
                          **pair_kwargs(cfg, cover_levels(cfg)))
    pair.set_random_state(seed=seed)
    rng, pairs = np.random.default_rng(seed), []
    for _ in range(int(cfg["curve_pairs"])):
        out = pair({"image": images[int(rng.integers(len(images)))]})
        pairs.append({k: torch.as_tensor(out[k].as_tensor() if hasattr(out[k], "as_tensor") else out[k])[None].float()
                      for k in ("view_a", "view_b", "ddf", "overlap")})
    return pairs


def pretext_metrics(network: torch.nn.Module, pairs: list[dict], device) -> dict[str, float]:
    """The library's pretext metrics of ``network`` (a ``CoverNet``, or any two-view network returning
    ``features_a``/``features_b``) on held-out ``pairs``: ``nn_corr`` (nearest-neighbour correspondence of the finest
    features within 2 voxels), ``rank`` / ``cosine`` (effective rank, mean pairwise cosine: collapse),
    ``overlap_cos`` and, for a network that predicts a field, ``epe_ratio`` (end-point error / that of zero)."""
    from monai_cover.metrics import (
        CorrespondenceAccuracyMetric,
        DDFEndPointErrorMetric,
        FeatureCollapseMetric,
        OverlapCosineMetric,
    )

    metrics = {"nn_corr": CorrespondenceAccuracyMetric(num_samples=256, tolerance=2.0),
               "rank": FeatureCollapseMetric("effective_rank"), "cosine": FeatureCollapseMetric("mean_cosine"),
               "overlap_cos": OverlapCosineMetric(), "epe_ratio": DDFEndPointErrorMetric(relative=True)}
    was_training = network.training
    network.eval()
    with torch.no_grad():
        for p in pairs:
            out = network(p["view_a"].to(device), p["view_b"].to(device))
            target = {"ddf": p["ddf"].to(device), "overlap": p["overlap"].to(device)}
            for key, m in metrics.items():
                if key != "epe_ratio" or "ddf" in out:
                    m(out, target)
    network.train(was_training)
    return {k: float(m.aggregate()) for k, m in metrics.items() if k != "epe_ratio" or m.get_buffer() is not None}


def pretrain(name: str, cfg: dict, pool: list, seed: int, device, amp: bool, log,
             val_pairs: list | None = None) -> tuple[dict, list, float, dict, list]:
    """Pretrain ``name`` for ``cfg['pretrain_steps']`` steps; return ``(BasicUNet state_dict, losses, seconds,
    terms, curve)``, terms = COVER's per-step loss terms (``vector``, ``consistency``, ...) and ``zero_ddf_l1`` (the
    vector L1 of predicting zero displacement); curve = :func:`pretext_metrics` on ``val_pairs`` at step 0 and
    ``cfg["curve_points"]`` evenly spaced steps (``[]`` without pairs), each with its ``step``. The evaluation time is
    not in ``seconds``."""
    torch.manual_seed(seed)
    unet, method = build(name, cfg)
    network, loss_fn, steps = method.network.to(device), method.loss.to(device), int(cfg["pretrain_steps"])
    opt = torch.optim.AdamW(method.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    keys = [*method.prepare_batch.input_keys, *method.prepare_batch.target_keys]
    loader = torch.utils.data.DataLoader(PretextSamples(pool, method.transform, keys, seed),
                                         batch_size=cfg["pretrain_batch"], num_workers=cfg["workers"])
    handlers = [GradientClipHandler(cfg["grad_clip"])]
    if cfg["warmup_steps"]:  # the bundle's schedule (no profile uses one yet)
        handlers.insert(0, LrScheduleHandler(WarmupCosineSchedule(opt, cfg["warmup_steps"], steps), epoch_level=False))
    trainer = make_trainer(network, loss_fn, opt, method.prepare_batch, loader, steps, device, amp, handlers)
    losses, terms, curve, eval_seconds = [], {}, [], 0.0
    points = int(cfg.get("curve_points") or 0) if val_pairs else 0
    eval_net = network if name == "cover" else TwoViewFeatures(FeaturePyramid(unet)).to(device)

    def _evaluate(step: int) -> None:
        nonlocal eval_seconds
        t = time.time()
        curve.append({"step": step, **pretext_metrics(eval_net, val_pairs, device)})
        eval_seconds += time.time() - t
        log(f"    {name} seed {seed} step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in curve[-1].items()
                                                             if k != "step"))

    if points:
        _evaluate(0)
    t0, eval_seconds = time.time(), 0.0

    @trainer.on(IterationEvents.FORWARD_COMPLETED)
    def _terms(engine) -> None:  # COVER's terms, drawn from the random state the loss then draws from (forked)
        if name != "cover":
            return
        out = engine.state.output
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            t = {k: v.item() for k, v in loss_fn.terms(out["pred"], out["label"]).items()}
        ddf, ov = out["label"]["ddf"].float(), out["label"]["overlap"].float()
        t["zero_ddf_l1"] = float((ddf.abs().sum(1, keepdim=True) * ov).sum() / ov.sum().clamp_min(1))
        for k, v in t.items():
            terms.setdefault(k, []).append(v)

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine) -> None:
        step = engine.state.iteration
        losses.append(engine.state.output["loss"].item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"{name}: non-finite pretraining loss at step {step - 1}.")
        if (step - 1) % max(1, steps // 5) == 0 or step == steps:
            log(f"    {name} seed {seed} step {step}/{steps} loss {losses[-1]:.4f} ({time.time() - t0:.0f} s)")
        if points and (step % max(1, steps // points) == 0 or step == steps) and curve[-1]["step"] != step:
            _evaluate(step)

    trainer.run()
    seconds = time.time() - t0 - eval_seconds
    return {k: v.detach().cpu().clone() for k, v in unet.state_dict().items()}, losses, seconds, terms, curve


def init_segmenter(cfg: dict, state: dict | None, seed: int) -> torch.nn.Module:
    """The fine-tuning ``BasicUNet`` seeded ``50_000 + seed`` (same init for every method, ``final_conv`` included),
    with ``state`` loaded into every layer but ``final_conv`` (``None``: scratch, nothing loaded).

    Raises:
        RuntimeError: ``state`` leaves a layer other than ``final_conv`` unloaded, or holds keys it does not use.
    """
    torch.manual_seed(50_000 + seed)
    net = make_unet(cfg)
    if state is not None:
        rep = load_pretrained(net, state, exclude=r"^final_conv\.", partial=True)  # checked below
        if rep.missing or rep.unexpected or rep.mismatched or not rep.excluded:
            raise RuntimeError(f"pretrained weights do not fit the segmentation BasicUNet: {rep}; missing "
                               f"{rep.missing[:5]}, unexpected {rep.unexpected[:5]}, mismatched {rep.mismatched}.")
    return net


def patch_shape(cfg: dict) -> tuple[int, ...]:
    """A labelled patch in the task's ``(1, X, Y, Z)`` volume: the crop (3D) or a crop of one slice (2D, the slices
    along the last axis)."""
    return crop_shape(cfg) if int(cfg.get("spatial_dims", 3)) == 3 else (int(cfg["crop"]),) * 2 + (1,)


def finetune_and_evaluate(cfg: dict, state: dict | None, task: dict, boxes: list, seed: int, device, amp: bool) -> dict:
    """Fine-tune :func:`init_segmenter` on the patches at ``boxes`` (``SupervisedTrainer``, DiceCE); return the Dice
    per class on the evaluation half (3D) or the evaluation slices (2D, scored as one stack) by sliding window,
    ``dice_mean``, the last training loss and the seconds."""
    crop, net, dims = cfg["crop"], init_segmenter(cfg, state, seed).to(device), int(cfg.get("spatial_dims", 3))
    size = patch_shape(cfg)
    windows = [(slice(None), *(slice(a, a + c) for a, c in zip(o, size))) for o in boxes]

    def patches(x: torch.Tensor) -> torch.Tensor:  # (k, 1, *crop); the 2D track's one-slice windows lose that axis
        return torch.stack([x[w] if dims == 3 else x[w][..., 0] for w in windows])

    data = patch_batches(patches(task["train_image"]), patches(task["train_label"]), cfg["ft_batch"], seed)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["ft_lr"], weight_decay=cfg["weight_decay"])
    trainer = make_trainer(net, DiceCELoss(to_onehot_y=True, softmax=True), opt, PrepareBatchDefault(), data,
                           cfg["ft_steps"], device, amp)
    t0 = time.time()
    trainer.run()
    ft_seconds = time.time() - t0
    net.eval()
    image = task["eval_image"][None] if dims == 3 else task["eval_image"].movedim(-1, 0)  # 2D: slices as a batch
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        logits = sliding_window_inference(image.to(device), (crop,) * dims, cfg["sw_batch"], net,
                                          overlap=cfg["sw_overlap"])
    if dims == 2:  # (Z, C, X, Y) -> (1, C, X, Y, Z): the evaluation slices scored as one stack
        logits = logits.movedim(0, -1)[None]
    pred = one_hot(logits.float().argmax(1, keepdim=True), N_CLASSES)
    gt = one_hot(task["eval_label"][None].to(device), N_CLASSES)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(pred, gt)[0].cpu()
    per_class = {LABEL_NAMES[i + 1]: float(dice[i]) for i in range(N_CLASSES - 1)}
    return {"dice": per_class, "dice_mean": float(np.mean(list(per_class.values()))), "ft_seconds": ft_seconds,
            "final_train_loss": trainer.state.output["loss"].item(), "eval_seconds": time.time() - t0 - ft_seconds}


def diagnostics(cfg: dict, state: dict | None, task: dict, seed: int, device) -> dict:
    """Over-dispersion of the backbone's finest features on the evaluation half (``None``: the random init)."""
    image, label = task["eval_image"], task["eval_label"]
    if int(cfg.get("spatial_dims", 3)) == 2:  # the evaluation slices as a batch
        image, label = image.movedim(-1, 0), label.movedim(-1, 0)
    rep = dispersion_report(FeaturePyramid(init_segmenter(cfg, state, seed)).to(device), image, label,
                            roi_size=crop_shape(cfg), max_voxels=cfg["diag_voxels"],
                            generator=torch.Generator().manual_seed(seed), collapse_metric=False)
    return {k: rep[k] for k in (*report.DIAG_KEYS, "max_rank", "num_voxels", "num_sampled", "per_class")}


def frozen_probes(cfg: dict, state: dict | None, task: dict, seed: int, device) -> list[dict]:
    """Frozen-feature probe records (``ssl_probes.py``: linear on the finest level and the hypercolumn, kNN) of the
    backbone ``state`` (``None``: the random init of ``seed``), each tagged with ``seed``."""
    net = FeaturePyramid(init_segmenter(cfg, state, seed)).to(device)
    recs = _probes.frozen_probes(net, task, cfg, N_CLASSES, draw_patches, patch_shape(cfg), device)
    return [{**r, "seed": seed} for r in recs]


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
    p.add_argument("--methods", nargs="+", default=None, choices=METHODS, help="default: the profile's")
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
    cfg.update(profile=profile, device=args.device, amp=bool(args.amp),
               methods=list(args.methods or cfg["methods"]), pair_kwargs=args.pair_kwargs,
               ks=[int(k) for k in cfg["ks"]], seeds=[int(s) for s in cfg["seeds"]],
               pretrain_per_seed=cfg["pretrain_per_seed"] and not args.pretrain_once)
    return cfg


def curve_images(cfg: dict, pool: list, task: dict) -> tuple[list, str]:
    """Images of the held-out pretext pairs and what they are: 2D, the evaluation slices of the labelled volume
    (not in the pretraining pool) with at least ``min_slice_fg`` of a crop in foreground; 3D, the pool's volumes
    (new pairs, another seed)."""
    if int(cfg.get("spatial_dims", 3)) == 3:
        return [v for _, v in pool], "new pairs of the pool's volumes"
    stack = task["eval_image"]
    keep = _data.foreground_slices(stack, stack.ndim - 2, float(cfg["min_slice_fg"]) * cfg["crop"] ** 2)
    return [stack[..., z] for z in keep], "evaluation slices of the labelled volume (held out of pretraining)"


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
    states: dict[tuple[str, int], dict | None] = {}
    for seed in cfg["seeds"]:
        pre_seed = seed if cfg["pretrain_per_seed"] else cfg["seeds"][0]
        for method in cfg["methods"]:
            if (method, pre_seed) not in states:
                log(f"pretraining {method} (seed {pre_seed})")
                state, losses, secs, terms, curve = pretrain(method, cfg, pool, pre_seed, device, amp, log, val_pairs)
                states[(method, pre_seed)] = state
                results["pretrain"].setdefault(method, {})[str(pre_seed)] = {"losses": losses, "seconds": secs,
                                                                             "terms": terms, "curve": curve}
            states[(method, seed)] = states[(method, pre_seed)]
        states[("scratch", seed)] = None
        boxes = draw_patches(task["train_label"], patch_shape(cfg), max(cfg["ks"]), seed)
        for init in ("scratch", *cfg["methods"]):
            state = states[(init, seed)]
            results["diagnostics"].setdefault(init, {})[str(seed)] = diagnostics(cfg, state, task, seed, device)
            if cfg.get("probe_seeds"):
                results.setdefault("probes", {}).setdefault(init, []).extend(
                    frozen_probes(cfg, state, task, seed, device))
            for k in cfg["ks"]:
                r = finetune_and_evaluate(cfg, state, task, boxes[:k], seed, device, amp)
                r.update(init=init, k=k, seed=seed, patches=[list(b) for b in boxes[:k]])
                results["runs"].append(r)
                log(f"  {init:>13} seed {seed} k={k}: Dice {r['dice_mean']:.4f} "
                    f"{ {c: round(v, 3) for c, v in r['dice'].items()} } (ft {r['ft_seconds']:.0f} s)")
        results["summary"] = report.summarise(results["runs"], INITS, cfg["ks"])
        report.write_json(out / "results.json", results)  # partial results after every seed
    path = report.finish(out, results, t_start)
    if results.get("probes"):  # the probes' tables after the fine-tuning report
        tables = "\n".join(_probes.probe_report_lines(results["probes"], cfg["ks"]))
        path.write_text(path.read_text(encoding="utf-8") + "\n" + tables + "\n", encoding="utf-8")
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
    else:
        path = paths[""]
    log(f"done in {time.time() - t_start:.0f} s; report: {path}")
    if not args.quiet:
        print(path.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
