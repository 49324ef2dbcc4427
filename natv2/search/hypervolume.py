"""Hypervolume: one reference-point rule for the stages, the report and the benchmarks.

**The rule (the thesis').** Objectives are minimised (``top1`` enters as the error ``100 -
top1``) and stay in their raw units. A :class:`Reference` is built once from a *reference set*
of objective vectors: ``ideal`` = the per-objective minimum, ``nadir`` = the maximum, and the
reference point ``1.01 * nadir``. :meth:`Reference.hypervolume` is pymoo's ``HV`` of the
non-dominated points against that reference point, divided by ``|prod(reference_point)|``: the
fraction of the box between the origin and the reference point that the front dominates. This
is ``calc_hv(ref_pt, F, normalized=True)`` of the thesis (``NAT_extended/search/algorithms/
utils.py``), with ``ref_pt`` the per-objective maximum of the initial archive
(``msunas.py`` / ``nat.py`` / ``nat_new.py`` ``search``: ``self.ref_pt = np.max(...)`` after the
initialisation). Because every axis is divided by its reference value the number does not depend
on the objectives' units (a percent or a fraction, parameters or millions of them).

**A second indicator, named apart.** :meth:`Reference.hypervolume_normalised` rescales each
objective to ``(f - ideal) / (nadir - ideal)`` and takes ``HV`` against ``1.01`` in those units
(an objective that does not vary gets a span of 1). It reads the same on every objective scale
and, unlike the thesis' box from the origin, gives the region the reference set spans its whole
weight; stats files store it as ``hypervolume_normalised``.

The search stage uses round 0's archive as the reference set and stores the reference in round
0's ``stats.json``, so every round of a run is measured against the same box; the benchmarks that
compare runs build one reference from all compared runs' round-0 evaluations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from natv2.search.archive import objectives

#: the reference point's margin: ``MARGIN * nadir`` (the thesis), and ``MARGIN`` in the
#: normalised indicator's (nadir - ideal) units
MARGIN = 1.01


@dataclass(frozen=True)
class Reference:
    """``ideal``, ``nadir`` and ``reference_point``, raw units, one value per objective."""

    ideal: tuple[float, ...]
    nadir: tuple[float, ...]
    reference_point: tuple[float, ...]

    @classmethod
    def of(cls, F: np.ndarray) -> Reference:
        """The rule above applied to the objective vectors ``F`` (n, n_obj)."""
        F = np.atleast_2d(np.asarray(F, dtype=float))
        ideal, nadir = F.min(axis=0), F.max(axis=0)
        return cls(tuple(ideal.tolist()), tuple(nadir.tolist()), tuple((MARGIN * nadir).tolist()))

    @classmethod
    def of_archive(cls, df: pd.DataFrame, names: Sequence[str]) -> Reference:
        return cls.of(objectives(df, list(names)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reference:
        return cls(*(tuple(float(v) for v in d[key])
                     for key in ("ideal", "nadir", "reference_point")))

    def as_dict(self) -> dict[str, list[float]]:
        return {"ideal": list(self.ideal), "nadir": list(self.nadir),
                "reference_point": list(self.reference_point)}

    def hypervolume(self, F: np.ndarray) -> float:
        """The thesis' ``calc_hv``: ``HV`` of the non-dominated ``F`` (raw, minimised) against
        ``reference_point``, over ``|prod(reference_point)|``; NaN when that product is 0."""
        F = np.atleast_2d(np.asarray(F, dtype=float))
        ref = np.asarray(self.reference_point)
        volume = abs(float(np.prod(ref)))
        if volume == 0.0:
            return float("nan")
        if F.size == 0:
            return 0.0
        front = NonDominatedSorting().do(F, only_non_dominated_front=True)
        return float(HV(ref_point=ref)(F[front])) / volume

    def hypervolume_normalised(self, F: np.ndarray) -> float:
        """``HV`` after ``(f - ideal) / (nadir - ideal)``, against ``MARGIN`` in those units."""
        F = np.atleast_2d(np.asarray(F, dtype=float))
        if F.size == 0:
            return 0.0
        ideal, nadir = np.asarray(self.ideal), np.asarray(self.nadir)
        span = np.where(nadir > ideal, nadir - ideal, 1.0)
        return float(HV(ref_point=np.full(len(ideal), MARGIN))((F - ideal) / span))


def archive_hypervolume(df: pd.DataFrame, names: Sequence[str], reference: Reference) -> float:
    """Hypervolume of an archive's ``names`` objectives."""
    return reference.hypervolume(objectives(df, list(names)))


def hypervolume_stats(df: pd.DataFrame, names: Sequence[str], reference: Reference
                      ) -> dict[str, Any]:
    """The hypervolume fields of a round's ``stats.json``."""
    F = objectives(df, list(names))
    return {
        "hypervolume": reference.hypervolume(F),
        "hypervolume_normalised": reference.hypervolume_normalised(F),
        **reference.as_dict(),
        "objectives": list(names),
        "archive_size": int(len(df)),
    }
