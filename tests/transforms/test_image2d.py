# SPDX-License-Identifier: Apache-2.0
"""The 2-D input transforms: slices of volumes with enough foreground, MONOCHROME1, grey conversion, squeezing,
per-dimension dispatch, the modality read from DICOM metadata; and the 2-D readers on real files written here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImage

from monai_cover.transforms import (
    MONOCHROME1_HANDLED,
    ApplyBySpatialDimsd,
    InvertMonochrome1,
    InvertMonochrome1d,
    RandSlice,
    RandSliced,
    ScaleIntensityByModalityd,
    SqueezeSpatial,
    SqueezeSpatiald,
    ToGrayscale,
    ToGrayscaled,
    foreground_slices,
    photometric_interpretation,
)


def load_helpers():
    """``tests/dicom_helpers.py`` (the test folders are not packages)."""
    spec = importlib.util.spec_from_file_location("dicom_helpers", Path(__file__).parents[1] / "dicom_helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _volume() -> torch.Tensor:
    """(1, 20, 22, 10): slices 3..6 along axis 2 fully bright, slice 8 with 10 % bright, the rest empty."""
    v = torch.zeros(1, 20, 22, 10)
    v[..., 3:7] = 1.0
    v[0, :4, :11, 8] = 1.0  # 44 of 440 pixels
    return v


def test_foreground_slices_rule_and_range():
    v = _volume()
    assert foreground_slices(v, 2, 0.25).tolist() == [3, 4, 5, 6]
    assert foreground_slices(v, 2, 0.05).tolist() == [3, 4, 5, 6, 8]
    assert foreground_slices(v, 2, 0.25, slice_range=(0.5, 1.0)).tolist() == [5, 6]
    with pytest.raises(ValueError, match="slice_range"):
        foreground_slices(v, 2, 0.0, slice_range=(0.6, 0.2))


def test_rand_slice_draws_only_foreground_slices_reproducibly():
    v = _volume()
    t = RandSlice(axis=2, min_fraction=0.25, num_samples=50)
    t.set_random_state(seed=3)
    first = t(v)
    assert len(first) == 50 and all(s.shape == (1, 20, 22) for s in first)
    assert all(float(s.mean()) == 1.0 for s in first)  # every drawn slice is one of the bright ones
    assert set(t._indices) == {3, 4, 5, 6}
    t.set_random_state(seed=3)
    assert t._indices != [] and [int(i) for i in t.candidates(v)] == [3, 4, 5, 6]
    again = t(v)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    # along another axis, and a 2-D image passes through
    assert RandSlice(axis=0)(v).shape == (1, 22, 10)
    img = torch.rand(1, 7, 9)
    assert RandSlice(axis=2)(img) is img


def test_rand_slice_falls_back_to_fullest_slice():
    v = torch.zeros(1, 8, 8, 5)
    v[0, 0, 0, 2] = 1.0  # one bright pixel in slice 2
    t = RandSlice(axis=2, min_fraction=0.5)
    t.set_random_state(0)
    assert float(t(v).sum()) == 1.0 and t._indices == [2]


def test_rand_sliced_shares_index_keeps_affine_and_drops_range():
    v = _volume()
    label = (v > 0).long() * 2
    affine = torch.tensor([[2.0, 0, 0, -10], [0, 3.0, 0, -20], [0, 0, 4.0, -30], [0, 0, 0, 1]], dtype=torch.float64)
    data = {"image": MetaTensor(v, affine=affine), "label": label, "slice_range": [0.0, 0.5], "name": "x"}
    t = RandSliced(keys=["image", "label"], axis=2, min_fraction=0.25, num_samples=4)
    t.set_random_state(seed=0)
    out = t(data)
    assert isinstance(out, list) and len(out) == 4
    for o in out:
        z = o["image"].meta["slice_index"]
        assert z in (3, 4)  # within the first half, with foreground
        assert "slice_range" not in o and o["name"] == "x"
        assert torch.equal(o["label"], label[..., z])
        expected = [[2.0, 0.0, -10.0], [0.0, 3.0, -20.0], [0.0, 0.0, 1.0]]
        assert np.allclose(o["image"].affine.numpy(), expected)
        assert float(o["image"].affine.numpy()[0, 2]) == -10.0
    # the slice origin moves along a slanted axis
    t1 = RandSliced(keys="image", axis=0, num_samples=1)
    t1.set_random_state(seed=1)
    one = t1({"image": MetaTensor(v, affine=affine)})
    x = one["image"].meta["slice_index"]
    assert np.allclose(one["image"].affine.numpy()[:2, 2], [-20.0, -30.0]) and one["image"].shape == (1, 22, 10)
    assert 0 <= x < 20


def test_squeeze_spatial():
    single = MetaTensor(torch.rand(1, 6, 7, 1), affine=torch.diag(torch.tensor([0.5, 0.7, 1.0, 1.0])))
    out = SqueezeSpatiald("image")({"image": single})["image"]
    assert out.shape == (1, 6, 7) and np.allclose(out.affine.numpy(), np.diag([0.5, 0.7, 1.0]))
    vol = torch.rand(1, 6, 7, 3)
    assert SqueezeSpatiald("image")({"image": vol})["image"].shape == (1, 6, 7, 3)
    assert SqueezeSpatial(2)(torch.rand(1, 6, 7, 1, 1)).shape == (1, 6, 7)


def test_to_grayscale_luma_alpha_and_refusal():
    rgb = torch.zeros(3, 2, 2)
    rgb[0, 0, 0], rgb[1, 0, 1], rgb[2, 1, 0] = 255, 255, 255
    grey = ToGrayscaled("image")({"image": rgb})["image"]
    assert grey.shape == (1, 2, 2)
    assert torch.allclose(grey[0], torch.tensor([[0.299 * 255, 0.587 * 255], [0.114 * 255, 0.0]]))
    rgba = torch.cat([rgb, torch.full((1, 2, 2), 7.0)])
    assert torch.allclose(ToGrayscaled("image")({"image": rgba})["image"], grey)
    one = torch.rand(1, 3, 3)
    assert ToGrayscaled("image")({"image": one})["image"] is one
    with pytest.raises(ValueError, match="'image' of '\\?' has 5 channels"):
        ToGrayscaled("image")({"image": torch.rand(5, 3, 3)})
    assert torch.allclose(ToGrayscale()(rgb), grey)  # the array form


def test_invert_monochrome1_once():
    values = torch.tensor([[[0.0, 100.0], [4095.0, 2000.0]]])
    mono1 = MetaTensor(values.clone(), meta={"0028|0004": "MONOCHROME1 "})
    out = InvertMonochrome1d("image")({"image": mono1})["image"]
    assert out.tolist() == [[[4095.0, 3995.0], [0.0, 2095.0]]] and out.meta[MONOCHROME1_HANDLED] is True
    twice = InvertMonochrome1d("image")({"image": out})["image"]
    assert torch.equal(twice, out)  # never inverted twice
    handled = MetaTensor(values.clone(), meta={"0028|0004": "MONOCHROME1", MONOCHROME1_HANDLED: True})
    assert torch.equal(InvertMonochrome1d("image")({"image": handled})["image"], values)
    pydicom_style = MetaTensor(values.clone(), meta={"00280004": {"vr": "CS", "Value": ["MONOCHROME1"]}})
    assert photometric_interpretation(pydicom_style) == "MONOCHROME1"
    assert InvertMonochrome1d("image")({"image": pydicom_style})["image"][0, 0, 0] == 4095.0
    assert InvertMonochrome1()(MetaTensor(values.clone(), meta={"0028|0004": "MONOCHROME1"})).tolist() == out.tolist()
    assert InvertMonochrome1()(values) is values  # a plain tensor has no tag
    mono2 = MetaTensor(values.clone(), meta={"0028|0004": "MONOCHROME2"})
    assert torch.equal(InvertMonochrome1d("image")({"image": mono2})["image"], values)


def test_apply_by_spatial_dims():
    double = ApplyBySpatialDimsd("image", lambda d: {**d, "image": d["image"] * 2}, spatial_dims=3)
    assert float(double({"image": torch.ones(1, 2, 2, 2)})["image"].max()) == 2.0
    assert float(double({"image": torch.ones(1, 2, 2)})["image"].max()) == 1.0


def test_scale_by_modality_reads_dicom_tag():
    hu = MetaTensor(torch.tensor([[[-1000.0, 0.0], [1000.0, 3000.0]]]), meta={"0008|0060": "CT"})
    scale = ScaleIntensityByModalityd("image", meta_modality_key="0008|0060")
    assert scale({"image": hu, "modality": "unknown"})["image"].tolist() == [[[0.0, 0.5], [1.0, 1.0]]]
    # without the option (the 3-D bundles), an unknown modality goes by the range: HU-like gets the window too
    plain = ScaleIntensityByModalityd("image")
    assert plain({"image": hu, "modality": "unknown"})["image"].tolist() == [[[0.0, 0.5], [1.0, 1.0]]]
    mr_range = MetaTensor(torch.tensor([[[0.0, 100.0], [400.0, 800.0]]]))
    scaled = plain({"image": mr_range, "modality": "unknown"})["image"]
    assert float(scaled.min()) == 0.0 and float(scaled.max()) == 1.0 and 0.1 < float(scaled[0, 0, 1]) < 0.2
    # the item's own modality wins over the tag and the range: percentiles, not the HU window
    mr = scale({"image": hu.clone(), "modality": "MR"})["image"]
    assert float(mr.min()) == 0.0 and float(mr[0, 0, 1]) > 0.2 and mr.tolist() != [[[0.0, 0.5], [1.0, 1.0]]]


def test_2d_readers_on_real_files(tmp_path):
    from PIL import Image

    from monai_cover.data import PictureReader, image_readers_2d

    stored = np.zeros((6, 8), np.uint16)
    stored[0, :3] = [0, 100, 4095]
    path = load_helpers().write_dicom(tmp_path / "m1.dcm", stored)
    load = Compose([LoadImage(reader=image_readers_2d(), image_only=True, ensure_channel_first=True)])
    img = load(str(path))
    assert img.shape == (1, 8, 6, 1)  # x (columns) first, one frame
    assert [float(img[0, c, 0, 0]) for c in range(3)] == [4095.0, 3995.0, 0.0]  # GDCM inverted MONOCHROME1
    assert img.meta[MONOCHROME1_HANDLED] is True and img.meta["0008|0060"].strip() == "CR"
    out = InvertMonochrome1d("image")(SqueezeSpatiald("image")({"image": img}))["image"]
    assert out.shape == (1, 8, 6) and float(out[0, 0, 0]) == 4095.0  # not inverted a second time
    rgb = (np.arange(4 * 5 * 3) % 255).astype(np.uint8).reshape(4, 5, 3)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    pic = load(str(tmp_path / "rgb.png"))
    assert pic.shape == (3, 5, 4)  # PIL: x first, channels moved first
    with pytest.raises(ValueError, match="PictureReader reads only"):
        PictureReader().read(str(path))
