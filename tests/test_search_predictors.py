"""Predictors: a smooth synthetic target of integer vectors is ranked well by each of them."""

import numpy as np
import pytest

from natv2.search.predictors import (
    PREDICTOR_NAMES,
    THESIS_CV_SEED,
    make_predictor,
    rank_metrics,
    thesis_folds,
)


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
    for name in ("rbf", "gp", "lgbm", "lgbm-small"):
        assert np.isfinite(make_predictor(name, seed=0).fit(Xtr, ytr).predict(Xte)).all()


def test_factory_and_metrics():
    with pytest.raises(ValueError, match="lgbm, lgbm-small, rbf, gp, cart, mlp, as"):
        make_predictor("xgb")
    with pytest.raises(RuntimeError):
        make_predictor("cart").predict(np.zeros((1, 2)))
    m = rank_metrics([1, 2, 3, 4], [1, 2, 3, 5])
    assert m["kendall"] == pytest.approx(1.0) and m["spearman"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(0.5)
    assert rank_metrics([1, 1, 1], [1, 2, 3])["kendall"] == 0.0  # undefined -> 0


def test_thesis_folds_by_hand():
    # NAT_extended/search/surrogate_models/__init__.py cross_validation: np.random.seed(25130907),
    # perm = np.random.permutation(n), test folds np.array_split(perm, 10)
    assert THESIS_CV_SEED == 25130907
    np.random.seed(25130907)
    perm = np.random.permutation(23)
    folds = thesis_folds(23)
    assert len(folds) == 10 and [len(te) for _, te in folds] == [3, 3, 3] + [2] * 7
    for (tr, te), expected in zip(folds, np.array_split(perm, 10), strict=True):
        np.testing.assert_array_equal(te, expected)
        np.testing.assert_array_equal(tr, [i for i in perm if i not in set(expected)])
    assert sum(len(te) == 0 for _, te in thesis_folds(6)) == 4  # fewer rows than folds


def test_lgbm_is_the_thesis_regressor():
    import lightgbm as lgb

    Xtr, ytr, Xte, _ = _data(n_train=60)
    p = make_predictor("lgbm", seed=3).fit(Xtr, ytr)
    assert len(p.models) == 10
    params = p.models[0].get_params()
    assert params["objective"] == "huber"
    # LightGBM's own defaults: nothing else was set
    defaults = lgb.LGBMRegressor().get_params()
    for key in ("n_estimators", "learning_rate", "num_leaves", "min_child_samples",
                "subsample", "colsample_bytree", "reg_alpha", "reg_lambda", "random_state"):
        assert params[key] == defaults[key], key
    # the ensemble of the thesis: one regressor per fold's training part, on the raw target
    by_hand = []
    for tr, _ in thesis_folds(60):
        m = lgb.LGBMRegressor(objective="huber", n_jobs=1, verbose=-1, deterministic=True,
                              force_row_wise=True).fit(Xtr[tr], ytr[tr])
        by_hand.append(m.predict(Xte))
    np.testing.assert_allclose(p.predict(Xte), np.mean(by_hand, axis=0), rtol=1e-12)
    # the run's seed does not move the thesis' folds
    np.testing.assert_array_equal(p.predict(Xte), make_predictor("lgbm", seed=9).fit(
        Xtr, ytr).predict(Xte))
    # fitting the error (the thesis' target) gives the mirrored prediction
    err = make_predictor("lgbm").fit(Xtr, 100.0 - ytr).predict(Xte)
    np.testing.assert_allclose(100.0 - err, p.predict(Xte), atol=1e-6)


def test_lgbm_small_is_the_small_archive_recipe():
    Xtr, ytr, _, _ = _data(n_train=30)
    p = make_predictor("lgbm-small", seed=3).fit(Xtr, ytr)
    params = p.models[0].get_params()
    assert (params["n_estimators"], params["learning_rate"], params["num_leaves"]) == (200, 0.05, 15)
    assert params["min_child_samples"] == 2  # 27 training rows per fold / 10, at least 2
