"""Search policies (NAT, NATv2, random) as pure functions over an archive table.

Evaluation is never done here: every function takes ``evaluate(list[Arch]) -> list[dict]``
(records with ``top1`` in %, ``params``, ``macs`` and optionally ``latency_ms``) and, for the
search, ``cheap_fn(vectors) -> (n, n_cheap)`` exact cheap objectives in the order of
``objectives[1:]``. The stage code owns torch, caching, files and super-network adaptation.

Policy differences (DESIGN §1), all selectable through :data:`POLICY_DEFAULTS`:

============  ===========================  ======================================
setting       nat (Lu et al. 2021)         natv2
============  ===========================  ======================================
init          n_doe-2 uniform (push) +     balanced + fill, evaluate
              smallest + largest           preprocess_factor*n_doe - 2, keep n_doe-2
                                           by survival, + smallest + largest
update        grow                         bounded (survival back to n_doe, bounds kept)
candidates    8                            25
predictor     as (rbf/gp/cart/mlp)         lgbm (huber, 10-fold ensemble)
features      integer                      integer
repair        push                         fill
sampler       uniform                      balanced
============  ===========================  ======================================

NAT's released code (NSGANetV2/MSuNAS) feeds the integer encoding to its predictors, so the
``nat`` policy uses integer features too; ``onehot`` stays available as an option.
``random`` is the baseline: the same initial archive as ``nat`` and ``candidates`` uniform
random new architectures per round, no predictor. Its default ``candidates`` is NATv2's 25;
set it to the compared policy's value for an equal evaluation budget.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pymoo.indicators.hv import HV

from natv2.search.archive import (
    concat_archives,
    normalize_archive,
    objectives,
    records_to_archive,
)
from natv2.search.evolution import run_search
from natv2.search.predictors import make_predictor, rank_metrics
from natv2.search.subset import drop_known, select_subset
from natv2.search.survival import survive, survive_keeping

Evaluate = Callable[[list], list]

_COMMON = {
    "objectives": ["top1", "params"],
    "pop_size": 100,  # NAT: population 100, 20 generations
    "n_gen": 20,
    "crossover_prob": 0.9,
    "mutation_eta": 1.0,
    "subset_pop_size": 100,  # NAT's subset-selection GA: population 100, 60 generations
    "subset_n_gen": 60,
    "predictor_kwargs": {},
}

POLICY_DEFAULTS: dict[str, dict[str, Any]] = {
    "nat": {
        **_COMMON,
        "init": "nat",
        "update": "grow",
        "candidates": 8,
        "predictor": "as",
        "features": "integer",
        "repair": "push",
        "sampler": "uniform",
        "preprocess_factor": 1,
    },
    "natv2": {
        **_COMMON,
        "init": "natv2",
        "update": "bounded",
        "candidates": 25,
        "predictor": "lgbm",
        "features": "integer",
        "repair": "fill",
        "sampler": "balanced",
        "preprocess_factor": 10,
    },
    "random": {
        **_COMMON,
        "init": "random",
        "update": "grow",
        "candidates": 25,
        "predictor": None,
        "features": "integer",
        "repair": "push",
        "sampler": "uniform",
        "preprocess_factor": 1,
    },
}


def resolve_settings(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """``POLICY_DEFAULTS[settings["policy"]]`` (default ``natv2``) updated with ``settings``."""
    settings = dict(settings or {})
    policy = settings.get("policy", "natv2")
    if policy not in POLICY_DEFAULTS:
        raise ValueError(f"search policy {policy!r} not in {', '.join(POLICY_DEFAULTS)}")
    out = copy.deepcopy(POLICY_DEFAULTS[policy])
    out.update(settings)
    out["policy"] = policy
    names = list(out["objectives"])
    if not names or names[0] not in ("top1", "error"):
        raise ValueError(f"objectives {names!r}: the first objective must be 'top1'")
    if out["update"] not in ("grow", "bounded"):
        raise ValueError(f"update policy {out['update']!r} not in grow, bounded")
    return out


# ----------------------------------------------------------------------------- helpers


def round_seed(seed: int, round_k: int, salt: int = 0) -> int:
    """A 31-bit seed derived from (seed, round, salt): rounds get independent streams."""
    return int(np.random.SeedSequence([int(seed), int(round_k), int(salt)]).generate_state(1)[0]
               % (2**31 - 1))


def sample_new(
    space: Any,
    n: int,
    seed: int,
    method: str = "uniform",
    repair: str = "push",
    exclude: Sequence[str] = (),
    max_tries: int = 50,
) -> list:
    """``n`` distinct Archs not in ``exclude`` (encoding strings), sampled with ``method`` then
    repaired with ``repair``; deterministic. Fewer than ``n`` only if the space runs out."""
    seen = set(exclude)
    out: list = []
    for t in range(max_tries):
        if len(out) >= n:
            break
        archs = space.sample(max(2 * (n - len(out)), 8), seed=round_seed(seed, t, 17),
                             method=method, repair=repair)
        for a in archs:
            s = space.encode(a)
            if s not in seen:
                seen.add(s)
                out.append(a)
                if len(out) == n:
                    break
    return out


def _bounds(space: Any) -> list:
    small, large = space.smallest(), space.largest()
    return [small] if space.encode(small) == space.encode(large) else [small, large]


def _evaluate(evaluate: Evaluate, archs: list) -> list[dict]:
    records = list(evaluate(list(archs))) if archs else []
    if len(records) != len(archs):
        raise ValueError(f"evaluate returned {len(records)} records for {len(archs)} archs")
    return records


def archive_vectors(space: Any, df: pd.DataFrame) -> np.ndarray:
    """Integer vectors (n, n_var) of the archive's encodings."""
    if len(df) == 0:
        return np.empty((0, int(space.n_var)), dtype=int)
    return np.array([space.to_vector(space.decode(s)) for s in df["arch"]], dtype=int)


