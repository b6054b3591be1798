# SPDX-License-Identifier: Apache-2.0
"""Frozen-feature probes on constructed pyramids with known answers: separable features score Dice about 1, noise
about chance, and the hypercolumn sees what only a coarse level carries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet

from monai_cover.ddf import identity_grid
from monai_cover.metrics import (
    LinearProbe,
    extract_pyramids,
    fit_linear_probe,
    hypercolumn,
    knn_dice,
    label_dice,
    linear_probe_dice,
    pyramid_at,
    sample_voxels,
)
from monai_cover.networks import FeaturePyramid

NUM_CLASSES = 4  # background + 3
SIZE = (32, 32)


def _block_label(seed: int, block: int = 4) -> torch.Tensor:
    """``(1, *SIZE)`` classes constant on ``block``-sized squares, all four classes about equally frequent."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, NUM_CLASSES, tuple(s // block for s in SIZE), generator=gen)
    return coarse.repeat_interleave(block, 0).repeat_interleave(block, 1)[None]


def _pyramid(label: torch.Tensor, seed: int, informative: str) -> list[torch.Tensor]:
    """Three levels ``(C_l, *S_l)`` (1/4, 1/2, full) of noise; ``informative`` names the level that also holds the
    one-hot label (``"finest"``, ``"coarsest"`` or ``"none"``)."""
    gen = torch.Generator().manual_seed(1000 + seed)
    levels = [torch.randn(6, *(s // f for s in SIZE), generator=gen) for f in (4, 2, 1)]
    onehot = F.one_hot(label[0], NUM_CLASSES).movedim(-1, 0).float()
    if informative == "finest":
        levels[-1][:NUM_CLASSES] = 3 * onehot + 0.3 * levels[-1][:NUM_CLASSES]
    elif informative == "coarsest":  # the label is constant on 4x4 blocks: one coarse voxel each
        levels[0][:NUM_CLASSES] = 3 * F.avg_pool2d(onehot[None], 4)[0] + 0.3 * levels[0][:NUM_CLASSES]
    return levels


def _data(informative: str, n_train: int = 2, n_eval: int = 2):
    labels = [_block_label(i) for i in range(n_train + n_eval)]
    images = [(_pyramid(lab, i, informative), lab) for i, lab in enumerate(labels)]
    return images[:n_train], images[n_train:]


def test_hypercolumn_dense_and_at_voxels_agree():
    pyramid = _pyramid(_block_label(0), 0, "none")
    dense = hypercolumn([m[None] for m in pyramid], normalize_levels=True)[0]  # (18, 32, 32)
    points = identity_grid(SIZE).flatten(1)
    rows = pyramid_at(pyramid, points, normalize_levels=True)
    assert dense.shape == (18, *SIZE)
    assert torch.allclose(dense.flatten(1).T, rows, atol=1e-5)
    assert torch.equal(pyramid_at(pyramid, points, levels="finest"), pyramid[-1].flatten(1).T)
    with pytest.raises(ValueError, match="levels"):
        hypercolumn(pyramid, levels="all")


def test_probe_applied_densely_equals_probe_at_every_voxel():
    pyramid = _pyramid(_block_label(1), 1, "coarsest")
    points = identity_grid(SIZE).flatten(1)
    feats = pyramid_at(pyramid, points)
    gen = torch.Generator().manual_seed(0)
    probe = LinearProbe(torch.randn(NUM_CLASSES, 18, generator=gen), torch.randn(NUM_CLASSES, generator=gen),
                        torch.randn(18, generator=gen), torch.rand(18, generator=gen) + 0.5)
    dense = probe.dense_logits(pyramid, "concat")
    assert torch.allclose(dense.flatten(1).T, probe.logits(feats), atol=1e-4)


@pytest.mark.parametrize("method", ["ridge", "logistic"])
def test_linear_probe_on_separable_features_scores_about_one(method):
    train, evaluation = _data("finest")
    dice = linear_probe_dice(train, evaluation, NUM_CLASSES, levels="finest", voxels_per_image=512, method=method)
    assert dice.shape == (NUM_CLASSES - 1,)
    assert float(dice.min()) > 0.97


def test_linear_probe_on_noise_scores_about_chance():
    train, evaluation = _data("none")
    dice = torch.stack([linear_probe_dice(train, evaluation, NUM_CLASSES, "concat", 512, seed=s) for s in range(3)])
    # four equally frequent classes: a classifier that knows nothing scores about 1/4 per class
    assert abs(float(dice.mean()) - 0.25) < 0.07


def test_hypercolumn_sees_what_only_the_coarse_level_carries():
    train, evaluation = _data("coarsest")
    finest = linear_probe_dice(train, evaluation, NUM_CLASSES, "finest", 512)
    concat = linear_probe_dice(train, evaluation, NUM_CLASSES, "concat", 512)
    assert float(concat.mean()) > 0.9
    assert float(finest.mean()) < 0.35


def test_knn_on_separable_features_and_on_noise():
    train, evaluation = _data("finest")
    assert float(knn_dice(train, evaluation, NUM_CLASSES, "finest", 512, k=5, eval_voxels_per_image=None).min()) > 0.97
    train, evaluation = _data("none")
    noise = knn_dice(train, evaluation, NUM_CLASSES, "concat", 512, k=5)
    assert abs(float(noise.mean()) - 0.25) < 0.07


def test_training_voxels_stay_inside_the_mask():
    label = _block_label(2)
    mask = torch.zeros_like(label, dtype=torch.bool)
    mask[0, 4:12, 20:28] = True
    points = sample_voxels(label, 1000, torch.Generator().manual_seed(0), mask)
    assert points.shape == (2, 64)  # every voxel of the mask once, no more
    assert bool(mask[0][tuple(points)].all())
    # a probe fitted on one class only predicts that class everywhere: Dice 1 for it if alone in the truth
    only = torch.full_like(label, 2)
    train = [(_pyramid(only, 0, "finest"), only, mask)]
    assert torch.allclose(linear_probe_dice(train, [train[0][:2]], NUM_CLASSES), torch.tensor([1.0, 1.0, 1.0],
                                                                                                dtype=torch.float64))


def test_fit_linear_probe_checks_its_inputs():
    with pytest.raises(ValueError, match="method"):
        fit_linear_probe(torch.randn(10, 3), torch.zeros(10), 2, method="svm")
    with pytest.raises(ValueError, match="labels"):
        fit_linear_probe(torch.randn(10, 3), torch.zeros(9), 2)


def test_label_dice_counts():
    pred = torch.tensor([0, 1, 1, 2, 2, 2])
    true = torch.tensor([0, 1, 2, 2, 2, 0])
    # class 1: 2*1/(2+1); class 2: 2*2/(3+3); class 3 absent from both: 1
    assert torch.allclose(label_dice(pred, true, 4), torch.tensor([2 / 3, 2 / 3, 1.0], dtype=torch.float64))


def test_extract_pyramids_runs_the_backbone_once_per_image():
    torch.manual_seed(0)
    unet = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    pyramid = FeaturePyramid(unet, levels=3)
    calls = []
    pyramid.register_forward_hook(lambda *_: calls.append(1))
    pyramid.train()
    images = [torch.rand(1, 48, 40), torch.rand(1, 32, 32)]
    out = extract_pyramids(pyramid, images)
    assert len(calls) == 2 and pyramid.training  # once per image, training mode restored
    assert [tuple(m.shape) for m in out[0]] == [(8, 12, 10), (4, 24, 20), (4, 48, 40)]
    assert not any(m.requires_grad for p in out for m in p)
