"""natv2.train.adapt: smoothed per-variable distributions and the adaptation's sampler wiring."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from natv2.errors import UserError
from natv2.search import records_to_archive
from natv2.space import SearchSpace
from natv2.train import adapt
from natv2.train.adapt import (
    AdaptSettings,
    VariableDistributions,
    best_members,
    dropout_rate,
    fit_archive_distributions,
)
from natv2.train.eps import StepRule, _clipped_backward
from natv2.train.optim import OptimizerCarry
from natv2.train.phases import continuous_resolutions
from natv2.train.schedule import timm_cosine_epoch_lr

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
    dist = fit_archive_distributions(SPACE, df, ["top1", "params"], 5, 0, "categorical")
    assert dist.n_fitted == 5


def _settings(**over) -> AdaptSettings:
    return dataclasses.replace(AdaptSettings.from_config({}), **over)


def test_defaults_are_the_thesis_adaptation():
    """run_nat_new.py assign_adaptation_arguments and SuperNetTrainer's defaults."""
    a = AdaptSettings.from_config({})
    assert (a.epochs, a.lr, a.lr_min, a.warmup_epochs, a.warmup_lr) == (5, 2.5e-3, 0.0, 5, 1e-4)
    assert (a.momentum, a.nesterov, a.weight_decay, a.decay_all, a.grad_clip) == (0.9, False, 3e-4, True, 5.0)
    assert (a.label_smoothing, a.dropout, a.subnets_per_step, a.kd_ratio, a.top_n) == (0.0, 0.0, 4, 1.0, 150)
    assert a.ensemble_weights == (0.34, 0.27, 0.20, 0.13, 0.06)
    assert (a.teacher, a.resolution, a.schedule) == ("fixed", "continuous", "across_rounds")
    assert a.rule == StepRule(nesterov=False, decay_all=True, grad_clip=5.0, kd_mean=True)


def test_schedule_is_timm_cosine_per_epoch_over_all_rounds():
    # the thesis: 30 rounds x 5 epochs, warm-up 5 epochs from 1e-4 to 2.5e-3, cosine from epoch 0
    a = AdaptSettings.from_config({})
    assert a.lr_at(0, 150) == pytest.approx(1e-4)
    assert a.lr_at(2, 150) == pytest.approx(1e-4 + 2 * 2.4e-3 / 5)
    assert a.lr_at(5, 150) == pytest.approx(0.5 * 2.5e-3 * (1 + math.cos(math.pi * 5 / 150)))
    assert a.lr_at(75, 150) == pytest.approx(1.25e-3)
    assert a.lr_at(149, 150) == pytest.approx(0.5 * 2.5e-3 * (1 + math.cos(math.pi * 149 / 150)))
    assert a.lr_at(150, 150) == 0.0
    assert timm_cosine_epoch_lr(1, 0.01, 3) == pytest.approx(0.0075)  # no warm-up


def test_continuous_resolutions_are_multiples_of_four_between_the_ends():
    assert continuous_resolutions([16, 20, 24]) == (16, 20, 24)
    assert continuous_resolutions([224, 128, 192]) == tuple(range(128, 225, 4))
    assert continuous_resolutions([10, 18]) == (10, 12, 16, 18)
    assert continuous_resolutions([32]) == (32,)


def test_dropout_rate_is_set_inside_and_restored_after():
    net = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(2, 2), torch.nn.Dropout(0.3))
    with dropout_rate(net, 0.0):
        assert [net[0].p, net[2].p] == [0.0, 0.0]
    assert [net[0].p, net[2].p] == [0.1, 0.3]


