#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""The data side of ``ssl_benchmark.py``: images through the pretraining bundle's own loader chain, the labelled
task split, the nested patch draws and the endless pretext / fine-tuning batches. Loaded by path (``benchmarks/``
is not a package)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, LoadImaged, ResampleToMatchd

BUNDLE_CONFIG = Path(__file__).resolve().parents[1] / "bundles" / "cover_pretrain_3d" / "configs" / "train.json"


def loader_patch(cfg: dict) -> list[int]:
    """The 3D ``patch_size`` the loader chain pads for: ``crop`` on every axis (3D track); the 2D track's slices
    need ``crop`` in-plane only (1 along ``slice_axis``)."""
    patch = [int(cfg["crop"])] * 3
    if int(cfg.get("spatial_dims", 3)) == 2:
        patch[int(cfg["slice_axis"])] = 1
    return patch


def loader_chains(cfg: dict, config_file: Path = BUNDLE_CONFIG) -> tuple[list, list]:
    """``(image_chain, label_chain)``: the bundle's ``loader_transforms`` parsed from ``config_file`` with ``spacing``
    ``(cfg["spacing"],) * 3``, ``patch_size`` :func:`loader_patch` (and the pairs' ``margin`` when given); the
    label's: the same ``LoadImaged`` on ``"label"``, then ``ResampleToMatchd`` (nearest) onto the image's final grid,
    whatever geometry the bundle applies. For a RAS input (the MNI template) that is exactly the label through the
    chain's ``Orientationd`` and ``Spacingd(mode="nearest")``; resampling a flipped axis in one step may break ties
    (points half-way between two voxels) the other way. Run both, in this order, on one ``{"image", "label",
    "modality"}`` dict."""
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["spacing"], parser["patch_size"] = [float(cfg["spacing"])] * 3, loader_patch(cfg)
    if cfg.get("pair_kwargs", {}).get("margin") is not None:
        parser["margin"] = float(cfg["pair_kwargs"]["margin"])
    image_chain = list(parser.get_parsed_content("loader_transforms"))
    loaders = [t for t in image_chain if isinstance(t, LoadImaged)]
    if len(loaders) != 1 or tuple(loaders[0].keys) != ("image",):
        raise ValueError(f"{config_file}: loader_transforms must hold one LoadImaged of 'image', got {loaders}.")
    load_label = copy.copy(loaders[0])  # same readers
    load_label.keys = ("label",)
    return image_chain, [load_label, ResampleToMatchd("label", key_dst="image", mode="nearest")]


def load_volumes(datalist: dict, data_dir: Path, cfg: dict) -> tuple[list, tuple, dict]:
    """``(pool, (image, label), info)``: every volume of ``datalist`` through :func:`loader_chains` as ``[(name,
    (1, *S) float32)]``, the labelled ``mni152_t1`` image and its int64 label on the image's grid, and the shapes."""
    items = {it["name"]: it for it in datalist.get("training", []) + datalist.get("validation", [])}
    if "label" not in items.get("mni152_t1", {}):
        raise RuntimeError(f"the datalist in {data_dir} has no labelled 'mni152_t1' (fetch the nilearn source).")
    image_chain, label_chain = loader_chains(cfg)
    pool, info, labelled = [], {}, None
    for name, item in sorted(items.items()):
        keys = ("image", "label") if name == "mni152_t1" else ("image",)
        data = {**{k: str(data_dir / item[k]) for k in keys}, "modality": item.get("modality", "MR")}
        out = Compose(image_chain + (label_chain if len(keys) == 2 else []))(data)
        vol = torch.as_tensor(out["image"].as_tensor(), dtype=torch.float32).contiguous()
        pool.append((name, vol))
        info[name] = {"shape": list(vol.shape[1:]), "modality": item.get("modality", "?")}
        if len(keys) == 2:
            labelled = (vol, torch.as_tensor(out["label"].as_tensor()).round().to(torch.int64).contiguous())
    return pool, labelled, info


