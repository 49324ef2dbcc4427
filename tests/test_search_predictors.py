"""Predictors: a smooth synthetic target of integer vectors is ranked well by each of them."""

import numpy as np
import pytest

from natv2.search.predictors import PREDICTOR_NAMES, make_predictor, rank_metrics


def _data(n_train=120, n_test=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 10, size=(n_train + n_test, 3)).astype(float)
    y = 50 + 3.0 * X[:, 0] + 2.0 * X[:, 1] + 1.0 * X[:, 2] - 0.1 * (X[:, 0] - 5) ** 2
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


@pytest.mark.parametrize("name", [n for n in PREDICTOR_NAMES if n != "as"])
def test_predictor_ranks_held_out_points(name):
    Xtr, ytr, Xte, yte = _data()
    p = make_predictor(name, seed=0).fit(Xtr, ytr)
    pred = p.predict(Xte)
    assert pred.shape == (len(Xte),) and p.name == name
    assert rank_metrics(yte, pred)["kendall"] > 0.8
    np.testing.assert_array_equal(pred, make_predictor(name, seed=0).fit(Xtr, ytr).predict(Xte))


def test_adaptive_switching_picks_and_reports():
    Xtr, ytr, Xte, yte = _data(n_train=45)
    p = make_predictor("as", seed=0, n_folds=3).fit(Xtr, ytr)
    assert p.chosen in ("rbf", "gp", "cart", "mlp")
    assert set(p.scores) == {"rbf", "gp", "cart", "mlp"}
    assert p.scores[p.chosen] == max(p.scores.values())
    assert p.describe() == f"as:{p.chosen}"
    assert rank_metrics(yte, p.predict(Xte))["kendall"] > 0.8


def test_constant_and_duplicate_features():
    Xtr, ytr, Xte, _ = _data(n_train=40)
    Xtr = np.column_stack([Xtr, np.ones(len(Xtr))])  # a constant feature
    Xtr = np.vstack([Xtr, Xtr[:5]])  # duplicated rows
    ytr = np.concatenate([ytr, ytr[:5]])
    Xte = np.column_stack([Xte, np.ones(len(Xte))])
    for name in ("rbf", "gp", "lgbm"):
        assert np.isfinite(make_predictor(name, seed=0).fit(Xtr, ytr).predict(Xte)).all()


def test_factory_and_metrics():
    with pytest.raises(ValueError, match="lgbm, rbf, gp, cart, mlp, as"):
        make_predictor("xgb")
    with pytest.raises(RuntimeError):
        make_predictor("cart").predict(np.zeros((1, 2)))
    m = rank_metrics([1, 2, 3, 4], [1, 2, 3, 5])
    assert m["kendall"] == pytest.approx(1.0) and m["spearman"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(0.5)
    assert rank_metrics([1, 1, 1], [1, 2, 3])["kendall"] == 0.0  # undefined -> 0
