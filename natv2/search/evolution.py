"""Surrogate-assisted evolutionary search over the integer encoding (NAT, Lu et al. 2021).

As NAT: GA for 1 objective in total, NSGA-II for 2, NSGA-III with Riesz s-energy reference
directions for 3+; population 100, 20 generations; integer two-point crossover (prob 0.9) and
integer polynomial mutation (eta 1.0); duplicates eliminated. The pymoo 0.6 idiom for integer
variables: two-point crossover works on the integer arrays as they are; polynomial mutation
runs on floats and is rounded back (``PM(vtype=float, repair=RoundingRepair())``); the space's
repair (``push``/``fill``) then runs as the algorithm's ``Repair`` on every offspring.

The initial population is the archive's non-dominated set (NAT seeds the search with it), topped
up with valid random samples from the space up to ``pop_size`` (NAT's released code starts from
the non-dominated set alone; topping up keeps the population at ``pop_size`` from generation 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.algorithms.soo.nonconvex.ga import GA
from pymoo.operators.crossover.pntx import TwoPointCrossover
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.optimize import minimize

from natv2.search.problem import (
    CheapFn,
    ConstraintFn,
    SpaceRepair,
    SurrogateProblem,
    repair_vectors,
)
from natv2.search.survival import pareto_front_mask, reference_directions, survive
from natv2.seeds import topup_seed


def unique_rows(X: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct row, in original order."""
    X = np.atleast_2d(X)
    if len(X) == 0:
        return np.empty(0, dtype=int)
    _, first = np.unique(X, axis=0, return_index=True)
    return np.sort(first)


def initial_population(
    space: Any,
    problem: SurrogateProblem,
    archive_vectors: np.ndarray | None,
    pop_size: int,
    seed: int,
    repair: str,
    archive_F: np.ndarray | None = None,
    sampler: str = "uniform",
) -> np.ndarray:
    """Archive non-dominated set (real objectives ``archive_F`` if given, else the surrogate's)
    cut to ``pop_size`` by survival, topped up with repaired random samples; distinct rows."""
    n_var = int(space.n_var)
    parts = []
    if archive_vectors is not None and len(archive_vectors):
        A = repair_vectors(space, np.asarray(archive_vectors), repair)
        F = problem.objectives(A) if archive_F is None else np.asarray(archive_F, dtype=float)
        if len(F) != len(A):
            raise ValueError(f"archive_F has {len(F)} rows for {len(A)} archive vectors")
        nd = np.flatnonzero(pareto_front_mask(F))
        nd = nd[unique_rows(A[nd])]
        if len(nd) > pop_size:
            nd = nd[survive(F[nd], pop_size, seed=seed)]
        parts.append(A[nd])
    X0 = np.concatenate(parts) if parts else np.empty((0, n_var), dtype=int)
    attempt = 0
    while len(X0) < pop_size and attempt < 20:
        need = pop_size - len(X0)
        archs = space.sample(2 * need, seed=topup_seed(seed, attempt), method=sampler)
        S = repair_vectors(space, np.array([space.to_vector(a) for a in archs]), repair)
        X0 = np.concatenate([X0, S])
        X0 = X0[unique_rows(X0)][:pop_size]
        attempt += 1
    return X0.astype(int)


def make_algorithm(
    n_obj: int,
    pop_size: int,
    repair: SpaceRepair,
    sampling: np.ndarray,
    seed: int = 0,
    crossover_prob: float = 0.9,
    mutation_eta: float = 1.0,
) -> Any:
    """The pymoo algorithm NAT uses for ``n_obj`` objectives, with integer operators."""
    common = dict(
        pop_size=pop_size,
        sampling=sampling,
        crossover=TwoPointCrossover(prob=crossover_prob),
        mutation=PM(eta=mutation_eta, vtype=float, repair=RoundingRepair()),
        repair=repair,
        eliminate_duplicates=True,
    )
    if n_obj == 1:
        return GA(**common)
    if n_obj == 2:
        return NSGA2(**common)
    return NSGA3(ref_dirs=reference_directions(n_obj, pop_size, seed), **common)


def run_search(
    space: Any,
    predictor: Any,
    cheap_fn: CheapFn | None,
    n_cheap: int,
    archive_vectors: np.ndarray | None,
    pop_size: int = 100,
    n_gen: int = 20,
    seed: int = 0,
    crossover_prob: float = 0.9,
    mutation_eta: float = 1.0,
    repair: str = "push",
    feature_kind: str = "integer",
    archive_F: np.ndarray | None = None,
    sampler: str = "uniform",
    constraint: ConstraintFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Evolve architectures against the fitted ``predictor`` and exact ``cheap_fn``.

    Returns the final population ``(X, F)``: integer vectors (n, n_var) and objectives
    (n, 1 + n_cheap), ``F[:, 0]`` the predicted error (%). Deterministic for a given ``seed``
    (given deterministic ``predictor``, ``cheap_fn`` and ``space.sample``). ``constraint``
    (``G`` of the cheap objectives, ``<= 0`` feasible) makes pymoo's survival feasible-first.
    """
    problem = SurrogateProblem(space, predictor, cheap_fn, n_cheap, feature_kind, constraint)
    rep = SpaceRepair(space, repair)
    X0 = initial_population(
        space, problem, archive_vectors, pop_size, seed, repair, archive_F, sampler
    )
    algorithm = make_algorithm(
        problem.n_obj, pop_size, rep, X0, seed, crossover_prob, mutation_eta
    )
    res = minimize(problem, algorithm, ("n_gen", int(n_gen)), seed=int(seed), verbose=False)
    X = np.rint(res.pop.get("X")).astype(int)
    F = np.asarray(res.pop.get("F"), dtype=float)
    return X, F