def load_pool_and_task(datalist: dict, data_dir: Path, cfg: dict) -> tuple[list, dict, dict]:
    """``(pool, task, info)`` of the track ``cfg["spatial_dims"]`` (default 3).

    3D: pool = ``[(name, (1, *S) float32 image)]``; task = the labelled MNI volume split along RAS axis 0 (the
    hemispheres, ~4 mm either side of the midline left out) into ``train_*`` / ``eval_*`` images ``(1, *S)`` float32
    and labels int64, and ``split``.

    2D: see :func:`slice_pool_and_task`.
    """
    pool, (image, label), info = load_volumes(datalist, data_dir, cfg)
    if int(cfg.get("spatial_dims", 3)) == 2:
        return slice_pool_and_task(pool, image, label, cfg) + (info,)
    crop = cfg["crop"]
    for name, vol in pool:
        if min(vol.shape[1:]) < crop:
            raise RuntimeError(f"{name}: {tuple(vol.shape[1:])} from the bundle's loader is smaller than crop {crop}.")
    size0 = image.shape[1]
    mid, gap = size0 // 2, max(1, int(round(4.0 / cfg["spacing"])))
    train_end, eval_start = mid - gap, mid + gap
    if train_end < crop:
        raise RuntimeError(f"the training half ({train_end} voxels) is smaller than the crop ({crop}).")
    split = {"axis": 0, "train": [0, train_end], "eval": [eval_start, size0], "shape": list(image.shape[1:])}
    return pool, {"train_image": image[:, :train_end], "train_label": label[:, :train_end],
                  "eval_image": image[:, eval_start:], "eval_label": label[:, eval_start:], "split": split}, info


def foreground_slices(volume: torch.Tensor, axis: int, min_pixels: float, threshold: float = 0.1) -> list[int]:
    """Indices along spatial ``axis`` of ``volume`` ``(1, *S)`` whose slice has more than ``min_pixels`` pixels above
    ``threshold`` (the images are scaled to [0, 1]): the rule that keeps empty and nearly empty slices out."""
    from monai_cover.transforms import foreground_slices as fraction_rule  # the 2D bundles' rule, as a fraction

    area = volume[0].numel() // volume.shape[axis + 1]
    return [int(i) for i in fraction_rule(volume, axis, float(min_pixels) / area, threshold)]


def slice_pool_and_task(pool: list, image: torch.Tensor, label: torch.Tensor, cfg: dict) -> tuple[list, dict]:
    """The 2D track: ``(pool, task)`` from the 3D volumes, sliced along ``cfg["slice_axis"]`` (RAS: 2 = axial).

    - The labelled MNI volume's slices that hold labels are split by position along the slice axis: the lower half
      (minus ~4 mm) for training, the upper half for evaluation, so the two see different anatomy. ``task``:
      ``train_*`` / ``eval_*`` stacks ``(1, X, Y, Z)`` with the slice axis last, ``split``.
    - ``pool``: ``[(name[z], (1, X, Y) float32)]``, every slice of every volume with at least ``cfg["min_slice_fg"]``
      of a crop's area above 0.1, except the MNI evaluation slices (held out of pretraining, unlike the 3D track).
    """
    axis, crop = int(cfg["slice_axis"]), int(cfg["crop"])
    img, lab = image.movedim(axis + 1, -1), label.movedim(axis + 1, -1)
    if min(img.shape[1:3]) < crop:
        raise RuntimeError(f"mni152_t1 slices {tuple(img.shape[1:3])} are smaller than the crop {crop}.")
    labelled = torch.nonzero(lab[0].flatten(0, 1).amax(0) > 0).flatten()
    lo, hi = int(labelled.min()), int(labelled.max()) + 1
    mid, gap = (lo + hi) // 2, max(1, int(round(4.0 / cfg["spacing"])))
    train, evaluation = [lo, mid - gap], [mid + gap, hi]
    min_pixels = float(cfg["min_slice_fg"]) * crop * crop
    slices = []
    for name, vol in pool:
        if min(s for i, s in enumerate(vol.shape[1:]) if i != axis) < crop:
            continue  # in-plane smaller than the crop even after the loader's padding: not a 2D training image
        for z in foreground_slices(vol, axis, min_pixels):
            if name == "mni152_t1" and z >= evaluation[0] - gap:
                continue
            slices.append((f"{name}[{z}]", vol.select(axis + 1, z).contiguous()))
    if not slices:
        raise RuntimeError(f"no slice along axis {axis} has {cfg['min_slice_fg']:.0%} of a {crop}^2 crop in "
                           "foreground.")
    split = {"axis": axis, "train": train, "eval": evaluation, "shape": list(img.shape[1:])}
    task = {"train_image": img[..., train[0]:train[1]], "train_label": lab[..., train[0]:train[1]],
            "eval_image": img[..., evaluation[0]:evaluation[1]], "eval_label": lab[..., evaluation[0]:evaluation[1]],
            "split": split}
    return slices, task


