"""natv2.train.adapt: smoothed per-variable distributions and the adaptation's sampler wiring."""

from __future__ import annotations

import numpy as np
import pytest

from natv2.search import records_to_archive
from natv2.space import SearchSpace
from natv2.train import adapt
from natv2.train.adapt import (
    AdaptSettings,
    VariableDistributions,
    best_members,
    fit_archive_distributions,
)
from natv2.train.eps import TrainSettings

SPACE = SearchSpace("SE_B", resolutions=[16, 20, 24], widths=[1.0])


def test_laplace_smoothed_categorical():
    X = np.array([SPACE.to_vector(a) for a in SPACE.sample(20, seed=0, method="balanced")])
    dist = VariableDistributions.fit(SPACE, X)
    assert dist.n_fitted == 20 and len(dist.probs) == SPACE.n_var
    for j, p in enumerate(dist.probs):
        n_values = int(SPACE.xu[j] - SPACE.xl[j] + 1)
        assert len(p) == n_values and p.sum() == pytest.approx(1.0)
        counts = np.bincount(X[:, j] - SPACE.xl[j], minlength=n_values)
        assert np.allclose(p, (counts + 1) / (20 + n_values))  # add-one smoothing
        assert (p > 0).all()  # every value stays reachable


def test_samples_follow_the_fit_and_are_valid():
    # every archive member at resolution index 2 and code 9 in stage 1 slot 1
    X = np.array([SPACE.to_vector(a) for a in SPACE.sample(200, seed=1)])
    X[:, 0] = 2
    X[:, 2] = 9
    dist = VariableDistributions.fit(SPACE, X)
    rng = np.random.default_rng(0)
    S = dist.sample_vectors(2000, rng, SPACE, repair="fill")
    assert SPACE.is_valid(S).all()
    assert (S[:, 0] == 2).mean() > 0.95 and (S[:, 2] == 9).mean() > 0.9
    arch = dist.sample(rng, SPACE, "push", resolution=16)
    assert arch.resolution == 16
    assert {dist.sample_resolution(rng, SPACE) for _ in range(50)} <= {16, 20, 24}


def _archive(n=12, seed=0):
    archs = SPACE.sample(n, seed=seed)
    rng = np.random.default_rng(seed)
    records = [{"top1": float(rng.uniform(50, 90)), "params": int(rng.integers(1e5, 1e6)),
                "macs": 1} for _ in archs]
    return records_to_archive(SPACE, archs, records, round_k=0, origin="init")


def test_best_members_by_survival():
    df = _archive()
    best = best_members(df, ["top1", "params"], 5)
    assert len(best) == 5
    # the most accurate and the smallest are on the first front: always kept
    assert df.loc[df["top1"].idxmax(), "arch"] in set(best["arch"])
    assert df.loc[df["params"].idxmin(), "arch"] in set(best["arch"])
    dist = fit_archive_distributions(SPACE, df, ["top1", "params"], 5)
    assert dist.n_fitted == 5


def test_adapt_supernet_passes_archive_samplers(monkeypatch):
    seen = {}

    def fake_train_phase(net, space, loader, phase, settings, train, teacher, device, seed,
                         show_progress=True, sampler=None, resolution_sampler=None, world=None):
        rng = np.random.default_rng(0)
        seen["res"] = resolution_sampler(rng)
        seen["arch"] = sampler(rng, seen["res"])
        seen["settings"], seen["train"], seen["teacher"] = settings, train, teacher
        return {"name": phase, "epochs": settings.epochs, "loss": 1.0, "train_top1": 0.0}

    class Net:
        def to(self, device):
            return self

        def eval(self):
            return self

    monkeypatch.setattr(adapt, "train_phase", fake_train_phase)
    df = _archive()
    out = adapt.adapt_supernet(
        Net(), SPACE, df, ["top1", "params"], loader=lambda seed: [],
        adaptation=AdaptSettings(epochs=2, lr=0.01, top_n=4, subnets_per_step=3, kd_ratio=0.0),
        train=TrainSettings.from_config({}), device="cpu", seed=5, repair="fill",
        show_progress=False)
    assert out["top_n"] == 4 and out["epochs"] == 2
    assert seen["arch"].resolution == seen["res"] in SPACE.resolutions
    assert seen["settings"].subnets_per_step == 3 and seen["settings"].lr == 0.01
    assert seen["teacher"] is None and seen["train"].kd_ratio == 0.0
    skipped = adapt.adapt_supernet(
        Net(), SPACE, df, ["top1", "params"], loader=None,
        adaptation=AdaptSettings(epochs=0, lr=0.01, top_n=4, subnets_per_step=3, kd_ratio=1.0),
        train=TrainSettings.from_config({}), device="cpu", seed=0, repair="fill")
    assert skipped["epochs"] == 0
