"""Classical baselines on raw pixels: the context every fine-tuned network is judged in.

Logistic regression and an RBF support-vector machine (scikit-learn: ``LogisticRegression``
with its defaults, ``C=1``, lbfgs, at most :data:`LOGISTIC_MAX_ITER` iterations; ``SVC()`` with
its defaults, ``C=1``, ``gamma="scale"``) are fit on the raw pixel values in [0, 1] of
train + val, the images the fine-tuned networks' second step trains on (no hyper-parameter is
chosen on val, so val is training data here too), and scored on the same test split as the
networks. The pixels are the dataset's own (:meth:`natv2.data.Splits.pixels`): 8x8 for digits,
28x28 for Fashion-MNIST, 32x32x3 for CIFAR; a dataset of images of varying sizes has none, and
gets no classical baseline.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

#: iterations of lbfgs for the logistic regression (scikit-learn's default, 100, stops short
#: of convergence on 784 raw pixels)
LOGISTIC_MAX_ITER = 1000

#: name -> (what the report calls it, a fresh estimator for a seed)
CLASSICAL: dict[str, tuple[str, Callable[[int], object]]] = {
    "logistic_regression": (
        "logistic regression (raw pixels)",
        lambda seed: LogisticRegression(max_iter=LOGISTIC_MAX_ITER, random_state=seed)),
    "svm_rbf": ("RBF SVM (raw pixels)", lambda seed: SVC(random_state=seed)),
}


@dataclass(frozen=True)
class BaselineScore:
    """One classical model's test top-1 (%), fit on ``n_train`` rows of ``n_features`` pixels."""

    name: str
    label: str
    top1: float
    n_train: int
    n_test: int
    n_features: int
    fit_seconds: float
    converged: bool

    def as_dict(self) -> dict:
        return asdict(self)


def fit_classical(name: str, train: tuple[np.ndarray, np.ndarray],
                  test: tuple[np.ndarray, np.ndarray], seed: int) -> BaselineScore:
    """Fit model ``name`` of :data:`CLASSICAL` on ``train`` ``(X, y)``, score it on ``test``."""
    if name not in CLASSICAL:
        raise ValueError(f"unknown classical baseline {name!r}; valid: {', '.join(CLASSICAL)}")
    label, make = CLASSICAL[name]
    (x_tr, y_tr), (x_te, y_te) = train, test
    if x_tr.ndim != 2 or x_te.ndim != 2 or x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(f"train and test must be (n, d) pixel rows of one width, got "
                         f"{x_tr.shape} and {x_te.shape}")
    model = make(seed)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x_tr, y_tr)
    seconds = time.perf_counter() - start
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    top1 = 100.0 * float(np.mean(model.predict(x_te) == y_te))
    return BaselineScore(name, label, top1, int(len(y_tr)), int(len(y_te)), int(x_tr.shape[1]),
                         round(seconds, 3), converged)


def classical_baselines(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                        seed: int) -> list[BaselineScore]:
    """Every model of :data:`CLASSICAL`, in its order."""
    return [fit_classical(name, train, test, seed) for name in CLASSICAL]
