"""Survival: hand-computed fronts and crowding, reference directions, determinism."""

import numpy as np
import pytest

from natv2.search.survival import (
    fronts,
    pareto_front_mask,
    reference_directions,
    survive,
)

# Front 0: A(0,5) B(1,3) C(4,1) D(5,0); E(2,4) is dominated by B only; F(4.5,4) by C and E.
# Crowding in front 0 (ranges 5 and 5): A, D infinite; B = (4-0)/5 + (5-1)/5 = 1.6;
# C = (5-1)/5 + (3-0)/5 = 1.4.
HAND = np.array([[0, 5], [1, 3], [4, 1], [5, 0], [2, 4], [4.5, 4]], dtype=float)


def test_hand_case_fronts():
    assert [f.tolist() for f in fronts(HAND)] == [[0, 1, 2, 3], [4], [5]]
    assert pareto_front_mask(HAND).tolist() == [True, True, True, True, False, False]


@pytest.mark.parametrize(
    "k, expected",
    [(2, {0, 3}), (3, {0, 1, 3}), (4, {0, 1, 2, 3}), (5, {0, 1, 2, 3, 4}), (6, set(range(6)))],
)
def test_hand_case_survival(k, expected):
    got = survive(HAND, k, seed=0)
    assert len(got) == k and set(got.tolist()) == expected


def test_one_objective_and_edges():
    assert survive(np.array([3.0, 1.0, 2.0, 1.0]), 3).tolist() == [1, 3, 2]
    assert survive(HAND, 0).tolist() == []
    assert sorted(survive(HAND, 99).tolist()) == list(range(6))
    with pytest.raises(ValueError):
        survive(np.array([[np.nan, 1.0]]), 1)


def test_three_objectives_reference_directions_deterministic():
    rng = np.random.default_rng(3)
    F = rng.random((60, 3))
    a, b = survive(F, 15, seed=1), survive(F, 15, seed=1)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 15
    # the first non-dominated front is preferred: no survivor is dominated by a non-survivor
    nd = set(np.flatnonzero(pareto_front_mask(F)).tolist())
    assert set(a.tolist()) <= nd or nd <= set(a.tolist())
    dirs = reference_directions(3, 15, seed=1)
    assert dirs.shape == (15, 3) and np.allclose(dirs.sum(axis=1), 1.0)
