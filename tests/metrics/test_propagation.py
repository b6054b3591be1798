# SPDX-License-Identifier: Apache-2.0
"""Label propagation with known answers: the true field carries a label map exactly, a wrong one does not; soft
nearest neighbours of identical features give back the source labels; Dice falls with distance as it should."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_cover.ddf import warp
from monai_cover.metrics import (
    dice_vs_distance,
    label_dice,
    propagate_labels_with_ddf,
    propagate_labels_with_features,
)

NUM_CLASSES = 4


def _blobs(spatial, seed=0):
    """``(1, 1, *spatial)`` smooth random label map with all four classes."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, NUM_CLASSES, *(s // 4 for s in spatial), generator=gen)
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    return F.interpolate(noise, size=spatial, mode=mode, align_corners=False).argmax(1, keepdim=True)


def _smooth_field(spatial, amplitude, seed=1):
    gen = torch.Generator().manual_seed(seed)
    coarse = amplitude * torch.randn(1, len(spatial), *(3,) * len(spatial), generator=gen)
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    return F.interpolate(coarse, size=spatial, mode=mode, align_corners=True)


@pytest.mark.parametrize("spatial", [(40, 36), (16, 18, 14)])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_true_field_carries_the_labels(spatial, mode):
    source = _blobs(spatial)
    ddf = _smooth_field(spatial, 2.0)
    target = warp(source.float(), ddf, mode="nearest").round().long()  # the target, made by the true field
    inside = warp(torch.ones_like(source, dtype=torch.float), ddf, mode="nearest") > 0
    moved = propagate_labels_with_ddf(source, ddf, NUM_CLASSES, mode=mode)
    dice = label_dice(moved[inside], target[inside], NUM_CLASSES)
    assert float(dice.min()) > (0.999 if mode == "nearest" else 0.93)
    wrong = propagate_labels_with_ddf(source, -ddf + 3.0, NUM_CLASSES, mode=mode)
    assert float(label_dice(wrong[inside], target[inside], NUM_CLASSES).mean()) < 0.5


def test_ddf_propagation_checks_its_inputs():
    with pytest.raises(ValueError, match="label"):
        propagate_labels_with_ddf(torch.zeros(1, 2, 8, 8, dtype=torch.long), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="num_classes"):
        propagate_labels_with_ddf(torch.zeros(1, 1, 8, 8, dtype=torch.long), torch.zeros(1, 2, 8, 8), mode="linear")


def test_soft_nearest_neighbours_of_identical_features_give_the_labels_back():
    spatial = (24, 20)
    label = _blobs(spatial, seed=3)
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(1, 16, *spatial, generator=gen)  # distinct random vectors: each voxel matches itself
    out = propagate_labels_with_features(features, label, features, NUM_CLASSES, radius=2, temperature=0.05)
    assert float(label_dice(out, label, NUM_CLASSES).min()) > 0.999
    # features of a shifted image: the neighbours find the label one voxel over, within the window
    shifted = torch.roll(features, 1, dims=2)
    moved = propagate_labels_with_features(features, label, shifted, NUM_CLASSES, radius=2, temperature=0.05)
    truth = torch.roll(label, 1, dims=2)
    assert float(label_dice(moved[..., 1:, :], truth[..., 1:, :], NUM_CLASSES).min()) > 0.999
    # constant features: every window votes by its label counts; probabilities sum to 1
    prob = propagate_labels_with_features(torch.ones(1, 4, *spatial), label, torch.ones(1, 4, *spatial),
                                          NUM_CLASSES, radius=1, return_probabilities=True)
    assert torch.allclose(prob.sum(1), torch.ones(1, *spatial))
    corner = F.one_hot(label[0, 0, :2, :2].flatten(), NUM_CLASSES).float().mean(0)  # the corner's 2x2 window
    assert torch.allclose(prob[0, :, 0, 0], corner)


def test_soft_nearest_neighbours_in_3d_and_radius_zero():
    spatial = (10, 9, 8)
    label = _blobs(spatial, seed=4)
    features = torch.randn(1, 8, *spatial, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(1, 8, *spatial, generator=torch.Generator().manual_seed(2))
    assert torch.equal(propagate_labels_with_features(features, label, noise, NUM_CLASSES, radius=0), label)
    out = propagate_labels_with_features(features, label, features, NUM_CLASSES, radius=1, temperature=0.05)
    assert float(label_dice(out, label, NUM_CLASSES).min()) > 0.999
    with pytest.raises(ValueError, match="temperature"):
        propagate_labels_with_features(features, label, features, NUM_CLASSES, temperature=0.0)


def test_dice_vs_distance_falls_with_distance():
    stack = _blobs((32, 32, 24), seed=5)[0]  # (1, X, Y, Z): slices along the last axis

    def copy_slice(source, target):  # the identity "correspondence": the source slice as it is
        return stack[..., source]

    curve = dice_vs_distance(stack, copy_slice, sources=[8, 12, 16], distances=[0, 2, 8, 40], num_classes=NUM_CLASSES)
    assert sorted(curve) == [0, 2, 8]  # 40 leaves the stack: no pair
    assert torch.allclose(curve[0], torch.ones(NUM_CLASSES - 1, dtype=torch.float64))
    assert float(curve[2].mean()) > float(curve[8].mean()) + 0.1
    with pytest.raises(ValueError, match="propagate"):
        dice_vs_distance(stack, lambda s, t: stack[0, ..., s], [8], [1], NUM_CLASSES)
