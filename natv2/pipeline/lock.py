"""One writer per output set: a stage holds ``<results>/locks/<set>.lock`` while it runs.

The lock is an exclusive ``flock`` on the file (the kernel drops it when the process ends, so a
killed stage never leaves a stale lock; a stage that ends removes the file) and the file names
its owner (pid, command, start), so
a second process on the same set refuses at once, in one line naming the owner, instead of
failing later on files the first one is replacing.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from natv2.errors import UserError
from natv2.files import disk_error


def _owner_line() -> str:
    command = " ".join(Path(sys.argv[0]).name if n == 0 else a for n, a in enumerate(sys.argv))
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    return f"pid {os.getpid()}, `{command}`, since {started}"


@contextmanager
def stage_lock(path: Path, what: str, active: bool = True) -> Iterator[None]:
    """Hold the lock ``path`` of the set ``what`` (e.g. ``results/search/round_01``) for the
    ``with`` body; a ``UserError`` if another process holds it. ``active=False`` (the processes
    of a data-parallel job that write nothing) takes no lock."""
    if not active:
        yield
        return
    path = Path(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # deepest first
    fd = _acquire(path, what)
    try:
        os.pwrite(fd, (_owner_line() + "\n").encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held: a waiting opener sees another inode
        for folder in [path.parent, *made]:  # the folder of locks goes with the last one, and
            with suppress(OSError):  # the folders the lock made, unless the stage wrote there
                folder.rmdir()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _acquire(path: Path, what: str) -> int:
    """An open, exclusively locked descriptor of ``path`` (the file at ``path`` now, not one a
    releasing owner just unlinked); a ``UserError`` naming the owner if another process holds it."""
    for _ in range(5):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise disk_error(exc, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{what} is being written by another natv2 process ({owner}); wait "
                            f"for it to finish or stop it, then rerun (lock: {path})") from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            os.ftruncate(fd, 0)
            return fd
        os.close(fd)  # the owner released and removed it meanwhile: lock the new file
    raise UserError(f"could not lock {path} for {what}: it keeps being replaced; rerun")
