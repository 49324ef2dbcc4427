"""Read a results directory (DESIGN §3) into one :class:`ResultsData` value.

Only ``search/round_00/archive.csv`` is required; every other file is optional and simply
absent from the data when it has not been written yet (no fine-tuning, no super-network
summary, a round's ``stats.json`` missing ...).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from natv2.errors import UserError
from natv2.search.archive import ArchiveError, read_archive

_ROUND_DIR = re.compile(r"^round_(\d+)$")
_RANK_DIR = re.compile(r"^rank_(\d+)$")


@dataclass(frozen=True)
class FinetuneSlot:
    """One ``finetune/rank_N`` folder: ``used`` slots carry ``metrics`` (and ``arch``)."""

    rank: int
    used: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    arch: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def encoding(self) -> str:
        return str(self.metrics.get("encoding") or self.arch.get("encoding") or "")


@dataclass(frozen=True)
class ResultsData:
    """Everything the report shows, read from one results directory."""

    results_dir: Path
    rounds: list[int]                  # search rounds with an archive.csv, ascending
    archives: dict[int, pd.DataFrame]  # round -> archive after that round
    evaluated: pd.DataFrame            # every evaluated arch once (first evaluation kept)
    stats: dict[int, dict[str, Any]]   # round -> stats.json (rounds whose file exists)
    finetune: list[FinetuneSlot]       # rank slots with a metrics.json, by rank
    supernet: dict[str, Any] | None    # supernet/supernet.json, if written

    @property
    def last_round(self) -> int:
        return self.rounds[-1]

    @property
    def final_archive(self) -> pd.DataFrame:
        return self.archives[self.last_round]

    @property
    def used_finetune(self) -> list[FinetuneSlot]:
        return [s for s in self.finetune if s.used]


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"report: {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"report: {path} must hold a JSON object, not {type(data).__name__}")
    return data


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return read_archive(path)
    except ArchiveError as exc:
        raise UserError(f"report: {path}: {exc}") from None


def _numbered_dirs(parent: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    if not parent.is_dir():
        return []
    found = []
    for p in parent.iterdir():
        m = pattern.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _union(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Rows of ``frames`` in order, each ``arch`` once (its first evaluation)."""
    full = [f for f in frames if len(f)]
    if not full:
        return frames[0].copy()
    df = pd.concat(full, ignore_index=True) if len(full) > 1 else full[0].copy()
    return df.drop_duplicates(subset="arch", keep="first").reset_index(drop=True)


def load_results(results_dir: str | Path) -> ResultsData:
    """Read ``results_dir``; raise :class:`UserError` if ``round_00/archive.csv`` is missing."""
    root = Path(results_dir)
    search = root / "search"
    first = search / "round_00" / "archive.csv"
    if not first.is_file():
        raise UserError(
            f"report: {first} does not exist; it is written by the init_archive stage "
            f"(run `natv2 init-archive` first)"
        )
    archives: dict[int, pd.DataFrame] = {}
    stats: dict[int, dict[str, Any]] = {}
    ordered: list[pd.DataFrame] = []  # evaluation order, for "keep the first evaluation"
    for k, d in _numbered_dirs(search, _ROUND_DIR):
        if not (d / "archive.csv").is_file():
            continue  # a round still running: its archive is the one output that matters
        for name in ("evaluated.csv", "candidates.csv"):
            if (d / name).is_file():
                ordered.append(_read_table(d / name))
        archives[k] = _read_table(d / "archive.csv")
        ordered.append(archives[k])
        st = _read_json(d / "stats.json")
        if st is not None:
            stats[k] = st

    finetune: list[FinetuneSlot] = []
    for n, d in _numbered_dirs(root / "finetune", _RANK_DIR):
        metrics = _read_json(d / "metrics.json")
        if metrics is None:
            continue
        arch = _read_json(d / "arch.json") or {}
        used = metrics.get("used", True) is not False
        finetune.append(FinetuneSlot(rank=n, used=used, metrics=metrics, arch=arch,
                                     reason=str(metrics.get("reason", ""))))

    return ResultsData(
        results_dir=root,
        rounds=sorted(archives),
        archives=archives,
        evaluated=_union(ordered),
        stats=stats,
        finetune=finetune,
        supernet=_read_json(root / "supernet" / "supernet.json"),
    )


def as_float(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, empty, NaN, not a number)."""
    if value is None or value is pd.NA:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None
