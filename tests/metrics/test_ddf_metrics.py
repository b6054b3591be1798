# SPDX-License-Identifier: Apache-2.0
"""Pretext metrics on constructed inputs with known values: perfect and zero predictions, identical and
shifted features, coarse predictions, masks, accumulation over batches."""

from __future__ import annotations

import math

import pytest
import torch

from monai_cover.metrics import DDFEndPointErrorMetric, OverlapCosineMetric, ddf_end_point_error, overlap_cosine


def _target(batch=2, spatial=(6, 7, 8), shift=(1.0, 0.0, 0.0)):
    ddf = torch.zeros(batch, len(spatial), *spatial)
    for i, s in enumerate(shift):
        ddf[:, i] = s
    return {"ddf": ddf, "overlap": torch.ones(batch, 1, *spatial)}


def test_perfect_prediction_is_zero_and_zero_prediction_is_ratio_one():
    target = _target(shift=(3.0, 4.0, 0.0))
    metric = DDFEndPointErrorMetric()
    metric({"ddf": target["ddf"].clone()}, target)
    assert metric.aggregate().item() == 0.0
    metric.reset()
    metric({"ddf": torch.zeros_like(target["ddf"])}, target)
    assert metric.aggregate().item() == pytest.approx(5.0)  # |(3, 4, 0)|
    relative = DDFEndPointErrorMetric(relative=True)
    relative({"ddf": torch.zeros_like(target["ddf"])}, target)
    assert relative.aggregate().item() == pytest.approx(1.0)
    relative.reset()
    relative({"ddf": 0.5 * target["ddf"]}, target)
    assert relative.aggregate().item() == pytest.approx(0.5)


def test_mask_and_accumulation_weight_every_voxel_equally():
    target = _target(batch=2, spatial=(4, 4), shift=(1.0, 0.0))
    target["overlap"][0, :, :2] = 0  # half of sample 0 does not count
    pred = target["ddf"].clone()
    pred[0, 1] = 2.0  # error 2 on sample 0 (8 counted voxels), 0 on sample 1 (16)
    total, weight = ddf_end_point_error(pred, target)
    torch.testing.assert_close(total, torch.tensor([[16.0], [0.0]], dtype=torch.float64))
    torch.testing.assert_close(weight, torch.tensor([[8.0], [16.0]], dtype=torch.float64))
    metric = DDFEndPointErrorMetric()
    metric({"ddf": pred[:1]}, {k: v[:1] for k, v in target.items()})
    metric({"ddf": pred[1:]}, {k: v[1:] for k, v in target.items()})
    assert metric.aggregate().item() == pytest.approx(16.0 / 24.0)  # not the mean of the batch means (1.0)
    empty = DDFEndPointErrorMetric()
    empty({"ddf": pred}, {"ddf": target["ddf"], "overlap": torch.zeros_like(target["overlap"])})
    assert math.isnan(empty.aggregate().item())


def test_coarse_prediction_is_brought_to_the_true_grid_per_axis():
    target = _target(batch=1, spatial=(8, 4), shift=(2.0, 1.0))
    coarse = torch.zeros(1, 2, 4, 4)
    coarse[:, 0], coarse[:, 1] = 1.0, 1.0  # axis 0 is half as fine: 1 coarse voxel = 2 fine voxels
    metric = DDFEndPointErrorMetric()
    metric({"ddf": coarse}, target)
    assert metric.aggregate().item() == pytest.approx(0.0, abs=1e-6)


def test_identical_and_shifted_features():
    gen = torch.Generator().manual_seed(0)
    feats = torch.rand(2, 5, 6, 7, 8, generator=gen) + 0.1
    metric = OverlapCosineMetric()
    metric({"features_a": feats, "features_b": feats}, _target(shift=(0.0, 0.0, 0.0)))
    assert metric.aggregate().item() == pytest.approx(1.0, abs=1e-6)
    # view B is view A shifted by one voxel along axis 0: warping A by the true field realigns them exactly
    shifted = torch.zeros_like(feats)
    shifted[:, :, :-1] = feats[:, :, 1:]
    target = _target(shift=(1.0, 0.0, 0.0))
    target["overlap"][:, :, -1] = 0  # where p + 1 leaves the grid
    total, weight = overlap_cosine(feats, shifted, target)
    torch.testing.assert_close(total / weight, torch.ones(2, 1, dtype=torch.float64))
    # orthogonal features score 0
    a, b = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    a[:, 0], b[:, 1] = 1.0, 1.0
    total, weight = overlap_cosine(a, b, _target(batch=1, spatial=(4, 4), shift=(0.0, 0.0)))
    assert (total / weight).item() == pytest.approx(0.0, abs=1e-6)


def test_pyramid_features_and_errors():
    feats = [torch.rand(1, 3, 2, 2), torch.rand(1, 3, 4, 4)]
    metric = OverlapCosineMetric(level=-1)
    metric({"features_a": feats, "features_b": feats}, _target(batch=1, spatial=(4, 4), shift=(0.0, 0.0)))
    assert metric.aggregate().item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(KeyError, match="features_a"):
        metric({"ddf": torch.zeros(1, 2, 4, 4)}, _target(batch=1, spatial=(4, 4), shift=(0.0, 0.0)))
    with pytest.raises(KeyError, match="'ddf' and 'overlap'"):
        DDFEndPointErrorMetric()({"ddf": torch.zeros(1, 2, 4, 4)}, {"ddf": torch.zeros(1, 2, 4, 4)})
    with pytest.raises(ValueError, match="overlap"):
        DDFEndPointErrorMetric()({"ddf": torch.zeros(1, 2, 4, 4)},
                                 {"ddf": torch.zeros(1, 2, 4, 4), "overlap": torch.ones(1, 1, 3, 4)})
    with pytest.raises(TypeError, match="output dict"):
        DDFEndPointErrorMetric()(torch.zeros(1, 2, 4, 4), _target(batch=1, spatial=(4, 4), shift=(0.0, 0.0)))
