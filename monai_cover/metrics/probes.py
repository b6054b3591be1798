# SPDX-License-Identifier: Apache-2.0
"""Frozen-feature evaluation: how much a backbone's features say about a segmentation without fine-tuning.

The backbone runs once per image (:py:func:`extract_pyramids`, cached pyramids on the CPU); every probe then works
on the cache, so many probe seeds cost little:

- :py:func:`fit_linear_probe` / :py:class:`LinearProbe`: a linear voxel classifier on standardised features,
  closed-form ridge regression on one-hot targets or a few L-BFGS steps of multinomial logistic regression;
- :py:func:`knn_predict`: a k-nearest-neighbour vote on cosine similarity;
- :py:func:`linear_probe_dice` / :py:func:`knn_dice`: fitted on voxels drawn from labelled images (optionally only
  inside a mask, e.g. the labelled patches), scored as Dice per class on held-out images pooled together.

Features are read as the finest pyramid level (``levels="finest"``) or the hypercolumn (``levels="concat"``, every
level resampled to the finest grid and concatenated, see :py:mod:`monai_cover.metrics.hypercolumn`). A fitted
linear probe is applied to whole images level by level at each level's resolution and the class scores resampled
and summed, which equals applying it to the hypercolumn voxel by voxel (linear resampling commutes with a linear
map) without building the hypercolumn of a whole volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.utils import convert_to_tensor

from monai_cover.metrics.hypercolumn import pyramid_at, select_levels
from monai_cover.metrics.label_dice import DiceCounts
from monai_cover.networks.utils import as_pyramid

__all__ = [
    "LinearProbe",
    "extract_pyramids",
    "fit_linear_probe",
    "knn_dice",
    "knn_predict",
    "linear_probe_dice",
    "sample_voxels",
]

#: one image of a probe's data: ``(pyramid, label)`` or ``(pyramid, label, mask)``; the pyramid a list of
#: ``(C_l, *S_l)`` maps coarse to fine (:py:func:`extract_pyramids`), the label ``(1, *S)`` integer classes on the
#: finest grid, the mask ``(1, *S)`` bool (voxels that may be drawn; ``None``: all)
ProbeImage = tuple


def extract_pyramids(
    backbone: torch.nn.Module,
    images: Sequence[torch.Tensor],
    device: torch.device | str | None = None,
    output_key: str | None = None,
) -> list[list[torch.Tensor]]:
    """Each image through ``backbone`` once (eval mode, no gradients, one image per call; training mode restored).

    Args:
        backbone: returns a pyramid (list coarse to fine), a tensor or a mapping (``output_key``), e.g. a
            :py:class:`~monai_cover.networks.FeaturePyramid`.
        images: ``(C, *S)`` tensors (sizes may differ).
        device: where to run (default: the backbone's device).

    Returns:
        per image, its pyramid as ``(C_l, *S_l)`` float32 CPU tensors, coarse to fine.
    """
    try:
        net_device = next(backbone.parameters()).device
    except StopIteration:
        net_device = torch.device("cpu")
    device = torch.device(device) if device is not None else net_device
    was_training, out = backbone.training, []
    backbone.eval()
    try:
        with torch.no_grad():
            for image in images:
                x = convert_to_tensor(image, track_meta=False).float()[None].to(device)
                out.append([m[0].float().cpu() for m in as_pyramid(backbone(x), output_key)])
    finally:
        backbone.train(was_training)
    return out


def sample_voxels(
    label: torch.Tensor, count: int, generator: torch.Generator | None = None, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Up to ``count`` distinct voxels of ``label`` ``(1, *S)`` drawn uniformly (inside ``mask`` ``(1, *S)`` when
    given): ``(spatial_dims, n)`` int64 coordinates, ``n = min(count, candidates)``."""
    allowed = torch.ones(label.shape[1:], dtype=torch.bool) if mask is None else mask[0].bool().cpu()
    if tuple(allowed.shape) != tuple(label.shape[1:]):
        raise ValueError(f"sample_voxels: mask {tuple(allowed.shape)} is not on the label's grid {tuple(label.shape)}.")
    candidates = torch.nonzero(allowed.flatten()).flatten()
    picked = candidates[torch.randperm(candidates.numel(), generator=generator)[: int(count)]]
    return torch.stack(torch.unravel_index(picked, tuple(allowed.shape)))


@dataclass
class LinearProbe:
    """A linear voxel classifier on standardised features: ``logits = weight @ ((x - mean) / std) + bias``.

    Attributes:
        weight: ``(K, C)``; bias: ``(K,)``; mean, std: ``(C,)`` of the training features.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, b)`` acting on raw features: ``W = weight / std``, ``b = bias - W @ mean``."""
        w = self.weight / self.std
        return w, self.bias - w @ self.mean

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` class scores of ``(N, C)`` raw features."""
        w, b = self._folded()
        return features.float() @ w.T + b

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """``(N,)`` int64 classes of ``(N, C)`` raw features."""
        return self.logits(features).argmax(dim=1)

    def dense_logits(self, pyramid: Sequence[torch.Tensor], levels: str = "finest") -> torch.Tensor:
        """``(K, *S)`` class scores of every voxel of one pyramid (``(C_l, *S_l)`` maps) on its finest grid: each
        level's share of the weights applied at its own resolution, resampled like the hypercolumn and summed."""
        maps = select_levels(pyramid, levels)
        w, b = self._folded()
        if w.shape[1] != sum(m.shape[0] for m in maps):
            raise ValueError(f"LinearProbe: {w.shape[1]} weights per class but the {levels!r} features have "
                             f"{sum(m.shape[0] for m in maps)} channels.")
        size, total, start = tuple(maps[-1].shape[1:]), 0.0, 0
        for m in maps:
            part = torch.einsum("kc,c...->k...", w[:, start:start + m.shape[0]], m.float())[None]
            start += m.shape[0]
            if tuple(part.shape[2:]) != size:
                part = F.interpolate(part, size=size, mode="bilinear" if len(size) == 2 else "trilinear",
                                     align_corners=False)
            total = total + part[0]
        return total + b.view(-1, *([1] * len(size)))


def fit_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    method: str = "ridge",
    l2: float = 1e-2,
    steps: int = 50,
) -> LinearProbe:
    """Fit a :py:class:`LinearProbe` on ``(N, C)`` features and ``(N,)`` integer labels in ``[0, num_classes)``.

    Args:
        method: ``"ridge"``: least squares on one-hot targets, ``W = (Z^T Z + l2 N I)^-1 Z^T (Y - mean Y)`` for the
            standardised features ``Z`` (deterministic, one solve); ``"logistic"``: multinomial logistic regression,
            ``steps`` L-BFGS iterations from zero on the mean cross-entropy ``+ l2/2 |W|^2`` (deterministic too).
        l2: the penalty on the weights (not on the bias), relative to the number of voxels.
    """
    if method not in ("ridge", "logistic"):
        raise ValueError(f"fit_linear_probe: method must be 'ridge' or 'logistic', got {method!r}.")
    x, y = features.double(), labels.reshape(-1).long()
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"fit_linear_probe: features (N, C) with N >= 2 and labels (N,), got {tuple(features.shape)}"
                         f" and {tuple(labels.shape)}.")
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z, n, c = (x - mean) / std, x.shape[0], x.shape[1]
    onehot = F.one_hot(y, int(num_classes)).double()
    if method == "ridge":
        prior = onehot.mean(0)
        weight = torch.linalg.solve(z.T @ z + float(l2) * n * torch.eye(c, dtype=z.dtype), z.T @ (onehot - prior)).T
        bias = prior
    else:
        weight = torch.zeros(int(num_classes), c, dtype=z.dtype, requires_grad=True)
        bias = torch.zeros(int(num_classes), dtype=z.dtype, requires_grad=True)
        opt = torch.optim.LBFGS([weight, bias], max_iter=int(steps), line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(z @ weight.T + bias, y) + 0.5 * float(l2) * weight.pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        weight, bias = weight.detach(), bias.detach()
    return LinearProbe(weight.float(), bias.float(), mean.float(), std.float())


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = 10,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """Class of each query by a vote of its ``k`` nearest training voxels in cosine similarity.

    Args:
        train_features: ``(N, C)``; train_labels: ``(N,)`` integers in ``[0, num_classes)``.
        query_features: ``(M, C)``.
        k: neighbours (at most ``N``); a tie goes to the class whose voters are most similar in total.
        chunk_size: queries per step (memory ``chunk_size * N``).

    Returns:
        ``(M,)`` int64 classes.
    """
    keys = F.normalize(train_features.float(), dim=1, eps=1e-8)
    y = train_labels.reshape(-1).long()
    k = min(int(k), keys.shape[0])
    out = []
    for start in range(0, query_features.shape[0], int(chunk_size)):
        q = F.normalize(query_features[start:start + int(chunk_size)].float(), dim=1, eps=1e-8)
        sim, idx = (q @ keys.T).topk(k, dim=1)
        votes = torch.zeros(q.shape[0], int(num_classes)).scatter_add_(1, y[idx], torch.ones_like(sim))
        ties = torch.zeros_like(votes).scatter_add_(1, y[idx], sim)
        out.append((votes + 1e-3 * ties / (k + 1)).argmax(dim=1))  # |1e-3 * ties / (k + 1)| < 1e-3: votes first
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _training_voxels(train: Sequence[ProbeImage], levels: str, voxels_per_image: int, generator: torch.Generator,
                     normalize_levels: bool) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = [], []
    for item in train:
        pyramid, label, mask = (tuple(item) + (None,))[:3]
        points = sample_voxels(label, voxels_per_image, generator, mask)
        feats.append(pyramid_at(pyramid, points, levels, normalize_levels))
        labels.append(label[0][tuple(points)].long())
    return torch.cat(feats), torch.cat(labels)


def linear_probe_dice(
    train: Sequence[ProbeImage],
    evaluation: Sequence[ProbeImage],
    num_classes: int,
    levels: str = "finest",
    voxels_per_image: int = 2048,
    seed: int = 0,
    method: str = "ridge",
    l2: float = 1e-2,
    steps: int = 50,
) -> torch.Tensor:
    """Dice per class (background left out) of a linear probe fitted on ``voxels_per_image`` voxels drawn (seeded
    ``seed``) from each labelled image of ``train`` and applied to every voxel of the ``evaluation`` images, pooled.

    Args:
        train, evaluation: :data:`ProbeImage` tuples ``(pyramid, label[, mask])``; the evaluation masks are ignored.
        num_classes: classes including the background 0.
        levels: ``"finest"`` or ``"concat"`` (the hypercolumn).
        method, l2, steps: see :py:func:`fit_linear_probe`.

    Returns:
        float64 ``(num_classes - 1,)``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    x, y = _training_voxels(train, levels, voxels_per_image, gen, normalize_levels=False)
    probe = fit_linear_probe(x, y, num_classes, method=method, l2=l2, steps=steps)
    counts = DiceCounts(num_classes)
    for item in evaluation:
        counts.update(probe.dense_logits(item[0], levels).argmax(0), item[1][0])
    return counts.dice()


def knn_dice(
    train: Sequence[ProbeImage],
    evaluation: Sequence[ProbeImage],
    num_classes: int,
    levels: str = "finest",
    voxels_per_image: int = 2048,
    k: int = 10,
    eval_voxels_per_image: int | None = 20000,
    seed: int = 0,
    normalize_levels: bool = True,
) -> torch.Tensor:
    """Dice per class (background left out) of :py:func:`knn_predict` with the training voxels of
    :py:func:`linear_probe_dice`, on ``eval_voxels_per_image`` voxels drawn uniformly from each evaluation image
    (``None``: all of them), pooled.

    Args:
        normalize_levels: with ``levels="concat"``, each level at unit length so that every level counts the same
            in the cosine similarity.

    Returns:
        float64 ``(num_classes - 1,)``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    x, y = _training_voxels(train, levels, voxels_per_image, gen, normalize_levels)
    counts = DiceCounts(num_classes)
    for item in evaluation:
        pyramid, label = item[0], item[1]
        count = label[0].numel() if eval_voxels_per_image is None else int(eval_voxels_per_image)
        points = sample_voxels(label, count, gen)
        pred = knn_predict(x, y, pyramid_at(pyramid, points, levels, normalize_levels), num_classes, k)
        counts.update(pred, label[0][tuple(points)])
    return counts.dice()
