"""Atomic file writes (nothing natv2 writes is ever left half-written), JSON, error lines.

One place for the temp-file-then-rename idiom, used by every layer (archives, checkpoints,
reports, stage outputs). A low-level module: it imports nothing from natv2 but its errors.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from natv2.errors import UserError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as fh:  # on disk before the rename: a crash leaves old or new
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are shared (DVC, cluster nodes)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno in DISK_ERRNOS:
            raise disk_error(exc, path) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


#: the errors of a file system that cannot take a write (full, over quota, read-only, denied)
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def disk_error(exc: OSError, path: str | Path) -> UserError:
    """The one-line error for a write to ``path`` that failed with ``exc``: the path, the cause
    and, when the device is full, the space left on it."""
    path = Path(exc.filename) if getattr(exc, "filename", None) else Path(path)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = _free_bytes(path)
        left = f" ({_megabytes(free)} left on its file system)" if free is not None else ""
        return UserError(f"cannot write {path}: no space left on the device{left}; free space or "
                         f"set results_dir on a larger disk, then rerun (finished evaluations are "
                         f"kept in the cache)")
    cause = exc.strerror or type(exc).__name__
    return UserError(f"cannot write {path}: {cause}; make the folder writable or set results_dir "
                     f"to a writable one, then rerun")


def _free_bytes(path: Path) -> int | None:
    for parent in (path, *path.parents):
        if parent.exists():
            try:
                return shutil.disk_usage(parent).free
            except OSError:
                return None
    return None


def check_writable(directory: str | Path, need_bytes: int = 0) -> Path:
    """``directory`` if files can be written in it (or, while it does not exist, in the nearest
    folder above it, where it will be made) and, given ``need_bytes``, its file system has that
    much room; else a one-line ``UserError`` naming it: what a stage checks before its expensive
    work. Leaves nothing behind."""
    directory = Path(directory)
    existing = next((p for p in (directory, *directory.absolute().parents) if p.is_dir()), Path("/"))
    try:
        fd, probe = tempfile.mkstemp(prefix=".natv2-writable.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:  # named by the folder, not by the probe's random name
        raise disk_error(OSError(exc.errno, exc.strerror), existing) from None
    free = _free_bytes(directory)
    if need_bytes and free is not None and free < need_bytes:
        raise UserError(f"{directory} has {_megabytes(free)} free; this stage writes about "
                        f"{_megabytes(need_bytes)}: free space or set results_dir on a larger "
                        f"disk, then rerun")
    return directory


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: keys that hold wall times: kept in a stage's JSON, never inside a checkpoint
TIMING_KEYS = frozenset({"seconds"})


def without_timings(value: Any) -> Any:
    """``value`` with every dict entry named in :data:`TIMING_KEYS` dropped, at any depth."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list | tuple):
        return type(value)(without_timings(v) for v in value)
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented, key-sorted JSON (stable diffs, DVC-friendly), atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: str | Path, maker: str | None = None) -> Any:
    """The JSON in ``path``; a file that is not JSON (cut or edited) is a ``UserError`` naming
    it and, given the command ``maker`` that writes it, how to recover."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        recover = f"; rerun `{maker}`" if maker else ""
        raise UserError(f"{path} is not valid JSON ({first_line(exc)}): it was cut or edited after "
                        f"it was written{recover}") from None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name if it has none): what a
    one-line user error quotes of a library's multi-line message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
