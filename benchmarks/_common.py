"""What every benchmark script shares: the machine line, the command line, markdown blocks.

Each script writes its results into ``docs/BENCHMARKS.md`` as a block between
``<!-- name:start -->`` and ``<!-- name:end -->``; a rerun replaces that block and nothing else,
so no number in the file is typed by hand.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# environment variables that change timings; shown in the printed command when set
ENV_PREFIXES = ("MALLOC_", "OMP_", "KMP_", "MKL_", "LD_PRELOAD", "DNNL_", "ONEDNN_")
# the environment as the user started the script: libraries imported later set some of these
# (e.g. KMP_DUPLICATE_LIB_OK) themselves, and the printed command must be what was typed
_START_ENV = dict(os.environ)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    from natv2.measure.latency import cpu_model as from_cpuinfo

    return from_cpuinfo() or "unknown CPU"


def load_average() -> str:
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def load_span(at_start: str) -> str:
    """``"<load at start> at start, <load now> at end"``."""
    return f"{at_start} at start, {load_average()} at end"


def machine_line(threads: int | None = None) -> str:
    import torch

    thr = f"{threads} intra-op thread(s), " if threads is not None else ""
    return (f"{cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
            f"{thr}Python {platform.python_version()}")


def header() -> str:
    """The top of a new ``docs/BENCHMARKS.md``: title, machine, how the file is made."""
    import torch

    return "\n".join([
        "# Benchmarks",
        "",
        f"Machine: {cpu_model()} (`lscpu` model name), {os.cpu_count()} cores, no GPU, torch "
        f"{torch.__version__}, Python {platform.python_version()}. Each block states its "
        "command, when it ran, how long it took and the load average around it.",
        "",
        "`make bench` reruns every block (pipeline cost, search quality, predictors, scaling, "
        "super-network speed); each block is rewritten by the command shown in it, between its "
        "`<!-- ...:start/end -->` markers, so nothing here is typed by hand.",
        "",
    ])


def command_line(script: str, argv: Sequence[str]) -> str:
    """``python <script> <argv>`` with the timing-relevant environment variables in front."""
    env = [f"{k}={_START_ENV[k]}" for k in sorted(_START_ENV) if k.startswith(ENV_PREFIXES)]
    return shlex.join([*env, "python", script, *argv])


def markers(name: str) -> tuple[str, str]:
    """Start and end markers of the markdown block ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_block(path: Path, block: str, name: str, section: str, after: str | None = None,
                header: str = "# Benchmarks\n") -> None:
    """Replace block ``name`` in ``path``. A new block goes right after block ``after`` when that
    block exists, else at the end under the heading ``section`` (added if missing); a new file
    starts with ``header``. Written to a temporary file, then renamed."""
    path = Path(path)
    start, end = markers(name)
    text = path.read_text() if path.exists() else header
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    elif after is not None and markers(after)[1] in text:
        anchor = markers(after)[1]
        heading = "" if section in text.splitlines() else f"{section}\n\n"
        text = text.replace(anchor, f"{anchor}\n\n{heading}{block}", 1)
    elif section in text.splitlines():
        lines = text.splitlines()
        i = lines.index(section) + 1
        while i < len(lines) and not lines[i].startswith("## "):
            i += 1
        text = "\n".join([*lines[:i], "", block, "", *lines[i:]]).rstrip("\n") + "\n"
        text = re.sub(r"\n{3,}", "\n\n", text)
    else:
        text = text.rstrip("\n") + f"\n\n{section}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def block(name: str, command: str, run: str, *body: str) -> str:
    """A markdown block ``name``: its markers, the command in a code fence, ``Run <now> on
    <run>``, then the ``body`` lines."""
    start, end = markers(name)
    return "\n".join([start, "```", command, "```", "", f"Run {utc_now()} on {run}", *body, end])
