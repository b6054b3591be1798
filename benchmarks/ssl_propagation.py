# SPDX-License-Identifier: Apache-2.0
"""Label propagation of ``ssl_benchmark.py`` (issue 18): each method's own correspondence carries a label from one
image to another, with no training on labels. Loaded by path (``benchmarks/`` is not a package).

- **2D track**: from a labelled slice of the held-out stack to the slices ``d`` away (both directions), Dice per
  class pooled over ``prop_sources`` source slices, for each ``d`` in ``prop_distances`` (slices of ``spacing`` mm).
- **3D track**: from the labelled training half, mirrored across the split axis, onto the held-out half (the other
  hemisphere of the template: another anatomy, the nearest thing to another subject that the data has).

Routes: ``features`` (every initialisation: windowed soft nearest neighbours of the finest features within
``prop_radius`` voxels, :func:`monai_cover.metrics.propagate_labels_with_features`), ``field`` (COVER: the label
warped by the field its head predicts between the two images, :func:`monai_cover.metrics.propagate_labels_with_ddf`)
and ``identity`` (the source label unchanged: what any route must beat).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from monai_cover.metrics import (
    dice_vs_distance,
    extract_pyramids,
    label_dice,
    paired_bootstrap,
    propagate_labels_with_ddf,
    propagate_labels_with_features,
)

#: settings (a profile may override any): source slices, slice distances, feature window half-width (voxels),
#: softmax temperature on the cosine, padding multiple of the networks (2^levels of the BasicUNet)
PROPAGATION_DEFAULTS = {"prop_sources": 4, "prop_distances": (1, 2, 4, 8), "prop_radius": 3,
                        "prop_temperature": 0.1, "prop_multiple": 16}


def _setting(cfg: dict, key: str):
    return cfg.get(key, PROPAGATION_DEFAULTS[key])


def _pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` ``(C, *S)`` zero-padded at the end of every spatial axis to a multiple of ``multiple``."""
    pads = []
    for size in reversed(x.shape[1:]):
        pads += [0, (-size) % multiple]
    return F.pad(x, pads)


def _crop(x: torch.Tensor, shape) -> torch.Tensor:
    return x[(..., *(slice(0, s) for s in shape))]


def _routes(backbone, cover_net, images: list[torch.Tensor], cfg: dict, num_classes: int, device) -> dict:
    """``{route: propagate(i, j, label_i) -> label on image j}`` over ``images`` ``(1, *S)`` of one shape."""
    shape, multiple = images[0].shape[1:], int(_setting(cfg, "prop_multiple"))
    padded = [_pad(im.float(), multiple) for im in images]
    finest = [_crop(p[-1], shape) for p in extract_pyramids(backbone, padded, device)]
    radius, temperature = int(_setting(cfg, "prop_radius")), float(_setting(cfg, "prop_temperature"))

    def by_features(i: int, j: int, label: torch.Tensor) -> torch.Tensor:
        return propagate_labels_with_features(finest[i][None], label[None], finest[j][None], num_classes,
                                              radius=radius, temperature=temperature)[0]

    routes: dict[str, Callable] = {"identity": lambda i, j, label: label, "features": by_features}
    if cover_net is not None:
        def by_field(i: int, j: int, label: torch.Tensor) -> torch.Tensor:
            # view_b(p) = view_a(p + ddf(p)): the source is view a, the target view b
            with torch.no_grad():
                ddf = cover_net(padded[i][None].to(device), padded[j][None].to(device))["ddf"].float().cpu()
            return _crop(propagate_labels_with_ddf(_pad(label, multiple)[None], ddf)[0], shape)

        routes["field"] = by_field
    return routes


def propagation_records(backbone: torch.nn.Module, cover_net: torch.nn.Module | None, task: dict, cfg: dict,
                        num_classes: int, foreground: Callable, device) -> list[dict]:
    """Records ``{"route", "distance" ("mirror" in 3D), "dice": [per class], "dice_mean"}`` of one initialisation.

    Args:
        backbone: its ``FeaturePyramid`` (finest level last).
        cover_net: COVER's ``CoverNet`` (head included) for the ``field`` route, else ``None``.
        task: ``eval_*`` (2D: ``(1, X, Y, Z)`` stacks, slices last) and, in 3D, ``train_*`` ``(1, *S)`` halves.
        foreground: ``foreground(stack)`` -> indices of the slices worth a source (``ssl_training.foreground_slices``).
    """
    was = cover_net.training if cover_net is not None else None
    if cover_net is not None:
        cover_net.eval()
    try:
        if int(cfg.get("spatial_dims", 3)) == 2:
            return _slices(backbone, cover_net, task, cfg, num_classes, foreground, device)
        return _mirror(backbone, cover_net, task, cfg, num_classes, device)
    finally:
        if cover_net is not None:
            cover_net.train(was)


