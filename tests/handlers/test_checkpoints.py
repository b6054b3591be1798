# SPDX-License-Identifier: Apache-2.0
"""Atomic checkpoint writes on a real full disk (a small tmpfs where the machine allows mounting one) and the random
states a resumed run needs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandFlipd, RandSpatialCropd

from monai_cover.handlers import AtomicCheckpointSaver, DiskFullError, RandomStates, save_checkpoint_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundles"))
from conftest import small_tmpfs  # noqa: E402


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (a disk that fills up for real); skipped where mounting is not allowed."""
    with small_tmpfs(tmp_path / "disk", "2m") as mount:
        yield mount


def test_a_write_that_fills_the_disk_keeps_the_previous_file(small_disk):
    small = {"w": torch.ones(64, 1024)}  # 256 KB
    path = save_checkpoint_file(small, small_disk / "checkpoint_epoch=1.pt")
    before = path.read_bytes()
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600
    big = {"w": torch.ones(1024, 1024)}  # 4 MB > the 2 MB disk
    message = (r"no space left to write .*checkpoint_epoch=1\.pt \(about 4\.0 MB needed, [\d.]+ MB free on its "
               r"disk\); the previous checkpoint_epoch=1\.pt is kept")
    with pytest.raises(DiskFullError, match=message):
        save_checkpoint_file(big, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(small_disk)) == ["checkpoint_epoch=1.pt"]  # no temporary file left
    assert torch.equal(torch.load(path, weights_only=True)["w"], small["w"])


def test_the_ignite_saver_writes_atomically_and_reports_a_full_disk(small_disk):
    net = torch.nn.Linear(512, 512)  # 1 MB of weights: the second copy does not fit beside the first
    engine = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(str(small_disk), {"model": net}, save_interval=1, n_saved=None, epoch_level=True)
    saver.attach(engine)
    with pytest.raises(DiskFullError, match="no space left to write .*model_epoch=2.pt"):
        engine.run([0], max_epochs=3)
    names = sorted(os.listdir(small_disk))
    assert names == ["model_epoch=1.pt"], names
    loaded = torch.load(small_disk / "model_epoch=1.pt", weights_only=True)
    assert torch.equal(loaded["weight"], net.weight.detach())


def test_fixed_file_names_are_kept_with_the_atomic_writer(tmp_path):
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_final=True, final_filename="model.pt").attach(engine)
    engine.run([0], max_epochs=1)
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _loader(seed: int = 0):
    data = [{"image": np.random.default_rng(i).random((1, 12, 12)).astype(np.float32)} for i in range(6)]
    transform = Compose([RandSpatialCropd("image", roi_size=(6, 6), random_size=False), RandFlipd("image", prob=0.5)])
    torch.manual_seed(seed)
    return DataLoader(Dataset(data, transform), batch_size=2, shuffle=True, num_workers=0)


def _epoch(loader) -> list[torch.Tensor]:
    return [b["image"].clone() for b in loader]


def test_random_states_make_the_next_epoch_draw_the_same():
    loader = _loader()
    engine = Engine(lambda e, b: None)
    engine.data_loader = loader
    states = RandomStates(engine)
    _epoch(loader)
    saved = states.state_dict()
    # the Compose, its two random transforms and the array transform inside the dictionary crop
    assert [t[0] for t in saved["transforms"]] == ["Compose", "RandSpatialCropd", "RandSpatialCrop", "RandFlipd"]
    uninterrupted = _epoch(loader)

    fresh = _loader(seed=123)  # a new process: the loader and its transforms seeded anew
    engine.data_loader = fresh
    without = _epoch(_loader(seed=123))
    states.load_state_dict(saved)
    resumed = _epoch(fresh)
    assert all(torch.equal(a, b) for a, b in zip(resumed, uninterrupted))
    assert not all(torch.equal(a, b) for a, b in zip(without, uninterrupted))


def test_random_states_survive_a_weights_only_load(tmp_path):
    loader = _loader()
    engine = Engine(lambda e, b: None)
    engine.data_loader = loader
    save_checkpoint_file({"rng": RandomStates(engine).state_dict()}, tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)["rng"]
    RandomStates(engine).load_state_dict(state)
    assert isinstance(state["python"], (tuple, list)) and state["numpy"][0] == "MT19937"


def test_fired_once_per_epoch_end(tmp_path):
    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    calls = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: calls.append(e.state.epoch))
    AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_interval=2, n_saved=None, epoch_level=True).attach(engine)
    engine.run([0], max_epochs=4)
    assert sorted(os.listdir(tmp_path)) == ["model_epoch=2.pt", "model_epoch=4.pt"] and calls == [1, 2, 3, 4]


def test_a_resumed_schedule_keeps_this_runs_length():
    """A 1-epoch run's scheduler ends at learning rate 0; resumed with more epochs it must continue this run's
    schedule (PyTorch's state_dict would bring back the old length and train on at 0)."""
    from monai.optimizers import WarmupCosineSchedule

    from monai_cover.handlers import ResumableSchedule

    def make(t_total):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return opt, WarmupCosineSchedule(opt, warmup_steps=2, t_total=t_total, warmup_multiplier=0.1)

    opt, short = make(3)
    for _ in range(3):
        opt.step()
        short.step()
    assert opt.param_groups[0]["lr"] == 0.0  # the short run's end
    saved = ResumableSchedule(short).state_dict()
    opt_ref, ref = make(6)
    for _ in range(3):
        opt_ref.step()
        ref.step()
    opt_new, longer = make(6)
    opt_new.load_state_dict(opt.state_dict())  # as the checkpoint loader does first: lr 0 again
    ResumableSchedule(longer).load_state_dict(saved)
    assert longer.last_epoch == 3 and opt_new.param_groups[0]["lr"] == pytest.approx(opt_ref.param_groups[0]["lr"])
    assert opt_new.param_groups[0]["lr"] > 0.5
    longer.step()
    ref.step()
    assert opt_new.param_groups[0]["lr"] == pytest.approx(opt_ref.param_groups[0]["lr"])
