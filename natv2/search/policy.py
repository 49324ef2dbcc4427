"""Search policies (NAT, NATv2, random) as presets composed of small named parts.

A :class:`Policy` is a frozen value: the preset's settings with the config's overrides. Its
parts are named, each in a registry of this module, and the policy is the only thing that looks
them up, so the stages ask the policy (``policy.initial_archive``, ``policy.update_archive``,
``policy.make_predictor``) and never test a policy's name:

============  ===========================  ======================================
part          nat (the thesis' NAT,        natv2 (the thesis' NATv2,
              ``run_nat.py``)              ``run_nat_new.py``)
============  ===========================  ======================================
init          ``nat``: n_doe-2 uniform     ``natv2``: balanced + fill, evaluate
              (push) + smallest + largest  preprocess_factor*n_doe - 2, keep n_doe-2
                                           by survival, + smallest + largest
update        ``grow``                     ``bounded`` (survival back to n_doe)
candidates    8                            25
predictor     ``lgbm`` (huber, 10-fold     ``lgbm``
              ensemble)
features      ``onehot``                   ``integer``
repair        push                         fill
sampler       uniform                      balanced
============  ===========================  ======================================

Both presets fit the thesis' LightGBM ensemble (``args.surrogate = 'lgb'`` in both run
scripts); ``run_nat.py`` sets ``args.feature_encoding = 'one-hot'``, ``run_nat_new.py``
``'integer'``. The NAT paper's adaptive switching over rbf/gp/cart/mlp stays available as
``predictor: as``. ``random`` is the baseline: NAT's initial archive and ``candidates`` uniform
random new architectures per round (predictor ``None``). Its default ``candidates`` is NATv2's
25; set it to the compared policy's value for an equal evaluation budget.

Evaluation is never done here: the parts take ``evaluate(list[Arch]) -> list[dict]`` (records
with ``top1`` in %, ``params``, ``macs`` and optionally ``latency_ms``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from natv2.errors import UserError
from natv2.search.archive import concat_archives, normalize_archive, objectives, records_to_archive
from natv2.search.predictors import Predictor, make_predictor
from natv2.search.survival import survive
from natv2.seeds import sample_seed

Evaluate = Callable[[list], list]

_COMMON: dict[str, Any] = {
    "pop_size": 100,  # the thesis (msunas.py select_solver / _next): population 100, 20 generations
    "n_gen": 20,
    "crossover_prob": 0.9,
    "mutation_eta": 1.0,
    "subset_pop_size": 500,  # the thesis' subset-selection GA (msunas.py subset_selection)
    "subset_n_gen": 200,
    "decoding": "thesis",  # the thesis' _decode and duplicate test (natv2.space.thesis_decoding);
    "duplicates": "thesis",  # "canonical" is natv2's option
    "predictor_kwargs": {},
}

#: each preset's settings (the values a ``search:`` key left null takes)
PRESETS: dict[str, dict[str, Any]] = {
    "nat": {**_COMMON, "init": "nat", "update": "grow", "candidates": 8, "predictor": "lgbm",
            "features": "onehot", "repair": "push", "sampler": "uniform", "preprocess_factor": 1},
    "natv2": {**_COMMON, "init": "natv2", "update": "bounded", "candidates": 25,
              "predictor": "lgbm", "features": "integer", "repair": "fill", "sampler": "balanced",
              "preprocess_factor": 10},
    "random": {**_COMMON, "init": "random", "update": "grow", "candidates": 25, "predictor": None,
               "features": "integer", "repair": "push", "sampler": "uniform",
               "preprocess_factor": 1},
}

#: keys of the config's ``search:`` section that override the preset when not null
OVERRIDABLE = ("candidates", "init", "update", "preprocess_factor", "predictor", "features",
               "repair", "sampler", "pop_size", "n_gen", "crossover_prob", "mutation_eta",
               "subset_pop_size", "subset_n_gen", "decoding", "duplicates")


# ------------------------------------------------------------------------- sampling part


#: peak memory per architecture of the initial draw: ``sample_new`` draws twice the count it
#: needs; tracemalloc measured 1.7-2.2 KB per architecture kept (default space, 2 000 and 20 000
#: architectures), so 2 x 2 KB with the draw's surplus
SAMPLE_BYTES_PER_ARCH = 4096


def sample_new(space: Any, n: int, seed: int, method: str = "uniform", repair: str = "push",
               exclude: Sequence[str] = (), max_tries: int = 50) -> list:
    """``n`` distinct Archs not in ``exclude`` (encoding strings), sampled with ``method`` then
    repaired with ``repair``; deterministic. Fewer than ``n`` only if the space runs out."""
    seen = set(exclude)
    out: list = []
    for attempt in range(max_tries):
        if len(out) >= n:
            break
        archs = space.sample(max(2 * (n - len(out)), 8), seed=sample_seed(seed, attempt),
                             method=method, repair=repair)
        for a in archs:
            s = space.encode(a)
            if s not in seen:
                seen.add(s)
                out.append(a)
                if len(out) == n:
                    break
    return out


def bounds(space: Any) -> list:
    """The smallest and the largest architecture (one if they coincide)."""
    small, large = space.smallest(), space.largest()
    return [small] if space.encode(small) == space.encode(large) else [small, large]


def evaluate_all(evaluate: Evaluate, archs: list) -> list[dict]:
    """``evaluate(archs)``, checked to return one record per architecture."""
    records = list(evaluate(list(archs))) if archs else []
    if len(records) != len(archs):
        raise ValueError(f"evaluate returned {len(records)} records for {len(archs)} archs")
    return records


# ------------------------------------------------------------------ initial archive parts


def init_uniform(space: Any, p: Policy, evaluate: Evaluate, seed: int
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NAT: smallest + largest (origin ``bound``) + ``n_doe - 2`` samples of the policy's
    sampler and repair (``init``). Returns ``(archive, evaluated)``, here the same table."""
    fixed = bounds(space)
    samples = sample_new(space, p.n_doe - len(fixed), seed, p.sampler, p.repair,
                         exclude=[space.encode(a) for a in fixed])
    archs = fixed + samples
    df = records_to_archive(space, archs, evaluate_all(evaluate, archs), round_k=0,
                            origin=["bound"] * len(fixed) + ["init"] * len(samples))
    return df, df.copy()


