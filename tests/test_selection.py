"""natv2.selection: which archive rows get fine-tuned (front + high trade-off, fixed slots)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from natv2.errors import UserError
from natv2.search.archive import normalize_archive
from natv2.selection import (
    HighTradeoffPoints,  # pymoo's, imported there without its scipy deprecation warning
    high_tradeoff_points,
    select_for_finetune,
    thesis_high_tradeoff_points,
    tradeoff_measure,
)

# (params, top1): a front with a clear knee at (2, 80), plus dominated points
FRONT = [(1, 50.0), (2, 80.0), (3, 82.0), (4, 83.0), (5, 84.0), (10, 85.0)]
DOMINATED = [(3, 60.0), (6, 70.0), (8, 84.0), (2.5, 75.0)]


def _enc(i: int) -> str:
    return f"{i:02d}0" + "11001100110011001100"


def archive(points=FRONT + DOMINATED, encodings=None) -> pd.DataFrame:
    rows = []
    for i, (p, t) in enumerate(points):
        rows.append({
            "arch": encodings[i] if encodings else _enc(i), "top1": t,
            "params": int(p * 1_000_000), "macs": int(p * 10_000_000), "latency_ms": np.nan,
            "round": 3, "origin": "candidate", "predicted_top1": np.nan, "r": 32, "w": 1.0,
            "d": "2-2-2-2-2", "nd": pd.NA,
        })
    return normalize_archive(pd.DataFrame(rows))


def test_front_in_params_order_and_unused_slots_none():
    out = select_for_finetune(archive(), slots=8, n_high_tradeoff=0)
    assert out[:6] == [_enc(i) for i in range(6)]  # the front, params ascending
    assert out[6:] == [None, None]


def test_high_tradeoff_matches_pymoo_and_knee_first():
    F = np.array([[100 - t, p] for p, t in FRONT + DOMINATED])
    picked = high_tradeoff_points(F, 3)
    lo, hi = F.min(0), F.max(0)
    outliers = HighTradeoffPoints().do((F - lo) / (hi - lo))
    assert picked[0] == 1 and set(np.atleast_1d(outliers)) <= set(picked)
    mu = tradeoff_measure((F - lo) / (hi - lo))
    assert mu[1] == np.nanmax(mu)
    assert len(picked) == 3 and len(set(picked)) == 3
    assert high_tradeoff_points(F, 0) == [] and high_tradeoff_points(F[:2], 3) == []


def test_more_candidates_than_slots_keeps_best_knee_and_spread():
    out = select_for_finetune(archive(), slots=3, n_high_tradeoff=1, tradeoff="normalised")
    assert len(out) == 3 and None not in out
    assert _enc(5) in out  # most accurate
    assert _enc(1) in out  # the knee (high trade-off)
    assert _enc(4) in out  # farthest along params from the kept ones (5M: 3M from both)
    params = [FRONT[int(e[:2])][0] for e in out]
    assert params == sorted(params)


def test_deterministic_under_row_order_and_duplicates():
    df = archive()
    a = select_for_finetune(df, slots=4, n_high_tradeoff=2)
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert select_for_finetune(shuffled, slots=4, n_high_tradeoff=2) == a
    # a duplicated encoding (re-evaluated later: last row wins) does not take two slots
    dup = pd.concat([df, df.iloc[[2]]], ignore_index=True)
    out = select_for_finetune(dup, slots=10, n_high_tradeoff=0)
    assert len([e for e in out if e]) == len(set(e for e in out if e)) == 6


def test_macs_objective_and_empty_archive():
    out = select_for_finetune(archive(), slots=6, n_high_tradeoff=0, objectives=("top1", "macs"))
    assert out == [_enc(i) for i in range(6)]
    assert select_for_finetune(archive()[:0], slots=2, n_high_tradeoff=1) == [None, None]


def test_bad_arguments():
    with pytest.raises(UserError, match="slots"):
        select_for_finetune(archive(), slots=0, n_high_tradeoff=1)
    with pytest.raises(UserError, match="n_high_tradeoff"):
        select_for_finetune(archive(), slots=2, n_high_tradeoff=-1)
    with pytest.raises(ValueError, match="latency"):
        select_for_finetune(archive(), slots=2, n_high_tradeoff=0,
                            objectives=("top1", "latency"))


# a front by hand, in the thesis' units (error %, params in millions): mu (least sacrifice per
# unit gain towards a neighbour; 3 points, so each has the other two as neighbours):
# A (10, 2.5): to B 2 / 1.5 = 1.333, to C 10 / 2 = 5 -> 1.333
# B (12, 1.0): to A 1.5 / 2 = 0.75, to C 8 / 0.5 = 16 -> 0.75
# C (20, 0.5): to A 2 / 10 = 0.2, to B 0.5 / 8 = 0.0625 -> 0.0625
HAND = np.array([[10.0, 2.5], [12.0, 1.0], [20.0, 0.5]])


def test_thesis_tradeoff_measure_and_order_by_hand():
    mu = tradeoff_measure(HAND)
    np.testing.assert_allclose(mu, [2 / 1.5, 0.75, 0.0625])
    assert thesis_high_tradeoff_points(HAND, 2) == [0, 1]  # largest first
    assert thesis_high_tradeoff_points(HAND, 1) == [0]
    assert thesis_high_tradeoff_points(HAND, 9) == [0, 1, 2]
    assert thesis_high_tradeoff_points(HAND, 0) == []
    # np.argsort puts a NaN measure last: the thesis takes it as the largest
    twin = np.array([[10.0, 2.5], [10.0, 2.5]])
    assert np.isnan(tradeoff_measure(twin)).all()
    assert thesis_high_tradeoff_points(np.vstack([HAND, [[30.0, 0.1], [30.0, 0.1]]]), 1) != []


def _hand_archive() -> pd.DataFrame:
    pts = [(p, 100 - e) for e, p in HAND] + [(3.0, 85.0)]  # + one dominated row
    return archive(pts)


def test_thesis_rule_ranks_front_rows_in_millions_of_params():
    df = _hand_archive()
    # the thesis' points A and B keep the two slots (C would be the spread's pick)
    assert select_for_finetune(df, slots=2, n_high_tradeoff=2) == [_enc(1), _enc(0)]
    # in raw parameter counts the measure would rank C and B highest: the units matter
    assert thesis_high_tradeoff_points(HAND * [1, 1e6], 2) == [2, 1]
    # the thesis' points are front rows: with enough slots only the front is fine-tuned
    assert select_for_finetune(df, slots=5, n_high_tradeoff=4) == [
        _enc(2), _enc(1), _enc(0), None, None]


def test_normalised_rule_is_the_former_one_and_bad_rule_is_refused():
    df = archive()
    F = np.array([[100 - t, p] for p, t in FRONT + DOMINATED])
    picked = high_tradeoff_points(F, 2)
    out = select_for_finetune(df, slots=10, n_high_tradeoff=2, tradeoff="normalised")
    assert {_enc(i) for i in picked} <= set(out)
    with pytest.raises(UserError, match="tradeoff.*'knee'.*thesis"):
        select_for_finetune(df, slots=2, n_high_tradeoff=1, tradeoff="knee")
