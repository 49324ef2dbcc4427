"""Numbers derived from :class:`ResultsData`: the front, the DVC metrics, the wall times."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from natv2.report.load import ResultsData, as_float

PARETO_COLUMNS = ("params", "macs", "top1", "arch", "round", "front")


def front_mask(df: pd.DataFrame, cost: str = "params") -> np.ndarray:
    """Boolean mask of the rows non-dominated for (max ``top1``, min ``cost``)."""
    mask = np.zeros(len(df), dtype=bool)
    if len(df):
        F = np.column_stack([100.0 - df["top1"].to_numpy(float), df[cost].to_numpy(float)])
        mask[NonDominatedSorting().do(F, only_non_dominated_front=True)] = True
    return mask


def pareto_table(data: ResultsData) -> pd.DataFrame:
    """The final archive with a ``front`` flag, by (params, -top1, arch): ``pareto.csv``."""
    arc = data.final_archive
    df = pd.DataFrame({
        "params": arc["params"].astype("int64"),
        "macs": arc["macs"].astype("int64"),
        "top1": arc["top1"].astype(float),
        "arch": arc["arch"].astype(str),
        "round": arc["round"].astype("int64"),
        "front": front_mask(arc, "params"),
    })
    df["_neg"] = -df["top1"]
    df = df.sort_values(["params", "_neg", "arch"], kind="mergesort").drop(columns="_neg")
    return df.reset_index(drop=True)[list(PARETO_COLUMNS)]


def _best(values: list[float]) -> float | None:
    return max(values) if values else None


def report_metrics(data: ResultsData, param_budgets: list[int]) -> dict[str, Any]:
    """``report/metrics.json``: hypervolume, best fine-tuned top-1 (overall, per budget)."""
    tuned = []
    for slot in data.used_finetune:
        top1 = as_float(slot.metrics.get("top1_after"))
        if top1 is not None:
            tuned.append((as_float(slot.metrics.get("params")), top1))
    last = data.stats.get(data.last_round, {})
    return {
        "hypervolume": as_float(last.get("hypervolume")),
        "best_top1": _best([t for _, t in tuned]),
        "best_top1_under": {
            str(int(b)): _best([t for p, t in tuned if p is not None and p <= int(b)])
            for b in param_budgets
        },
        "n_evaluated": int(len(data.evaluated)),
        "rounds": int(data.last_round),
    }


def wall_times(data: ResultsData) -> list[tuple[str, float | None, bool]]:
    """(stage, seconds, is_step) rows: supernet, each round (then its steps), each fine-tune.

    ``is_step`` rows break down the row above them (not added to a total).
    """
    rows: list[tuple[str, float | None, bool]] = []
    if data.supernet is not None:
        rows.append(("supernet", as_float(data.supernet.get("seconds")), False))
    for k in data.rounds:
        name = "init_archive (round 0)" if k == 0 else f"search_round {k}"
        st = data.stats.get(k)
        rows.append((name, None if st is None else as_float(st.get("seconds")), False))
        steps = (st or {}).get("steps")
        if isinstance(steps, dict):
            rows.extend((f"{name}: {step}", as_float(sec), True) for step, sec in steps.items())
    for slot in data.finetune:
        if slot.used and "seconds" in slot.metrics:
            rows.append((f"finetune rank {slot.rank}", as_float(slot.metrics["seconds"]), False))
    return rows
