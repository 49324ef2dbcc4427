"""Accuracy predictors (surrogates): features of an architecture -> top-1 (%).

Common interface: ``fit(X, y) -> self``, ``predict(X) -> np.ndarray`` (1-D), ``name``.
Build one with :func:`make_predictor`; ``PREDICTOR_NAMES`` lists the valid names.

* ``lgbm`` -- NATv2's and the thesis' NAT's predictor as the thesis fits it: LightGBM
  regressors with huber loss and LightGBM's defaults, a 10-fold CV ensemble on the thesis'
  folds (one model per fold's training part; prediction = mean of the 10 models).
* ``lgbm-small`` -- natv2's LightGBM recipe for small archives (an option): fewer leaves, a
  lower learning rate, ``min_child_samples`` scaled to the archive, standardised target.
* ``rbf``  -- scipy ``RBFInterpolator``, cubic kernel with a linear polynomial tail: the
  cubic RBF + linear tail surrogate NAT (via pySOT) uses.
* ``gp``   -- sklearn ``GaussianProcessRegressor`` (constant * RBF + white noise, normalised
  y); NAT used a DACE kriging model (constant regression, Gaussian correlation), which is the
  same model family.
* ``cart`` -- sklearn ``RandomForestRegressor``: NAT's "CART" is a bagged ensemble of
  regression trees.
* ``mlp``  -- sklearn ``MLPRegressor`` (NAT used a small torch MLP; we stay torch-free here).
* ``as``   -- NAT's adaptive switching: 10-fold CV of each of rbf/gp/cart/mlp, pick the one with
  the largest (mean - std) Kendall tau over the folds, refit it on all data. ``.chosen`` names it.

Inputs are scaled to [0, 1] per feature with the training min/max (constant features dropped)
for rbf/gp/mlp; targets are standardised inside lgbm-small/mlp. Both are internal details that leave
the interface unchanged (and make the fixed hyper-parameters sensible at any accuracy scale).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats
from scipy.interpolate import RBFInterpolator
from sklearn.model_selection import KFold

from natv2.seeds import fold_seed

PREDICTOR_NAMES = ("lgbm", "lgbm-small", "rbf", "gp", "cart", "mlp", "as")
AS_CANDIDATES = ("rbf", "gp", "cart", "mlp")


def _xy(X: Any, y: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"predictor: X must be 2-D, got shape {X.shape}")
    if y is None:
        return X, None
    y = np.asarray(y, dtype=float).ravel()
    if len(y) != len(X):
        raise ValueError(f"predictor: X has {len(X)} rows but y has {len(y)} values")
    if len(y) < 2:
        raise ValueError("predictor: need at least 2 training points")
    return X, y


def rank_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """``{"rmse", "spearman", "kendall"}`` of predictions (scipy; NaN correlations -> 0.0)."""
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if len(t) != len(p):
        raise ValueError(f"rank_metrics: {len(t)} true values but {len(p)} predictions")
    if len(t) == 0:
        return {"rmse": float("nan"), "spearman": float("nan"), "kendall": float("nan")}
    rmse = float(np.sqrt(np.mean((t - p) ** 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = stats.spearmanr(t, p).statistic if len(t) > 1 else np.nan
        tau = stats.kendalltau(t, p).statistic if len(t) > 1 else np.nan
    return {
        "rmse": rmse,
        "spearman": float(0.0 if np.isnan(rho) else rho),
        "kendall": float(0.0 if np.isnan(tau) else tau),
    }


class _Scaler:
    """Min-max scaling to [0, 1] fitted on training data; constant columns are dropped."""

    def fit(self, X: np.ndarray) -> _Scaler:
        lo, hi = X.min(axis=0), X.max(axis=0)
        self.keep = hi > lo
        self.lo, self.span = lo[self.keep], (hi - lo)[self.keep]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (X[:, self.keep] - self.lo) / self.span


class Predictor:
    """Base class: subclasses implement ``_fit`` / ``_predict`` on float arrays."""

    name = "base"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.fitted = False

    def fit(self, X: Any, y: Any) -> Predictor:
        X, y = _xy(X, y)
        self._fit(X, y)
        self.fitted = True
        return self

    def predict(self, X: Any) -> np.ndarray:
        if not self.fitted:
            raise RuntimeError(f"predictor {self.name!r}: predict() before fit()")
        X, _ = _xy(X)
        if len(X) == 0:
            return np.empty(0)
        return np.asarray(self._predict(X), dtype=float).ravel()

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        """Name for logs and stats (``as`` adds the chosen predictor: ``as:rbf``)."""
        return self.name


#: the seed of the thesis' CV folds (``NAT_extended/search/surrogate_models/__init__.py``,
#: ``SurrogateModel.cross_validation(seed=25130907)``), the same in every round and run
THESIS_CV_SEED = 25130907


def thesis_folds(n: int, n_folds: int = 10, seed: int = THESIS_CV_SEED
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The thesis' folds: ``np.random.seed(seed)``; ``perm = np.random.permutation(n)``; test
    folds ``np.array_split(perm, n_folds)``, each training part the rest of ``perm`` in its
    order (``np.setdiff1d(perm, test, assume_unique=True)``). Fewer rows than folds leave some
    test parts empty; their model is trained on every row. The thesis scores every fold's model
    on its test part (``cross_validation``: ``pearsonr`` of the part's predictions), which fails
    on an archive of fewer than 20 rows; its archives have at least 100."""
    perm = np.random.RandomState(int(seed)).permutation(int(n))
    return [(np.setdiff1d(perm, test, assume_unique=True), test)
            for test in np.array_split(perm, int(n_folds))]