def init_preprocess(space: Any, p: Policy, evaluate: Evaluate, seed: int
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NATv2 pre-processing: evaluate smallest + largest + ``preprocess_factor * n_doe - 2``
    samples; keep the bounds and the best ``n_doe - 2`` samples by survival on the objectives.
    ``evaluated`` holds every evaluated row (origins ``bound``/``preprocess``)."""
    fixed = bounds(space)
    n_eval = max(int(p.preprocess_factor) * p.n_doe, p.n_doe) - len(fixed)
    samples = sample_new(space, n_eval, seed, p.sampler, p.repair,
                         exclude=[space.encode(a) for a in fixed])
    archs = fixed + samples
    evaluated = records_to_archive(
        space, archs, evaluate_all(evaluate, archs), round_k=0,
        origin=["bound"] * len(fixed) + ["preprocess"] * len(samples))
    rest = evaluated.iloc[len(fixed):]
    keep = survive(objectives(rest, p.objectives), p.n_doe - len(fixed), seed=seed)
    archive = concat_archives([evaluated.iloc[: len(fixed)], rest.iloc[np.sort(keep)]])
    return archive, evaluated


INITS: dict[str, Callable[..., tuple[pd.DataFrame, pd.DataFrame]]] = {
    "nat": init_uniform, "random": init_uniform, "natv2": init_preprocess}


# --------------------------------------------------------------------------- update parts


def update_grow(both: pd.DataFrame, p: Policy, seed: int) -> pd.DataFrame:
    """NAT: the archive keeps every evaluated architecture."""
    return both


def update_bounded(both: pd.DataFrame, p: Policy, seed: int) -> pd.DataFrame:
    """NATv2: cut back to ``n_doe`` rows by survival on the objectives, every row competing (the
    thesis' ``NATNew.search``: ``archive = self.new_survival(archive, n_survive=self.n_doe)``,
    ``NAT_extended/search/algorithms/nat_new.py``): the smallest and largest architectures of the
    initial archive stay only while survival keeps them (as extremes of the first front they
    usually do). Every evaluated row stays in ``evaluated.csv`` whatever survival drops."""
    if len(both) <= p.n_doe:
        return both
    keep = survive(objectives(both, p.objectives), p.n_doe, seed=seed)
    return normalize_archive(both.iloc[np.sort(keep)])


UPDATES: dict[str, Callable[[pd.DataFrame, Policy, int], pd.DataFrame]] = {
    "grow": update_grow, "bounded": update_bounded}


# -------------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Policy:
    """One search policy: a preset's settings with overrides; field names are the ``search:``
    keys (``policy`` the preset's name), so :meth:`as_dict` is what ``stats.json`` records."""

    policy: str
    n_doe: int
    objectives: list[str]
    init: str
    update: str
    candidates: int
    predictor: str | None
    features: str
    repair: str
    sampler: str
    preprocess_factor: int
    pop_size: int
    n_gen: int
    crossover_prob: float
    mutation_eta: float
    subset_pop_size: int
    subset_n_gen: int
    decoding: str
    duplicates: str
    predictor_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def preset(cls, name: str, n_doe: int, objectives: Sequence[str], **overrides: Any) -> Policy:
        """Preset ``name`` for an archive of ``n_doe`` and ``objectives`` (``top1`` first), with
        ``overrides``; ValueError naming a bad value."""
        if name not in PRESETS:
            raise ValueError(f"search policy {name!r} not in {', '.join(PRESETS)}")
        values = {**PRESETS[name], **overrides, "policy": name, "n_doe": int(n_doe),
                  "objectives": list(objectives)}
        names = list(values["objectives"])
        if not names or names[0] != "top1":
            raise ValueError(f"objectives {names!r}: the first objective must be 'top1'")
        for part, registry in (("init", INITS), ("update", UPDATES)):
            if values[part] not in registry:
                raise ValueError(f"{part} policy {values[part]!r} not in {', '.join(registry)}")
        return cls(**values)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Policy:
        """The policy of the config's ``search:`` section: ``search.policy``'s preset, every
        non-null key of :data:`OVERRIDABLE`, objectives ``["top1", *search.objectives]``."""
        s = cfg["search"]
        overrides = {key: s[key] for key in OVERRIDABLE if s.get(key) is not None}
        return cls.preset(s["policy"], int(s["n_doe"]), ["top1", *s["objectives"]], **overrides)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def n_initial(self) -> int:
        """Architectures the initial archive evaluates (NATv2's pre-processing: factor x n_doe)."""
        return max(int(self.preprocess_factor) * self.n_doe, self.n_doe)

    def check_fits(self, space: Any, memory_bytes: int | None) -> None:
        """A one-line ``UserError`` when the initial archive cannot be drawn: more architectures
        than ``space`` holds, or (estimated) more memory than ``memory_bytes``."""
        n, factor = self.n_initial, max(int(self.preprocess_factor), 1)
        key = "search.n_doe" + (f" x preprocess_factor {factor}" if factor > 1 else "")
        if n > space.size:
            most = space.size // factor
            fix = (f"set search.n_doe to at most {most:,} or widen the space" if most >= 2 else
                   "widen the space (supernet.ks_list, expand_list, depth_list, space.resolutions)")
            raise UserError(f"{key} = {n:,} architectures for the initial archive, but the search "
                            f"space holds only {space.size:,}; {fix}")
        need = n * SAMPLE_BYTES_PER_ARCH
        if memory_bytes and need > memory_bytes:
            most = memory_bytes // (SAMPLE_BYTES_PER_ARCH * factor)
            raise UserError(f"{key} = {n:,} architectures for the initial archive: drawing them "
                            f"needs about {need / 2**30:,.1f} GiB, this machine has "
                            f"{memory_bytes / 2**30:,.1f} GiB; set search.n_doe to at most {most:,}")

    # ------------------------------------------------------------------ the parts
    def initial_archive(self, space: Any, evaluate: Evaluate, seed: int
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(archive, evaluated)`` of round 0 by the ``init`` part."""
        return INITS[self.init](space, self, evaluate, seed)

    def update_archive(self, archive_df: pd.DataFrame, new_df: pd.DataFrame, seed: int
                       ) -> pd.DataFrame:
        """Add ``new_df`` to the archive (a re-evaluated architecture replaces its old row),
        then apply the ``update`` part."""
        both = concat_archives([archive_df, new_df])
        both = both.drop_duplicates("arch", keep="last").reset_index(drop=True)
        return UPDATES[self.update](both, self, seed)

    def make_predictor(self, seed: int) -> Predictor | None:
        """A fresh accuracy predictor, or None for a policy without one (random search)."""
        if self.predictor is None:
            return None
        return make_predictor(self.predictor, seed=seed, **dict(self.predictor_kwargs))
