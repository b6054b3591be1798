#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""Training and evaluation pieces of ``ssl_benchmark.py`` (its protocol and profiles stay there): the networks and
methods of a profile, pretraining with held-out pretext metrics, fine-tuning and Dice, the dispersion diagnostics
and the frozen-feature probes of one backbone. Loaded by path (``benchmarks/`` is not a package); every name is
also reachable as ``ssl_benchmark.<name>``."""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from pathlib import Path

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
from monai_cover.methods import build_method, method_kwargs
from monai_cover.metrics.dispersion import dispersion_report
from monai_cover.networks import CoverNet, FeaturePyramid, TwoViewFeatures, levels_for_size
from monai_cover.transforms import RandCoverPaird

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str, path: Path):
    """A module of ``benchmarks/`` by path (no package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = load_script("ssl_report", ROOT / "benchmarks" / "report.py")
_data = load_script("ssl_data", ROOT / "benchmarks" / "ssl_data.py")
_probes = load_script("ssl_probes", ROOT / "benchmarks" / "ssl_probes.py")  # frozen-feature probes (issue 18)
_propagation = load_script("ssl_propagation", ROOT / "benchmarks" / "ssl_propagation.py")  # label propagation
PretextSamples, patch_batches, draw_patches = _data.PretextSamples, _data.patch_batches, _data.draw_patches
LABEL_NAMES = {k: v for k, v in MNI152_TISSUE_NAMES.items() if k}  # the fetched MNI labels: other, GM, WM
N_CLASSES = len(MNI152_TISSUE_NAMES)  # background + 3

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


def is_cover(name: str, cfg: dict) -> bool:
    """COVER or one of the profile's COVER variants (``cfg["variants"]``)."""
    return name == "cover" or name in cfg.get("variants", {})


def build(name: str, cfg: dict):
    """``(unet, method)``: a fresh :func:`make_unet` and :func:`monai_cover.methods.build_method` around its
    ``FeaturePyramid`` (COVER's head on the ``cover_levels`` finest levels, default ``levels_for_size(crop)``), the
    library's per-method defaults updated by ``cfg["method_kwargs"][name]``, COVER and voxel InfoNCE on the same
    ``RandCoverPaird`` pairs, bounded by the head's reach ``capture_range(2, levels)``."""
    crop, levels, cover = crop_shape(cfg), cover_levels(cfg), is_cover(name, cfg)
    variant = cfg.get("variants", {}).get(name, {})  # {"net": CoverNet kwargs, "loss": CoverLoss kwargs}
    unet = make_unet(cfg)
    backbone = FeaturePyramid(unet, levels=levels if cover else None)
    pair = RandCoverPaird(keys="image", spatial_size=crop, keep_input=False,
                          **pair_kwargs(cfg, levels)) if cover or name == "voxel_infonce" else None
    parts = dict(cover_net=CoverNet(backbone, **variant.get("net", {})),
                 cover_loss=CoverLoss(**variant.get("loss", {}))) if cover else {}
    base = "cover" if cover else name
    # a teacher-forced head reads the true field while training (its residual targets)
    prepare = CoverPrepareBatch(network_ddf=bool(variant.get("net", {}).get("teacher_forced_levels")))
    return unet, build_method(base, backbone, cover_prepare_batch=prepare, pair_transform=pair, **parts,
                              **method_kwargs(base, crop, **cfg["method_kwargs"].get(name, {})))


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
    features within 2 voxels), ``local_w3`` (the best match among the voxels within 3 of the true one is within 1
    voxel of it: local matching, issue 18's acceptance metric), ``rank`` / ``cosine`` (effective rank, mean pairwise
    cosine: collapse), ``overlap_cos`` and, for a network that predicts a field, ``epe_ratio`` (end-point error /
    that of zero)."""
    from monai_cover.metrics import (
        CorrespondenceAccuracyMetric,
        DDFEndPointErrorMetric,
        FeatureCollapseMetric,
        OverlapCosineMetric,
    )

    metrics = {"nn_corr": CorrespondenceAccuracyMetric(num_samples=256, tolerance=2.0),
               "local_w3": CorrespondenceAccuracyMetric(num_samples=256, tolerance=1.0, window=3),
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
    eval_net = network if is_cover(name, cfg) else TwoViewFeatures(FeaturePyramid(unet)).to(device)

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
        if not is_cover(name, cfg):
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
    net_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()} if is_cover(name, cfg) else None
    return {k: v.detach().cpu().clone() for k, v in unet.state_dict().items()}, losses, seconds, terms, curve, net_state


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


def foreground_slices(cfg: dict, stack: torch.Tensor) -> list[int]:
    """Slices (last axis) of a 2D track's ``(1, X, Y, Z)`` stack with at least ``cfg["min_slice_fg"]`` of a crop in
    foreground: the held-out slices worth a pretext pair or a propagation source."""
    return _data.foreground_slices(stack, stack.ndim - 2, float(cfg["min_slice_fg"]) * cfg["crop"] ** 2)


def propagation(cfg: dict, name: str, state: dict | None, net_state: dict | None, task: dict, seed: int,
                device) -> list[dict]:
    """Label-propagation records (``ssl_propagation.py``) of the backbone ``state`` (``None``: the random init of
    ``seed``), through its finest features and, for COVER (``net_state``: its ``CoverNet``), its predicted field;
    each tagged with ``seed``."""
    backbone = FeaturePyramid(init_segmenter(cfg, state, seed)).to(device)
    cover_net = None
    if net_state is not None:
        _, method = build(name, cfg)
        cover_net = method.network
        cover_net.load_state_dict(net_state)
        cover_net.to(device)

    recs = _propagation.propagation_records(backbone, cover_net, task, cfg, N_CLASSES,
                                            lambda stack: foreground_slices(cfg, stack), device)
    return [{**r, "seed": seed} for r in recs]


def frozen_probes(cfg: dict, state: dict | None, task: dict, seed: int, device) -> list[dict]:
    """Frozen-feature probe records (``ssl_probes.py``: linear on the finest level and the hypercolumn, kNN) of the
    backbone ``state`` (``None``: the random init of ``seed``), each tagged with ``seed``."""
    net = FeaturePyramid(init_segmenter(cfg, state, seed)).to(device)
    recs = _probes.frozen_probes(net, task, cfg, N_CLASSES, draw_patches, patch_shape(cfg), device)
    return [{**r, "seed": seed} for r in recs]
