"""One search round, the only implementation: propose, evaluate, update the archive.

:func:`propose` fits the policy's accuracy predictor on the archive, evolves against (predicted
error, exact cheap objectives), decodes the population (``search.decoding``: the thesis'
``_decode`` by default), drops architectures already in the archive (``search.duplicates``: the
thesis' test by default, ``canonical`` compares networks), subset-selects the policy's
``candidates`` against the archive's non-dominated front (the thesis' ``msunas.py`` ``_next``
and ``subset_selection``) and tops them up with new random samples if the search found too few
new ones (a policy without predictor samples them uniformly; the thesis would evaluate fewer).
:func:`candidate_rows` turns the evaluated proposal into archive rows; :meth:`Policy.update_archive` merges them. :func:`run_round` chains
the three in one process; the search stage runs exactly this (``natv2 search-round``), or the
same steps one by one across processes when a round is scattered over shards. Super-network
adaptation and re-evaluation (torch) are the stage's.

Evaluation is asked for through ``evaluate(list[Arch]) -> list[dict]`` and the cheap objectives
through ``cheap_fn(vectors) -> (n, n_cheap)`` in the order of ``policy.objectives[1:]``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from natv2.search.archive import normalize_archive, objectives, records_to_archive
from natv2.search.evolution import run_search
from natv2.search.policy import Evaluate, Policy, evaluate_all, sample_new
from natv2.search.predictors import rank_metrics
from natv2.search.problem import ConstraintFn
from natv2.search.subset import drop_known, select_subset
from natv2.search.survival import pareto_front_mask
from natv2.seeds import round_seed, thesis_decoding_seed
from natv2.space.thesis_decoding import has_inner_zero, thesis_decode, thesis_known

Step = Callable[[str], contextlib.AbstractContextManager]
CheapFn = Callable[[np.ndarray], np.ndarray]


def _no_step(_name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def archive_vectors(space: Any, df: pd.DataFrame) -> np.ndarray:
    """Integer vectors (n, n_var) of the archive's encodings."""
    if len(df) == 0:
        return np.empty((0, int(space.n_var)), dtype=int)
    return np.array([space.to_vector(space.decode(s)) for s in df["arch"]], dtype=int)


@dataclass
class Proposal:
    """A round's candidates before evaluation: ``archs``, their ``predicted`` top-1 (NaN without
    a predictor), the fitted ``predictor`` (None for random search), how many architectures the
    evolution returned (``n_population``), how many of them were new (``n_new``) and how many
    chosen ones have a zero before a non-zero code in a stage (``n_inner_zero``: decoded
    differently by the thesis, :mod:`natv2.space.thesis_decoding`)."""

    archs: list
    predicted: list[float]
    predictor: Any = None
    n_population: int = 0
    n_new: int = 0
    n_inner_zero: int = 0

    def describe(self) -> dict[str, Any]:
        """The proposal's part of ``stats.json``: predictor name (and the adaptive-switching
        choice), duplicates dropped, size of the search's final population."""
        if self.predictor is None:
            return {"predictor": None, "duplicates_dropped": 0, "n_search_population": 0,
                    "inner_zero_candidates": 0}
        described = {"name": self.predictor.name}
        if hasattr(self.predictor, "chosen"):  # adaptive switching: the model it picked
            described["chosen"] = self.predictor.chosen
        return {"predictor": described,
                "duplicates_dropped": self.n_population - self.n_new,
                "n_search_population": self.n_population,
                "inner_zero_candidates": self.n_inner_zero}


def _features(space: Any, policy: Policy, X: np.ndarray) -> np.ndarray:
    return np.asarray(space.features(X, kind=policy.features), dtype=float)


