"""The results report: reads a results directory, writes ``index.html`` and DVC files.

``build_report(results_dir, out_dir, config, param_budgets)`` writes into ``out_dir``:
``index.html`` (self-contained), ``pareto.png``, ``hypervolume.png``, ``metrics.json`` (DVC
metrics) and ``pareto.csv`` (DVC plot). Same inputs give byte-identical files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from natv2.files import atomic_write
from natv2.report.figures import hypervolume_png, pareto_png, predictor_png
from natv2.report.html import render_html
from natv2.report.load import FinetuneSlot, ResultsData, load_results
from natv2.report.summary import pareto_table, report_metrics, wall_times

__all__ = ["OUTPUTS", "FinetuneSlot", "ResultsData", "build_report", "load_results"]

OUTPUTS = ("index.html", "pareto.png", "hypervolume.png", "metrics.json", "pareto.csv")


def _write(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def build_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 config: dict, param_budgets: list[int]) -> dict[str, Any]:
    """Build the report of ``results_dir`` into ``out_dir``; return the metrics dict.

    Raises :class:`natv2.errors.UserError` when ``search/round_00/archive.csv`` is missing.
    """
    data = load_results(results_dir)
    budgets = [int(b) for b in param_budgets]
    metrics = report_metrics(data, budgets)
    pareto = pareto_table(data)
    figures = {
        "pareto": pareto_png(data),
        "hypervolume": hypervolume_png(data),
        "predictor": predictor_png(data),
    }
    page = render_html(data, config=config, budgets=budgets, metrics=metrics, pareto=pareto,
                       walltimes=wall_times(data), figures=figures)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "pareto.png", figures["pareto"])
    _write(out / "hypervolume.png", figures["hypervolume"])
    _write(out / "pareto.csv",
           pareto.to_csv(index=False, lineterminator="\n").encode())
    _write(out / "metrics.json",
           (json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())
    _write(out / "index.html", page.encode("utf-8"))
    return metrics
