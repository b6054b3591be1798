# SPDX-License-Identifier: Apache-2.0
"""One run per output folder: a lock file in ``output_dir``.

Two runs writing into one ``output_dir`` delete each other's checkpoints (``CheckpointSaver`` keeps ``n_saved``) and
mix their TensorBoard events. :py:func:`lock_output_dir` (the first item of every bundle config's ``run``, before
anything is written to ``output_dir``) takes ``output_dir/.monai_cover.lock``:

- the lock is an OS file lock (``fcntl.lockf``) held for the life of the process, so the kernel drops it when the
  process ends in any way, a ``SIGKILL`` included; the file holds the holder's pid, host, start time and command;
- a second run finds it held and stops at once with :py:class:`OutputDirLockedError` naming the holder;
- a lock file left by a process that is gone (killed) is taken over, with a warning naming that process;
- at the end of the run (``finalize``, or at exit) the file is emptied and unlocked (it is never deleted, so two
  starting runs always lock the same file);
- where the file system has no locks (or on Windows), the file itself is the lock (created exclusively); it is
  stale when its pid no longer runs on this host;
- under ``torch.distributed`` only rank 0 takes the lock and broadcasts the outcome, so every rank stops together
  (none waits for a collective that never comes); without a process group, processes with ``RANK`` > 0 skip it.
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

__all__ = ["LOCK_NAME", "OutputDirLock", "OutputDirLockedError", "lock_output_dir"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".monai_cover.lock"
_HELD: dict[str, OutputDirLock] = {}

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class OutputDirLockedError(RuntimeError):
    """Another run holds the output folder."""

    user_error = True


def _holder_text(info: dict) -> str:
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {info.get('started', '?')}" + (
        f" ({info['command']})" if info.get("command") else ""
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class OutputDirLock:
    """The lock of one output folder (see the module docstring); :py:meth:`release` is idempotent.

    Attributes:
        path: the lock file.
        owned: whether this process holds it (``False`` on ranks other than 0).
        info: what the file says about the holder.
        took_over: the previous holder's info when a stale lock was taken over, else ``None``.
    """

    def __init__(self, path: Path, owned: bool, info: dict | None = None, fd: int | None = None) -> None:
        self.path = Path(path)
        self.owned = owned
        self.info = info or {}
        self.took_over: dict | None = None
        self._fd = fd

    def release(self) -> None:
        """Empty and unlock the file (the holder only)."""
        if not self.owned or self.info.get("pid") not in (None, os.getpid()):
            return  # not ours, or a forked child that inherited the object
        self.owned = False
        _HELD.pop(str(self.path), None)
        try:
            if self._fd is not None:
                os.ftruncate(self._fd, 0)
                os.close(self._fd)  # closing drops the fcntl lock
                self._fd = None
            elif self.path.is_file():
                self.path.unlink()
        except OSError as e:  # pragma: no cover - e.g. the folder was removed under us
            logger.debug("releasing %s: %s", self.path, e)

    def __enter__(self) -> OutputDirLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"OutputDirLock({str(self.path)!r}, owned={self.owned})"


def _my_info() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:400],
    }


def _read_info(text: str) -> dict:
    try:
        info = json.loads(text)
        return info if isinstance(info, dict) else {}
    except ValueError:
        return {}


def _locked_message(output_dir: Path, info: dict, path: Path) -> str:
    return (
        f"output_dir {str(output_dir)!r} is in use by another run: {_holder_text(info)}. Two runs in one folder delete "
        "each other's checkpoints and mix their logs. Wait for it to end, or pass another --output_dir. "
        f"(Lock file: {path}; it is released when that process ends.)"
    )


def _acquire_fcntl(output_dir: Path, path: Path) -> OutputDirLock:
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):
            info = {}
            for _ in range(20):  # the holder writes its info right after locking
                info = _read_info(os.pread(fd, 65536, 0).decode(errors="replace"))
                if info:
                    break
                time.sleep(0.05)
            os.close(fd)
            raise OutputDirLockedError(_locked_message(output_dir, info, path)) from None
        os.close(fd)
        raise
    previous = _read_info(os.pread(fd, 65536, 0).decode(errors="replace"))
    info = _my_info()
    data = json.dumps(info).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
    lock = OutputDirLock(path, owned=True, info=info, fd=fd)
    if previous and previous.get("pid") != os.getpid():
        lock.took_over = previous
    return lock


def _acquire_pidfile(output_dir: Path, path: Path) -> OutputDirLock:
    info = _my_info()
    for _ in range(3):
        try:
            fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                text = path.read_text(encoding="utf-8")
            except OSError:
                continue
            holder = _read_info(text)
            if not text.strip():
                path.unlink(missing_ok=True)  # released by a run of the fcntl kind
                continue
            if holder.get("host") == info["host"] and not _pid_alive(holder.get("pid", -1)):
                path.unlink(missing_ok=True)
                lock = _acquire_pidfile(output_dir, path)
                lock.took_over = holder
                return lock
            raise OutputDirLockedError(_locked_message(output_dir, holder, path)) from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(info, f)
        return OutputDirLock(path, owned=True, info=info)
    raise OutputDirLockedError(_locked_message(output_dir, {}, path))


def _acquire(output_dir: Path) -> OutputDirLock:
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_NAME
    held = _HELD.get(str(path))
    if held is not None and held.owned:
        return held  # this process already holds it (a workflow run twice in one process)
    lock = None
    if fcntl is not None:
        try:
            lock = _acquire_fcntl(output_dir, path)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
    if lock is None:
        lock = _acquire_pidfile(output_dir, path)
    if lock.took_over:
        logger.warning(
            "output_dir %s: took over the lock left by a run that is no longer running (%s).",
            output_dir, _holder_text(lock.took_over),
        )  # fmt: skip
    _HELD[str(path)] = lock
    atexit.register(lock.release)
    logger.info("output_dir %s locked for this run (%s).", output_dir, _holder_text(lock.info))
    return lock


def lock_output_dir(output_dir: str | os.PathLike) -> OutputDirLock:
    """Take the lock of ``output_dir`` for this run (see the module docstring).

    Returns:
        the :py:class:`OutputDirLock` (``owned=False`` on ranks other than 0); call ``release()`` at the end.

    Raises:
        OutputDirLockedError: another live run holds it (the message names its pid, host, start time and command).
    """
    import torch

    output_dir = Path(output_dir).expanduser().resolve()
    path = output_dir / LOCK_NAME
    if (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    ):
        rank = torch.distributed.get_rank()
        lock, message = OutputDirLock(path, owned=False), [None]
        if rank == 0:
            try:
                lock = _acquire(output_dir)
            except OutputDirLockedError as e:
                message = [str(e)]
        torch.distributed.broadcast_object_list(message, src=0)
        if message[0] is not None:
            raise OutputDirLockedError(message[0] if rank == 0 else f"rank {rank}: {message[0]}")
        return lock
    if int(os.environ.get("RANK", "0")) != 0:
        return OutputDirLock(path, owned=False)
    return _acquire(output_dir)
