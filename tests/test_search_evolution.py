"""Evolutionary search (GA / NSGA-II / NSGA-III over the integer encoding) and subset selection."""

import numpy as np
import pytest

from natv2.search.evolution import int_lhs, run_search
from natv2.search.predictors import make_predictor
from natv2.search.subset import drop_known, select_subset, spread_score
from natv2.space import SearchSpace

SPACE = SearchSpace(family="SE_B", resolutions=[160, 176, 192], widths=[1.0])


def _size(X):
    """A cheap, exact 'params' of a vector: sum of the (ks, e) codes of the active slots."""
    return np.asarray(X)[:, 2:].sum(axis=1).astype(float)


def _cheap1(X):
    return _size(X)[:, None]


def _cheap2(X):
    return np.column_stack([_size(X), np.asarray(X)[:, 0] * 10.0 + _size(X)])


@pytest.fixture(scope="module")
def fitted():
    X = SPACE.sample_vectors(40, seed=1, method="uniform")
    y = 50 + 0.3 * _size(X) + X[:, 0]  # top1 grows with size and resolution
    return X, make_predictor("rbf", seed=0).fit(SPACE.features(X), y)


def test_int_lhs_is_a_latin_hypercube_of_the_bounds():
    X = int_lhs(SPACE, 100, seed=4)
    assert X.shape == (100, SPACE.n_var) and X.dtype.kind == "i"
    assert (SPACE.xl <= X).all() and (SPACE.xu >= X).all()
    np.testing.assert_array_equal(X, int_lhs(SPACE, 100, seed=4))
    # a Latin hypercube: each variable's range cut in 100 strata, one point per stratum, so
    # every value of a variable appears in proportion to its width (+-2 points per value; a
    # uniform random sample of 100 would spread several times more)
    for j in range(SPACE.n_var):
        n_values = int(SPACE.xu[j] - SPACE.xl[j] + 1)
        counts = np.bincount(X[:, j] - int(SPACE.xl[j]), minlength=n_values)
        assert np.abs(counts - 100 / n_values).max() < 2, (j, counts)
    # zeros in the middle of a stage are not repaired away (the thesis repairs only samples)
    blocks = X[:, 2:].reshape(len(X), 5, 4)
    assert ((blocks[:, :, :-1] == 0) & (blocks[:, :, 1:] != 0)).any()


@pytest.mark.parametrize("cheap, n_cheap", [(None, 0), (_cheap1, 1), (_cheap2, 2)])
def test_run_search_valid_and_deterministic(fitted, cheap, n_cheap):
    _, pred = fitted
    kw = dict(pop_size=20, n_gen=4, seed=3)
    X, F = run_search(SPACE, pred, cheap, n_cheap, **kw)
    assert X.shape == (20, SPACE.n_var) and F.shape == (20, 1 + n_cheap)
    assert X.dtype.kind == "i" and SPACE.is_valid(X).all()
    assert len({tuple(r) for r in X}) == len(X)  # duplicates eliminated
    np.testing.assert_allclose(F[:, 0], 100 - pred.predict(SPACE.features(X)))
    if n_cheap:
        np.testing.assert_allclose(F[:, 1:], cheap(X))
    X2, F2 = run_search(SPACE, pred, cheap, n_cheap, **kw)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(F, F2)


def test_single_objective_search_improves(fitted):
    _, pred = fitted
    start = 100 - pred.predict(SPACE.features(int_lhs(SPACE, 20, seed=0)))
    X, F = run_search(SPACE, pred, None, 0, pop_size=20, n_gen=8, seed=0)
    assert F[:, 0].min() < start.min()


def test_subset_spreads_along_cheap_objective():
    rng = np.random.default_rng(0)
    C = np.sort(rng.random(40) * 10)[:, None]
    archive = np.array([[0.0], [10.0]])
    idx = select_subset(C, 4, seed=0, archive_F_cheap=archive, pop_size=40, n_gen=30)
    assert len(idx) == 4 and len(set(idx.tolist())) == 4
    chosen = spread_score(C[idx], archive)
    clumped = spread_score(C[:4], archive)
    assert chosen < clumped / 3
    assert idx.tolist() == select_subset(C, 4, seed=0, archive_F_cheap=archive, pop_size=40,
                                         n_gen=30).tolist()


def test_subset_score_is_the_thesis_max_of_raw_gap_spreads():
    # msunas.py SubsetSelectionProblem: max over objectives of std(diff(sort(front + chosen)))
    front = np.array([[0.0, 100.0], [10.0, 0.0]])
    chosen = np.array([[4.0, 50.0]])
    gaps0, gaps1 = np.diff([0.0, 4.0, 10.0]), np.diff([0.0, 50.0, 100.0])
    assert spread_score(chosen, front) == pytest.approx(max(np.std(gaps0), np.std(gaps1)))
    assert spread_score(chosen, front) == pytest.approx(1.0)  # raw units: std of (4, 6)
    # two objectives in different units: the larger-scale one decides (no normalisation)
    C = np.array([[5.0, 10.0], [1.0, 50.0], [9.0, 90.0]])
    assert select_subset(C, 1, archive_F_cheap=front).tolist() == [1]


def test_subset_exact_small_case_and_fallbacks():
    C = np.array([[0.0], [1.0], [2.0], [5.0], [9.0], [10.0]])
    # archive at 0 and 10: the even choice of 1 point is 5.0 (gaps 5, 5)
    assert select_subset(C, 1, archive_F_cheap=np.array([[0.0], [10.0]])).tolist() == [3]
    assert select_subset(C, 10).tolist() == list(range(6))  # fewer candidates than K
    err = np.array([5.0, 1.0, 3.0, 2.0, 9.0, 0.5])
    assert select_subset(np.empty((6, 0)), 2, predicted_error=err).tolist() == [1, 5]


def test_drop_known():
    assert drop_known(["a", "b", "a", "c", "d"], ["c"]).tolist() == [0, 1, 4]
