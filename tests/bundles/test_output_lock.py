# SPDX-License-Identifier: Apache-2.0
"""One run per output folder: two real ``python -m monai.bundle run`` processes on one ``output_dir`` (the second
stops within seconds, naming the first; the first finishes untouched), and the lock's rules in one process
(a holder in another process, a stale lock, release)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import (
    PRETRAIN,
    REPO,
    TINY_PRETRAIN,
    bundle_args,
    checkpoint_epochs,
    subprocess_env,
    write_stale_lock,
    write_volumes,
)

from monai_cover.bundle import LOCK_NAME, OutputDirLockedError, lock_output_dir

CONFIG = PRETRAIN / "configs" / "train.json"


def test_two_runs_on_one_output_dir_one_is_refused_and_the_other_finishes(tmp_path):
    """Both runs start together (so neither can finish before the other reaches the lock); whichever takes the lock
    first trains, the other stops within seconds, naming it."""
    data = write_volumes(tmp_path / "data", n=3)
    out = tmp_path / "out"
    args = bundle_args([CONFIG], PRETRAIN, out, *TINY_PRETRAIN, "--dataset_dir", str(data), "--val_interval", "3",
                       "--epochs", "3")  # fmt: skip
    procs, logs, started, ended = [], [tmp_path / "a.log", tmp_path / "b.log"], [], {}
    try:
        for log in logs:
            started.append(time.monotonic())
            with open(log, "w", encoding="utf-8") as f:
                procs.append(subprocess.Popen(args, cwd=str(tmp_path), env=subprocess_env(), stdout=f,
                                              stderr=subprocess.STDOUT, text=True,
                                                  encoding="utf-8", errors="replace"))  # fmt: skip
        deadline = time.monotonic() + 900
        while len(ended) < 2 and time.monotonic() < deadline:
            for i, p in enumerate(procs):
                if i not in ended and p.poll() is not None:
                    ended[i] = time.monotonic()
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = [log.read_text(encoding="utf-8") for log in logs]
    codes = [p.returncode for p in procs]
    assert sorted(c == 0 for c in codes) == [False, True], (codes, outputs[0][-2000:], outputs[1][-2000:])
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    # the refused run stopped at once, before reading any data, naming the run that holds the folder
    error = outputs[loser].rsplit("\nERROR: ", 1)[1]
    assert error.startswith(f"output_dir {str(out)!r} is in use by another run: pid {procs[winner].pid} on host ")
    assert re.search(r", started \d{4}-\d\d-\d\dT", error) and "pass another --output_dir" in error
    assert "data check" not in outputs[loser] and not re.search(r"Epoch: \d+/\d+, Iter", outputs[loser])
    assert ended[loser] - started[loser] < 120 and ended[loser] < ended[winner]
    # the other finished all its epochs, untouched: its own checkpoints, one TensorBoard event file
    assert "Epoch: 3/3" in outputs[winner]
    assert checkpoint_epochs(out / "checkpoints") == [2, 3]
    assert len(list((out / "logs").glob("events.out.tfevents.*"))) == 1
    assert (out / LOCK_NAME).read_text(encoding="utf-8") == ""  # released


_HOLD = """
import sys, time
from monai_cover.bundle import lock_output_dir
lock = lock_output_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_lock_rules_in_one_process(tmp_path):
    out = tmp_path / "out"
    env = dict(subprocess_env(), PYTHONPATH=str(REPO))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, env=env,
                              encoding="utf-8", errors="replace")
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputDirLockedError, match=rf"in use by another run: pid {holder.pid} on host"):
            lock_output_dir(out)
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: the kernel dropped its lock, its info stays in the file and is taken over
    lock = lock_output_dir(out)
    assert lock.owned and lock.took_over["pid"] == holder.pid
    assert json.loads((out / LOCK_NAME).read_text(encoding="utf-8"))["pid"] == os.getpid()
    assert lock_output_dir(out) is lock  # taken again by the same process: the same lock
    lock.release()
    assert (out / LOCK_NAME).read_text(encoding="utf-8") == "" and not lock.owned
    # a lock file written by a process that is gone (as a SIGKILL leaves it)
    pid = write_stale_lock(out)
    with lock_output_dir(out) as lock:
        assert lock.took_over["pid"] == pid
    assert (out / LOCK_NAME).read_text(encoding="utf-8") == ""
