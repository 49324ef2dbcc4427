"""Download a file over HTTP(S) (or copy a file:// URL) into a cache, reliably.

- connect/read timeout on every socket operation;
- retries with exponential backoff on network errors, timeouts and HTTP 5xx (not on 4xx);
- resume of a cut transfer with an HTTP ``Range`` request where the server allows it (a server
  that answers 200 instead of 206 restarts the file from zero);
- the bytes go to ``<name>.part`` and are renamed atomically once complete and verified;
- sha256 always computed, checked when one is pinned; on a mismatch nothing is kept.

Errors a user can act on are :class:`DownloadError` (a ``UserError``), one line naming the URL and
the cause (HTTP status, DNS failure, timeout, hash mismatch).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from natv2.errors import UserError
from natv2.progress import progress

CHUNK = 1 << 16


class DownloadError(UserError):
    """A download that failed for a reason the user can see and fix (URL, network, hash)."""


class _Retryable(Exception):
    """A transient failure (cut connection, timeout, 5xx): try again, resuming if possible."""


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    size: int


def default_cache_dir() -> Path:
    """``$NATV2_CACHE``, else ``$XDG_CACHE_HOME/natv2``, else ``~/.cache/natv2`` (never the CWD)."""
    if os.environ.get("NATV2_CACHE"):
        return Path(os.environ["NATV2_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "natv2"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cause(exc: BaseException) -> str:
    """A short human description of a network failure (the root cause, not a wrapper)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, socket.gaierror):
            return f"DNS lookup failed ({reason.strerror or reason})"
        if isinstance(reason, TimeoutError | socket.timeout):
            return "connection timed out"
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused"
        return str(reason)
    if isinstance(exc, TimeoutError | socket.timeout):
        return "read timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _fetch_once(url: str, part: Path, timeout: float, show_progress: bool) -> None:
    """One attempt: request the missing tail of ``part`` and append it. Raises _Retryable."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "natv2"})
    if have and url.startswith(("http://", "https://")):
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/file only)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the range starts at the end: we already have it all
            return
        if exc.code >= 500:
            raise _Retryable(_cause(exc)) from exc
        raise DownloadError(f"cannot download {url}: {_cause(exc)}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, socket.gaierror | FileNotFoundError):
            raise DownloadError(f"cannot download {url}: {_cause(exc)}") from None
        raise _Retryable(_cause(exc)) from exc
    except (TimeoutError, OSError) as exc:
        raise _Retryable(_cause(exc)) from exc
    with response:
        status = getattr(response, "status", 200) or 200
        resumed = status == 206
        mode = "ab" if resumed else "wb"
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        bar = progress(total, part.name[:-5], show_progress, unit="B", unit_scale=True, initial=start,
                       leave=False)
        received = 0
        try:
            with open(part, mode) as fh:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (TimeoutError, OSError, http.client.HTTPException) as exc:
                        raise _Retryable(_cause(exc)) from exc  # IncompleteRead and friends
                    if not block:
                        break
                    fh.write(block)
                    received += len(block)
                    bar.update(len(block))
        finally:
            bar.close()
        if length is not None and received < int(length):
            raise _Retryable(f"connection closed after {start + received} of {total} bytes")


def download(
    url: str,
    dest: Path,
    sha256: str | None = None,
    *,
    timeout: float = 30.0,
    retries: int = 4,
    backoff: float = 1.0,
    show_progress: bool = True,
) -> Downloaded:
    """Download ``url`` to ``dest`` (atomic), verifying ``sha256`` when given.

    A ``dest`` that already exists with the pinned hash is reused without a request.
    """
    dest = Path(dest)
    if dest.exists() and sha256 is not None and sha256_of(dest) == sha256.lower():
        return Downloaded(dest, sha256.lower(), dest.stat().st_size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_cause = ""
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout, show_progress)
            break
        except _Retryable as exc:
            last_cause = str(exc)
            if attempt < retries:
                time.sleep(backoff * (2**attempt))
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
    else:
        kept = f"; {part.stat().st_size} bytes kept in {part} to resume" if part.exists() else ""
        raise DownloadError(f"cannot download {url}: {last_cause} (after {retries + 1} attempts){kept}")
    actual = sha256_of(part)
    if sha256 is not None and actual != sha256.lower():
        part.unlink(missing_ok=True)
        raise DownloadError(f"sha256 mismatch for {url}: expected {sha256.lower()}, got {actual}")
    size = part.stat().st_size
    os.replace(part, dest)
    return Downloaded(dest, actual, size)