# ----------------------------------------------------------------------- initial archive


def init_archive_nat(
    space: Any, n_doe: int, evaluate: Evaluate, seed: int = 0, sampler: str = "uniform",
    repair: str = "push",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NAT: smallest + largest (origin ``bound``) + ``n_doe - 2`` uniform samples with push
    repair (``init``). Returns ``(archive, evaluated)``; here both are the same table."""
    bounds = _bounds(space)
    samples = sample_new(space, n_doe - len(bounds), seed, sampler, repair,
                         exclude=[space.encode(a) for a in bounds])
    archs = bounds + samples
    records = _evaluate(evaluate, archs)
    df = records_to_archive(space, archs, records, round_k=0,
                            origin=["bound"] * len(bounds) + ["init"] * len(samples))
    return df, df.copy()


def init_archive_random(
    space: Any, n_doe: int, evaluate: Evaluate, seed: int = 0, sampler: str = "uniform",
    repair: str = "push",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random-search baseline: the same initial archive as NAT (bounds + uniform samples)."""
    return init_archive_nat(space, n_doe, evaluate, seed, sampler, repair)


def init_archive_natv2(
    space: Any,
    n_doe: int,
    preprocess_factor: int,
    evaluate: Evaluate,
    objectives: Sequence[str] = ("top1", "params"),
    seed: int = 0,
    sampler: str = "balanced",
    repair: str = "fill",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NATv2 pre-processing: evaluate smallest + largest + ``preprocess_factor * n_doe - 2``
    balanced samples (fill repair); keep the bounds and the best ``n_doe - 2`` samples by
    survival on ``objectives``. Returns ``(archive, evaluated)``, ``evaluated`` holding every
    evaluated row (origins ``bound``/``preprocess``)."""
    bounds = _bounds(space)
    n_eval = max(int(preprocess_factor) * int(n_doe), int(n_doe)) - len(bounds)
    samples = sample_new(space, n_eval, seed, sampler, repair,
                         exclude=[space.encode(a) for a in bounds])
    archs = bounds + samples
    records = _evaluate(evaluate, archs)
    evaluated = records_to_archive(
        space, archs, records, round_k=0,
        origin=["bound"] * len(bounds) + ["preprocess"] * len(samples),
    )
    rest = evaluated.iloc[len(bounds):]
    keep = survive(_objectives(rest, objectives), n_doe - len(bounds), seed=seed)
    archive = concat_archives([evaluated.iloc[: len(bounds)], rest.iloc[np.sort(keep)]])
    return archive, evaluated


def init_archive(
    space: Any, settings: dict[str, Any], n_doe: int, evaluate: Evaluate, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dispatch on ``settings["init"]`` (``nat`` | ``natv2`` | ``random``)."""
    s = resolve_settings(settings)
    if s["init"] == "natv2":
        return init_archive_natv2(space, n_doe, s["preprocess_factor"], evaluate,
                                  s["objectives"], seed, s["sampler"], s["repair"])
    if s["init"] in ("nat", "random"):
        return init_archive_nat(space, n_doe, evaluate, seed, s["sampler"], s["repair"])
    raise ValueError(f"init policy {s['init']!r} not in nat, natv2, random")


# -------------------------------------------------------------------------------- update


def _objectives(df: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    return objectives(df, list(names))


def update_archive(
    archive_df: pd.DataFrame,
    new_df: pd.DataFrame,
    policy: str = "grow",
    n_doe: int | None = None,
    objectives: Sequence[str] = ("top1", "params"),
    seed: int = 0,
) -> pd.DataFrame:
    """Add ``new_df`` to the archive (a re-evaluated architecture replaces its old row).

    ``grow`` (NAT): keep everything. ``bounded`` (NATv2): cut back to ``n_doe`` rows by survival
    on ``objectives``, always keeping the ``bound`` rows (smallest and largest).
    """
    both = concat_archives([archive_df, new_df])
    both = both.drop_duplicates("arch", keep="last").reset_index(drop=True)
    if policy == "grow":
        return both
    if policy != "bounded":
        raise ValueError(f"update policy {policy!r} not in grow, bounded")
    if n_doe is None:
        n_doe = len(archive_df)
    if len(both) <= n_doe:
        return both
    keep = survive_keeping(_objectives(both, objectives), n_doe,
                           np.flatnonzero(both["origin"].to_numpy() == "bound"), seed=seed)
    return normalize_archive(both.iloc[np.sort(keep)])


# --------------------------------------------------------------------------- hypervolume


def hypervolume(
    F: np.ndarray,
    ref_point: Sequence[float] | None = None,
    ideal: Sequence[float] | None = None,
    nadir: Sequence[float] | None = None,
) -> float:
    """Hypervolume (pymoo ``HV``) of minimised objectives ``F`` after normalising each objective
    with ``(f - ideal) / (nadir - ideal)``. ``ideal``/``nadir`` default to ``F``'s min/max;
    ``ref_point`` is in the same (raw) units as ``F`` and defaults to
    ``nadir + 0.1 * (nadir - ideal)``, i.e. 1.1 in normalised units. Points not dominating the
    reference point add nothing. Fix ideal/nadir/ref across rounds to compare values."""
    F = np.atleast_2d(np.asarray(F, dtype=float))
    if F.size == 0:
        return 0.0
    ideal = F.min(axis=0) if ideal is None else np.asarray(ideal, dtype=float)
    nadir = F.max(axis=0) if nadir is None else np.asarray(nadir, dtype=float)
    span = np.where(nadir > ideal, nadir - ideal, 1.0)
    ref = (np.full(F.shape[1], 1.1) if ref_point is None
           else (np.asarray(ref_point, dtype=float) - ideal) / span)
    return float(HV(ref_point=ref)((F - ideal) / span))


def hv_reference(df: pd.DataFrame, names: Sequence[str]) -> dict[str, list[float]]:
    """``{"ideal", "nadir", "reference_point"}`` (raw units) for :func:`hypervolume`: the
    min/max of each objective over the ``bound`` rows (the smallest and largest nets span the
    cheap objectives and, roughly, the error range), falling back to the whole archive where the
    bounds do not spread; reference point 10 % beyond the nadir."""
    F = _objectives(df, names)
    is_bound = df["origin"].to_numpy() == "bound"
    B = F[is_bound] if is_bound.sum() >= 2 else F
    ideal, nadir = B.min(axis=0), B.max(axis=0)
    flat = nadir <= ideal
    ideal[flat], nadir[flat] = F.min(axis=0)[flat], F.max(axis=0)[flat]
    ref = nadir + 0.1 * np.where(nadir > ideal, nadir - ideal, 1.0)
    return {"ideal": ideal.tolist(), "nadir": nadir.tolist(), "reference_point": ref.tolist()}


def archive_hypervolume(
    df: pd.DataFrame, names: Sequence[str], reference: dict[str, Sequence[float]] | None = None
) -> float:
    """Hypervolume of an archive's ``names`` objectives (``reference`` as :func:`hv_reference`)."""
    ref = reference or hv_reference(df, names)
    return hypervolume(_objectives(df, names), ref["reference_point"], ref["ideal"],
                       ref["nadir"])


def archive_stats(
    df: pd.DataFrame, names: Sequence[str], round_k: int,
    reference: dict[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Round statistics that need no predictor (stats.json of round 0)."""
    ref = dict(reference or hv_reference(df, names))
    return {
        "round": int(round_k),
        "hypervolume": archive_hypervolume(df, names, ref),
        "reference_point": [float(v) for v in ref["reference_point"]],
        "ideal": [float(v) for v in ref["ideal"]],
        "nadir": [float(v) for v in ref["nadir"]],
        "objectives": list(names),
        "archive_size": int(len(df)),
    }


# ------------------------------------------------------------------------------ one round


@dataclass
class Proposal:
    """A round's candidates before evaluation: ``archs``, their ``predicted`` top-1 (NaN without
    a predictor), the fitted ``predictor`` (None for random search), how many architectures the
    evolution returned (``n_population``) and how many of them were new (``n_new``)."""

    archs: list
    predicted: list[float]
    predictor: Any = None
    n_population: int = 0
    n_new: int = 0


def _no_step(_name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def propose(
    space: Any,
    archive_df: pd.DataFrame,
    settings: dict[str, Any],
    predictor_name: str | None,
    cheap_fn: Callable[[np.ndarray], np.ndarray] | None,
    rseed: int,
    step: Callable[[str], contextlib.AbstractContextManager] = _no_step,
) -> Proposal:
    """Choose ``settings["candidates"]`` new architectures: fit the predictor on archive
    features -> top1; evolve against (predicted error, cheap objectives); drop architectures
    already in the archive; subset-select; top up with new random samples if the search found
    too few. ``predictor_name`` None/"random"/"none": uniform random new architectures.
    ``step(name)`` wraps the steps ``predictor``, ``search`` and ``subset`` (e.g. timers)."""
    s = settings
    names = list(s["objectives"])
    k = int(s["candidates"])
    archive_df = normalize_archive(archive_df)
    known = list(archive_df["arch"])
    if predictor_name in (None, "random", "none"):
        with step("search"):
            archs = sample_new(space, k, rseed, s["sampler"], s["repair"], exclude=known)
        return Proposal(archs, [math.nan] * len(archs))
    with step("predictor"):
        A = archive_vectors(space, archive_df)
        feats = np.asarray(space.features(A, kind=s["features"]), dtype=float)
        predictor = make_predictor(predictor_name, seed=rseed,
                                   **dict(s.get("predictor_kwargs") or {}))
        predictor.fit(feats, archive_df["top1"].to_numpy(dtype=float))
    archive_F = _objectives(archive_df, names)
    with step("search"):
        X, F = run_search(
            space, predictor, cheap_fn, len(names) - 1, A,
            pop_size=int(s["pop_size"]), n_gen=int(s["n_gen"]), seed=rseed,
            crossover_prob=float(s["crossover_prob"]), mutation_eta=float(s["mutation_eta"]),
            repair=s["repair"], feature_kind=s["features"], archive_F=archive_F,
            sampler=s["sampler"],
        )
    with step("subset"):
        strings = [space.encode(x) for x in X]
        new = drop_known(strings, known)
        sel = new[select_subset(
            F[new, 1:], k, seed=rseed, archive_F_cheap=archive_F[:, 1:],
            predicted_error=F[new, 0], pop_size=int(s["subset_pop_size"]),
            n_gen=int(s["subset_n_gen"]),
        )]
        archs = [space.decode(strings[i]) for i in sel]
        pred = [float(100.0 - F[i, 0]) for i in sel]
        if len(archs) < k:  # search found too few new archs: top up with random new ones
            extra = sample_new(space, k - len(archs), rseed, s["sampler"], s["repair"],
                               exclude=known + [strings[i] for i in sel])
            if extra:
                Xe = np.array([space.to_vector(a) for a in extra], dtype=int)
                fe = np.asarray(space.features(Xe, kind=s["features"]), dtype=float)
                pred += [float(v) for v in predictor.predict(fe)]
                archs += extra
    return Proposal(archs, pred, predictor, int(len(X)), int(len(new)))


def search_round_core(
    space: Any,
    archive_df: pd.DataFrame,
    predictor_name: str | None,
    cheap_fn: Callable[[np.ndarray], np.ndarray] | None,
    evaluate: Evaluate,
    policy_settings: dict[str, Any] | None,
    round_k: int,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """One NAT/NATv2 round, without super-network adaptation.

    Fit the predictor on archive features -> top1; evolve against (predicted error, cheap
    objectives); drop architectures already in the archive; subset-select ``candidates``; top up
    with new random samples if the search found too few; evaluate them; record
    ``predicted_top1``; update the archive (grow/bounded). ``predictor_name`` None falls back to
    the policy's predictor; a policy without predictor (``random``) samples candidates uniformly.

    Returns ``(new_archive, candidates, stats)``; stats has ``round``, ``n_evaluated``,
    ``predictor`` = {name, rmse, spearman, kendall} on this round's candidates (absent for
    random), ``hypervolume`` (with ``policy_settings["hv_reference"]`` if given, else
    :func:`hv_reference` of the new archive), ``reference_point``, ``seconds`` and counts.
    """
    t0 = time.perf_counter()
    s = resolve_settings(policy_settings)
    names = list(s["objectives"])
    n_doe = s.get("n_doe") or len(archive_df)
    archive_df = normalize_archive(archive_df)
    rseed = round_seed(seed, round_k)
    name = predictor_name if predictor_name is not None else s["predictor"]
    stats: dict[str, Any] = {"round": int(round_k)}
    prop = propose(space, archive_df, s, name, cheap_fn, rseed)
    records = _evaluate(evaluate, prop.archs)
    if prop.predictor is None:
        cand = records_to_archive(space, prop.archs, records, round_k=round_k,
                                  origin="candidate")
        stats["n_search_population"] = 0
    else:
        cand = records_to_archive(space, prop.archs, records, round_k=round_k,
                                  origin="candidate", predicted_top1=prop.predicted)
        stats["predictor"] = {
            "name": prop.predictor.describe(),
            **rank_metrics(cand["top1"].to_numpy(), cand["predicted_top1"].to_numpy()),
        }
        stats["n_search_population"] = prop.n_population
        stats["n_search_new"] = prop.n_new
    new_archive = update_archive(archive_df, cand, s["update"], n_doe, names, seed=rseed)
    reference = s.get("hv_reference") or hv_reference(new_archive, names)
    stats.update(
        {
            "n_evaluated": int(len(cand)),
            "hypervolume": archive_hypervolume(new_archive, names, reference),
            "reference_point": [float(v) for v in reference["reference_point"]],
            "ideal": [float(v) for v in reference["ideal"]],
            "nadir": [float(v) for v in reference["nadir"]],
            "archive_size": int(len(new_archive)),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    return new_archive, cand, stats
