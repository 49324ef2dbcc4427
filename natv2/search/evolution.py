"""Surrogate-assisted evolutionary search over the integer encoding, as the thesis runs it
(``NAT_extended/search/algorithms/msunas.py``: ``select_solver`` and ``_next``).

GA for 1 objective in total, NSGA-II for 2, NSGA-III with Riesz s-energy reference directions
for 3+; population 100, 20 generations; integer two-point crossover (prob 0.9) and integer
polynomial mutation (eta 1.0); duplicates eliminated.

**Initial population**: the thesis' ``get_sampling('int_lhs')``, a Latin hypercube of
``pop_size`` points over the encoding's bounds, each variable's range widened by half a step on
both sides and rounded (pymoo 0.5's ``IntegerFromFloatSampling``), so every integer value is
equally likely; the archive does not seed it. **No repair**: the offspring are evaluated as
they are (the thesis repairs only its samples). Every in-bounds vector is an architecture (a
zero in an optional slot means "skip", wherever it is), and the candidates are compared with
the archive on their canonical encodings.

pymoo 0.6 idiom for integer variables: two-point crossover works on the integer arrays as they
are; polynomial mutation runs on floats and is rounded back (``PM(vtype=float,
repair=RoundingRepair())``), each individual mutated (``prob=1``, as pymoo 0.5's
``PolynomialMutation``) with per-variable probability ``1 / n_var``.
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
from pymoo.operators.sampling.lhs import sampling_lhs
from pymoo.optimize import minimize

from natv2.search.problem import CheapFn, ConstraintFn, SurrogateProblem
from natv2.search.survival import reference_directions

#: how far beyond each bound the Latin hypercube reaches before rounding (pymoo 0.5's
#: ``apply_float_operation``: ``0.5 - 1e-16``)
_HALF_STEP = 0.5 - 1e-9


def int_lhs(space: Any, n: int, seed: int) -> np.ndarray:
    """``n`` integer vectors of a Latin hypercube over ``[space.xl, space.xu]`` (see above)."""
    xl = np.asarray(space.xl, dtype=float)
    xu = np.asarray(space.xu, dtype=float)
    X = sampling_lhs(int(n), len(xl), xl - _HALF_STEP, xu + _HALF_STEP,
                     random_state=np.random.default_rng(int(seed)))
    return np.clip(np.rint(X), xl, xu).astype(int)


def make_algorithm(
    n_obj: int,
    pop_size: int,
    sampling: np.ndarray,
    crossover_prob: float = 0.9,
    mutation_eta: float = 1.0,
) -> Any:
    """The pymoo algorithm the thesis uses for ``n_obj`` objectives, with integer operators
    (NSGA-III's reference directions from the thesis' fixed seed)."""
    common = dict(
        pop_size=pop_size,
        sampling=sampling,
        crossover=TwoPointCrossover(prob=crossover_prob),
        mutation=PM(prob=1.0, eta=mutation_eta, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
    if n_obj == 1:
        return GA(**common)
    if n_obj == 2:
        return NSGA2(**common)
    return NSGA3(ref_dirs=reference_directions(n_obj, pop_size), **common)


def run_search(
    space: Any,
    predictor: Any,
    cheap_fn: CheapFn | None,
    n_cheap: int,
    pop_size: int = 100,
    n_gen: int = 20,
    seed: int = 0,
    crossover_prob: float = 0.9,
    mutation_eta: float = 1.0,
    feature_kind: str = "integer",
    constraint: ConstraintFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Evolve architectures against the fitted ``predictor`` and exact ``cheap_fn``.

    Returns the final population ``(X, F)``: integer vectors (n, n_var), in bounds but not
    necessarily canonical, and objectives (n, 1 + n_cheap), ``F[:, 0]`` the predicted error (%).
    Deterministic for a given ``seed`` (given deterministic ``predictor`` and ``cheap_fn``).
    ``constraint`` (``G`` of the cheap objectives, ``<= 0`` feasible) makes pymoo's survival
    feasible-first.
    """
    problem = SurrogateProblem(space, predictor, cheap_fn, n_cheap, feature_kind, constraint)
    X0 = int_lhs(space, pop_size, seed)
    algorithm = make_algorithm(problem.n_obj, pop_size, X0, crossover_prob, mutation_eta)
    res = minimize(problem, algorithm, ("n_gen", int(n_gen)), seed=int(seed), verbose=False)
    X = np.rint(res.pop.get("X")).astype(int)
    F = np.asarray(res.pop.get("F"), dtype=float)
    return X, F
