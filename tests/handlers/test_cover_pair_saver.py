# SPDX-License-Identifier: Apache-2.0
"""CoverPairSaver writes every pair's fields as NIfTI through MONAI's SaveImage: names, layout, affine, values."""

from __future__ import annotations

from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_cover.handlers import CoverPairSaver


def _engine(batch: int = 2, spatial=(5, 6, 7)):
    gen = torch.Generator().manual_seed(0)
    affine = torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0]))
    view_a = MetaTensor(torch.rand(batch, 1, *spatial, generator=gen), affine=affine)
    view_b = torch.rand(batch, 1, *spatial, generator=gen)
    pred = {"ddf": torch.randn(batch, 3, *spatial, generator=gen),
            "features_a": torch.randn(batch, 4, *spatial, generator=gen),
            "features_b": torch.randn(batch, 4, *spatial, generator=gen)}
    label = {"ddf": torch.randn(batch, 3, *spatial, generator=gen),
             "overlap": (torch.rand(batch, 1, *spatial, generator=gen) > 0.5).float()}
    state = SimpleNamespace(output={"image": view_a, "label": label, "pred": pred}, batch={"view_b": view_b})
    return SimpleNamespace(state=state), affine


def test_files_layout_and_values(tmp_path):
    engine, affine = _engine()
    saver = CoverPairSaver(str(tmp_path / "pairs"))
    saver(engine)
    names = sorted(p.name for p in (tmp_path / "pairs").iterdir())
    expected = sorted(f"pair{i:04d}_{w}.nii.gz" for i in range(2) for w in (
        "ddf_pred", "ddf_true", "features_a", "features_b", "overlap", "view_a", "view_b"))
    assert names == expected
    out = engine.state.output
    ddf = nib.load(str(tmp_path / "pairs" / "pair0001_ddf_pred.nii.gz"))
    assert ddf.shape == (5, 6, 7, 3)  # channels last
    np.testing.assert_allclose(np.asarray(ddf.dataobj), np.moveaxis(out["pred"]["ddf"][1].numpy(), 0, -1), rtol=1e-6)
    view = nib.load(str(tmp_path / "pairs" / "pair0000_view_b.nii.gz"))
    assert view.shape == (5, 6, 7)  # one channel is squeezed
    np.testing.assert_allclose(np.asarray(view.dataobj), engine.state.batch["view_b"][0, 0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(view.affine, affine.numpy())
    saver(engine)  # the counter goes on across iterations
    assert (tmp_path / "pairs" / "pair0003_overlap.nii.gz").is_file()


def test_pyramid_levels_and_decollated_output_is_refused(tmp_path):
    engine, _ = _engine(batch=1)
    pred = engine.state.output["pred"]
    pred["features_a"] = [pred["features_a"][:, :, ::2, ::2, ::2], pred["features_a"]]
    pred["features_b"] = [pred["features_b"][:, :, ::2, ::2, ::2], pred["features_b"]]
    CoverPairSaver(str(tmp_path), levels=(0, -1), save_views=False)(engine)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "pair0000_features_a_level0.nii.gz" in names and "pair0000_features_b_level1.nii.gz" in names
    assert "pair0000_view_a.nii.gz" not in names
    assert nib.load(str(tmp_path / "pair0000_features_a_level0.nii.gz")).shape == (3, 3, 4, 4)
    engine.state.output = [engine.state.output]
    with pytest.raises(ValueError, match="decollate=False"):
        CoverPairSaver(str(tmp_path))(engine)
