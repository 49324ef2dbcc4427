"""Stage ``report``: the HTML report, DVC metrics and plots from the rounds and slots the config
names (``search.rounds``, ``finetune.slots``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from natv2.layout import Layout
from natv2.report import ReportSettings, build_report


def run_report(cfg: Mapping[str, Any]) -> dict:
    """Write ``report/{index.html, pareto.png, hypervolume.png, metrics.json, pareto.csv}``."""
    layout = Layout.from_config(cfg)
    return build_report(layout.root, layout.report_dir, cfg, ReportSettings.from_config(cfg))
