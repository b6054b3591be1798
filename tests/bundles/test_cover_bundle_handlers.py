# SPDX-License-Identifier: Apache-2.0
"""Handlers and helpers the bundle configs use, on synthetic engines (fast)."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from ignite.engine import Engine, Events

from monai_cover.bundle import bundle_path, export_bundle
from monai_cover.handlers import (
    DDFEndPointError,
    GradientClipHandler,
    LossSummaryHandler,
    OverlapCosine,
    find_latest_checkpoint,
    read_loss_summary,
)
from monai_cover.networks import FeatureLevel


def _loss_engine(losses_per_epoch):
    it = iter([v for epoch in losses_per_epoch for v in epoch])
    engine = Engine(lambda e, b: {"loss": torch.tensor(next(it))})
    return engine


def test_loss_summary_rows_and_resume(tmp_path):
    path = tmp_path / "loss_summary.txt"
    engine = _loss_engine([[3.0, 2.0, 2.5], [2.0, 1.0, 1.5]])
    LossSummaryHandler(path).attach(engine)
    engine.run([0, 1, 2], max_epochs=2)
    rows = read_loss_summary(path)
    assert [(r["epoch"], r["iterations"], r["first"], r["last"], r["min"]) for r in rows] == [
        (1, 3, 3.0, 2.5, 2.0),
        (2, 3, 2.0, 1.5, 1.0),
    ]
    assert rows[0]["mean"] == pytest.approx(2.5)
    assert "mean loss epoch 1: 2.5 -> epoch 2: 1.5 (-40.0%)" in path.read_text(encoding="utf-8")
    # a resumed run (state restored to epoch 1 before the first epoch starts) keeps epoch 1, redoes epoch 2
    engine = _loss_engine([[0.5, 0.5, 0.5]])
    LossSummaryHandler(path).attach(engine)

    @engine.on(Events.STARTED)
    def _restore(e):
        e.state.epoch, e.state.iteration = 1, 3

    engine.run([0, 1, 2], max_epochs=2)
    rows = read_loss_summary(path)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0]["first"] == 3.0 and rows[1]["mean"] == 0.5


def test_gradient_clip_handler():
    from monai.engines.utils import IterationEvents

    net = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(engine, batch):
        opt.zero_grad()
        (net(torch.ones(1, 4)) * 1000).sum().backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        return {"loss": torch.tensor(0.0)}

    engine = Engine(step)
    engine.register_events(*IterationEvents)
    engine.optimizer = opt
    GradientClipHandler(max_norm=1.0).attach(engine)
    engine.run([0], max_epochs=1)
    norm = torch.sqrt(sum((p.grad**2).sum() for p in net.parameters()))
    assert float(norm) == pytest.approx(1.0, rel=1e-4)
    assert engine.state.grad_norm > 1000


def test_cover_metrics_values():
    ddf = torch.zeros(2, 3, 8, 8, 8)
    ddf[:, 0] = 1.0
    overlap = torch.ones(2, 1, 8, 8, 8)
    overlap[1] = 0  # the second pair does not count
    pred_ddf = ddf.clone()
    pred_ddf[0, 1] = 2.0  # error vector (0, 2, 0) on the first pair
    feats = torch.rand(2, 4, 8, 8, 8) + 0.1
    epe, cos = DDFEndPointError(), OverlapCosine()
    out = {
        "pred": {"ddf": pred_ddf, "features_a": feats, "features_b": feats},
        "label": {"ddf": ddf, "overlap": overlap},
    }
    for m in (epe, cos):
        m.reset()
        m.update(m._output_transform(out))
    assert epe.compute() == pytest.approx(2.0)
    # features_b == features_a and the true shift is 1 voxel: aligned except where warping reads outside
    assert 0.5 < cos.compute() <= 1.0
    same = {
        "pred": {"ddf": ddf, "features_a": feats, "features_b": feats},
        "label": {"ddf": ddf * 0, "overlap": overlap},
    }
    cos.reset()
    cos.update(cos._output_transform(same))
    assert cos.compute() == pytest.approx(1.0, abs=1e-5)


def test_find_latest_checkpoint_and_export(tmp_path, caplog):
    assert find_latest_checkpoint(tmp_path) is None
    for n in (2, 10, 9):
        torch.save({"epoch": torch.tensor(n)}, tmp_path / f"checkpoint_epoch={n}.pt")
    assert os.path.basename(find_latest_checkpoint(tmp_path)) == "checkpoint_epoch=10.pt"
    # a run killed while writing epoch 11 leaves it cut short: resume from epoch 10
    whole = (tmp_path / "checkpoint_epoch=10.pt").read_bytes()
    (tmp_path / "checkpoint_epoch=11.pt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "checkpoint_epoch=12.pt").write_bytes(b"")
    assert os.path.basename(find_latest_checkpoint(tmp_path)) == "checkpoint_epoch=10.pt"
    for n in (11, 12):
        (tmp_path / f"checkpoint_epoch={n}.pt").unlink()
    # corrupted inside, size kept (the archive's directory is intact): its CRC check fails, epoch 9 is taken
    torch.save({"weights": torch.arange(1000.0)}, tmp_path / "checkpoint_epoch=10.pt")
    data = bytearray((tmp_path / "checkpoint_epoch=10.pt").read_bytes())
    start = data.index(torch.arange(1000.0).numpy().tobytes()[:64])
    data[start + 100 : start + 110] = b"\xff" * 10
    (tmp_path / "checkpoint_epoch=10.pt").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="monai_cover.handlers.training"):
        assert os.path.basename(find_latest_checkpoint(tmp_path)) == "checkpoint_epoch=9.pt"
    assert any("skipping" in r.message and "checkpoint_epoch=10.pt" in r.message and "corrupted inside" in r.message
               for r in caplog.records)
    (tmp_path / "checkpoint_epoch=10.pt").unlink()
    src = bundle_path("cover_pretrain_3d")
    before = sorted(p.name for p in src.rglob("*"))
    export_bundle(src, tmp_path / "out")
    assert (tmp_path / "out" / "configs" / "metadata.json").is_file() and (tmp_path / "out" / "LICENSE").is_file()
    assert sorted(p.name for p in src.rglob("*")) == before
    export_bundle(tmp_path, tmp_path / "out2")  # not a bundle: nothing copied
    assert not (tmp_path / "out2").exists()


def test_feature_level():
    from monai.networks.nets import BasicUNet

    from monai_cover.networks import FeaturePyramid

    pyramid = FeaturePyramid(BasicUNet(spatial_dims=3, in_channels=1, out_channels=1, features=(4, 4, 8, 8, 16, 6)))
    net = FeatureLevel(pyramid).eval()
    with torch.no_grad():
        assert tuple(net(torch.rand(1, 1, 32, 32, 32)).shape) == (1, 6, 32, 32, 32)
