"""natv2.train.warmup: the thesis' run_nat_warmup.py training rule, wired and by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from natv2.space import SearchSpace
from natv2.supernet import build_supernet
from natv2.train import warmup as wu
from natv2.train.eps import TrainSettings, WarmupSettings


def test_defaults_are_run_nat_warmup():
    w = WarmupSettings.from_config({})
    # assign_training_arguments: phases 1/2 100 epochs, 5 warm-up; phase 3 150, 10; lr 7.5e-3,
    # momentum 0.9, wd 3e-4, clip 5, dynamic_batch_size 4; timm's warmup_lr_init 1e-4
    assert (w.largest.epochs, w.largest.warmup_epochs, w.largest.lr) == (100, 5, 7.5e-3)
    assert (w.supernet.epochs, w.supernet.warmup_epochs, w.supernet.subnets_per_step) == (150, 10, 4)
    assert (w.warmup_lr, w.weight_decay, w.grad_clip, w.label_smoothing) == (1e-4, 3e-4, 5.0, 0.0)
    assert (w.rule.nesterov, w.rule.decay_all, w.rule.grad_clip, w.rule.kd_mean) == (False, True, 5.0, True)


def test_warm_up_trains_with_the_thesis_rule_and_schedule(monkeypatch):
    calls = []

    def fake_train_phase(net, space, loader, phase, settings, train, teacher, device, seed,
                         show_progress=True, sampler=None, resolution_sampler=None, world=None,
                         exit_loss_weights=None, rule=None, lr_at=None):
        drop = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
        calls.append({"phase": phase, "train": train, "rule": rule, "sampler": sampler,
                      "lr": [lr_at(e, 0) for e in range(settings.epochs)], "dropout": drop,
                      "teacher": teacher is not None, "teacher_net": teacher})
        return {"name": phase, "epochs": settings.epochs}

    monkeypatch.setattr(wu, "train_phase", fake_train_phase)
    space = SearchSpace("SE_B", resolutions=[16, 24])
    net = build_supernet("SE_B", n_classes=10, dropout=0.1)
    cfg = {"supernet": {"warmup": {"largest_epochs": 6, "supernet_epochs": 4, "largest_warmup_epochs": 2,
                                   "supernet_warmup_epochs": 1, "lr": 0.01}}}
    train = TrainSettings.from_config({"supernet": {"train": {"label_smoothing": 0.1}}})
    kept = []
    records = wu.warm_up(net, space, lambda seed: [], train, WarmupSettings.from_config(cfg),
                         torch.device("cpu"), show_progress=False, keep_teacher=kept.append)
    assert [r["name"] for r in records] == ["warmup_largest", "warmup_supernet"]
    largest, sup = calls
    assert train.ensemble_weights == (0.06, 0.13, 0.20, 0.27, 0.34)  # EPS' ENS-KD order
    for c in calls:
        assert c["train"].weight_decay == 3e-4 and c["train"].label_smoothing == 0.0
        # run_nat_warmup.py ensemble_weights: exit 1 first
        assert c["train"].ensemble_weights == (0.34, 0.27, 0.20, 0.13, 0.06)
        assert c["rule"].nesterov is False and c["rule"].decay_all and c["rule"].grad_clip == 5.0
        assert set(c["dropout"]) == {0.0}
    assert all(m.p == 0.1 for m in net.modules() if isinstance(m, torch.nn.Dropout))  # restored
    # timm: epoch 0 at warmup_lr, linear to lr over the warm-up, the cosine counted from epoch 0
    assert largest["lr"][:2] == pytest.approx([1e-4, 1e-4 + (0.01 - 1e-4) / 2])
    assert largest["lr"][2] == pytest.approx(0.01 * (1 + np.cos(np.pi * 2 / 6)) / 2)
    assert sup["lr"][0] == pytest.approx(1e-4) and sup["lr"][1] == pytest.approx(0.01 * (1 + np.cos(np.pi / 4)) / 2)
    assert largest["sampler"] is None and not largest["teacher"] and sup["teacher"]
    # the search's teacher is the one phase 3 distilled from: the largest as step 1 left it
    assert len(kept) == 1 and kept[0] is sup["teacher_net"]
    # phase 3 samples every variable uniformly (zeros pushed), so depth 4 is the most common
    rng = np.random.default_rng(0)
    archs = [sup["sampler"](rng, 20) for _ in range(300)]
    assert {a.resolution for a in archs} == {20}
    depths = np.array([a.d for a in archs]).ravel()
    assert np.mean(depths == 4) > 0.7 and {2, 3} <= set(depths.tolist())
