"""Deployment targets (``targets:`` in the config): budgets a fine-tuned network must meet.

A target is one upper bound on one cost metric, ``{params: 1e6}``, ``{macs: 5e7}`` or
``{latency_ms: 2.0}`` (latency as the ``latency:`` section measures it), with an optional
``name``. This module is the one home of what a target means:

* :data:`METRICS`: the metrics a target can bound and the archive column holding each;
* :func:`targets_from_config`: the configured targets, checked (one metric each, positive);
* :meth:`Target.meets` / :meth:`Target.violation`: ``value <= limit``, and by how much not
  (``value / limit - 1``: <= 0 when met);
* :func:`constraint_fn`: the search's constraint (pymoo's ``G <= 0`` is feasible): an
  architecture is feasible when it meets *at least one* target (each target has its own slot,
  so the search looks for architectures good for some target, not for all at once). Only where
  every target's metric is one of the evolution's cheap objectives: otherwise an architecture
  outside every budget the search can see may still meet a target it cannot (a latency target
  searched on parameters), and the search runs unconstrained.

Which architecture each target's fine-tune slot gets is :func:`natv2.selection.choose_for_target`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from natv2.errors import UserError

#: target metric -> archive column (``natv2.search.archive``) and fine-tune metric of the same name
METRICS = {"params": "params", "macs": "macs", "latency_ms": "latency_ms"}
#: target metric -> the name of the same quantity among ``search.objectives``
OBJECTIVE_OF = {"params": "params", "macs": "macs", "latency_ms": "latency"}
_UNITS = {"params": "", "macs": "", "latency_ms": " ms"}


def _short(value: float) -> str:
    """1000000 -> '1M', 50000000 -> '50M', 2.5 -> '2.5'."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


@dataclass(frozen=True)
class Target:
    """``metric <= limit`` (``metric`` one of :data:`METRICS`), called ``name``."""

    metric: str
    limit: float
    name: str

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise UserError(f"target metric {self.metric!r} is unknown; valid: {', '.join(METRICS)}")
        if not (isinstance(self.limit, int | float) and math.isfinite(self.limit) and self.limit > 0):
            raise UserError(f"target {self.metric}: {self.limit!r} must be a positive number")

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], index: int = 0) -> Target:
        """A config entry ``{metric: limit}`` with an optional ``name``."""
        where = f"config key 'targets.{index}'"
        if not isinstance(entry, Mapping):
            raise UserError(f"{where}: {entry!r} must be a mapping like {{params: 1000000}}")
        metrics = [k for k in entry if k != "name"]
        unknown = [k for k in metrics if k not in METRICS]
        if unknown:
            raise UserError(f"{where}: unknown metric {unknown[0]!r}; valid: {', '.join(METRICS)}")
        if len(metrics) != 1:
            raise UserError(f"{where}: {dict(entry)!r} must name exactly one of {', '.join(METRICS)}")
        metric = metrics[0]
        limit = entry[metric]
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit) \
                or limit <= 0:
            raise UserError(f"{where}: {metric}: {limit!r} must be a positive number")
        name = entry.get("name") or f"{metric} <= {_short(float(limit))}{_UNITS[metric]}"
        return cls(metric, float(limit), str(name))

    @property
    def column(self) -> str:
        """The archive column of the metric."""
        return METRICS[self.metric]

    def meets(self, value: float | None) -> bool:
        return value is not None and math.isfinite(float(value)) and float(value) <= self.limit

    def violation(self, value: float) -> float:
        """``value / limit - 1``: <= 0 when the target is met."""
        return float(value) / self.limit - 1.0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "metric": self.metric, "limit": self.limit}

    def describe(self) -> str:
        """``name (metric <= limit)``, the limit as :func:`format_value` writes it."""
        return f"{self.name} ({self.metric} <= {format_value(self.metric, self.limit)})"


def format_value(metric: str, value: float | None) -> str:
    """A value of a target metric as people read it: ``52,058`` params, ``0.318 ms``."""
    if value is None:
        return "not measured"
    if metric == "latency_ms":
        return f"{float(value):.3g} ms"
    return f"{float(value):,.0f}"


def parse_targets(entries: Sequence[Mapping[str, Any]]) -> tuple[Target, ...]:
    """The targets of a ``targets:`` list; names must be distinct."""
    targets = tuple(Target.from_entry(e, i) for i, e in enumerate(entries or ()))
    names = [t.name for t in targets]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise UserError(f"config key 'targets.{i}': name {name!r} is used twice; give each "
                            "target its own name")
    return targets


def targets_from_config(cfg: Mapping[str, Any]) -> tuple[Target, ...]:
    """``cfg["targets"]`` parsed (an empty tuple when there are none)."""
    return parse_targets(cfg.get("targets") or ())


def needs_latency(targets: Sequence[Target]) -> bool:
    """Whether a target bounds latency (so every evaluated architecture's latency is measured)."""
    return any(t.metric == "latency_ms" for t in targets)


def constraint_fn(targets: Sequence[Target], cheap_names: Sequence[str]
                  ) -> Callable[[np.ndarray], np.ndarray] | None:
    """``G(C) -> (n, 1)`` for the cheap-objective matrix ``C`` (columns ``cheap_names``, the
    evolution's order): the smallest violation over the targets (<= 0: meets one). ``None``
    without targets or when a target's metric is not among ``cheap_names`` (see the module
    docstring)."""
    names = list(cheap_names)
    columns = []
    for t in targets:
        objective = OBJECTIVE_OF[t.metric]
        if objective not in names:
            return None
        columns.append((names.index(objective), t.limit))
    if not columns:
        return None

    def G(C: np.ndarray) -> np.ndarray:
        C = np.atleast_2d(np.asarray(C, dtype=float))
        v = np.column_stack([C[:, j] / limit - 1.0 for j, limit in columns])
        return v.min(axis=1, keepdims=True)

    return G


def param_limits(cfg: Mapping[str, Any]) -> list[int]:
    """The parameter limits of the configured targets, ascending (the benchmarks' budgets)."""
    return sorted(int(t.limit) for t in targets_from_config(cfg) if t.metric == "params")
