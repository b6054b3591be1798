# SPDX-License-Identifier: Apache-2.0
"""Levels matched to the crop: how many the head reads, the padding rule kept, the warning on degenerate levels,
and the head at initialisation no worse than predicting zero on real pairs."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch
from monai.networks.nets import BasicUNet

from monai_cover.ddf import capture_range
from monai_cover.networks import CoverNet, FeaturePyramid, levels_for_size, min_level_size

HAS_NILEARN = importlib.util.find_spec("nilearn") is not None


def test_levels_for_size_keeps_the_coarsest_level_at_least_4r():
    assert min_level_size(2) == 8 and min_level_size(3) == 12
    assert [levels_for_size((s,) * 3) for s in (16, 32, 48, 64, 96, 128, 256)] == [2, 3, 3, 4, 4, 5, 5]
    assert levels_for_size((32, 128, 128)) == 3  # the smallest axis decides
    assert levels_for_size((96, 96), radius=3) == 4  # coarsest 12 = 4 x 3
    assert levels_for_size((4, 4)) == 1
    assert levels_for_size((256, 256), max_levels=4) == 4
    with pytest.raises(ValueError, match="max_levels"):
        levels_for_size((32, 32), max_levels=0)


def _unet(dims=3):
    return BasicUNet(spatial_dims=dims, in_channels=1, out_channels=1, features=(4, 4, 8, 8, 16, 4))


def test_feature_pyramid_levels_keep_the_padding_rule():
    pyramid = FeaturePyramid(_unet(), levels=3)
    assert pyramid.layers == ("upcat_3", "upcat_2", "upcat_1")
    assert pyramid.size_divisible == 16  # BasicUNet's rule, not 1
    explicit = FeaturePyramid(_unet(), layers=["upcat_2", "upcat_1"])
    assert explicit.size_divisible == 16
    out = pyramid(torch.rand(1, 1, 20, 24, 28))  # padded to 32^3 inside, cropped back
    assert [tuple(f.shape[2:]) for f in out] == [(5, 6, 7), (10, 12, 14), (20, 24, 28)]
    with pytest.raises(ValueError, match=r"levels must be an integer in \[1, 5\]"):
        FeaturePyramid(_unet(), levels=6)


def test_cover_net_reads_the_finest_levels_and_warns_on_degenerate_ones():
    net = CoverNet(FeaturePyramid(_unet(2)), levels=3)
    assert net.head.in_channels == (8, 4, 4) and net.capture_range == capture_range(2, 3) == 14
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = net(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))  # coarsest 8^2: no warning
    assert tuple(out["ddf"].shape) == (2, 2, 32, 32)
    full = CoverNet(FeaturePyramid(_unet(2)))
    with pytest.warns(UserWarning, match=r"coarsest level is \(2, 2\) voxels.*levels_for_size"):
        full(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="levels=6 but the backbone has 5"):
        CoverNet(FeaturePyramid(_unet(2)), levels=6)


def _real_pairs(patch, count=8, seed=0):
    """Real COVER pairs from the MNI152 template (nilearn), at 2 mm, bounded by the matched head's reach."""
    from monai.transforms import RandSpatialCropSamples
    from nilearn.datasets import load_mni152_template

    from monai_cover.transforms import RandCoverPair

    volume = torch.as_tensor(np.asarray(load_mni152_template(resolution=2).get_fdata(), dtype=np.float32))[None]
    volume = (volume - volume.min()) / (volume.max() - volume.min())
    crop = [int(np.ceil(1.5 * p)) for p in patch]
    if len(patch) == 2:  # one crop from each of `count` axial slices through the middle of the brain
        middle = volume.shape[-1] // 2
        sources = [volume[..., middle - count + 2 * i] for i in range(count)]
    else:
        sources = [volume] * count
    crops = RandSpatialCropSamples(crop, num_samples=1, random_size=False)
    crops.set_random_state(seed)
    pair = RandCoverPair(spatial_size=patch, max_displacement=capture_range(2, levels_for_size(patch)))
    pair.set_random_state(seed)
    a, b, d, o = [], [], [], []
    for src in sources:
        out = pair(crops(src)[0])
        a.append(out.view_a), b.append(out.view_b), d.append(out.ddf), o.append(out.overlap)
    return torch.stack(a), torch.stack(b), {"ddf": torch.stack(d), "overlap": torch.stack(o)}


@pytest.mark.skipif(not HAS_NILEARN, reason="needs nilearn's MNI152 template")
@pytest.mark.parametrize("patch", [(96, 96), (32, 32, 32)])
def test_default_head_at_initialisation_is_no_worse_than_zero_on_real_pairs(patch):
    from monai_cover.metrics import ddf_end_point_error

    view_a, view_b, target = _real_pairs(patch)
    torch.manual_seed(0)
    unet = BasicUNet(spatial_dims=len(patch), in_channels=1, out_channels=1, features=(32, 32, 64, 128, 256, 32))
    net = CoverNet(FeaturePyramid(unet), levels=levels_for_size(patch)).eval()
    with torch.no_grad():
        error, zero = ddf_end_point_error(net(view_a, view_b)["ddf"], target, relative=True)
    ratio = float(error.sum() / zero.sum())
    assert float(zero.sum()) > 0  # the pairs do move
    assert ratio <= 1.05, f"EPE / EPE(zero) at initialisation = {ratio:.3f} for {patch}"


def test_cover_net_returns_the_finest_projections_on_request():
    net = CoverNet(FeaturePyramid(_unet(2)), levels=2, return_projections=True)
    view_a, view_b = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    out = net(view_a, view_b)
    assert tuple(out["projections_a"].shape) == (2, 8, 32, 32)  # head_dim 8 x 1 head at the finest level
    torch.testing.assert_close(out["projections_b"], net.head.projections[-1](out["features_b"]))
    assert "projections_a" not in CoverNet(FeaturePyramid(_unet(2)), levels=2)(view_a, view_b)
