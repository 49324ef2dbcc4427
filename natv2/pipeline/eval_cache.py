"""Append-only cache of architecture evaluations, so a killed stage loses at most one evaluation.

One JSON-lines file per (super-network checkpoint sha256, evaluation-settings hash), at
:meth:`natv2.layout.Layout.eval_cache`; one line ``{"key": ENCODING, "record": {...}}`` per
evaluated architecture, written with a single ``write`` under an exclusive ``flock`` and
``fsync``-ed as soon as the evaluation finishes. A stage killed and started again finds the
evaluations it had done and redoes only the rest. The directory is *not* a declared output of
any Snakemake rule or DVC stage, so neither deletes it when they rerun a stage; delete it by
hand to force fresh evaluations.

A line cut short by a kill (no trailing newline, or invalid JSON) is ignored when reading, and
the next append starts on a new line, so it cannot corrupt what follows. Several processes (the
shards of one round) may append to the same file: each line is one ``O_APPEND`` write under the
lock. Later lines win over earlier ones for the same key.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from natv2.files import DISK_ERRNOS, disk_error
from natv2.progress import progress


def settings_hash(settings: Mapping[str, Any]) -> str:
    """Hex sha256 of a JSON-able mapping (keys sorted), e.g. the data settings of a stage."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class EvalCache:
    """The evaluations of one network under one set of settings, backed by a JSONL file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._records: dict[str, dict[str, Any]] = {}
        self.n_bad_lines = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            if i == len(lines) - 1:  # no trailing newline: cut short by a kill
                self.n_bad_lines += 1
                continue
            try:
                item = json.loads(line)
                key, record = item["key"], item["record"]
                if not isinstance(key, str) or not isinstance(record, dict):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                self.n_bad_lines += 1
                continue
            self._records[key] = record

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> dict[str, Any] | None:
        """A copy of the cached record of ``key``, or None."""
        rec = self._records.get(key)
        return None if rec is None else dict(rec)

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        """Append ``record`` for ``key``, flushed and fsynced before returning."""
        record = dict(record)
        line = json.dumps({"key": key, "record": record}, sort_keys=True,
                          allow_nan=True).encode() + b"\n"
        try:
            self._append(line)
        except OSError as exc:  # a full or read-only disk: the lines before this one are kept
            if exc.errno in DISK_ERRNOS:
                raise disk_error(exc, self.path) from None
            raise
        self._records[key] = record

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size:  # a line cut short by a kill: start on a fresh line
                with open(self.path, "rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class CachedEvaluate:
    """``evaluate(list[Arch]) -> list[record]`` that asks ``evaluator(arch)`` only for archs not
    in ``cache`` and appends each new record to it as soon as it is made.

    ``key(arch)`` names an architecture in the cache (default ``evaluator.encode`` when it has
    one, e.g. :class:`~natv2.measure.Evaluator` with ``encoder=space``). ``needs(record)``
    says whether a cached record is complete enough (e.g. has a latency when one is needed);
    an incomplete one is evaluated again and the new line supersedes it. ``hits`` and ``misses``
    count cache hits and real evaluations.
    """

    def __init__(self, evaluator: Callable[[Any], Mapping[str, Any]], cache: EvalCache,
                 key: Callable[[Any], str] | None = None,
                 needs: Callable[[Mapping[str, Any]], bool] | None = None,
                 desc: str = "evaluate", show_progress: bool = False):
        self.evaluator = evaluator
        self.cache = cache
        self.key = key or getattr(evaluator, "encode", None) or str
        self.needs = needs or (lambda record: True)
        self.desc = desc
        self.show_progress = show_progress
        self.hits = 0
        self.misses = 0

    def __call__(self, archs: Iterable[Any]) -> list[dict[str, Any]]:
        archs = list(archs)
        out: list[dict[str, Any]] = []
        with progress(len(archs), self.desc, self.show_progress and bool(archs)) as bar:
            for arch in archs:
                k = self.key(arch)
                rec = self.cache.get(k)
                if rec is not None and self.needs(rec):
                    self.hits += 1
                else:
                    rec = dict(self.evaluator(arch))
                    self.cache.put(k, rec)
                    self.misses += 1
                out.append(rec)
                bar.update(1)
                bar.set_postfix(cached=self.hits)
        return out

