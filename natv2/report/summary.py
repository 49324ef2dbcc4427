"""Numbers derived from :class:`ResultsData`: the front, the DVC metrics, the wall times."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from natv2.layout import CARD_MD_FILE, Layout
from natv2.report.load import ResultsData, as_float
from natv2.targets import Target

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


def target_rows(data: ResultsData, targets: Sequence[Target]) -> list[dict[str, Any]]:
    """One row per target (its slot is rank ``i``, :func:`natv2.selection.select_slots`): the
    fine-tuned network's measured value of the target's metric, ``met`` (``None`` while the slot
    is not fine-tuned or the metric not measured), FP32/INT8 test top-1, latency and the card."""
    slots = {s.rank: s for s in data.finetune}
    layout = Layout(data.results_dir)
    rows = []
    for rank, target in enumerate(targets):
        slot = slots.get(rank)
        m = slot.metrics if slot is not None else {}
        verdict = m.get("target") if isinstance(m.get("target"), dict) else {}
        used = slot is not None and slot.used
        measured = as_float(m.get(target.metric)) if used else None
        card = layout.rank_dir(rank) / CARD_MD_FILE
        rows.append({
            **target.as_dict(), "rank": rank, "finetuned": used,
            "encoding": m.get("encoding") if used else None,
            "measured": measured,
            "met": None if measured is None else target.meets(measured),
            "met_in_archive": verdict.get("met_in_archive"),
            "top1_fp32": as_float(m.get("top1_after")) if used else None,
            "top1_int8": as_float(m.get("top1_int8")) if used else None,
            "params": as_float(m.get("params")) if used else None,
            "macs": as_float(m.get("macs")) if used else None,
            "latency_ms": as_float(m.get("latency_ms")) if used else None,
            "card": os.path.relpath(card, layout.report_dir) if slot is not None else None,
        })
    return rows


def baseline_rows(data: ResultsData) -> list[dict[str, Any]]:
    """The baselines stage's models on the test split (``baselines.json``): the classical ones,
    then the largest sub-network before fine-tuning (and its exits' ensemble); each row
    ``{"name", "label", "top1", "params"}`` (``params`` ``None`` for classical models). Empty
    while the stage has not run."""
    b = data.baselines or {}
    rows = [{"name": str(c["name"]), "label": str(c["label"]), "top1": as_float(c.get("top1")),
             "params": None} for c in b.get("classical", [])]
    largest = b.get("largest")
    if isinstance(largest, dict):
        params = as_float(largest.get("params"))
        rows.append({"name": "largest", "label": "super-network's largest, before fine-tuning",
                     "top1": as_float(largest.get("top1")), "params": params})
        if largest.get("top1_exits_ensemble") is not None:
            rows.append({"name": "largest_exits_ensemble",
                         "label": "super-network's largest, exits' ensemble, before fine-tuning",
                         "top1": as_float(largest["top1_exits_ensemble"]), "params": params})
    return rows


def versus_baselines(best: float | None, rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """How far the best fine-tuned test top-1 ``best`` is above the best classical baseline
    and above the best row of ``rows`` (points, negative when below); ``None`` without both."""
    classical = [r for r in rows if r["params"] is None and r["top1"] is not None]
    scored = [r for r in rows if r["top1"] is not None]
    if best is None or not scored:
        return None
    out: dict[str, Any] = {}
    for key, pool in (("classical", classical), ("all", scored)):
        if pool:
            top = max(pool, key=lambda r: r["top1"])
            out[key] = {"baseline": top["name"], "top1": top["top1"],
                        "margin": round(best - top["top1"], 4), "beaten": best > top["top1"]}
    return out


def report_metrics(data: ResultsData, targets: Sequence[Target] = ()) -> dict[str, Any]:
    """``report/metrics.json``: hypervolume, best fine-tuned top-1, the target table and the
    baselines (test top-1 of each, and the best fine-tuned network's margin over them)."""
    tuned = [as_float(slot.metrics.get("top1_after")) for slot in data.used_finetune]
    last = data.stats.get(data.last_round, {})
    best = _best([t for t in tuned if t is not None])
    rows = baseline_rows(data)
    return {
        "hypervolume": as_float(last.get("hypervolume")),
        "best_top1": best,
        "targets": target_rows(data, targets),
        "baselines": {r["name"]: r["top1"] for r in rows},
        "versus_baselines": versus_baselines(best, rows),
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