def draw_patches(label: torch.Tensor, crop: int | tuple, count: int, seed: int, min_fg: float = 0.3) -> list[tuple]:
    """``count`` crop origins inside ``label`` (1, *S) with at least ``min_fg`` foreground (nested sets per seed).
    ``crop``: an int (a cube) or a size per axis (the 2D track: ``(crop, crop, 1)``, one slice)."""
    size = tuple(crop) if isinstance(crop, (tuple, list)) else (int(crop),) * (label.ndim - 1)
    rng, boxes = np.random.default_rng(10_000 + seed), []
    for _ in range(100_000):
        o = tuple(int(rng.integers(0, s - c + 1)) for s, c in zip(label.shape[1:], size))
        if float((label[(0, *(slice(a, a + c) for a, c in zip(o, size)))] > 0).float().mean()) >= min_fg:
            boxes.append(o)
            if len(boxes) == count:
                return boxes
    raise RuntimeError(f"could not draw {count} patches with >= {min_fg:.0%} foreground.")


class PretextSamples(torch.utils.data.IterableDataset):
    """Endless pretext samples: a volume drawn uniformly from ``pool`` (numpy, seeded ``seed * 1000 + worker id``), then
    the method's ``transform`` (seeded likewise); yields plain tensors (float32 when floating) of ``keys``."""

    def __init__(self, pool: list, transform: Any, keys: list[str], seed: int) -> None:
        super().__init__()
        self.pool, self.transform, self.keys, self.seed = pool, transform, list(keys), seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        seed = self.seed * 1000 + (0 if info is None else info.id)
        rng, transform = np.random.default_rng(seed), self.transform if info is None else copy.deepcopy(self.transform)
        transform.set_random_state(seed=seed)
        while True:
            out = transform({"image": self.pool[int(rng.integers(len(self.pool)))][1]})
            plain = [out[k].as_tensor() if hasattr(out[k], "as_tensor") else torch.as_tensor(out[k]) for k in self.keys]
            yield {k: x.float() if x.is_floating_point() else x for k, x in zip(self.keys, plain)}


def patch_batches(images: torch.Tensor, labels: torch.Tensor, batch: int, seed: int):
    """Endless fine-tuning batches ``{"image": (B, 1, *crop) float, "label": (B, 1, *crop) int64}`` (2D or 3D) of
    the ``k`` patches ``images``/``labels`` ``(k, 1, *crop)``: indices and intensity jitter (scale 1 ± 0.1, shift
    ± 0.05) from one generator seeded ``70_000 + seed``, so every initialisation sees the same batches."""
    gen, size = torch.Generator().manual_seed(70_000 + seed), (batch,) + (1,) * (images.ndim - 1)
    while True:
        idx = torch.randint(len(images), (batch,), generator=gen)
        scale = 1.0 + 0.1 * (2 * torch.rand(size, generator=gen) - 1)
        shift = 0.05 * (2 * torch.rand(size, generator=gen) - 1)
        yield {"image": images[idx] * scale + shift, "label": labels[idx]}
