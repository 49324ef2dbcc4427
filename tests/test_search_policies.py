"""Policies with a closed-form oracle (no torch): init, update, two search rounds, determinism."""

import math

import numpy as np
import pandas as pd
import pytest

from natv2.search.archive import objectives
from natv2.search.policies import (
    POLICY_DEFAULTS,
    archive_stats,
    hv_reference,
    hypervolume,
    init_archive,
    init_archive_nat,
    init_archive_natv2,
    resolve_settings,
    search_round_core,
    update_archive,
)
from natv2.search.survival import pareto_front_mask
from natv2.space import SearchSpace

SPACE = SearchSpace(family="SE_B", resolutions=[160, 176, 192], widths=[1.0])
N_DOE = 20


def _params(arch):
    return 20_000 + sum(arch.e[s] * (arch.ks[s] ** 2 + 16) * 40 for s in arch.active_slots)


def _top1(arch):
    """Grows with depth, kernel, expand and resolution (diminishing returns); 7x7 penalised."""
    cap = sum(arch.e[s] * arch.ks[s] for s in arch.active_slots)
    n_k7 = sum(arch.ks[s] == 7 for s in arch.active_slots)
    return 95 - 60 * math.exp(-cap / 250) + 0.05 * (arch.resolution - 160) - 0.01 * n_k7**2


def evaluate(archs):
    return [{"top1": _top1(a), "params": _params(a), "macs": _params(a) * a.resolution,
             "latency_ms": None} for a in archs]


def cheap(X):
    return np.array([[_params(SPACE.from_vector(v))] for v in X], dtype=float)


SMALL = dict(pop_size=20, n_gen=5, subset_pop_size=30, subset_n_gen=10, n_doe=N_DOE)


def test_policy_defaults():
    assert POLICY_DEFAULTS["nat"]["candidates"] == 8 and POLICY_DEFAULTS["nat"]["predictor"] == "as"
    v2 = POLICY_DEFAULTS["natv2"]
    assert (v2["candidates"], v2["predictor"], v2["repair"], v2["sampler"], v2["update"]) == (
        25, "lgbm", "fill", "balanced", "bounded")
    assert resolve_settings({"policy": "nat", "candidates": 3})["candidates"] == 3
    with pytest.raises(ValueError, match="nat, natv2, random"):
        resolve_settings({"policy": "nope"})


def test_init_nat_has_bounds_and_size():
    archive, evaluated = init_archive_nat(SPACE, N_DOE, evaluate, seed=0)
    assert len(archive) == N_DOE and archive["arch"].is_unique
    assert archive["origin"].tolist()[:2] == ["bound", "bound"]
    assert set(archive["arch"][:2]) == {SPACE.encode(SPACE.smallest()), SPACE.encode(SPACE.largest())}
    assert (archive["origin"][2:] == "init").all() and (archive["round"] == 0).all()
    pd.testing.assert_frame_equal(archive, evaluated)


def test_init_natv2_preprocess_keeps_bounds_and_size():
    archive, evaluated = init_archive_natv2(SPACE, N_DOE, 5, evaluate, ["top1", "params"], seed=0)
    assert len(evaluated) == 5 * N_DOE and len(archive) == N_DOE
    assert (archive["origin"] == "bound").sum() == 2
    assert set(archive["origin"][2:]) == {"preprocess"}
    assert set(archive["arch"]) <= set(evaluated["arch"])
    # survival keeps the first front first: kept samples are all non-dominated, or all the
    # non-dominated samples are kept
    rest = evaluated.iloc[2:]
    nd = set(rest["arch"][pareto_front_mask(objectives(rest, ["top1", "params"]))])
    kept = set(archive["arch"][2:])
    assert kept <= nd or nd <= kept
    # the balanced sampler with fill repair sees shallow and deep stages
    assert archive["d"].str.contains("2").any() and archive["d"].str.contains("4").any()


