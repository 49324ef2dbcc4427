"""The statistics of ``benchmarks/search_quality.py``: per-variant summaries over search seeds and
paired comparisons of natv2 against every other variant (per-seed differences, Wilcoxon
signed-rank test), and the tables and verdict lines computed from them.

Runs of two variants with the same search seed share the super-network, the data split and the
seed of every random draw the policies have in common, so the comparison is paired by seed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from scipy.stats import wilcoxon

#: the reference variant every other one is compared with
REFERENCE = "natv2"
#: the two-sided level the verdict lines state
ALPHA = 0.05


def best_under(archive: pd.DataFrame, budget: int) -> float:
    """Best top-1 of the archive's members with at most ``budget`` params (NaN: none)."""
    ok = archive[archive["params"] <= budget]
    return float(ok["top1"].max()) if len(ok) else float("nan")


def mean_sd(values: Sequence[float], digits: int = 4) -> str:
    vals = [v for v in values if v == v]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.fmean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def summarise(runs: list[dict[str, Any]], budgets: Sequence[int]) -> list[dict[str, Any]]:
    """One row per variant, its per-seed values in seed order."""
    rows = []
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rs = sorted((r for r in runs if r["variant"] == variant), key=lambda r: r["seed"])
        taus = [t for r in rs for t in r["kendall"]]
        rows.append({
            "variant": variant,
            "seeds": [r["seed"] for r in rs],
            "candidates": rs[0]["candidates"],
            "init": rs[0]["curve"]["new"][0],
            "new": rs[0]["curve"]["new"][-1],
            "calls": statistics.fmean(r["curve"]["calls"][-1] for r in rs),
            "hv": [r["curve"]["hv"][-1] for r in rs],
            "hv0": [r["curve"]["hv"][0] for r in rs],
            "best": {b: [best_under(r["final"], b) for r in rs] for b in budgets},
            "seconds": [r["seconds"] for r in rs],
            "kendall": taus,
            "known": statistics.fmean(r["curve"]["known"] for r in rs),
            "inner_zero": statistics.fmean(r["curve"]["inner_zero"] for r in rs),
        })
    return rows


def metrics(budgets: Sequence[int]) -> list[tuple[str, str]]:
    """(label, key) of every compared metric: the final hypervolume, then the best top-1 under
    each target's params limit."""
    return [("final hypervolume", "hv"),
            *[(f"best top-1 ≤ {b:,} params (%)", f"best:{b}") for b in budgets]]


def values(row: Mapping[str, Any], key: str) -> dict[int, float]:
    """seed -> the row's value of a :func:`metrics` key."""
    vals = row["best"][int(key.split(":")[1])] if key.startswith("best:") else row[key]
    return dict(zip(row["seeds"], vals, strict=True))


def paired(ours: Mapping[int, float], other: Mapping[int, float]) -> dict[str, Any]:
    """Per-seed differences ours - other over the seeds both have a value for, their mean and
    standard deviation, the counts of higher/lower/tied seeds and the two-sided Wilcoxon
    signed-rank p-value (scipy; tied seeds dropped, the exact distribution when no two |d| tie;
    1.0 when every seed ties; NaN without seeds)."""
    seeds = [s for s in sorted(set(ours) & set(other))
             if not (math.isnan(ours[s]) or math.isnan(other[s]))]
    diffs = [float(ours[s]) - float(other[s]) for s in seeds]
    nonzero = [d for d in diffs if d != 0.0]
    if not diffs:
        p = float("nan")
    elif not nonzero:
        p = 1.0
    else:
        p = float(wilcoxon(nonzero, alternative="two-sided").pvalue)
    return {
        "seeds": seeds, "diffs": diffs,
        "mean": statistics.fmean(diffs) if diffs else float("nan"),
        "sd": statistics.stdev(diffs) if len(diffs) > 1 else float("nan"),
        "higher": sum(d > 0 for d in diffs), "lower": sum(d < 0 for d in diffs),
        "tied": len(diffs) - len(nonzero), "p": p,
        "min_p": 2.0 / 2 ** len(nonzero) if nonzero else 1.0,
    }


