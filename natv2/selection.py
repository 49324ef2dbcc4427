"""Which architectures of the final archive get fine-tuned (NATv2 post-processing).

NATv2 outputs the non-dominated set of the archive plus a few "high trade-off" points found by
pymoo's decision making. The fine-tune stage has a fixed number of rank slots (a static DAG), so
:func:`select_for_finetune` maps that set onto ``slots`` positions:

1. the archive is deduplicated by encoding (the last row of an encoding wins: the latest
   evaluation);
2. the non-dominated rows for ``objectives`` (``top1`` maximised, the others minimised);
3. ``n_high_tradeoff`` high trade-off rows, by ``tradeoff``:

   - ``thesis`` (default): the thesis' ``HighTradeoffPoints(n_survive=n).do(nd_F)``
     (``NAT_extended/search/algorithms/utils.py``, called at the end of ``msunas.py``
     ``MSuNAS.search``) on the **non-dominated front** in the thesis' raw units (top-1 error in
     %, params and MACs in millions as ``ofa_evaluator.py`` ``_calc_params`` / ``_calc_flops``
     record them, latency in ms): the trade-off measure ``mu`` (least improvement per unit of
     deterioration towards a neighbour; pymoo's ``NeighborFinder``, neighbours within 0.125 raw
     units, at least ``min(2 x objectives, rows - 1)``), the ``n`` largest by ``np.argsort`` (a NaN
     ``mu`` sorts as the largest). The points are on the front, so they only decide which front
     rows keep a slot when the front is larger than the slots (step 4). Ties of ``mu`` go by
     the (params, encoding) order (the thesis: its archive order, with a non-stable sort);
   - ``normalised`` (natv2's former rule): pymoo's measure over the **whole archive**, min-max
     normalised, pymoo's statistical outliers first, then the other rows by decreasing finite
     ``mu`` (these may be dominated rows, added to the front);
4. if the union is larger than ``slots``: keep the most accurate, then the high trade-off
   points (largest ``mu`` first; they were asked for explicitly), then fill the remaining slots by greedy
   farthest-point selection on min-max normalised ``params`` (an even spread along the model
   size); if smaller, the remaining slots are ``None``;
5. the kept encodings are ordered by ``params`` ascending, ties by encoding.

Every step is deterministic (stable sorts, ties by encoding), so the same archive gives the
same slots.

With deployment targets (:mod:`natv2.targets`), :func:`select_slots` gives the first
``len(targets)`` slots to the targets, in their order: each the most accurate architecture of
the archive that meets its target (:func:`choose_for_target`; ties by fewer parameters, then
encoding), or, when none does, the closest one (smallest ``value / limit``), marked unmet. The
other ``slots - len(targets)`` slots take :func:`select_for_finetune` of the archive without the
targets' architectures (no network is fine-tuned twice).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

with warnings.catch_warnings():  # pymoo imports scipy's deprecated ``ckdtree`` namespace
    warnings.simplefilter("ignore", DeprecationWarning)
    from pymoo.core.decision_making import NeighborFinder
    from pymoo.mcdm.high_tradeoff import HighTradeoffPoints

from natv2.errors import UserError
from natv2.search.archive import objectives as objective_matrix
from natv2.search.survival import pareto_front_mask
from natv2.targets import Target

__all__ = ["THESIS_UNITS", "TRADEOFF_RULES", "SlotChoice", "choose_for_target",
           "high_tradeoff_points", "select_for_finetune", "select_slots",
           "thesis_high_tradeoff_points", "tradeoff_measure"]

#: the units the thesis' evaluator records the cost objectives in (``ofa_evaluator.py``:
#: ``_calc_params`` and ``_calc_flops`` divide by 1e6), per natv2 objective name
THESIS_UNITS = {"params": 1e-6, "macs": 1e-6}
#: ``finetune.tradeoff`` values, the thesis' first
TRADEOFF_RULES = ("thesis", "normalised")


def _normalise(F: np.ndarray) -> np.ndarray:
    lo, hi = F.min(axis=0), F.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return (F - lo) / span


def tradeoff_measure(F: np.ndarray, epsilon: float = 0.125) -> np.ndarray:
    """pymoo ``HighTradeoffPoints``' ``mu`` for each row of ``F`` (minimised, already
    normalised): the smallest sacrifice/gain ratio towards a neighbour. NaN where undefined."""
    n, m = F.shape
    finder = NeighborFinder(F, epsilon=epsilon, n_min_neigbors="auto", consider_2d=False)
    mu = np.full(n, np.nan)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for i in range(n):
            diff = F[finder.find(i)] - F[i]
            sacrifice = np.maximum(0.0, diff).sum(axis=1)
            gain = np.maximum(0.0, -diff).sum(axis=1)
            ratio = sacrifice / gain
            if np.isfinite(ratio).any() or np.isinf(ratio).any():
                mu[i] = np.nanmin(ratio)
    return mu


def high_tradeoff_points(F: np.ndarray, n: int, tie_key: Sequence | None = None) -> list[int]:
    """Indices of up to ``n`` high trade-off rows of ``F`` (minimised objectives, any scale).

    ``F`` is min-max normalised; pymoo's outliers first, then the other rows by decreasing
    finite ``mu``; ties broken by ``tie_key`` (default: row index). Empty for ``n <= 0``, fewer
    than 3 rows or a single objective.
    """
    F = np.asarray(F, dtype=float)
    if n <= 0 or F.ndim != 2 or len(F) < 3 or F.shape[1] < 2:
        return []
    Fn = _normalise(F)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        outliers = HighTradeoffPoints().do(Fn)
    outliers = [] if outliers is None else [int(i) for i in np.atleast_1d(outliers)]
    mu = tradeoff_measure(Fn)
    keys = list(range(len(F))) if tie_key is None else list(tie_key)
    finite = [i for i in range(len(F)) if np.isfinite(mu[i])]
    ranked = sorted(finite, key=lambda i: (i not in outliers, -mu[i], keys[i]))
    return ranked[:n]


def thesis_high_tradeoff_points(F: np.ndarray, n: int) -> list[int]:
    """The thesis' ``HighTradeoffPoints(n_survive=n).do(F)``: indices of the ``n`` largest
    trade-off measures of the rows of ``F`` (minimised objectives, used as given), a NaN measure
    counted as the largest (``np.argsort``'s order); ties by row order. Returned largest first
    (the thesis' ``np.argsort(mu)[-n:]`` is ascending: the same points)."""
    F = np.asarray(F, dtype=float)
    if n <= 0 or F.ndim != 2 or len(F) == 0:
        return []
    picked = np.argsort(tradeoff_measure(F), kind="stable")[-int(n):]
    return [int(i) for i in picked[::-1]]


def _thesis_units(F: np.ndarray, objectives: Sequence[str]) -> np.ndarray:
    scale = np.array([THESIS_UNITS.get(name, 1.0) for name in objectives])
    return F * scale


def _spread(params: np.ndarray, keep: list[int], k: int, order: list[int]) -> list[int]:
    """Greedy farthest-point choice of ``k`` more rows along normalised ``params``."""
    span = params.max() - params.min()
    x = (params - params.min()) / (span if span > 0 else 1.0)
    chosen = list(keep)
    pool = [i for i in order if i not in chosen]
    for _ in range(min(k, len(pool))):
        if chosen:
            dist = [min(abs(x[i] - x[j]) for j in chosen) for i in pool]
        else:
            dist = [0.0] * len(pool)
        best = int(np.argmax(dist))  # first maximum: pool is in (params, encoding) order
        chosen.append(pool.pop(best))
    return chosen


def select_for_finetune(
    archive_df: pd.DataFrame,
    slots: int,
    n_high_tradeoff: int,
    objectives: Sequence[str] = ("top1", "params"),
    tradeoff: str = "thesis",
) -> list[str | None]:
    """Encodings for the ``slots`` fine-tune ranks (``None`` for an unused slot).

    ``archive_df``: an archive table (``natv2.search.archive``) with at least ``arch`` and the
    columns of ``objectives`` (``top1`` is maximised, ``params``/``macs``/``latency`` minimised).
    See the module docstring for the rule.
    """
    if isinstance(slots, bool) or not isinstance(slots, int | np.integer) or slots < 1:
        raise UserError(f"finetune slots: value {slots!r} must be a positive integer")
    if isinstance(n_high_tradeoff, bool) or int(n_high_tradeoff) < 0:
        raise UserError(f"n_high_tradeoff: value {n_high_tradeoff!r} must be >= 0")
    if tradeoff not in TRADEOFF_RULES:
        raise UserError(f"finetune.tradeoff: value {tradeoff!r} is not one of {list(TRADEOFF_RULES)}")
    objectives = tuple(objectives)
    if not objectives:
        raise UserError("selection needs at least one objective, e.g. ('top1', 'params')")
    if "arch" not in archive_df.columns:
        raise UserError("archive has no 'arch' column")
    df = archive_df.copy()
    df["arch"] = df["arch"].astype(str)
    df = df.drop_duplicates("arch", keep="last").reset_index(drop=True)
    if len(df) == 0:
        return [None] * int(slots)
    needed = {"top1", "params"} | set(objectives)
    missing = [c for c in needed if c not in df.columns and c != "latency"]
    if missing:
        raise UserError(f"archive lacks column(s) {sorted(missing)} needed for selection")
    F = objective_matrix(df, objectives)
    params = pd.to_numeric(df["params"]).to_numpy(dtype=float)
    top1 = pd.to_numeric(df["top1"]).to_numpy(dtype=float)
    enc = df["arch"].tolist()
    order = sorted(range(len(df)), key=lambda i: (params[i], enc[i]))  # the final order

    front = set(np.flatnonzero(pareto_front_mask(F)).tolist())
    if tradeoff == "thesis":
        front_rows = [i for i in order if i in front]
        nd_F = _thesis_units(F[front_rows], objectives)
        picked = [front_rows[j] for j in thesis_high_tradeoff_points(nd_F, int(n_high_tradeoff))]
    else:
        picked = high_tradeoff_points(F, int(n_high_tradeoff),
                                      tie_key=list(zip(params, enc, strict=True)))
    candidates = [i for i in order if i in front or i in picked]
    if len(candidates) > slots:
        best = min(candidates, key=lambda i: (-top1[i], params[i], enc[i]))
        keep = [best] + [i for i in picked if i != best]
        keep = keep[:slots]
        cand_order = [i for i in order if i in set(candidates)]
        chosen = _spread(params, keep, slots - len(keep), cand_order)
        candidates = [i for i in order if i in set(chosen)]
    out: list[str | None] = [enc[i] for i in candidates]
    return out + [None] * (int(slots) - len(out))


@dataclass(frozen=True)
class SlotChoice:
    """What one fine-tune slot gets: an ``encoding`` (``None``: unused), the ``target`` it answers
    (``None``: a front slot), whether the archive's architecture ``met`` it, and the archive's
    ``value`` of the target's metric for it."""

    encoding: str | None
    target: Target | None = None
    met: bool | None = None
    value: float | None = None

    def describe(self) -> dict | None:
        """The slot's target record (``metrics.json`` ``target``), ``None`` for a front slot."""
        if self.target is None:
            return None
        return {**self.target.as_dict(), "met_in_archive": self.met, "archive_value": self.value}


def _dedup(archive_df: pd.DataFrame) -> pd.DataFrame:
    df = archive_df.copy()
    df["arch"] = df["arch"].astype(str)
    return df.drop_duplicates("arch", keep="last").reset_index(drop=True)


def choose_for_target(archive_df: pd.DataFrame, target: Target) -> SlotChoice:
    """The most accurate row of ``archive_df`` meeting ``target`` (ties: fewer params, then
    encoding); the closest row (smallest ``value / limit``, then most accurate) with
    ``met=False`` when none does; ``SlotChoice(None, target)`` for an archive without values."""
    if target.column not in archive_df.columns:
        raise UserError(f"target {target.name!r}: the archive has no {target.column} column; "
                        f"it is recorded when {target.metric} is measured in the search")
    df = _dedup(archive_df)
    value = pd.to_numeric(df[target.column], errors="coerce").to_numpy(dtype=float)
    known = np.isfinite(value)
    if not known.any():
        return SlotChoice(None, target, False, None)
    top1 = pd.to_numeric(df["top1"]).to_numpy(dtype=float)
    params = pd.to_numeric(df["params"]).to_numpy(dtype=float)
    enc = df["arch"].tolist()
    rows = np.flatnonzero(known)
    meeting = [i for i in rows if value[i] <= target.limit]
    if meeting:
        best = min(meeting, key=lambda i: (-top1[i], params[i], enc[i]))
        return SlotChoice(enc[best], target, True, float(value[best]))
    closest = min(rows, key=lambda i: (value[i], -top1[i], enc[i]))
    return SlotChoice(enc[closest], target, False, float(value[closest]))


def select_slots(archive_df: pd.DataFrame, slots: int, n_high_tradeoff: int,
                 objectives: Sequence[str] = ("top1", "params"),
                 targets: Sequence[Target] = (), tradeoff: str = "thesis") -> list[SlotChoice]:
    """The ``slots`` fine-tune slots: one per target first, then the front (module docstring)."""
    targets = tuple(targets)
    if len(targets) > slots:
        raise UserError(f"finetune slots: {slots} leaves no slot for some of the {len(targets)} targets")
    chosen = [choose_for_target(archive_df, t) for t in targets]
    taken = {c.encoding for c in chosen if c.encoding is not None}
    rest = int(slots) - len(chosen)
    if rest == 0:
        return chosen
    others = archive_df[~archive_df["arch"].astype(str).isin(taken)] if taken else archive_df
    front = select_for_finetune(others, rest, n_high_tradeoff, objectives, tradeoff)
    return chosen + [SlotChoice(e) for e in front]
