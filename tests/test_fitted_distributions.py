"""The thesis' adaptation distributions (``search.adaptation.distribution: scipy_first_fit |
scipy_best_fit``): scipy fits per variable as ``distribution_estimation`` in
``NAT_extended/search/algorithms/utils.py``, sampling as ``sample_from_distribution``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats as st

from natv2.space import SearchSpace
from natv2.train.fitted_distributions import (
    EXCLUDED,
    FittedDistributions,
    candidate_names,
    fit_variable,
)

VALUES = np.array([1, 2, 2, 3, 3, 3, 4, 4, 5, 7, 7, 8, 9, 9, 9, 9])


def sse(name: str, values: np.ndarray) -> float:
    """The thesis' score of one distribution, computed here step by step."""
    y, edges = np.histogram(values.astype(float), bins="auto", density=True)
    centres = (edges[:-1] + edges[1:]) / 2
    dist = getattr(st, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = dist.fit(values.astype(float))
        pdf = dist.pdf(centres, *params[:-2], loc=params[-2], scale=params[-1])
    return float(((y - pdf) ** 2).sum())


def test_candidates_are_scipys_list_without_the_thesis_exclusions():
    names = candidate_names()
    assert "norm" in names and not set(EXCLUDED) & set(names)
    assert names[:4] == ["ksone", "kstwo", "kstwobign", "norm"]  # scipy's definition order


def test_first_fit_is_the_first_family_that_fits_and_best_fit_beats_the_normal():
    first, params = fit_variable(VALUES, "scipy_first_fit")
    names = candidate_names()
    for earlier in names[: names.index(first)]:  # every family before it fails to fit
        with pytest.raises(Exception):  # noqa: B017, PT011 - any failure skips a family
            sse(earlier, VALUES)
    sse(first, VALUES)  # fits
    best, _ = fit_variable(VALUES, "scipy_best_fit")
    assert sse(best, VALUES) <= sse("norm", VALUES) + 1e-12
    assert sse(best, VALUES) <= sse(first, VALUES) + 1e-12
    with pytest.raises(ValueError, match="unknown distribution kind"):
        fit_variable(VALUES, "gaussian")


def space() -> SearchSpace:
    return SearchSpace("EE_B", resolutions=[16, 20, 24], widths=[1.0])


def members(sp: SearchSpace, n: int, seed: int) -> np.ndarray:
    """Top members whose 20 block columns are one column repeated: four distinct fits (r, w, the
    blocks, nd) instead of 23, since fitting every scipy family takes seconds a column."""
    X = sp.sample_vectors(n, seed=seed)
    X[:, 2:22] = X[:, [2]]
    return X


@pytest.mark.parametrize("kind", ["scipy_first_fit", "scipy_best_fit"])
def test_samples_are_rounded_clipped_repaired_and_reproducible(kind):
    sp = space()
    dists = FittedDistributions.fit(sp, members(sp, 12, seed=3), kind)
    assert dists.n_fitted == 12 and len(dists.fits) == sp.n_var
    a = dists.sample_vectors(50, np.random.default_rng(7), sp, "fill")
    b = dists.sample_vectors(50, np.random.default_rng(7), sp, "fill")
    np.testing.assert_array_equal(a, b)
    assert (a >= sp.xl).all() and (a <= sp.xu).all() and sp.is_valid(a).all()
    arch = dists.sample(np.random.default_rng(1), sp, "fill", resolution=20)
    assert arch.resolution == 20
    assert dists.sample_resolution(np.random.default_rng(1), sp) in (16, 20, 24)
    assert [d["distribution"] for d in dists.describe()] == [name for name, _ in dists.fits]


def test_a_constant_variable_still_samples_within_bounds():
    """Every top member agrees (common in a converged archive): whatever fits, draws stay valid."""
    sp = space()
    top = members(sp, 10, seed=0)
    top[:, 0] = 2
    for kind in ("scipy_first_fit", "scipy_best_fit"):
        draws = FittedDistributions.fit(sp, top, kind).sample_vectors(40, np.random.default_rng(0), sp)
        assert set(draws[:, 0]) <= {0, 1, 2}


def test_the_option_is_wired_into_the_adaptation_settings():
    from natv2.config import validate
    from natv2.errors import UserError
    from natv2.train.adapt import AdaptSettings

    assert AdaptSettings.from_config(validate({})).distribution == "scipy_first_fit"
    cfg = validate({"search": {"adaptation": {"distribution": "categorical"}}})
    assert AdaptSettings.from_config(cfg).distribution == "categorical"
    with pytest.raises(UserError, match="distribution"):
        validate({"search": {"adaptation": {"distribution": "gaussian"}}})
