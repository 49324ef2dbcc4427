"""Subset selection: choose K of the search's candidates to evaluate for real, as the thesis
(``NAT_extended/search/algorithms/msunas.py``: ``subset_selection`` and
``SubsetSelectionProblem``).

Objective: for each cheap objective j, take the values of the archive's **non-dominated front**
(the caller passes them) plus the chosen candidates, sort them and compute the gaps between
neighbours; the score is the **maximum** over the cheap objectives of the standard deviation of
those gaps, on the raw values: ask that the front *with* the new points be spread as uniformly
as possible along every objective. When the GA picks fewer than K, the best predicted of the
rest fill up; without cheap objectives the K best predicted are taken.

Encoding: a boolean vector over the candidates with exactly K ones. The thesis constrains
``sum(x) - K <= 0``; its sampling, crossover and mutation (ours are the same operators: K random
picks; the parents' common picks completed from their difference; swap one pick) keep exactly K
ones by construction, so no constraint is needed. The GA is pymoo's ``GA`` with the thesis'
population 500 and 200 generations (the policy's ``subset_pop_size`` / ``subset_n_gen``). When
the number of K-subsets is small (<= 5000) they are enumerated instead: the exact optimum of
the same score, deterministic (the GA would evaluate 100,000 subsets to approach it).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pymoo.algorithms.soo.nonconvex.ga import GA
from pymoo.core.crossover import Crossover
from pymoo.core.mutation import Mutation
from pymoo.core.problem import Problem
from pymoo.core.sampling import Sampling
from pymoo.optimize import minimize

_ENUMERATE_MAX = 5000


def drop_known(candidates: Sequence[str], archive_arch_strings: Iterable[str]) -> np.ndarray:
    """Indices of ``candidates`` (encoding strings) not in the archive, first occurrence only."""
    seen = set(archive_arch_strings)
    keep = []
    for i, c in enumerate(candidates):
        if c not in seen:
            seen.add(c)
            keep.append(i)
    return np.asarray(keep, dtype=int)


def spread_score(selected: np.ndarray, archive: np.ndarray) -> float:
    """Max over objectives of std(gaps of sorted(archive + selected)) -- lower is more even."""
    worst = 0.0
    for j in range(selected.shape[1]):
        v = np.sort(np.concatenate([archive[:, j], selected[:, j]]))
        worst = max(worst, float(np.std(np.diff(v))) if len(v) > 1 else 0.0)
    return worst


class _SubsetProblem(Problem):
    def __init__(self, cand: np.ndarray, archive: np.ndarray, k: int) -> None:
        super().__init__(n_var=len(cand), n_obj=1, xl=0, xu=1, vtype=bool)
        self.cand, self.archive, self.k = cand, archive, k

    def _evaluate(self, X: np.ndarray, out: dict, *args: Any, **kwargs: Any) -> None:
        X = np.asarray(X, dtype=bool)
        out["F"] = np.array([[spread_score(self.cand[x], self.archive)] for x in X])


class _KSampling(Sampling):
    def _do(self, problem: Any, n_samples: int, *args: Any, random_state: Any = None,
            **kwargs: Any) -> np.ndarray:
        X = np.zeros((n_samples, problem.n_var), dtype=bool)
        for i in range(n_samples):
            X[i, random_state.permutation(problem.n_var)[: problem.k]] = True
        return X


class _KCrossover(Crossover):
    """Keep the parents' common picks, complete with random picks from their difference."""

    def __init__(self) -> None:
        super().__init__(2, 1)

    def _do(self, problem: Any, X: np.ndarray, *args: Any, random_state: Any = None,
            **kwargs: Any) -> np.ndarray:
        _, n_matings, n_var = X.shape
        out = np.zeros((1, n_matings, n_var), dtype=bool)
        for m in range(n_matings):
            a, b = X[0, m].astype(bool), X[1, m].astype(bool)
            child = a & b
            pool = np.flatnonzero(a ^ b)
            need = problem.k - int(child.sum())
            child[random_state.permutation(pool)[:need]] = True
            out[0, m] = child
        return out


class _KMutation(Mutation):
    """Swap one picked candidate for an unpicked one."""

    def _do(self, problem: Any, X: np.ndarray, *args: Any, random_state: Any = None,
            **kwargs: Any) -> np.ndarray:
        X = np.asarray(X, dtype=bool).copy()
        for i in range(len(X)):
            on, off = np.flatnonzero(X[i]), np.flatnonzero(~X[i])
            if len(on) and len(off):
                X[i, random_state.choice(on)] = False
                X[i, random_state.choice(off)] = True
        return X


def select_subset(
    candidate_F_cheap: np.ndarray,
    k: int,
    seed: int = 0,
    archive_F_cheap: np.ndarray | None = None,
    predicted_error: np.ndarray | None = None,
    pop_size: int = 500,
    n_gen: int = 200,
) -> np.ndarray:
    """Indices (sorted) of ``k`` candidates spreading evenly along the cheap objective(s).

    ``candidate_F_cheap``: (n, m) cheap objectives of the candidates (m may be 0);
    ``archive_F_cheap``: the same objectives of the archive's non-dominated front (the gaps are
    measured with them);
    ``predicted_error``: used to fill up when fewer than ``k`` are chosen, and alone when there
    is no cheap objective (then the ``k`` best predicted are taken). ``n <= k`` returns all.
    """
    C = np.asarray(candidate_F_cheap, dtype=float)
    if C.ndim == 1:
        C = C[:, None]
    n, m = C.shape
    k = int(k)
    if k <= 0 or n == 0:
        return np.empty(0, dtype=int)
    if n <= k:
        return np.arange(n)
    err = (
        np.zeros(n) if predicted_error is None else np.asarray(predicted_error, dtype=float)
    )
    if m == 0:
        return np.sort(np.argsort(err, kind="stable")[:k])
    A = (
        np.empty((0, m))
        if archive_F_cheap is None or len(archive_F_cheap) == 0
        else np.asarray(archive_F_cheap, dtype=float).reshape(-1, m)
    )
    if math.comb(n, k) <= _ENUMERATE_MAX:
        best, best_score = None, np.inf
        for combo in itertools.combinations(range(n), k):
            s = spread_score(C[list(combo)], A)
            if s < best_score - 1e-15:
                best, best_score = combo, s
        chosen = np.asarray(best, dtype=int)
    else:
        problem = _SubsetProblem(C, A, k)
        algorithm = GA(
            pop_size=pop_size,
            sampling=_KSampling(),
            crossover=_KCrossover(),
            mutation=_KMutation(),
            eliminate_duplicates=True,
        )
        res = minimize(problem, algorithm, ("n_gen", int(n_gen)), seed=int(seed), verbose=False)
        chosen = np.flatnonzero(np.asarray(res.X, dtype=bool))
    if len(chosen) < k:  # safeguard: fill with the best predicted of the rest
        rest = np.setdiff1d(np.arange(n), chosen)
        chosen = np.concatenate([chosen, rest[np.argsort(err[rest], kind="stable")][: k - len(chosen)]])
    return np.sort(chosen[:k])