def propose(space: Any, archive_df: pd.DataFrame, policy: Policy, cheap_fn: CheapFn | None,
            seed: int, step: Step = _no_step, constraint: ConstraintFn | None = None) -> Proposal:
    """Choose ``policy.candidates`` new architectures (see the module docstring); ``seed`` is
    the round's seed. ``step(name)`` wraps ``predictor``, ``search`` and ``subset`` (timers);
    ``constraint`` (targets, :func:`natv2.targets.constraint_fn`) constrains the evolution."""
    k = int(policy.candidates)
    archive_df = normalize_archive(archive_df)
    known = list(archive_df["arch"])
    predictor = policy.make_predictor(seed)
    if predictor is None:
        with step("search"):
            archs = sample_new(space, k, seed, policy.sampler, policy.repair, exclude=known)
        return Proposal(archs, [math.nan] * len(archs))
    with step("predictor"):
        A = archive_vectors(space, archive_df)
        predictor.fit(_features(space, policy, A), archive_df["top1"].to_numpy(dtype=float))
    archive_F = objectives(archive_df, policy.objectives)
    with step("search"):
        X, F = run_search(
            space, predictor, cheap_fn, len(policy.objectives) - 1,
            pop_size=int(policy.pop_size), n_gen=int(policy.n_gen), seed=seed,
            crossover_prob=float(policy.crossover_prob), mutation_eta=float(policy.mutation_eta),
            feature_kind=policy.features, constraint=constraint,
        )
    with step("subset"):
        decoded = X
        if policy.decoding == "thesis":
            decoded = thesis_decode(space, X, np.random.default_rng(thesis_decoding_seed(seed)))
        strings = [space.encode(x) for x in decoded]
        if policy.duplicates == "thesis":
            new = thesis_known(space, X, strings, known)
        else:
            new = drop_known(strings, known)
        front = pareto_front_mask(archive_F)  # the thesis scores against the archive's front
        sel = new[select_subset(
            F[new, 1:], k, seed=seed, archive_F_cheap=archive_F[front, 1:],
            predicted_error=F[new, 0], pop_size=int(policy.subset_pop_size),
            n_gen=int(policy.subset_n_gen),
        )]
        archs = [space.decode(strings[i]) for i in sel]
        pred = [float(100.0 - F[i, 0]) for i in sel]
        if len(archs) < k:  # search found too few new archs: top up with random new ones
            extra = sample_new(space, k - len(archs), seed, policy.sampler, policy.repair,
                               exclude=known + [strings[i] for i in sel])
            if extra:
                Xe = np.array([space.to_vector(a) for a in extra], dtype=int)
                pred += [float(v) for v in predictor.predict(_features(space, policy, Xe))]
                archs += extra
    return Proposal(archs, pred, predictor, int(len(X)), int(len(new)),
                    int(has_inner_zero(X[sel]).sum()) if len(sel) else 0)


def proposal_frame(space: Any, proposal: Proposal) -> pd.DataFrame:
    """``arch`` (encoding) and ``predicted_top1`` of the proposal, in order."""
    return pd.DataFrame({"arch": [space.encode(a) for a in proposal.archs],
                         "predicted_top1": pd.Series(proposal.predicted, dtype="float64")})


def candidate_rows(space: Any, proposed: pd.DataFrame, records: list[dict], round_k: int
                   ) -> pd.DataFrame:
    """Archive rows (origin ``candidate``) of the evaluated ``proposed`` frame."""
    archs = [space.decode(a) for a in proposed["arch"]]
    return records_to_archive(space, archs, records, round_k=round_k, origin="candidate",
                              predicted_top1=proposed["predicted_top1"].to_numpy(dtype=float))


def predictor_stats(meta: dict[str, Any], cand: pd.DataFrame) -> dict[str, Any] | None:
    """The predictor's name and its RMSE, Spearman and Kendall tau on the round's candidates."""
    if not meta.get("predictor"):
        return None
    return {**meta["predictor"],
            **rank_metrics(cand["top1"].to_numpy(), cand["predicted_top1"].to_numpy())}


@dataclass
class RoundResult:
    """What :func:`run_round` returns: the updated archive, the evaluated candidates and the
    proposal's description (:meth:`Proposal.describe`)."""

    archive: pd.DataFrame
    candidates: pd.DataFrame
    meta: dict[str, Any]


def run_round(space: Any, archive_df: pd.DataFrame, policy: Policy, evaluate: Evaluate,
              cheap_fn: CheapFn | None, round_k: int, seed: int, step: Step = _no_step,
              constraint: ConstraintFn | None = None) -> RoundResult:
    """Round ``round_k`` of a search seeded ``seed``: propose, evaluate, update the archive."""
    rseed = round_seed(seed, round_k)
    proposal = propose(space, archive_df, policy, cheap_fn, rseed, step, constraint)
    proposed = proposal_frame(space, proposal)
    with step("evaluate"):
        records = evaluate_all(evaluate, [space.decode(a) for a in proposed["arch"]])
    cand = candidate_rows(space, proposed, records, round_k)
    archive = policy.update_archive(archive_df, cand, rseed)
    return RoundResult(archive, cand, proposal.describe())