def _slices(backbone, cover_net, task, cfg, num_classes, foreground, device) -> list[dict]:
    stack, labels = task["eval_image"], task["eval_label"]
    images = [stack[..., z] for z in range(stack.shape[-1])]
    routes = _routes(backbone, cover_net, images, cfg, num_classes, device)
    rich = foreground(stack)
    count = min(int(_setting(cfg, "prop_sources")), len(rich))
    sources = [rich[int(i)] for i in np.linspace(0, len(rich) - 1, count + 2)[1:-1].round()]  # away from the ends
    records = []
    for route, move in routes.items():
        def propagate(s: int, t: int, move=move) -> torch.Tensor:
            return move(s, t, labels[..., s])

        per_distance = dice_vs_distance(labels, propagate, sources, _setting(cfg, "prop_distances"), num_classes)
        for distance, dice in per_distance.items():
            dice = np.asarray(dice, dtype=float)
            records.append({"route": route, "distance": int(distance), "dice": dice.tolist(),
                            "dice_mean": float(dice.mean())})
    return records


def _mirror(backbone, cover_net, task, cfg, num_classes, device) -> list[dict]:
    axis = int(task["split"]["axis"]) + 1
    source_image, source_label = task["train_image"].flip(axis), task["train_label"].flip(axis)
    n = min(source_image.shape[axis], task["eval_image"].shape[axis])
    window = (slice(None),) * axis + (slice(0, n),)
    images = [source_image[window], task["eval_image"][window]]
    target_label = task["eval_label"][window]
    routes = _routes(backbone, cover_net, images, cfg, num_classes, device)
    records = []
    for route, move in routes.items():
        dice = label_dice(move(0, 1, source_label[window]), target_label, num_classes).numpy()
        records.append({"route": route, "distance": "mirror", "dice": dice.tolist(), "dice_mean": float(dice.mean())})
    return records


def propagation_report_lines(records: dict[str, list[dict]]) -> list[str]:
    """Markdown: mean Dice per (init, route) and distance over pretraining seeds, then every COVER route (inits with
    a ``field`` route) minus every other init's ``features`` route, paired by pretraining seed, with 95 % bootstrap
    intervals."""
    cells: dict = {}
    for init, recs in records.items():
        for r in recs:
            cells.setdefault((init, r["route"]), {}).setdefault(str(r["distance"]), {})[r["seed"]] = r["dice_mean"]
    distances = sorted({d for row in cells.values() for d in row}, key=lambda d: int(d) if d.isdigit() else 1e9)
    head = "| " + " | ".join(distances) + " |"
    lines = ["## Label propagation (no labels trained on; mean Dice over pretraining seeds)", "",
             "identity: the source label unchanged; features: windowed soft nearest neighbours of the finest features;"
             " field: warped by COVER's predicted field. Columns: slice distance (2D) or the mirrored hemisphere (3D).",
             "", "| init | route " + head, "|" + "---|" * (len(distances) + 2)]
    for (init, route), row in cells.items():
        if route != "identity" or init == next(iter(records)):  # identity: the same for every init
            lines.append(f"| {init} | {route} | " + " | ".join(
                f"{np.mean(list(row[d].values())):.4f} (n={len(row[d])})" if d in row else "-" for d in distances)
                + " |")
    refs = [i for i in records if (i, "field") in cells]
    others = [i for i in records if i not in refs and (i, "features") in cells]
    if refs and others:
        lines += ["", "Paired by pretraining seed: mean [95 % interval] (seeds ahead / seeds)", "",
                  "| difference " + head, "|" + "---|" * (len(distances) + 1)]
    for ref in refs:
        for route in ("field", "features"):
            for other in others:
                mine, theirs, row = cells[(ref, route)], cells[(other, "features")], []
                for d in distances:
                    seeds = sorted(set(mine.get(d, {})) & set(theirs.get(d, {})))
                    c = paired_bootstrap([mine[d][s] for s in seeds], [theirs[d][s] for s in seeds]) if seeds else None
                    row.append(f"{c['mean']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}] ({c['ahead']}/{c['n']})"
                               if c else "-")
                lines.append(f"| {ref} ({route}) - {other} (features) | " + " | ".join(row) + " |")
    return lines
