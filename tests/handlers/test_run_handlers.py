# SPDX-License-Identifier: Apache-2.0
"""Handlers of the bundles' runs on synthetic engines (fast): checkpoints kept across resumed runs, the validation
pictures in TensorBoard, a per-class metric under class names."""

from __future__ import annotations

import os

import numpy as np
import torch
from ignite.engine import Engine, Events
from tensorboard.backend.event_processing import event_accumulator
from torch.utils.tensorboard import SummaryWriter

from monai_cover.handlers import PANELS, CheckpointRetentionHandler, ClassMetricsHandler, CoverImageHandler


def _checkpoint(folder, epoch, whole=True):
    path = os.path.join(folder, f"checkpoint_epoch={epoch}.pt")
    torch.save({"epoch": torch.tensor(epoch)}, path)
    if not whole:
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    return path


def _names(folder):
    return sorted(os.listdir(folder), key=lambda n: int(n.split("=")[1].split(".")[0]))


def test_checkpoint_retention_counts_across_runs(tmp_path):
    folder = str(tmp_path)
    for epoch in (1, 2, 3):  # a killed run kept these (its saver's n_saved is per run), the third cut short
        _checkpoint(folder, epoch, whole=epoch != 3)
    handler = CheckpointRetentionHandler(folder, n_saved=2)
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED(once=3))
    def _save(e):  # the resumed run's saver wrote epoch 3 again (attached before the handler in the bundle)
        _checkpoint(folder, 3)

    @engine.on(Events.STARTED)
    def _resume(e):
        e.state.epoch, e.state.iteration = 2, 2

    handler.attach(engine)  # after the saver, as in the bundle
    engine.run([0], max_epochs=3)
    assert _names(folder) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]
    # later epochs of an earlier, longer run are left alone; disabled (rank > 0) does nothing
    _checkpoint(folder, 9)
    handler(type("E", (), {"state": type("S", (), {"epoch": 4})()})())
    assert "checkpoint_epoch=9.pt" in os.listdir(folder)
    _checkpoint(folder, 1)
    CheckpointRetentionHandler(folder, n_saved=1, enabled=False)(engine)
    assert "checkpoint_epoch=1.pt" in os.listdir(folder)


def test_cover_image_handler_writes_every_panel_at_every_validation(tmp_path):
    torch.manual_seed(0)
    ddf = torch.zeros(2, 3, 8, 10, 6)
    ddf[:, 0] = 2.0
    out = {
        "image": torch.rand(2, 1, 8, 10, 6),
        "pred": {"ddf": ddf * 0.5},
        "label": {"ddf": ddf, "overlap": torch.ones(2, 1, 8, 10, 6)},
    }
    batch = {"view_b": torch.rand(2, 1, 8, 10, 6)}
    engine = Engine(lambda e, b: out)
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: setattr(e.state, "batch", batch))
    writer = SummaryWriter(log_dir=str(tmp_path))
    handler = CoverImageHandler(summary_writer=writer)
    handler.attach(engine)
    panels = handler.panels(type("E", (), {"state": type("S", (), {"output": out, "batch": batch})()})())
    assert list(panels) == list(PANELS)
    assert all(p.shape == (1, 8, 10) and p.min() >= 0 and p.max() <= 1 for p in panels.values())
    np.testing.assert_allclose(panels["ddf_pred_magnitude"], 0.5)  # half the true magnitude, on the true scale
    np.testing.assert_allclose(panels["error_magnitude"], 0.5)
    np.testing.assert_allclose(panels["ddf_true_axis0"], 1.0)
    engine.run([0, 1, 2], max_epochs=2)  # two "validations" of 3 iterations: one set of pictures each
    writer.flush()
    acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {f"val_images/{p}" for p in PANELS}
    assert [e.step for e in acc.Images("val_images/view_a")] == [1, 2]


def test_class_metrics_handler_names_the_classes(tmp_path):
    values = torch.tensor([[0.5, 0.25, float("nan")], [0.7, 0.75, 1.0]])

    class Img(torch.Tensor):
        pass

    def step(engine, batch):
        return None

    engine = Engine(step)
    files = iter(["a.nii.gz", "b.nii.gz"])

    def _batch(e):
        img = torch.zeros(1).as_subclass(Img)
        img.meta = {"filename_or_obj": next(files)}
        e.state.batch = [{"image": img}]

    engine.add_event_handler(Events.ITERATION_STARTED, _batch)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: setattr(e.state, "metric_details", {"dice": values}))
    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    handler = ClassMetricsHandler("dice", ["background", "liver", "tumour", "vessel"], summary_writer=writer,
                                  save_dir=str(tmp_path))  # fmt: skip
    engine.add_event_handler(Events.EPOCH_STARTED, handler._reset)
    engine.add_event_handler(Events.ITERATION_COMPLETED, handler._collect)
    engine.add_event_handler(Events.EPOCH_COMPLETED, handler)  # after metric_details is set
    engine.run([0, 1], max_epochs=1)
    rows = (tmp_path / "dice_per_class.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "filename,liver,tumour,vessel"
    assert rows[1] == "a.nii.gz,0.5,0.25,nan" and rows[2] == "b.nii.gz,0.7,0.75,1"
    assert rows[3] == "mean,0.6,0.5,1"  # NaN (class absent) left out of the mean
    writer.flush()
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert {"dice/liver", "dice/tumour", "dice/vessel"} <= set(acc.Tags()["scalars"])
