"""Stage ``report``: the HTML report, DVC metrics and plots from every result file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from natv2.pipeline.context import results_path
from natv2.report import build_report


def run_report(cfg: Mapping[str, Any]) -> dict:
    """Write ``report/{index.html, pareto.png, hypervolume.png, metrics.json, pareto.csv}``."""
    return build_report(results_path(cfg), results_path(cfg, "report"), dict(cfg),
                        list(cfg["report"]["param_budgets"]))
