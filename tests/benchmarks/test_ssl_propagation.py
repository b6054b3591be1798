# SPDX-License-Identifier: Apache-2.0
"""benchmarks/ssl_propagation.py: label propagation on constructed stacks whose answers are known: slices that are
shifted copies of one pattern (identity falls with the distance, a field that undoes the shift gives Dice 1,
label-revealing features within the window's reach give Dice 1), and a mirror-symmetric volume for the 3D route."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("ssl_propagation", ROOT / "benchmarks" / "ssl_propagation.py")
prop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prop)

N_CLASSES = 3


class OneHotPyramid(torch.nn.Module):
    """A 'backbone' whose finest features are the one-hot classes of the image (image values 0, 1, 2)."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        onehot = torch.cat([(x.round() == c).float() for c in range(N_CLASSES)], dim=1)
        return [onehot[..., ::2, ::2], onehot]


class ShiftOracle(torch.nn.Module):
    """A 'CoverNet' whose field undoes an integer shift along the first axis, found by circular cross-correlation:
    ``view_b(p) = view_a(p + ddf(p))``."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict:
        corr = torch.fft.ifftn(torch.fft.fftn(a[0, 0]).conj() * torch.fft.fftn(b[0, 0])).real
        shift = int(np.unravel_index(int(corr.argmax()), corr.shape)[0])
        shift = shift - a.shape[2] if shift > a.shape[2] // 2 else shift  # b = a rolled by +shift
        ddf = torch.zeros(1, a.ndim - 2, *a.shape[2:])
        ddf[:, 0] = -shift
        return {"ddf": ddf}


def _shifted_stack(depth: int = 12) -> dict:
    """Slices ``z`` of a 32x32 pattern rolled by ``z`` pixels along x; the pattern stays clear of the borders."""
    base = torch.zeros(32, 32, dtype=torch.long)
    base[6:14, 6:26] = 1
    base[14:20, 10:22] = 2
    labels = torch.stack([torch.roll(base, z, dims=0) for z in range(depth)], dim=-1)[None]
    return {"eval_image": labels.float(), "eval_label": labels}


def _by_route(records: list[dict]) -> dict:
    return {(r["route"], r["distance"]): r["dice_mean"] for r in records}


def test_slices_identity_field_and_features():
    cfg = {"spatial_dims": 2, "prop_sources": 3, "prop_distances": (1, 2, 8), "prop_radius": 3}
    task = _shifted_stack()
    recs = _by_route(prop.propagation_records(OneHotPyramid(), ShiftOracle(), task, cfg, N_CLASSES,
                                              lambda stack: list(range(stack.shape[-1])), "cpu"))
    assert {d for _, d in recs} == {1, 2, 8}
    assert recs[("identity", 1)] > recs[("identity", 2)] > recs[("identity", 8)]
    assert recs[("identity", 8)] < 0.5
    for d in (1, 2, 8):  # the field that undoes the shift carries the label exactly
        assert recs[("field", d)] == 1.0
    assert recs[("features", 1)] == recs[("features", 2)] == 1.0  # shifts within the 3-pixel window
    assert recs[("features", 8)] < recs[("field", 8)]  # beyond the window's reach


def test_no_cover_net_no_field_route():
    cfg = {"spatial_dims": 2, "prop_sources": 1, "prop_distances": (1,)}
    recs = prop.propagation_records(OneHotPyramid(), None, _shifted_stack(), cfg, N_CLASSES,
                                    lambda stack: [5], "cpu")
    assert {r["route"] for r in recs} == {"identity", "features"}


def test_mirror_of_a_symmetric_volume():
    """A volume symmetric across its split: the mirrored training half lands exactly on the evaluation half."""
    vol = torch.zeros(32, 16, 16, dtype=torch.long)
    vol[4:12, 3:13, 3:9] = 1
    vol[6:10, 5:11, 9:14] = 2
    vol = torch.cat([vol[:16], vol[:16].flip(0)])[None]  # symmetric about the middle of axis 0
    task = {"split": {"axis": 0}, "train_image": vol[:, :15].float(), "train_label": vol[:, :15],
            "eval_image": vol[:, 17:].float(), "eval_label": vol[:, 17:]}
    recs = _by_route(prop.propagation_records(OneHotPyramid(), None, task, {"spatial_dims": 3}, N_CLASSES, None,
                                              "cpu"))
    assert recs[("identity", "mirror")] == 1.0 and recs[("features", "mirror")] == 1.0
    shifted = dict(task, eval_label=torch.roll(task["eval_label"], 3, dims=1))  # a wrong target scores lower
    worse = _by_route(prop.propagation_records(OneHotPyramid(), None, shifted, {"spatial_dims": 3}, N_CLASSES, None,
                                               "cpu"))
    assert worse[("identity", "mirror")] < 0.8


def test_report_pairs_cover_routes_with_the_others_features():
    def rec(route, distance, dice, seed):
        return {"route": route, "distance": distance, "dice": [dice] * 3, "dice_mean": dice, "seed": seed}

    records = {"scratch": [rec("identity", 1, 0.5, s) for s in (0, 1)] + [rec("features", 1, 0.6, s) for s in (0, 1)],
               "cover": [rec("field", 1, 0.8, s) for s in (0, 1)] + [rec("features", 1, 0.7, s) for s in (0, 1)]}
    text = "\n".join(prop.propagation_report_lines(records))
    assert "| scratch | identity | 0.5000 (n=2) |" in text
    assert "| cover (field) - scratch (features) | +0.2000 [+0.2000, +0.2000] (2/2) |" in text
    assert "| cover (features) - scratch (features) | +0.1000 [+0.1000, +0.1000] (2/2) |" in text
    assert "cover | identity" not in text  # identity once
