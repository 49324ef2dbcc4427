"""The paired statistics of benchmarks/search_quality.py (benchmarks/_search_stats.py)."""

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def st():
    spec = importlib.util.spec_from_file_location("_bench_search_stats",
                                                  ROOT / "benchmarks" / "_search_stats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_six_seeds_all_higher_is_significant(st):
    ours = {s: 0.5 + 0.01 * (s + 1) for s in range(6)}
    other = {s: 0.5 for s in range(6)}
    c = st.paired(ours, other)
    assert c["seeds"] == list(range(6)) and c["higher"] == 6 and c["lower"] == 0
    assert c["p"] == pytest.approx(2 / 64)  # the exact two-sided minimum for n = 6
    assert c["mean"] == pytest.approx(0.035)
    assert st.conclusion(c) == "natv2 higher at the 5% level"
    # the other way round: lower
    assert st.conclusion(st.paired(other, ours)) == "natv2 lower at the 5% level"


def test_paired_five_seeds_cannot_reach_five_percent(st):
    c = st.paired({s: 1.0 + s for s in range(5)}, {s: 0.0 for s in range(5)})
    assert c["p"] == pytest.approx(2 / 32) and c["min_p"] == pytest.approx(0.0625)
    assert "no two-sided p can be below 0.062" in st.conclusion(c)


def test_paired_mixed_ties_and_missing(st):
    ours = {0: 0.3, 1: 0.2, 2: 0.5, 3: float("nan"), 4: 0.1}
    other = {0: 0.1, 1: 0.4, 2: 0.5, 3: 0.2, 5: 0.0}
    c = st.paired(ours, other)
    assert c["seeds"] == [0, 1, 2]  # seed 3 has NaN, 4 and 5 are unpaired
    assert c["diffs"] == pytest.approx([0.2, -0.2, 0.0])
    assert (c["higher"], c["lower"], c["tied"]) == (1, 1, 1)
    assert c["p"] == pytest.approx(1.0)
    assert st.paired({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})["p"] == 1.0  # every seed tied
    empty = st.paired({0: 1.0}, {1: 1.0})
    assert empty["seeds"] == [] and math.isnan(empty["p"])
    assert st.conclusion(empty) == "no seed with a value for both"


def _run(variant, seed, hv, top1):
    archive = pd.DataFrame({"params": [50_000, 200_000], "top1": [top1, top1 + 5]})
    return {"variant": variant, "seed": seed, "candidates": 8, "seconds": 1.0, "kendall": [],
            "final": archive, "curve": {"new": [20, 28], "calls": [20, 40], "hv": [0.1, hv],
                                        "known": 0, "inner_zero": 0}}


def test_comparisons_and_verdict_lines(st):
    runs = [_run("natv2", s, 0.60 + 0.01 * s, 80.0 + s) for s in range(6)]
    runs += [_run("nat", s, 0.50, 80.0 + s) for s in reversed(range(6))]  # order does not matter
    rows = st.summarise(runs, [100_000])
    assert rows[1]["seeds"] == list(range(6))
    comps = st.comparisons(rows, [100_000])
    assert [(c["variant"], c["metric"]) for c in comps] == [
        ("nat", "final hypervolume"), ("nat", "best top-1 ≤ 100,000 params (%)")]
    hv, top1 = comps
    assert hv["higher"] == 6 and hv["p"] == pytest.approx(0.03125)
    assert top1["tied"] == 6 and top1["p"] == 1.0
    lines = st.verdicts(comps)
    assert lines[0] == ("natv2 vs nat, final hypervolume: paired difference +0.1250 ± 0.0187 "
                        "over 6 seeds (natv2 higher in 6, lower in 0, tied in 0); Wilcoxon "
                        "signed-rank p = 0.031: natv2 higher at the 5% level")
    assert lines[1].endswith("p = 1.000: no difference shown at the 5% level (with 0 untied "
                             "seeds no two-sided p can be below 1.000)")
    table = st.paired_table(comps)
    assert "| nat | final hypervolume | 0: +0.1000, 1: +0.1100," in table
    assert st.comparisons([r for r in rows if r["variant"] == "nat"], [100_000]) == []
