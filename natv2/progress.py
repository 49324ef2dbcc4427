"""Progress of long loops: a tqdm bar on a terminal, plain periodic lines everywhere else.

A tqdm bar redraws itself with carriage returns; written to a Snakemake log file or a SLURM job's
output, every redraw stays in the file (a multi-hour run writes tens of MB of frames). When the
stream is not a terminal, :func:`progress` returns a :class:`LineProgress` instead: the same
calls (``update``, ``set_postfix``, ``close``, ``with``), one line every ``interval`` seconds and
one at the end, formatted by tqdm's own ``format_meter``. A low-level module: it imports nothing
from natv2.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm

# Seconds between two plain progress lines (the first and the last line are always written).
LINE_INTERVAL_S = 30.0
LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
LINE_FORMAT_NO_TOTAL = "{desc}: {n_fmt}{unit} [{elapsed}, {rate_fmt}{postfix}]"


def progress(total: int | float | None, desc: str, enabled: bool = True, *, stream: IO | None = None,
             interval: float = LINE_INTERVAL_S, unit: str = "it", unit_scale: bool = False,
             initial: int = 0, leave: bool = True) -> Any:
    """A progress display for ``total`` units of work: a tqdm bar when ``stream`` (default
    stderr) is a terminal, a :class:`LineProgress` when it is not, a silent bar when not
    ``enabled``."""
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return tqdm(total=total, disable=True)
    if _is_terminal(stream):
        return tqdm(total=total, desc=desc, file=stream, unit=unit, unit_scale=unit_scale,
                    initial=initial, leave=leave)
    return LineProgress(total, desc, stream, interval, unit, unit_scale, initial)


def _is_terminal(stream: IO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


class LineProgress:
    """tqdm's loop interface, printing a plain line at most every ``interval`` seconds."""

    def __init__(self, total: int | float | None, desc: str, stream: IO, interval: float = LINE_INTERVAL_S,
                 unit: str = "it", unit_scale: bool = False, initial: int = 0,
                 clock=time.monotonic):
        self.total, self.desc, self.stream, self.interval = total, desc, stream, float(interval)
        self.unit, self.unit_scale = unit, unit_scale
        self.n = initial
        self.initial = initial
        self.postfix = ""
        self._clock = clock
        self._start = clock()
        self._last_line: float | None = None
        self._last_n: int | float | None = None
        self._closed = False

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int | float = 1) -> None:
        self.n += n
        now = self._clock()
        if self._last_line is None or now - self._last_line >= self.interval:
            self._emit(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n != self._last_n:  # the final count, unless the last line showed it
                self._emit(self._clock())

    def line(self, now: float | None = None) -> str:
        """The line the display would write now."""
        elapsed = (self._clock() if now is None else now) - self._start
        done = self.n - self.initial
        return tqdm.format_meter(
            self.n, self.total, elapsed, prefix=self.desc, unit=self.unit, unit_scale=self.unit_scale,
            rate=done / elapsed if elapsed > 0 else None, initial=self.initial,
            postfix=self.postfix or None,
            bar_format=LINE_FORMAT if self.total else LINE_FORMAT_NO_TOTAL)

    def _emit(self, now: float) -> None:
        self._last_line, self._last_n = now, self.n
        self.stream.write(self.line(now) + "\n")
        self.stream.flush()
