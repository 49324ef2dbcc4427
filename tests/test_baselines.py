"""natv2.baselines and Splits.pixels: classical models on raw pixels, on the networks' test split."""

from __future__ import annotations

import numpy as np
import pytest

from natv2 import baselines
from natv2.baselines import CLASSICAL, classical_baselines, fit_classical
from natv2.data import DataSettings, build_splits


@pytest.fixture(scope="module")
def digits():
    return build_splits(DataSettings.from_config({"seed": 0, "data": {"name": "digits"}}), 16)


def test_pixels_are_the_splits_raw_images_in_order(digits):
    for split, n in digits.sizes().items():
        x, y = digits.pixels(split)
        assert x.shape == (n, 64) and y.shape == (n,)
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9  # raw values, not normalised
    x, y = digits.pixels("test")
    assert y.tolist() == [int(digits.test[i][1]) for i in range(len(y))]  # the networks' labels
    with pytest.raises(ValueError, match="unknown split 'all'"):
        digits.pixels("all")
    assert digits.published == ()  # no published table for scikit-learn's digits


def test_digits_baselines_reach_their_known_accuracies(digits):
    train = tuple(np.concatenate(p) for p in zip(digits.pixels("train"), digits.pixels("val"), strict=True))
    scores = classical_baselines(train, digits.pixels("test"), seed=0)
    assert [s.name for s in scores] == list(CLASSICAL) == ["logistic_regression", "svm_rbf"]
    by_name = {s.name: s for s in scores}
    # scikit-learn's digits on a stratified 20% test split: LR about 96, RBF SVM about 99
    assert 94.0 <= by_name["logistic_regression"].top1 <= 98.5
    assert 98.0 <= by_name["svm_rbf"].top1 <= 100.0
    assert all(s.converged and s.n_train == 1437 and s.n_test == 360 and s.n_features == 64
               for s in scores)
    assert set(scores[0].as_dict()) == {"name", "label", "top1", "n_train", "n_test",
                                        "n_features", "fit_seconds", "converged"}


def test_deterministic_for_a_seed(digits):
    train, test = digits.pixels("train"), digits.pixels("test")
    a = [s.top1 for s in classical_baselines(train, test, seed=3)]
    b = [s.top1 for s in classical_baselines(train, test, seed=3)]
    assert a == b


def test_a_model_that_stops_short_is_flagged_not_converged(digits, monkeypatch):
    train, test = digits.pixels("train"), digits.pixels("test")
    assert fit_classical("logistic_regression", train, test, seed=0).converged
    monkeypatch.setattr(baselines, "LOGISTIC_MAX_ITER", 3)  # lbfgs stopped after 3 steps
    assert fit_classical("logistic_regression", train, test, seed=0).converged is False


def test_bad_inputs_are_one_line_errors():
    x, y = np.zeros((20, 4)), np.arange(20) % 2
    with pytest.raises(ValueError, match="unknown classical baseline 'knn'; valid: "
                                         "logistic_regression, svm_rbf"):
        fit_classical("knn", (x, y), (x, y), seed=0)
    with pytest.raises(ValueError, match=r"one width, got \(20, 4\) and \(20, 5\)"):
        fit_classical("svm_rbf", (x, y), (np.zeros((20, 5)), y), seed=0)
    with pytest.raises(ValueError, match="one width"):
        fit_classical("svm_rbf", (np.zeros((20, 2, 2)), y), (x, y), seed=0)
