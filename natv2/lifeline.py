"""A stage started by Snakemake stops when that Snakemake dies: no orphan keeps writing.

Snakemake runs a stage as ``bash -c '... natv2 STAGE ...'``; killing Snakemake (even with
SIGKILL) leaves bash and the stage running, unobserved. The workflow therefore names its own
process in the environment it hands its jobs (:data:`WATCH_ENV`, set by
``workflow/rules/common.smk`` with :func:`watch_token`): host, pid and the process' start time
(so a reused pid is not mistaken for it). The CLI starts a :class:`Lifeline` on that token: a
daemon thread that looks every second whether the process is still there and, when it is gone,
interrupts the stage's main thread (``KeyboardInterrupt``: every atomic write in progress is
rolled back, nothing of the stage is committed) and, should the main thread not stop within
:data:`GRACE_SECONDS`, ends the process.

A token of another host (a cluster job: the Snakemake on the node re-parses the workflow and
names itself) or of a process already gone when the stage starts (a stale environment) watches
nothing. Plain ``natv2`` commands, ``nohup`` included, are never watched.
"""

from __future__ import annotations

import _thread
import os
import socket
import threading
from collections.abc import Callable, Mapping

#: environment variable naming the process a stage lives and dies with
WATCH_ENV = "NATV2_WATCH"
POLL_SECONDS = 1.0
GRACE_SECONDS = 60.0


def start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, from ``/proc``), or None if
    there is no such process (or no ``/proc``)."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    return fields[19] if len(fields) > 19 else None


def watch_token(pid: int | None = None) -> str:
    """``host:pid:start``: what a job needs to watch process ``pid`` (default: this one)."""
    pid = os.getpid() if pid is None else int(pid)
    return f"{socket.gethostname()}:{pid}:{start_time(pid) or ''}"


def _watched_pid(token: str | None) -> int | None:
    """The pid ``token`` names, if it runs on this host and is alive now; else None."""
    if not token:
        return None
    parts = token.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    host, pid, started = parts[0], int(parts[1]), parts[2]
    if host != socket.gethostname() or pid == os.getpid() or start_time(pid) != started:
        return None
    return pid


class Lifeline:
    """Watches the process of a :data:`WATCH_ENV` token; see the module docstring."""

    def __init__(self, token: str | None, on_exit: Callable[[int], None] = os._exit):
        self.pid = _watched_pid(token)
        self.started = start_time(self.pid) if self.pid is not None else None
        self.lost = False
        self._stop = threading.Event()
        self._on_exit = on_exit

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Lifeline:
        return cls(environ.get(WATCH_ENV))

    @property
    def active(self) -> bool:
        return self.pid is not None

    def alive(self) -> bool:
        return self.pid is None or start_time(self.pid) == self.started

    def start(self) -> Lifeline:
        if self.active:
            threading.Thread(target=self._watch, name="natv2-lifeline", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            if not self.alive():
                self.lost = True
                _thread.interrupt_main()
                if not self._stop.wait(GRACE_SECONDS):
                    self._on_exit(1)
                return
