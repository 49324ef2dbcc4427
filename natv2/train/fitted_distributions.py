"""The thesis' adaptation distributions: a scipy continuous distribution fitted per variable.

``NAT._model_distribution`` (``NAT_extended/search/algorithms/nat.py``) calls
``distribution_estimation`` (``NAT_extended/search/algorithms/utils.py``) on each integer
variable of the best ``top_n`` archive members: a density histogram (``bins='auto'``), then
every distribution of ``scipy.stats._continuous_distns._distn_names`` but ``levy_stable`` and
``studentized_range`` fitted to the values (``distribution.fit``, failures skipped), each scored
by the summed squared error of its pdf at the bin centres, the least kept. Sampling
(``sample_from_distribution`` in ``ea_ofa_search_spaces.py``) draws one value per variable with
``rvs``, rounds it and clips it to the variable's bounds (an ``OverflowError`` draws uniformly
instead), then the space repairs the vector.

As committed, ``distribution_estimation`` reassigns its ``err_metric`` argument (``"sse"``) to
the first fit's error, so from the second fit on the metric test raises
``NotImplementedError`` inside the ``try`` and every later distribution is skipped: the kept
distribution is the **first** of scipy's list that fits. ``kind="scipy_first_fit"`` reproduces
that, ``kind="scipy_best_fit"`` what the function means to do (least error over all).

Departures: ``scipy_best_fit`` skips a fit whose error is not finite (sorting NaN errors is
undefined) and falls back to a uniform density over the values' range when nothing fits (the
thesis would fail); a draw that is not finite is replaced like the thesis' overflow (uniform
over the bounds); draws use the round's numpy generator (the thesis: scipy's global state).
Fits are cached by the multiset of values within one call, which changes nothing: a fit
depends only on its data.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats as st
from scipy.stats._continuous_distns import _distn_names

from natv2.space import Arch, SearchSpace

#: what the thesis leaves out of scipy's list
EXCLUDED = ("levy_stable", "studentized_range")
KINDS = ("scipy_first_fit", "scipy_best_fit")


def candidate_names() -> list[str]:
    return [d for d in _distn_names if d not in EXCLUDED]


def fit_variable(values: np.ndarray, kind: str) -> tuple[str, tuple[float, ...]]:
    """``(scipy distribution name, fitted parameters)`` for one variable's values."""
    if kind not in KINDS:
        raise ValueError(f"unknown distribution kind {kind!r}; valid: {', '.join(KINDS)}")
    data = np.asarray(values, dtype=float)
    y, edges = np.histogram(data, bins="auto", density=True)
    x = (edges + np.roll(edges, -1))[:-1] / 2.0
    best: tuple[float, str, tuple[float, ...]] | None = None
    for name in candidate_names():
        dist = getattr(st, name)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                params = tuple(float(p) for p in dist.fit(data))
                pdf = dist.pdf(x, *params[:-2], loc=params[-2], scale=params[-1])
                err = float(np.sum(np.power(y - pdf, 2.0)))
        except Exception:  # noqa: BLE001 - the thesis skips every failing fit
            continue
        if kind == "scipy_first_fit":  # kept whatever its error, as the thesis keeps it
            return name, params
        if np.isfinite(err) and (best is None or err < best[0]):
            best = (err, name, params)
    if best is None:  # the thesis would fail here (an empty list's first element)
        return "uniform", (float(data.min()) - 0.5, float(data.max() - data.min()) + 1.0)
    return best[1], best[2]


class ArchSampler:
    """``sample``: one architecture from ``sample_vectors`` (the distributions' own)."""

    def sample_vectors(self, n: int, rng: np.random.Generator, space: SearchSpace,
                       repair: str = "fill") -> np.ndarray:
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, space: SearchSpace, repair: str = "fill",
               resolution: int | None = None) -> Arch:
        """One architecture; ``resolution`` (one of the space's) overrides the sampled ``r``."""
        vec = self.sample_vectors(1, rng, space, repair)[0]
        if resolution is not None:
            vec[0] = space.resolutions.index(int(resolution))
        return space.from_vector(vec)


@dataclass(frozen=True)
class FittedDistributions(ArchSampler):
    """One fitted scipy distribution per integer variable; the interface of
    :class:`natv2.train.adapt.VariableDistributions`."""

    xl: np.ndarray
    xu: np.ndarray
    fits: tuple[tuple[str, tuple[float, ...]], ...]
    n_fitted: int

    @classmethod
    def fit(cls, space: SearchSpace, vectors: np.ndarray, kind: str) -> FittedDistributions:
        X = np.atleast_2d(np.asarray(vectors, dtype=np.int64))
        if X.shape[1] != len(space.xl):
            raise ValueError(f"vectors have {X.shape[1]} variables, the space {len(space.xl)}")
        cache: dict[tuple[int, ...], tuple[str, tuple[float, ...]]] = {}
        fits = []
        for j in range(X.shape[1]):
            key = tuple(sorted(X[:, j].tolist()))
            if key not in cache:
                cache[key] = fit_variable(X[:, j], kind)
            fits.append(cache[key])
        return cls(xl=space.xl, xu=space.xu, fits=tuple(fits), n_fitted=len(X))

    def _draw(self, j: int, n: int, rng: np.random.Generator) -> np.ndarray:
        name, params = self.fits[j]
        lo, hi = int(self.xl[j]), int(self.xu[j])
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                raw = np.asarray(getattr(st, name).rvs(*params[:-2], loc=params[-2],
                                                       scale=params[-1], size=n,
                                                       random_state=rng), dtype=float)
        except OverflowError:
            raw = np.full(n, np.nan)
        out = np.empty(n, dtype=np.int64)
        finite = np.isfinite(raw)
        out[finite] = np.clip(np.round(raw[finite]), lo, hi).astype(np.int64)
        out[~finite] = rng.integers(lo, hi + 1, size=int((~finite).sum()))
        return out

    def sample_vectors(self, n: int, rng: np.random.Generator, space: SearchSpace,
                       repair: str = "fill") -> np.ndarray:
        X = np.empty((int(n), len(self.xl)), dtype=np.int64)
        for j in range(len(self.xl)):
            X[:, j] = self._draw(j, int(n), rng)
        return space.repair(X, method=repair)

    def sample_resolution(self, rng: np.random.Generator, space: SearchSpace) -> int:
        return int(space.resolutions[int(self._draw(0, 1, rng)[0])])

    def describe(self) -> list[dict[str, Any]]:
        """JSON-able ``[{"distribution", "params"}]`` per variable (for the round's stats)."""
        return [{"distribution": name, "params": [round(p, 6) for p in params]}
                for name, params in self.fits]