def test_update_bounded_stays_n_doe_and_grow_grows():
    archive, _ = init_archive_nat(SPACE, N_DOE, evaluate, seed=0)
    more, _ = init_archive_nat(SPACE, N_DOE, evaluate, seed=5)
    new = more[more["origin"] != "bound"].assign(origin="candidate", round=1)
    bounded = update_archive(archive, new, "bounded", N_DOE, ["top1", "params"])
    assert len(bounded) == N_DOE and (bounded["origin"] == "bound").sum() == 2
    grown = update_archive(archive, new, "grow")
    assert len(grown) == len(set(archive["arch"]) | set(new["arch"]))


@pytest.mark.parametrize("policy", ["natv2", "nat", "random"])
def test_two_rounds_raise_hypervolume_and_are_deterministic(policy):
    settings = {"policy": policy, **SMALL, "candidates": 5, "preprocess_factor": 3}
    if policy == "nat":  # keep adaptive switching quick in a unit test
        settings["predictor_kwargs"] = {"n_folds": 3, "candidates": ("rbf", "gp")}

    def run():
        archive, _ = init_archive(SPACE, settings, N_DOE, evaluate, seed=0)
        history = [archive]
        stats = []
        for k in (1, 2):
            archive, cand, st = search_round_core(SPACE, archive, None, cheap, evaluate,
                                                  settings, k, seed=0)
            history.append(archive)
            stats.append(st)
            assert len(cand) == 5 and set(cand["origin"]) == {"candidate"}
            assert not set(cand["arch"]) & set(history[-2]["arch"])
            assert (cand["round"] == k).all()
        return history, stats

    history, stats = run()
    names = ["top1", "params"]
    ref = hv_reference(history[0], names)  # one normalisation for every round
    hv = [archive_stats(a, names, i, ref)["hypervolume"] for i, a in enumerate(history)]
    assert hv[2] > hv[0]
    if POLICY_DEFAULTS[policy]["update"] == "grow":  # a growing archive never loses volume
        assert hv[1] >= hv[0] - 1e-12 and hv[2] >= hv[1] - 1e-12
    if POLICY_DEFAULTS[policy]["update"] == "bounded":
        assert all(len(a) == N_DOE for a in history)
    else:
        assert [len(a) for a in history] == [N_DOE, N_DOE + 5, N_DOE + 10]
    if policy == "random":
        assert "predictor" not in stats[0] and history[2]["predicted_top1"].isna().all()
    else:
        p = stats[1]["predictor"]
        assert set(p) == {"name", "rmse", "spearman", "kendall"}
        assert p["name"].startswith(POLICY_DEFAULTS[policy]["predictor"])
        cand = history[2][history[2]["origin"] == "candidate"]
        assert cand["predicted_top1"].notna().all()
    assert {"round", "hypervolume", "reference_point", "n_evaluated", "seconds"} <= set(stats[0])
    # same seed -> identical archives
    history2, _ = run()
    for a, b in zip(history, history2, strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_hypervolume_normalised():
    F = np.array([[0.0, 1.0], [1.0, 0.0]])
    # normalised to the unit square, reference 1.1: two rectangles 1.1*0.1 + overlap 0.1*0.1
    assert hypervolume(F) == pytest.approx(0.1 * 1.1 * 2 - 0.01)
    assert hypervolume(F * 50 + 7) == pytest.approx(hypervolume(F))  # scale-free
    assert hypervolume(F, ref_point=[1.0, 1.0], ideal=[0, 0], nadir=[1, 1]) == 0.0
    assert hypervolume(np.array([[0.0, 0.0]]), ideal=[0, 0], nadir=[1, 1]) == pytest.approx(1.21)


def test_three_objectives_round():
    settings = {"policy": "natv2", **SMALL, "candidates": 4, "preprocess_factor": 2,
                "objectives": ["top1", "params", "macs"]}

    def cheap3(X):
        archs = [SPACE.from_vector(v) for v in X]
        return np.array([[_params(a), _params(a) * a.resolution] for a in archs], dtype=float)

    archive, _ = init_archive(SPACE, settings, N_DOE, evaluate, seed=1)
    assert len(archive) == N_DOE and (archive["origin"] == "bound").sum() == 2
    new, cand, stats = search_round_core(SPACE, archive, "cart", cheap3, evaluate, settings, 1,
                                         seed=1)
    assert len(new) == N_DOE and len(cand) == 4 and stats["predictor"]["name"] == "cart"
    assert len(stats["reference_point"]) == 3
