"""The pymoo problem over the search space's integer encoding (no torch here).

Objectives (all minimised): the *predicted* top-1 error ``100 - predictor(features(x))`` first,
then the exact cheap objectives ``cheap_fn(X)`` (params / MACs / latency, supplied by the
caller, which knows how to count them), in the caller's order. An optional ``constraint``
``G(cheap objectives) -> (n, 1)`` (``<= 0`` feasible; :func:`natv2.targets.constraint_fn`) makes
it a constrained problem: pymoo's survival then ranks feasible architectures first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pymoo.core.problem import Problem

CheapFn = Callable[[np.ndarray], np.ndarray]
ConstraintFn = Callable[[np.ndarray], np.ndarray]


def cheap_objectives(cheap_fn: CheapFn | None, X: np.ndarray, n_cheap: int) -> np.ndarray:
    """``cheap_fn(X)`` as a float matrix (n, n_cheap); checks its shape."""
    n = len(X)
    if n_cheap == 0:
        return np.empty((n, 0))
    if cheap_fn is None:
        raise ValueError(f"{n_cheap} cheap objectives asked for but no cheap_fn given")
    C = np.asarray(cheap_fn(np.asarray(X, dtype=int)), dtype=float)
    if C.ndim == 1:
        C = C[:, None]
    if C.shape != (n, n_cheap):
        raise ValueError(f"cheap_fn returned shape {C.shape}, expected {(n, n_cheap)}")
    return C


class SurrogateProblem(Problem):
    """Vectorised pymoo problem: F = [100 - predicted top1, cheap_fn(X)...]; G =
    ``constraint(cheap_fn(X))`` when a constraint is given."""

    def __init__(
        self,
        space: Any,
        predictor: Any,
        cheap_fn: CheapFn | None,
        n_cheap: int,
        feature_kind: str = "integer",
        constraint: ConstraintFn | None = None,
    ) -> None:
        super().__init__(
            n_var=int(space.n_var),
            n_obj=1 + int(n_cheap),
            n_ieq_constr=0 if constraint is None else 1,
            xl=np.asarray(space.xl, dtype=int),
            xu=np.asarray(space.xu, dtype=int),
            vtype=int,
        )
        self.space = space
        self.predictor = predictor
        self.cheap_fn = cheap_fn
        self.n_cheap = int(n_cheap)
        self.feature_kind = feature_kind
        self.constraint = constraint

    def predicted_top1(self, X: np.ndarray) -> np.ndarray:
        X = np.rint(np.atleast_2d(X)).astype(int)
        feats = np.asarray(self.space.features(X, kind=self.feature_kind), dtype=float)
        return np.asarray(self.predictor.predict(feats), dtype=float).ravel()

    def objectives(self, X: np.ndarray) -> np.ndarray:
        X = np.rint(np.atleast_2d(X)).astype(int)
        err = 100.0 - self.predicted_top1(X)
        return np.column_stack([err, cheap_objectives(self.cheap_fn, X, self.n_cheap)])

    def _evaluate(self, X: np.ndarray, out: dict, *args: Any, **kwargs: Any) -> None:
        F = self.objectives(X)
        out["F"] = F
        if self.constraint is not None:
            out["G"] = np.asarray(self.constraint(F[:, 1:]), dtype=float).reshape(len(F), 1)