def test_clipped_backward_clips_after_each_sub_network():
    """The thesis: backward, clip_grad_norm_, next sub-network's backward adds, clip again."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    x1, x2 = torch.randn(5) * 10, torch.randn(5) * 10
    _clipped_backward((w * x1).sum(), [w], 1.0)
    _clipped_backward((w * x2).sum() ** 2, [w], 1.0)
    ref = torch.nn.Parameter(w.detach().clone())
    (ref * x1).sum().backward()
    torch.nn.utils.clip_grad_norm_([ref], 1.0)
    ((ref * x2).sum() ** 2).backward()
    torch.nn.utils.clip_grad_norm_([ref], 1.0)
    assert torch.allclose(w.grad, ref.grad) and float(w.grad.norm()) == pytest.approx(1.0)


def test_adapt_supernet_wires_the_thesis_training(monkeypatch):
    seen = {}

    def fake_train_phase(net, space, loader, phase, settings, train, teacher, device, seed,
                         show_progress=True, sampler=None, resolution_sampler=None, world=None,
                         rule=None, lr_at=None, carry=None):
        rng = np.random.default_rng(0)
        seen["res"] = {resolution_sampler(rng) for _ in range(200)}
        seen["arch"] = sampler(rng, 20)
        seen["lr"] = [lr_at(e, 0) for e in range(settings.epochs)]
        seen["settings"], seen["train"], seen["teacher"], seen["rule"] = settings, train, teacher, rule
        seen["dropout"] = net.drop.p
        return {"name": phase, "epochs": settings.epochs, "loss": 1.0, "train_top1": 0.0}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(0.1)

    monkeypatch.setattr(adapt, "train_phase", fake_train_phase)
    df = _archive()
    teacher = torch.nn.Linear(1, 1)
    net = Net()
    out = adapt.adapt_supernet(
        net, SPACE, df, ["top1", "params"], loader=lambda seed: [],
        adaptation=_settings(epochs=2, top_n=4, subnets_per_step=3), device="cpu", seed=5,
        repair="fill", first_epoch=2, total_epochs=6, teacher=teacher, show_progress=False)
    a = _settings(epochs=2)
    assert out["top_n"] == 4 and out["epochs"] == 2
    assert out["epoch_lr"] == seen["lr"] == [a.lr_at(2, 6), a.lr_at(3, 6)]  # epochs 2, 3 of 6
    assert seen["res"] == {16, 20, 24} and seen["arch"].resolution == 20
    assert seen["settings"].subnets_per_step == 3
    t = seen["train"]
    assert (t.kd_ratio, t.label_smoothing, t.momentum, t.weight_decay) == (1.0, 0.0, 0.9, 3e-4)
    assert t.ensemble_weights == (0.34, 0.27, 0.20, 0.13, 0.06)
    assert seen["teacher"] is teacher and seen["rule"] == a.rule
    assert seen["dropout"] == 0.0 and net.drop.p == 0.1  # off while adapting, restored after
    # the resolution fitted to the archive instead (natv2's former rule)
    adapt.adapt_supernet(
        Net(), SPACE, df, ["top1", "params"], loader=lambda seed: [],
        adaptation=_settings(epochs=1, top_n=4, kd_ratio=0.0, resolution="fitted"), device="cpu",
        seed=5, repair="fill", show_progress=False)
    assert seen["res"] <= set(SPACE.resolutions) and seen["teacher"] is None
    # natv2's former schedule: train_phase's own cosine per step over the round
    calls = {}

    def recording(*args, lr_at=None, **kwargs):
        calls["lr_at"] = lr_at
        return {"name": "adapt", "epochs": 1}

    monkeypatch.setattr(adapt, "train_phase", recording)
    out = adapt.adapt_supernet(
        Net(), SPACE, df, ["top1", "params"], loader=lambda seed: [],
        adaptation=_settings(epochs=1, top_n=4, kd_ratio=0.0, schedule="per_round"), device="cpu", seed=5,
        repair="fill", show_progress=False)
    assert calls["lr_at"] is None and out["epoch_lr"] is None
    skipped = adapt.adapt_supernet(
        Net(), SPACE, df, ["top1", "params"], loader=None,
        adaptation=_settings(epochs=0, top_n=4), device="cpu", seed=0, repair="fill")
    assert skipped["epochs"] == 0


# ------------------------------------------------------------- the optimiser across rounds


def _sgd_steps(w: torch.nn.Parameter, xs, carry: OptimizerCarry | None) -> None:
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=3e-4)
    if carry is not None:
        carry.restore(opt)
    for x in xs:
        opt.zero_grad()
        ((w * x).sum() ** 2).backward()
        opt.step()
    if carry is not None:
        carry.keep(opt)


def test_optimizer_carry_makes_two_calls_one_optimiser():
    """The thesis' one SuperNetTrainer optimiser through every round: round 2 goes on with
    round 1's momentum; a fresh optimiser (``schedule: per_round``) does not."""
    torch.manual_seed(0)
    xs = [torch.randn(4) for _ in range(6)]
    start = torch.randn(4)
    one = torch.nn.Parameter(start.clone())
    _sgd_steps(one, xs, OptimizerCarry())
    carried, fresh = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    carry = OptimizerCarry()
    _sgd_steps(carried, xs[:3], carry)
    assert set(carry.state) == {0} and carry.state[0]["momentum_buffer"].device.type == "cpu"
    _sgd_steps(carried, xs[3:], carry)
    _sgd_steps(fresh, xs[:3], None)
    _sgd_steps(fresh, xs[3:], None)
    assert torch.equal(carried.detach(), one.detach())
    assert not torch.allclose(fresh.detach(), one.detach())


def test_optimizer_carry_refuses_a_state_of_another_network():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1, momentum=0.9)
    for state in ({0: {"momentum_buffer": torch.zeros(4)}}, {1: {"momentum_buffer": torch.zeros(3)}}):
        with pytest.raises(UserError, match=r"optimiser state of round_01/supernet.pt does not fit"):
            OptimizerCarry(state, source="round_01/supernet.pt").restore(opt)
    OptimizerCarry(None).restore(opt)  # nothing carried: a fresh optimiser
    assert opt.state_dict()["state"] == {}


def test_train_phase_starts_from_the_carried_momentum():
    """At learning rate 0 nothing moves but the momentum: ``buf = 0.9 buf + g`` each step, so a
    run that starts from a carried buffer ``b`` ends ``0.9^n b`` away from a fresh one (the stem
    convolution, which every step's sub-network uses)."""
    from natv2.supernet import build_supernet
    from natv2.train.eps import PhaseSettings, TrainSettings, train_phase

    space = SearchSpace("SE_B", resolutions=[16], widths=[1.0])
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(8, 3, 16, 16, generator=g), torch.arange(8) % 10)
    train = dataclasses.replace(TrainSettings.from_config({}), phases={}, kd_ratio=0.0)

    def run(carry):
        torch.manual_seed(0)
        net = build_supernet("SE_B", n_classes=10, dropout=0.0)
        train_phase(net, space, lambda seed: [batch] * 3, "kernel", PhaseSettings(1, 0.1, 0, 1),
                    train, None, torch.device("cpu"), seed=1, show_progress=False,
                    lr_at=lambda epoch, step: 0.0, carry=carry)
        return net, carry

    net, fresh = run(OptimizerCarry())
    stem = next(i for i, (name, _) in enumerate(net.named_parameters()) if name == "first_conv.conv.weight")
    b = {i: {"momentum_buffer": torch.full_like(e["momentum_buffer"], 2.0)} for i, e in fresh.state.items()}
    _, carried = run(OptimizerCarry(b))
    diff = carried.state[stem]["momentum_buffer"] - fresh.state[stem]["momentum_buffer"]
    assert torch.allclose(diff, torch.full_like(diff, 2.0 * 0.9 ** 3), atol=1e-6)