class LGBMPredictor(Predictor):
    """NATv2's predictor as the thesis fits it: an ensemble of ``n_folds`` LightGBM regressors,
    one per CV fold's training part, prediction = their mean.

    Each is ``LGBMRegressor(objective="huber", n_jobs=...)`` with LightGBM's defaults for all
    else (100 trees, learning rate 0.1, 31 leaves, ``min_child_samples`` 20), fit on the raw
    accuracy in percent (the thesis fits the error ``100 - top1``: the same trees mirrored,
    since huber's loss and LightGBM's gains are symmetric), on :func:`thesis_folds` with the
    thesis' fixed seed (``NAT_extended/search/surrogate_models/__init__.py``, ``_fetch`` and
    ``cross_validation``; ``msunas.py`` ``_fit_predictors``: ``ensemble=True``). The seed given
    to the predictor is not used (the thesis' folds do not depend on the run). ``deterministic``
    and ``force_row_wise`` only fix LightGBM's summation order, so a fit repeats exactly.
    """

    name = "lgbm"

    def __init__(self, seed: int = 0, n_folds: int = 10, n_jobs: int = 1,
                 cv_seed: int = THESIS_CV_SEED, **params: Any) -> None:
        super().__init__(seed)
        self.n_folds = int(n_folds)
        self.n_jobs = int(n_jobs)
        self.cv_seed = int(cv_seed)
        self.params = dict(params)
        self.models: list[Any] = []

    def _regressor(self, fold: int, n_train: int) -> Any:
        import lightgbm as lgb

        return lgb.LGBMRegressor(objective="huber", n_jobs=self.n_jobs, verbose=-1,
                                 deterministic=True, force_row_wise=True, **self.params)

    def _target(self, y: np.ndarray) -> np.ndarray:
        return y

    def _folds(self, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return thesis_folds(n, self.n_folds, self.cv_seed)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        z = self._target(y)
        self.models = []
        for i, (tr, _) in enumerate(self._folds(len(y))):
            model = self._regressor(i, len(tr))
            model.fit(X[tr], z[tr])
            self.models.append(model)

    def _untarget(self, z: np.ndarray) -> np.ndarray:
        return z

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self._untarget(np.mean([m.predict(X) for m in self.models], axis=0))


class SmallArchiveLGBMPredictor(LGBMPredictor):
    """``lgbm-small``, natv2's own LightGBM recipe for archives of tens of architectures (an
    option; ``lgbm`` is the thesis'): 200 trees at learning rate 0.05 with 15 leaves,
    ``min_child_samples`` at most a tenth of a fold's training rows (at least 2, at most
    LightGBM's 20: else a 30-row archive gets almost no split), the target standardised (so
    huber's threshold is in standard deviations), scikit-learn ``KFold`` folds shuffled with the
    round's seed, each fold's regressor seeded by :func:`natv2.seeds.fold_seed`.
    """

    name = "lgbm-small"

    def __init__(self, seed: int = 0, n_folds: int = 10, n_jobs: int = 1,
                 n_estimators: int = 200, learning_rate: float = 0.05, num_leaves: int = 15,
                 min_child_samples: int | None = None, **params: Any) -> None:
        super().__init__(seed, n_folds, n_jobs, n_estimators=n_estimators,
                         learning_rate=learning_rate, num_leaves=num_leaves, **params)
        self.min_child_samples = min_child_samples

    def _regressor(self, fold: int, n_train: int) -> Any:
        import lightgbm as lgb

        mcs = self.min_child_samples
        if mcs is None:
            mcs = int(min(20, max(2, n_train // 10)))
        return lgb.LGBMRegressor(objective="huber", random_state=fold_seed(self.seed, fold),
                                 n_jobs=self.n_jobs, verbose=-1, min_child_samples=mcs,
                                 deterministic=True, force_row_wise=True, **self.params)

    def _target(self, y: np.ndarray) -> np.ndarray:
        self.mu, self.sd = float(y.mean()), float(y.std()) or 1.0
        return (y - self.mu) / self.sd

    def _untarget(self, z: np.ndarray) -> np.ndarray:
        return self.mu + self.sd * z

    def _folds(self, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        n_folds = min(self.n_folds, n)
        if n_folds < 2:
            return [(np.arange(n), np.arange(0))]
        return list(KFold(n_folds, shuffle=True, random_state=self.seed).split(np.zeros(n)))


class RBFPredictor(Predictor):
    """scipy ``RBFInterpolator`` (cubic kernel + linear tail) on [0,1]-scaled features.

    Duplicate inputs are averaged. With too few points for the linear tail (at most
    n_features + 1) or collinear features, a linear kernel with a constant tail is used.
    """

    name = "rbf"

    def __init__(self, seed: int = 0, kernel: str = "cubic", degree: int = 1,
                 smoothing: float = 0.0) -> None:
        super().__init__(seed)
        self.kernel, self.degree, self.smoothing = kernel, int(degree), float(smoothing)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self.scaler = _Scaler().fit(X)
        Z = self.scaler.transform(X)
        Z, inv = np.unique(Z, axis=0, return_inverse=True)
        yy = np.bincount(inv.ravel(), weights=y) / np.bincount(inv.ravel())
        self.const = None
        if Z.shape[1] == 0 or len(Z) < 2:
            self.const = float(yy.mean())
            return
        # fallback: linear kernel + constant tail, solvable for any number of distinct points
        fallback = dict(kernel="linear", degree=0, smoothing=max(self.smoothing, 1e-8))
        if len(Z) <= Z.shape[1] + 1:  # too few points for the linear tail
            self.model = RBFInterpolator(Z, yy, **fallback)
            return
        try:
            self.model = RBFInterpolator(Z, yy, kernel=self.kernel, degree=self.degree,
                                         smoothing=self.smoothing)
        except np.linalg.LinAlgError:  # rank-deficient tail (collinear features)
            self.model = RBFInterpolator(Z, yy, **fallback)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        if self.const is not None:
            return np.full(len(X), self.const)
        return self.model(self.scaler.transform(X))


class GPPredictor(Predictor):
    """sklearn ``GaussianProcessRegressor``: C * RBF(anisotropic=False) + White, normalised y."""

    name = "gp"

    def __init__(self, seed: int = 0, n_restarts_optimizer: int = 0) -> None:
        super().__init__(seed)
        self.n_restarts_optimizer = int(n_restarts_optimizer)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        self.scaler = _Scaler().fit(X)
        Z = self.scaler.transform(X)
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(1.0, (1e-2, 1e2)) + WhiteKernel(
            1e-2, (1e-8, 1.0)
        )
        self.model = GaussianProcessRegressor(
            kernel=kernel,
            normalize_y=True,
            n_restarts_optimizer=self.n_restarts_optimizer,
            random_state=self.seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at kernel bounds
            self.model.fit(Z, y)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(self.scaler.transform(X))


class CARTPredictor(Predictor):
    """sklearn ``RandomForestRegressor`` (bagged regression trees, like NAT's CART ensemble)."""

    name = "cart"

    def __init__(self, seed: int = 0, n_estimators: int = 100, n_jobs: int = 1) -> None:
        super().__init__(seed)
        self.n_estimators, self.n_jobs = int(n_estimators), int(n_jobs)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.ensemble import RandomForestRegressor

        self.model = RandomForestRegressor(
            n_estimators=self.n_estimators, random_state=self.seed, n_jobs=self.n_jobs
        ).fit(X, y)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)


class MLPPredictor(Predictor):
    """sklearn ``MLPRegressor`` (2 hidden layers, lbfgs) on scaled features, standardised y."""

    name = "mlp"

    def __init__(self, seed: int = 0, hidden: Sequence[int] = (64, 64), alpha: float = 1e-3,
                 max_iter: int = 500) -> None:
        super().__init__(seed)
        self.hidden, self.alpha, self.max_iter = tuple(hidden), float(alpha), int(max_iter)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.neural_network import MLPRegressor

        self.scaler = _Scaler().fit(X)
        self.mu, self.sd = float(y.mean()), float(y.std()) or 1.0
        self.model = MLPRegressor(
            hidden_layer_sizes=self.hidden,
            solver="lbfgs",
            alpha=self.alpha,
            max_iter=self.max_iter,
            random_state=self.seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs ConvergenceWarning
            self.model.fit(self.scaler.transform(X), (y - self.mu) / self.sd)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self.mu + self.sd * self.model.predict(self.scaler.transform(X))


class AdaptiveSwitching(Predictor):
    """NAT's adaptive switching over ``candidates`` (default rbf, gp, cart, mlp).

    Each candidate is cross-validated with ``n_folds`` folds (same folds for all); the score is
    mean(tau) - std(tau) of the per-fold Kendall tau; the best (first on ties) is refit on all
    the data. ``.chosen`` is its name, ``.scores`` the per-candidate scores.
    """

    name = "as"

    def __init__(self, seed: int = 0, candidates: Sequence[str] = AS_CANDIDATES,
                 n_folds: int = 10, **kw: Any) -> None:
        super().__init__(seed)
        bad = [c for c in candidates if c not in PREDICTOR_NAMES or c == "as"]
        if bad or not candidates:
            raise ValueError(
                f"adaptive switching candidates {bad or list(candidates)} not in "
                f"{', '.join(n for n in PREDICTOR_NAMES if n != 'as')}"
            )
        self.candidates = tuple(candidates)
        self.n_folds = int(n_folds)
        self.kw = kw  # per-candidate kwargs: {"cart": {...}, ...}
        self.chosen: str | None = None
        self.scores: dict[str, float] = {}
        self.model: Predictor | None = None

    def _make(self, name: str) -> Predictor:
        return make_predictor(name, seed=self.seed, **self.kw.get(name, {}))

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        n_folds = min(self.n_folds, len(y))
        folds = list(KFold(n_folds, shuffle=True, random_state=self.seed).split(X))
        self.scores = {}
        for name in self.candidates:
            taus = []
            for tr, te in folds:
                p = self._make(name).fit(X[tr], y[tr]).predict(X[te])
                taus.append(rank_metrics(y[te], p)["kendall"])
            self.scores[name] = float(np.mean(taus) - np.std(taus))
        self.chosen = max(self.candidates, key=lambda c: self.scores[c])
        self.model = self._make(self.chosen).fit(X, y)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        assert self.model is not None
        return self.model.predict(X)

    def describe(self) -> str:
        return f"as:{self.chosen}" if self.chosen else "as"


_REGISTRY: dict[str, type[Predictor]] = {
    "lgbm": LGBMPredictor,
    "lgbm-small": SmallArchiveLGBMPredictor,
    "rbf": RBFPredictor,
    "gp": GPPredictor,
    "cart": CARTPredictor,
    "mlp": MLPPredictor,
    "as": AdaptiveSwitching,
}


def make_predictor(name: str, seed: int = 0, **kw: Any) -> Predictor:
    """A new, unfitted predictor ``name`` (one of :data:`PREDICTOR_NAMES`)."""
    try:
        cls = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"predictor {name!r} not in {', '.join(PREDICTOR_NAMES)}"
        ) from None
    return cls(seed=seed, **kw)