def comparisons(rows: list[dict[str, Any]], budgets: Sequence[int]) -> list[dict[str, Any]]:
    """natv2 against every other variant, per metric: ``{"variant", "metric", **paired}``."""
    by = {r["variant"]: r for r in rows}
    if REFERENCE not in by:
        return []
    out = []
    for name, row in by.items():
        if name == REFERENCE:
            continue
        for label, key in metrics(budgets):
            out.append({"variant": name, "metric": label,
                        **paired(values(by[REFERENCE], key), values(row, key))})
    return out


def conclusion(c: Mapping[str, Any], alpha: float = ALPHA) -> str:
    """What a paired comparison shows at the two-sided level ``alpha``."""
    if not c["seeds"]:
        return "no seed with a value for both"
    if c["p"] < alpha:
        return f"{REFERENCE} {'higher' if c['mean'] > 0 else 'lower'} at the {alpha:.0%} level"
    text = f"no difference shown at the {alpha:.0%} level"
    if c["min_p"] >= alpha:
        text += (f" (with {c['higher'] + c['lower']} untied seeds no two-sided p can be below "
                 f"{c['min_p']:.3f})")
    return text


def digits(metric: str) -> int:
    return 4 if metric == "final hypervolume" else 2


def verdicts(comps: list[dict[str, Any]], alpha: float = ALPHA) -> list[str]:
    """One computed line per comparison."""
    lines = []
    for c in comps:
        d = digits(c["metric"])
        sd = "" if math.isnan(c["sd"]) else f" ± {c['sd']:.{d}f}"
        lines.append(
            f"{REFERENCE} vs {c['variant']}, {c['metric']}: paired difference "
            f"{c['mean']:+.{d}f}{sd} over {len(c['seeds'])} seeds ({REFERENCE} higher in "
            f"{c['higher']}, lower in {c['lower']}, tied in {c['tied']}); Wilcoxon signed-rank "
            f"p = {c['p']:.3f}: {conclusion(c, alpha)}")
    return lines


def paired_table(comps: list[dict[str, Any]]) -> str:
    out = [f"| {REFERENCE} − variant | metric | per-seed differences (seed: value) | "
           "mean ± sd | higher / lower / tied | Wilcoxon p (two-sided) |",
           "|---|---|---|---|---|---|"]
    for c in comps:
        d = digits(c["metric"])
        per_seed = ", ".join(f"{s}: {v:+.{d}f}" for s, v in zip(c["seeds"], c["diffs"],
                                                                 strict=True))
        out.append(f"| {c['variant']} | {c['metric']} | {per_seed or '-'} | "
                   f"{mean_sd(c['diffs'], d)} | {c['higher']} / {c['lower']} / {c['tied']} | "
                   f"{c['p']:.3f} |")
    return "\n".join(out)


def table(rows: list[dict[str, Any]], budgets: Sequence[int]) -> str:
    head = ["variant", "seeds", "init evals", "candidates/round", "new archs evaluated",
            "evaluator calls (mean)", "hypervolume round 0", "final hypervolume",
            *[f"best top-1 ≤ {b / 1e6:g}M params (%)" for b in budgets],
            "predictor Kendall τ (rounds, mean)", "candidates already in the archive (mean)",
            "candidates with an inner zero (mean)", "wall time (s)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append("| " + " | ".join([
            r["variant"], str(len(r["seeds"])), str(r["init"]), str(r["candidates"]),
            str(r["new"]), f"{r['calls']:.0f}", mean_sd(r["hv0"]), mean_sd(r["hv"]),
            *[mean_sd(r["best"][b], 2) for b in budgets],
            mean_sd(r["kendall"], 3) if r["kendall"] else "-",
            f"{r['known']:.1f}", f"{r['inner_zero']:.1f}",
            mean_sd(r["seconds"], 0),
        ]) + " |")
    return "\n".join(out)


def per_run_table(runs: list[dict[str, Any]]) -> str:
    out = ["| variant | search seed | hypervolume after each round | wall time (s) |",
           "|---|---|---|---|"]
    for r in runs:
        out.append(f"| {r['variant']} | {r['seed']} | "
                   f"{' → '.join(f'{v:.4f}' for v in r['curve']['hv'])} | {r['seconds']:.0f} |")
    return "\n".join(out)
