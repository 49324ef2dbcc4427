"""Read a results directory (DESIGN §3) into one :class:`ResultsData` value.

The caller names the rounds (``0..rounds``) and fine-tune slots (``0..slots-1``) to read, from
the config; the paths come from :class:`natv2.layout.Layout`. Nothing is found by scanning, so
folders left over by an earlier run with more rounds or slots are never shown. Only
``search/round_00/archive.csv`` is required; every other file is optional and simply absent
from the data when it has not been written yet (no fine-tuning, no super-network summary, a
round's ``stats.json`` missing ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from natv2.errors import UserError
from natv2.files import read_json
from natv2.layout import Layout, round_command
from natv2.records import check_recorded
from natv2.search.archive import ArchiveError, read_archive


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
    baselines: dict[str, Any] | None = None  # baselines/baselines.json, if written

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
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"report: {path} must hold a JSON object, not {type(data).__name__}")
    return data


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return read_archive(path)
    except ArchiveError as exc:
        raise UserError(f"report: {path}: {exc}") from None


def _union(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Rows of ``frames`` in order, each ``arch`` once (its first evaluation)."""
    full = [f for f in frames if len(f)]
    if not full:
        return frames[0].copy()
    df = pd.concat(full, ignore_index=True) if len(full) > 1 else full[0].copy()
    return df.drop_duplicates(subset="arch", keep="first").reset_index(drop=True)


def load_results(results_dir: str | Path, rounds: int, slots: int) -> ResultsData:
    """Read rounds ``0..rounds`` and fine-tune slots ``0..slots-1`` of ``results_dir``; raise
    :class:`UserError` if ``round_00/archive.csv`` is missing."""
    layout = Layout(Path(results_dir))
    first = layout.archive(0)
    if not first.is_file():
        raise UserError(
            f"report: {first} does not exist; it is written by the init_archive stage "
            f"(run `natv2 init-archive` first)"
        )
    archives: dict[int, pd.DataFrame] = {}
    stats: dict[int, dict[str, Any]] = {}
    ordered: list[pd.DataFrame] = []  # evaluation order, for "keep the first evaluation"
    for k in range(int(rounds) + 1):
        if not layout.archive(k).is_file():
            continue  # a round still running: its archive is the one output that matters
        evaluations = layout.evaluated if k == 0 else layout.candidates(k)
        if layout.stats(k).is_file():  # a finished round: its tables are the ones it recorded
            for table in (evaluations, layout.archive(k)):
                check_recorded(table, layout.stats(k), round_command(k))
        if evaluations.is_file():
            ordered.append(_read_table(evaluations))
        archives[k] = _read_table(layout.archive(k))
        ordered.append(archives[k])
        st = _read_json(layout.stats(k))
        if st is not None:
            stats[k] = st

    finetune: list[FinetuneSlot] = []
    for n in range(int(slots)):
        metrics = _read_json(layout.rank_metrics(n))
        if metrics is None:
            continue
        arch = _read_json(layout.rank_arch(n)) or {}
        used = metrics.get("used", True) is not False
        finetune.append(FinetuneSlot(rank=n, used=used, metrics=metrics, arch=arch,
                                     reason=str(metrics.get("reason", ""))))

    return ResultsData(
        results_dir=layout.root,
        rounds=sorted(archives),
        archives=archives,
        evaluated=_union(ordered),
        stats=stats,
        finetune=finetune,
        supernet=_read_json(layout.supernet_json),
        baselines=_read_json(layout.baselines),
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
