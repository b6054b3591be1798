# SPDX-License-Identifier: Apache-2.0
"""Label propagation through a method's own correspondence: a label map of one image carried onto another.

- :py:func:`propagate_labels_with_ddf`: through a dense displacement field, e.g. the one COVER's head predicts
  (the package's convention, :py:mod:`monai_cover.ddf`: ``target(p) = source(p + ddf(p))``, voxels);
- :py:func:`propagate_labels_with_features`: through windowed soft nearest neighbours of dense features, for
  methods without a field (voxel InfoNCE, a random init): each target voxel averages the one-hot labels of the
  source voxels within ``radius`` voxels per axis of its own position, weighted by a softmax of their cosine
  similarity over ``temperature``;
- :py:func:`dice_vs_distance`: Dice of any such propagation from slices of a labelled stack to slices at growing
  distances, per class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import product

import torch
import torch.nn.functional as F

from monai_cover.ddf import warp
from monai_cover.metrics.label_dice import DiceCounts

__all__ = ["dice_vs_distance", "propagate_labels_with_ddf", "propagate_labels_with_features"]


def _check_label(label: torch.Tensor, spatial: Sequence[int], name: str) -> None:
    if label.ndim != len(spatial) + 2 or label.shape[1] != 1 or tuple(label.shape[2:]) != tuple(spatial):
        raise ValueError(f"{name}: label must be (B, 1, *{tuple(spatial)}), got {tuple(label.shape)}.")


def propagate_labels_with_ddf(
    label: torch.Tensor, ddf: torch.Tensor, num_classes: int | None = None, mode: str = "nearest"
) -> torch.Tensor:
    """Carry ``label`` along ``ddf``: the label at ``p + ddf(p)`` for every voxel ``p`` of the target.

    Args:
        label: ``(B, 1, *S)`` integer classes of the source image (2 or 3 spatial dims).
        ddf: ``(B, spatial_dims, *S)`` in voxels, pull convention (:py:func:`monai_cover.ddf.warp`).
        num_classes: classes including the background 0 (needed by ``mode="linear"``).
        mode: ``"nearest"`` (the label of the nearest voxel) or ``"linear"`` (the one-hot labels resampled linearly,
            then the most likely class: smoother boundaries).

    Returns:
        ``(B, 1, *S)`` int64; points outside the source get the background 0.
    """
    _check_label(label, ddf.shape[2:], "propagate_labels_with_ddf")
    if mode == "nearest":
        return warp(label.float(), ddf.float(), mode="nearest").round().long()
    if mode != "linear":
        raise ValueError(f"propagate_labels_with_ddf: mode must be 'nearest' or 'linear', got {mode!r}.")
    if num_classes is None:
        raise ValueError("propagate_labels_with_ddf: mode='linear' needs num_classes.")
    onehot = F.one_hot(label[:, 0].long(), int(num_classes)).movedim(-1, 1).float()
    moved = warp(onehot, ddf.float(), mode="bilinear")
    outside = moved.sum(1, keepdim=True) < 0.5  # mostly outside the source: background
    return torch.where(outside, torch.zeros_like(label, dtype=torch.long), moved.argmax(1, keepdim=True))


def propagate_labels_with_features(
    source_features: torch.Tensor,
    source_label: torch.Tensor,
    target_features: torch.Tensor,
    num_classes: int,
    radius: int = 3,
    temperature: float = 0.1,
    return_probabilities: bool = False,
) -> torch.Tensor:
    """Windowed soft nearest-neighbour label propagation from a source image to a target image on the same grid.

    For every target voxel ``p``: ``P(p) = sum_q softmax_q(cos(f_t(p), f_s(q)) / temperature) onehot(label_s(q))``
    over the source voxels ``q`` inside the image with ``|q - p|_inf <= radius``. Computed offset by offset with a
    running (log-sum-exp) softmax, so memory stays ``O((C + num_classes) * |S|)`` whatever the window.

    Args:
        source_features, target_features: ``(B, C, *S)`` (2 or 3 spatial dims), e.g. the finest features or a
            hypercolumn (:py:func:`~monai_cover.metrics.hypercolumn.hypercolumn`).
        source_label: ``(B, 1, *S)`` integer classes in ``[0, num_classes)``.
        radius: window half-width in voxels (``0``: the label of the same voxel).
        temperature: softmax temperature on the cosine similarity (small: the best match takes all).
        return_probabilities: return ``P`` ``(B, num_classes, *S)`` instead of its most likely class.

    Returns:
        ``(B, 1, *S)`` int64 (or the probabilities).
    """
    if source_features.shape != target_features.shape or source_features.ndim not in (4, 5):
        raise ValueError(f"propagate_labels_with_features: features must be equal (B, C, *S) shapes, got "
                         f"{tuple(source_features.shape)} and {tuple(target_features.shape)}.")
    spatial = tuple(source_features.shape[2:])
    _check_label(source_label, spatial, "propagate_labels_with_features")
    if int(radius) < 0 or float(temperature) <= 0:
        raise ValueError(f"propagate_labels_with_features: radius >= 0 and temperature > 0, got {radius}, "
                         f"{temperature}.")
    r, d = int(radius), len(spatial)
    pad = [r] * (2 * d)
    src = F.pad(F.normalize(source_features.float(), dim=1, eps=1e-8), pad)
    onehot = F.pad(F.one_hot(source_label[:, 0].long(), int(num_classes)).movedim(-1, 1).float(), pad)
    valid = F.pad(torch.ones_like(source_label, dtype=torch.bool), pad)  # padded voxels are not candidates
    tgt = F.normalize(target_features.float(), dim=1, eps=1e-8)
    best = torch.full_like(tgt[:, :1], -float("inf"))
    mass = torch.zeros_like(best)
    acc = torch.zeros(tgt.shape[0], int(num_classes), *spatial, device=tgt.device)
    for offset in product(range(2 * r + 1), repeat=d):
        window = (slice(None), slice(None), *(slice(o, o + s) for o, s in zip(offset, spatial)))
        score = (tgt * src[window]).sum(1, keepdim=True) / float(temperature)
        score = torch.where(valid[window], score, torch.full_like(score, -float("inf")))
        new_best = torch.maximum(best, score)
        keep = torch.exp(best - new_best).nan_to_num(0.0)  # -inf - -inf: nothing yet
        weight = torch.exp(score - new_best).nan_to_num(0.0)
        mass = mass * keep + weight
        acc = acc * keep + weight * onehot[window]
        best = new_best
    prob = acc / mass.clamp_min(1e-12)
    return prob if return_probabilities else prob.argmax(1, keepdim=True)


def dice_vs_distance(
    labels: torch.Tensor,
    propagate: Callable[[int, int], torch.Tensor],
    sources: Sequence[int],
    distances: Sequence[int],
    num_classes: int,
    axis: int = -1,
) -> dict[int, torch.Tensor]:
    """Dice per class of ``propagate`` from each of ``sources`` to the slices ``distances`` away (both directions,
    where inside the stack), pooled over the pairs of each distance.

    Args:
        labels: ``(1, *S)`` integer label stack; slices are taken along spatial ``axis``.
        propagate: ``propagate(source, target)`` -> the source slice's label carried onto slice ``target``, with the
            shape of one slice of ``labels`` (``(1, *S_slice)``), e.g. a closure over
            :py:func:`propagate_labels_with_ddf` or :py:func:`propagate_labels_with_features`.
        sources: slice indices whose labels are propagated.
        distances: slice distances (``0`` scores the propagation onto itself).
        num_classes: classes including the background 0.

    Returns:
        ``{distance: float64 (num_classes - 1,)}`` for the distances with at least one pair.
    """
    dim = (axis % (labels.ndim - 1)) + 1
    size, out = labels.shape[dim], {}
    for distance in distances:
        counts, pairs = DiceCounts(num_classes), 0
        for source in sources:
            for target in sorted({int(source) + int(distance), int(source) - int(distance)}):
                if 0 <= target < size and 0 <= int(source) < size:
                    truth = labels.select(dim, target)
                    pred = propagate(int(source), target)
                    if tuple(pred.shape) != tuple(truth.shape):
                        raise ValueError(f"dice_vs_distance: propagate returned {tuple(pred.shape)} for a slice of "
                                         f"shape {tuple(truth.shape)}.")
                    counts.update(pred, truth)
                    pairs += 1
        if pairs:
            out[int(distance)] = counts.dice()
    return out
