"""Policies with a closed-form oracle (no torch): init, update, two search rounds through the
round the search stage runs (natv2.search.round.run_round), determinism, hypervolume."""

import math

import numpy as np
import pandas as pd
import pytest

from natv2.search.archive import concat_archives, objectives
from natv2.search.hypervolume import Reference, archive_hypervolume, hypervolume_stats
from natv2.search.policy import PRESETS, Policy
from natv2.search.round import run_round
from natv2.search.survival import pareto_front_mask, survive
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
    # the thesis' NAT baseline (run_nat.py): LightGBM on one-hot features
    assert (nat.candidates, nat.predictor, nat.features) == (8, "lgbm", "onehot")
    v2 = Policy.preset("natv2", N_DOE, OBJ)
    assert (v2.candidates, v2.predictor, v2.features, v2.repair, v2.sampler, v2.update) == (
        25, "lgbm", "integer", "fill", "balanced", "bounded")
    assert Policy.preset("nat", N_DOE, OBJ, predictor="as").predictor == "as"  # the NAT paper
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
    assert (p.policy, p.n_doe, p.candidates, p.predictor) == ("nat", 12, 4, "lgbm")
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
    assert len(bounded) == N_DOE
    # the thesis' NATNew: survival over every row, the bounds not protected
    both = concat_archives([archive, new])
    expected = np.sort(survive(objectives(both, OBJ), N_DOE, seed=0))
    assert bounded["arch"].tolist() == both["arch"].iloc[expected].tolist()
    grown = policy("nat").update_archive(archive, new, seed=0)
    assert len(grown) == len(set(archive["arch"]) | set(new["arch"]))


@pytest.mark.parametrize("name", ["natv2", "nat", "random"])
def test_two_rounds_raise_hypervolume_and_are_deterministic(name):
    overrides = {"candidates": 5, "preprocess_factor": 3}
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


def test_hypervolume_is_the_thesis_calc_hv():
    # NAT_extended/search/algorithms/utils.py calc_hv: non-dominated set, reference 1.01 x the
    # reference set's maximum, HV / |prod(reference)|
    F = np.array([[2.0, 6.0], [4.0, 3.0], [5.0, 5.0]])  # the last one is dominated by the second
    ref = Reference.of(F)
    assert ref.ideal == (2.0, 3.0) and ref.nadir == (5.0, 6.0)
    assert ref.reference_point == pytest.approx((5.05, 6.06))
    # (2, 6): 3.05 x 0.06; (4, 3): 1.05 x 3.06; their overlap 1.05 x 0.06
    by_hand = (3.05 * 0.06 + 1.05 * 3.06 - 1.05 * 0.06) / (5.05 * 6.06)
    assert ref.hypervolume(F) == pytest.approx(by_hand)
    assert ref.hypervolume(F[:2]) == pytest.approx(by_hand)  # dominated points add nothing
    scale = np.array([100.0, 1e6])  # a fraction or a percent, params or millions: same number
    assert Reference.of(F * scale).hypervolume(F * scale) == pytest.approx(by_hand)
    assert ref.hypervolume(np.array([[6.0, 1.0]])) == 0.0  # does not dominate the reference
    assert ref.hypervolume(np.array([[0.0, 0.0]])) == pytest.approx(1.0)  # the whole box
    assert ref.hypervolume(np.empty((0, 2))) == 0.0
    assert np.isnan(Reference.of(np.array([[0.0, 1.0]])).hypervolume(np.array([[0.0, 1.0]])))
    assert Reference.from_dict(ref.as_dict()) == ref


def test_normalised_hypervolume_is_named_apart():
    F = np.array([[2.0, 6.0], [4.0, 3.0], [5.0, 5.0]])
    ref = Reference.of(F)  # normalised: (0, 1), (2/3, 0), (1, 2/3); reference 1.01
    by_hand = 1.01 * 0.01 + (1.01 - 2 / 3) * 1.01 - (1.01 - 2 / 3) * 0.01
    assert ref.hypervolume_normalised(F) == pytest.approx(by_hand)
    assert Reference.of(F * 50 + 7).hypervolume_normalised(F * 50 + 7) == pytest.approx(by_hand)
    flat = Reference.of(np.array([[1.0, 5.0], [2.0, 5.0]]))  # a constant objective: span 1
    assert flat.hypervolume_normalised(np.array([[2.0, 5.0]])) == pytest.approx(0.01 * 1.01)
    stats = hypervolume_stats(pd.DataFrame({"top1": [98.0, 96.0, 95.0], "params": [6, 3, 5]}),
                              ["top1", "params"], ref)
    assert stats["hypervolume"] == pytest.approx(ref.hypervolume(F))
    assert stats["hypervolume_normalised"] == pytest.approx(by_hand)


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


def test_bounded_update_drops_a_dominated_bound():
    archive, _ = policy("nat").initial_archive(SPACE, evaluate, seed=0)
    archive = archive.sort_values("params", kind="stable").reset_index(drop=True)
    assert archive["params"].is_unique
    archive["top1"] = 50.0 + 2.0 * np.arange(len(archive))  # every row on one front
    small = SPACE.encode(SPACE.smallest())
    assert archive["arch"].iloc[0] == small
    more, _ = policy("nat").initial_archive(SPACE, evaluate, seed=5)
    other = more[~more["arch"].isin(archive["arch"])].iloc[[0]]
    # as small as the smallest and more accurate: it dominates the smallest, nothing else
    better = other.assign(params=archive["params"].iloc[0], top1=51.0, origin="candidate",
                          round=1)
    kept = policy("natv2").update_archive(archive, better, seed=0)
    assert len(kept) == N_DOE and other["arch"].iloc[0] in set(kept["arch"])
    assert small not in set(kept["arch"])
