"""Hypervolume: one reference-point rule for the stages, the report and the benchmarks.

**The rule.** Objectives are minimised (``top1`` enters as the error ``100 - top1``). A
:class:`Reference` is built once from a *reference set* of objective vectors: ``ideal`` = the
per-objective minimum, ``nadir`` = the maximum, and the reference point ``ideal + 1.01 * (nadir -
ideal)``, i.e. 1.01 in normalised units (an objective that does not vary gets a span of 1). Each
objective is normalised with ``(f - ideal) / (nadir - ideal)`` and pymoo's ``HV`` is taken
against the normalised reference point; points that do not dominate it add nothing.

The search stage uses round 0's archive as the reference set and stores the reference in round
0's ``stats.json``, so every round of a run is measured against the same box; the benchmarks that
compare runs build one reference from all compared runs' round-0 evaluations. (The margin of 1.01
keeps the extreme points of the reference set in the volume with a thin slab.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pymoo.indicators.hv import HV

from natv2.search.archive import objectives

#: the reference point, in units of the reference set's (nadir - ideal) beyond its ideal
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
        span = np.where(nadir > ideal, nadir - ideal, 1.0)
        return cls(tuple(ideal.tolist()), tuple(nadir.tolist()),
                   tuple((ideal + MARGIN * span).tolist()))

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
        """Hypervolume of minimised objectives ``F`` after normalisation."""
        F = np.atleast_2d(np.asarray(F, dtype=float))
        if F.size == 0:
            return 0.0
        ideal, nadir = np.asarray(self.ideal), np.asarray(self.nadir)
        span = np.where(nadir > ideal, nadir - ideal, 1.0)
        ref = (np.asarray(self.reference_point) - ideal) / span
        return float(HV(ref_point=ref)((F - ideal) / span))


def archive_hypervolume(df: pd.DataFrame, names: Sequence[str], reference: Reference) -> float:
    """Hypervolume of an archive's ``names`` objectives."""
    return reference.hypervolume(objectives(df, list(names)))


def hypervolume_stats(df: pd.DataFrame, names: Sequence[str], reference: Reference
                      ) -> dict[str, Any]:
    """The hypervolume fields of a round's ``stats.json``."""
    return {
        "hypervolume": archive_hypervolume(df, names, reference),
        **reference.as_dict(),
        "objectives": list(names),
        "archive_size": int(len(df)),
    }
