"""The results report: reads a results directory, writes ``index.html`` and DVC files.

``build_report(results_dir, out_dir, config, settings)`` reads search rounds ``0..R`` and
fine-tune slots ``0..S-1`` (:class:`ReportSettings`: the config's ``search.rounds``,
``finetune.slots`` and ``targets``; never found by scanning; ``config`` is only
shown on the page) and writes into ``out_dir``: ``index.html``
(self-contained), ``pareto.png``, ``hypervolume.png``, ``metrics.json`` (DVC metrics) and
``pareto.csv`` (DVC plot). Same inputs give byte-identical files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from natv2.config import ensure_config
from natv2.files import atomic_write
from natv2.layout import REPORT_FILES, REPORT_METRICS, REPORT_PLOTS
from natv2.report.figures import hypervolume_png, latency_png, pareto_png, predictor_png
from natv2.report.html import render_html
from natv2.report.load import FinetuneSlot, ResultsData, load_results
from natv2.report.summary import pareto_table, report_metrics, wall_times
from natv2.targets import Target, targets_from_config

__all__ = ["OUTPUTS", "FinetuneSlot", "ReportSettings", "ResultsData", "build_report",
           "load_results"]

OUTPUTS = (*REPORT_FILES, REPORT_METRICS, REPORT_PLOTS)


def _write(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


@dataclass(frozen=True)
class ReportSettings:
    """What the report reads (rounds ``0..rounds``, slots ``0..slots-1``) and the deployment
    targets of its target table (slot ``i`` is target ``i``'s)."""

    targets: tuple[Target, ...]
    rounds: int
    slots: int

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ReportSettings:
        cfg = ensure_config(cfg)
        return cls(targets_from_config(cfg), int(cfg["search"]["rounds"]),
                   int(cfg["finetune"]["slots"]))


def build_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 config: Mapping[str, Any], settings: ReportSettings) -> dict[str, Any]:
    """Build the report of ``results_dir`` into ``out_dir``; return the metrics dict.

    Raises :class:`natv2.errors.UserError` when ``search/round_00/archive.csv`` is missing.
    """
    data = load_results(results_dir, settings.rounds, settings.slots)
    metrics = report_metrics(data, settings.targets)
    pareto = pareto_table(data)
    figures = {
        "pareto": pareto_png(data),
        "hypervolume": hypervolume_png(data),
        "predictor": predictor_png(data),
        "latency": latency_png(data),
    }
    page = render_html(data, config=dict(config), metrics=metrics, pareto=pareto,
                       walltimes=wall_times(data), figures=figures)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page_name, pareto_name, hv_name = REPORT_FILES
    _write(out / pareto_name, figures["pareto"])
    _write(out / hv_name, figures["hypervolume"])
    _write(out / REPORT_PLOTS, pareto.to_csv(index=False, lineterminator="\n").encode())
    _write(out / REPORT_METRICS,
           (json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())
    _write(out / page_name, page.encode("utf-8"))
    return metrics
