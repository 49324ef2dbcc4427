"""Environmental survival on objective matrices (all objectives minimised).

NATv2 cuts sets of evaluated architectures back to a fixed size (pre-processing of the initial
archive, the bounded archive update) with the survival of the evolutionary algorithms NAT runs:

* 1 objective: sort (stable, ties by index);
* 2 objectives: non-dominated rank, then crowding distance on the splitting front (NSGA-II,
  pymoo ``RankAndCrowding`` with ``"cd"``);
* 3+ objectives: non-dominated rank, then reference-direction niching (NSGA-III, pymoo
  ``ReferenceDirectionSurvival``) with Riesz s-energy directions, one direction per survivor.

pymoo breaks ties (equal crowding, niching order) with its random generator; we pass one seeded
from ``seed`` so that the result is a pure function of ``(F, k, seed)``.
"""

from __future__ import annotations

import functools

import numpy as np
from pymoo.algorithms.moo.nsga3 import ReferenceDirectionSurvival
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.operators.survival.rank_and_crowding import RankAndCrowding
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
from pymoo.util.ref_dirs import get_reference_directions

from natv2.seeds import reference_directions_seed


def _as_matrix(F: np.ndarray) -> np.ndarray:
    F = np.asarray(F, dtype=float)
    if F.ndim == 1:
        F = F[:, None]
    if F.ndim != 2:
        raise ValueError(f"objective matrix must be 2-D, got shape {F.shape}")
    if not np.isfinite(F).all():
        raise ValueError("objective matrix has NaN or infinite values")
    return F


@functools.lru_cache(maxsize=32)
def _energy_dirs(n_obj: int, n_points: int, seed: int) -> np.ndarray:
    # cached (read-only): computing Riesz energy directions is an optimisation in itself
    dirs = get_reference_directions("energy", n_obj, n_points, seed=seed)
    dirs.setflags(write=False)
    return dirs


def reference_directions(n_obj: int, n_points: int, seed: int | None = None) -> np.ndarray:
    """Riesz s-energy reference directions (as NAT uses for NSGA-III), shape (n_points, n_obj);
    ``seed`` defaults to the thesis' fixed one (:func:`natv2.seeds.reference_directions_seed`)."""
    seed = reference_directions_seed() if seed is None else seed
    return np.array(_energy_dirs(int(n_obj), int(n_points), int(seed)))


def fronts(F: np.ndarray) -> list[np.ndarray]:
    """Non-dominated fronts of ``F`` as index arrays, best front first."""
    F = _as_matrix(F)
    if len(F) == 0:
        return []
    return [np.asarray(f, dtype=int) for f in NonDominatedSorting().do(F)]


def pareto_front_mask(F: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``F`` (minimisation; duplicates all kept)."""
    F = _as_matrix(F)
    mask = np.zeros(len(F), dtype=bool)
    if len(F):
        mask[NonDominatedSorting().do(F, only_non_dominated_front=True)] = True
    return mask


def survive(F: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices (into the rows of ``F``) of the ``k`` survivors, in survival order.

    Deterministic for a given ``seed``. ``k >= len(F)`` returns every index (best first for
    1 objective, by front otherwise).
    """
    F = _as_matrix(F)
    n, m = F.shape
    k = int(k)
    if k < 0:
        raise ValueError(f"survive: k must be >= 0, got {k}")
    k = min(k, n)
    if k == 0:
        return np.empty(0, dtype=int)
    if m == 1:
        return np.argsort(F[:, 0], kind="stable")[:k]
    if k == n:
        return np.concatenate(fronts(F))
    rng = np.random.default_rng(seed)
    if m == 2:
        survival = RankAndCrowding(crowding_func="cd")
    else:
        survival = ReferenceDirectionSurvival(reference_directions(m, k))
    problem = Problem(n_var=1, n_obj=m)
    pop = Population.new("F", F, "index", np.arange(n))
    out = survival.do(problem, pop, n_survive=k, random_state=rng)
    return np.asarray(out.get("index"), dtype=int)
