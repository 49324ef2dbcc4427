"""Policies with a closed-form oracle (no torch): init, update, two search rounds through the
round the search stage runs (natv2.search.round.run_round), determinism, hypervolume."""

import math

import numpy as np
import pandas as pd
import pytest

from natv2.search.archive import objectives
from natv2.search.hypervolume import Reference, archive_hypervolume
from natv2.search.policy import PRESETS, Policy
from natv2.search.round import run_round
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


OBJ = ["top1", "params"]
SMALL = dict(pop_size=20, n_gen=5, subset_pop_size=30, subset_n_gen=10)


def policy(name="natv2", objectives=("top1", "params"), **overrides):
    return Policy.preset(name, N_DOE, objectives, **{**SMALL, **overrides})


def test_policy_presets():
    nat = Policy.preset("nat", N_DOE, OBJ)
    assert nat.candidates == 8 and nat.predictor == "as"
    v2 = Policy.preset("natv2", N_DOE, OBJ)
    assert (v2.candidates, v2.predictor, v2.repair, v2.sampler, v2.update) == (
        25, "lgbm", "fill", "balanced", "bounded")
    assert Policy.preset("nat", N_DOE, OBJ, candidates=3).candidates == 3
    assert Policy.preset("random", N_DOE, OBJ).make_predictor(0) is None
    with pytest.raises(ValueError, match="nat, natv2, random"):
        Policy.preset("nope", N_DOE, OBJ)
    with pytest.raises(ValueError, match="grow, bounded"):
        Policy.preset("nat", N_DOE, OBJ, update="shrink")
    assert set(v2.as_dict()) == set(PRESETS["natv2"]) | {"policy", "n_doe", "objectives"}
    with pytest.raises(ValueError, match="first objective must be 'top1'"):
        Policy.preset("natv2", N_DOE, ["params", "top1"])


def test_policy_from_config_takes_non_null_overrides():
    from natv2.config import validate

    cfg = validate({"search": {"policy": "nat", "n_doe": 12, "candidates": 4,
                               "objectives": ["params", "macs"]}})
    p = Policy.from_config(cfg)
    assert (p.policy, p.n_doe, p.candidates, p.predictor) == ("nat", 12, 4, "as")
    assert p.objectives == ["top1", "params", "macs"]


def test_init_nat_has_bounds_and_size():
    archive, evaluated = policy("nat").initial_archive(SPACE, evaluate, seed=0)
    assert len(archive) == N_DOE and archive["arch"].is_unique
    assert archive["origin"].tolist()[:2] == ["bound", "bound"]
    assert set(archive["arch"][:2]) == {SPACE.encode(SPACE.smallest()), SPACE.encode(SPACE.largest())}
    assert (archive["origin"][2:] == "init").all() and (archive["round"] == 0).all()
    pd.testing.assert_frame_equal(archive, evaluated)


def test_init_natv2_preprocess_keeps_bounds_and_size():
    archive, evaluated = policy("natv2", preprocess_factor=5).initial_archive(SPACE, evaluate, 0)
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
    archive, _ = policy("nat").initial_archive(SPACE, evaluate, seed=0)
    more, _ = policy("nat").initial_archive(SPACE, evaluate, seed=5)
    new = more[more["origin"] != "bound"].assign(origin="candidate", round=1)
    bounded = policy("natv2").update_archive(archive, new, seed=0)
    assert len(bounded) == N_DOE and (bounded["origin"] == "bound").sum() == 2
    grown = policy("nat").update_archive(archive, new, seed=0)
    assert len(grown) == len(set(archive["arch"]) | set(new["arch"]))


@pytest.mark.parametrize("name", ["natv2", "nat", "random"])
def test_two_rounds_raise_hypervolume_and_are_deterministic(name):
    overrides = {"candidates": 5, "preprocess_factor": 3}
    if name == "nat":  # keep adaptive switching quick in a unit test
        overrides["predictor_kwargs"] = {"n_folds": 3, "candidates": ("rbf", "gp")}
    p = policy(name, **overrides)

    def run():
        archive, _ = p.initial_archive(SPACE, evaluate, seed=0)
        history, metas = [archive], []
        for k in (1, 2):
            result = run_round(SPACE, archive, p, evaluate, cheap, k, seed=0)
            archive, cand = result.archive, result.candidates
            history.append(archive)
            metas.append(result.meta)
            assert len(cand) == 5 and set(cand["origin"]) == {"candidate"}
            assert not set(cand["arch"]) & set(history[-2]["arch"])
            assert (cand["round"] == k).all()
        return history, metas

    history, metas = run()
    names = ["top1", "params"]
    ref = Reference.of_archive(history[0], names)  # one normalisation for every round
    hv = [archive_hypervolume(a, names, ref) for a in history]
    assert hv[2] > hv[0]
    if p.update == "grow":  # a growing archive never loses volume
        assert hv[1] >= hv[0] - 1e-12 and hv[2] >= hv[1] - 1e-12
        assert [len(a) for a in history] == [N_DOE, N_DOE + 5, N_DOE + 10]
    else:
        assert all(len(a) == N_DOE for a in history)
    if name == "random":
        assert metas[0]["predictor"] is None and history[2]["predicted_top1"].isna().all()
    else:
        assert metas[1]["predictor"]["name"].startswith(PRESETS[name]["predictor"])
        assert metas[1]["n_search_population"] > 0
        cand = history[2][history[2]["origin"] == "candidate"]
        assert cand["predicted_top1"].notna().all()
    # same seed -> identical archives
    history2, _ = run()
    for a, b in zip(history, history2, strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_hypervolume_reference_rule():
    F = np.array([[0.0, 1.0], [1.0, 0.0]])
    ref = Reference.of(F)  # ideal (0, 0), nadir (1, 1), reference point 1.01
    assert ref.reference_point == pytest.approx((1.01, 1.01))
    # two rectangles 1.01 x 0.01 minus their 0.01 x 0.01 overlap
    assert ref.hypervolume(F) == pytest.approx(2 * 1.01 * 0.01 - 0.01**2)
    assert Reference.of(F * 50 + 7).hypervolume(F * 50 + 7) == pytest.approx(ref.hypervolume(F))
    assert ref.hypervolume(np.array([[2.0, 2.0]])) == 0.0  # does not dominate the reference
    assert ref.hypervolume(np.array([[0.0, 0.0]])) == pytest.approx(1.01**2)
    flat = Reference.of(np.array([[1.0, 5.0], [2.0, 5.0]]))  # a constant objective: span 1
    assert flat.reference_point == pytest.approx((2.01, 6.01))
    assert Reference.from_dict(ref.as_dict()) == ref


def test_three_objectives_round():
    p = policy("natv2", candidates=4, preprocess_factor=2, predictor="cart",
               objectives=["top1", "params", "macs"])

    def cheap3(X):
        archs = [SPACE.from_vector(v) for v in X]
        return np.array([[_params(a), _params(a) * a.resolution] for a in archs], dtype=float)

    archive, _ = p.initial_archive(SPACE, evaluate, seed=1)
    assert len(archive) == N_DOE and (archive["origin"] == "bound").sum() == 2
    result = run_round(SPACE, archive, p, evaluate, cheap3, 1, seed=1)
    assert len(result.archive) == N_DOE and len(result.candidates) == 4
    assert result.meta["predictor"]["name"] == "cart"
    ref = Reference.of_archive(archive, p.objectives)
    assert len(ref.reference_point) == 3
