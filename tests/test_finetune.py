"""natv2.train.finetune: NATv2's two-step fine-tuning on digits at 16 px with a tiny budget."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from natv2.config import ConfigError, validate
from natv2.data import DataSettings, build_splits
from natv2.space import SearchSpace
from natv2.supernet import build_supernet
from natv2.train.early_stopping import EarlyStopping
from natv2.train.finetune import (
    HISTORY_COLUMNS,
    FinetuneResult,
    FinetuneSettings,
    finetune,
)
from natv2.train.optim import make_optimizer

CFG = {"seed": 0, "data": {"name": "digits", "train_subset": 64, "batch_size": 32,
                           "calib_size": 32, "eval_batch_size": 512, "test_fraction": 0.1,
                           "val_fraction": 0.05}}
# fine-tuning seed 3 (the splits are drawn with seed 0); batch sizes from the data section
SETTINGS = FinetuneSettings.from_config(
    {"seed": 3, "data": CFG["data"],
     "finetune": {"max_epochs": 2, "patience": 1, "lr": 0.02, "measure_latency": False,
                  "batch_size": None}})
SPACE = SearchSpace(family="SE_B", resolutions=(16,), widths=(1.0,))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    supernet = build_supernet("SE_B", n_classes=10)
    supernet.eval()
    splits = build_splits(DataSettings.from_config(CFG), 16)
    return supernet, splits, SPACE.smallest()


@pytest.fixture(scope="module")
def result(setup) -> FinetuneResult:
    supernet, splits, arch = setup
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    res = finetune(supernet, arch, splits, SETTINGS, "cpu", encoding=SPACE.encode(arch))
    after = supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # super-network only read
    assert res.settings is SETTINGS
    return res


def test_result_history_and_metrics(result, setup):
    res = result
    assert 1 <= res.best_epochs <= res.epochs_run <= 2
    steps = [row["step"] for row in res.history]
    assert steps == [1] * res.epochs_run + [2] * res.best_epochs
    for row in res.history:
        assert tuple(row) == HISTORY_COLUMNS
        assert math.isfinite(row["train_loss"]) and 0 <= row["train_top1"] <= 100
        assert row["lr"] > 0 and row["seconds"] >= 0
        assert (row["val_top1"] is None) == (row["step"] == 2)
    assert [r["epoch"] for r in res.history if r["step"] == 2] == list(
        range(1, res.best_epochs + 1))
    for acc in (res.top1_before, res.top1_after, res.val_top1_best):
        assert math.isfinite(acc) and 0.0 <= acc <= 100.0
    m = res.metrics()
    for key in ("top1_before", "top1_after", "params", "macs", "latency_ms", "best_epochs",
                "seconds", "encoding"):
        assert key in m
    assert m["encoding"] == SPACE.encode(setup[2]) and m["latency_ms"] is None
    assert m["params"] > 0 and m["macs"] > 0
    assert not res.model.training
    assert next(res.model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("stop_on, cosine_epochs, val, epochs_run, best, span", [
    # val_top1 (natv2's former rule): 60 at epoch 2, then two epochs without better: stop at 4;
    # step 2's cosine spans its own 2 epochs, so its epoch 2 starts (a step short of) half-way
    ("val_top1", "run", [(1.0, 50.0), (1.0, 60.0), (1.0, 55.0), (1.0, 58.0), (0.1, 70.0)], 4, 2,
     2),
    # val_loss (the thesis): the loss falls until epoch 3, rises twice: stop at 5; step 2 trains
    # for the best top-1's epoch (2) on the cosine of max_epochs (6), as the thesis' T_max
    ("val_loss", "max_epochs", [(0.9, 50.0), (0.8, 60.0), (0.7, 55.0), (0.75, 58.0), (0.8, 59.0),
                                (0.1, 99.0)], 5, 2, 6),
])
def test_early_stopping_and_step2_length(setup, monkeypatch, stop_on, cosine_epochs, val,
                                         epochs_run, best, span):
    import natv2.train.finetune as ft

    supernet, splits, arch = setup
    tests, vals = iter([11.0, 99.0]), iter(val)
    monkeypatch.setattr(ft, "accuracy", lambda *args, **kwargs: next(tests))
    monkeypatch.setattr(ft, "loss_and_accuracy", lambda *args, **kwargs: next(vals))
    settings = dataclasses.replace(SETTINGS, max_epochs=6, patience=2, stop_on=stop_on,
                                   cosine_epochs=cosine_epochs)
    res = finetune(supernet, arch, splits, settings, "cpu")
    assert res.epochs_run == epochs_run and res.best_epochs == best and res.val_top1_best == 60.0
    assert res.top1_before == 11.0 and res.top1_after == 99.0
    step1 = [r for r in res.history if r["step"] == 1]
    assert [r["val_loss"] for r in step1] == [v[0] for v in val[:epochs_run]]
    step2 = [r for r in res.history if r["step"] == 2]
    assert [r["epoch"] for r in step2] == [1, 2]
    # the first step of epoch 2 (step n) runs at the cosine's step n - 1 of span x n steps
    n = len(ft._train_loader(splits.trainval, settings, 0))
    lr2 = 0.5 * (1 + math.cos(math.pi * (n - 1) / (span * n)))
    assert step2[1]["lr"] == pytest.approx(SETTINGS.lr * lr2, rel=1e-6)


def test_loss_early_stopping_is_the_thesis_meter():
    """LossEarlyStoppingMeter: only a loss above the best counts; an equal one resets."""
    stop = EarlyStopping("val_loss", patience=2)
    assert [stop.update(e, loss, 10.0 * e) for e, loss in
            enumerate([1.0, 1.2, 1.0, 1.1, 1.3], start=1)] == [False, False, False, False, True]
    assert stop.best_epoch == 5 and stop.best_loss == 1.0  # best top-1: the last, highest
    stop = EarlyStopping("val_top1", patience=1)
    assert stop.update(1, 0.5, 50.0) is False and stop.update(2, 0.1, 50.0) is True
    assert stop.best_epoch == 1  # an equal top-1 is no new best: the earliest stays
    with pytest.raises(ValueError, match="valid: val_loss, val_top1"):
        EarlyStopping("loss", 1)


def test_defaults_are_the_thesis_recipe():
    """finetune_natnet.py assign_training_arguments, HighTradeoffPoints(n_survive=4)."""
    s = FinetuneSettings.from_config({})
    assert (s.max_epochs, s.patience, s.stop_on, s.batch_size) == (150, 30, "val_loss", 64)
    assert (s.optimizer, s.lr, s.lr_min, s.momentum, s.nesterov) == ("sgd", 1e-4, 1e-8, 0.9, False)
    assert (s.weight_decay, s.decay_all, s.label_smoothing, s.dropout) == (5e-4, True, 0.0, 0.0)
    assert s.cosine_epochs == "max_epochs"
    assert validate({})["finetune"]["n_high_tradeoff"] == 4


def test_optimizer_decays_every_parameter_or_spares_bn_and_biases():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    every = make_optimizer(net, SETTINGS)
    assert [g["weight_decay"] for g in every.param_groups] == [SETTINGS.weight_decay]
    assert every.param_groups[0]["nesterov"] is False
    spared = make_optimizer(net, dataclasses.replace(SETTINGS, decay_all=False, nesterov=True))
    assert [len(g["params"]) for g in spared.param_groups] == [1, 3]  # conv weight | bias, BN
    assert [g["weight_decay"] for g in spared.param_groups] == [SETTINGS.weight_decay, 0.0]


def test_step1_schedule_is_cosine_over_max_epochs(result):
    step1 = [r for r in result.history if r["step"] == 1]
    assert len(step1) == 2  # epoch 1 always sets the best; patience 1 allows epoch 2
    # 2 steps an epoch, a cosine over max_epochs (4 steps): the first step of epoch 2 (step 2)
    # runs at the rate of step 1, a quarter of the way down (the thesis steps its scheduler
    # after each batch), not half-way
    quarter = SETTINGS.lr_min + (SETTINGS.lr - SETTINGS.lr_min) * (1 + math.cos(math.pi / 4)) / 2
    assert step1[1]["lr"] == pytest.approx(quarter, rel=1e-6)
    assert step1[0]["lr"] == pytest.approx(SETTINGS.lr)


def test_each_step_runs_at_the_rate_of_the_step_before_it():
    from natv2.train.schedule import scheduled_step

    assert [scheduled_step(t) for t in range(4)] == [0, 0, 1, 2]


def test_same_seed_same_weights_and_loss_hook(setup, result):
    supernet, splits, arch = setup
    calls = []

    def loss_fn(outputs, y):  # a plug-in loss (the EE variant passes a multi-exit one)
        calls.append(len(y))
        return F.cross_entropy(outputs, y, label_smoothing=SETTINGS.label_smoothing)

    again = finetune(supernet, arch, splits, SETTINGS, "cpu", loss_fn=loss_fn)
    # training batches of 32, and step 1's validation loss over the whole split in one batch
    assert 32 in calls and set(calls) - {32} == {len(splits.val)}
    a, b = result.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again.top1_after == result.top1_after and again.best_epochs == result.best_epochs


def test_settings_from_config():
    assert SETTINGS.seed == 3 and SETTINGS.max_epochs == 2 and SETTINGS.lr == 0.02
    assert (SETTINGS.batch_size, SETTINGS.eval_batch_size, SETTINGS.num_workers) == (32, 512, 0)
    # finetune.batch_size null takes data.batch_size; the rest from the schema (batch 64)
    s = FinetuneSettings.from_config({"data": {"batch_size": 17, "eval_batch_size": 5}})
    assert s.batch_size == 64 and s.eval_batch_size == 5 and s.optimizer == "sgd"
    s = FinetuneSettings.from_config({"data": {"batch_size": 17}, "finetune": {"batch_size": None}})
    assert s.batch_size == 17
    assert s.exit_ordering is None and s.measure_latency is True
    s = FinetuneSettings.from_config({"data": {"batch_size": 17},
                                      "finetune": {"batch_size": 9, "optimizer": "adamw"}})
    assert s.batch_size == 9 and s.optimizer == "adamw"
    assert isinstance(FinetuneSettings.from_config({"finetune": {"lr": 1}}).lr, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.lr = 0.1


@pytest.mark.parametrize("bad, match", [
    ({"optimizer": "adam"}, "'finetune.optimizer'.*allowed: sgd, adamw"),
    ({"lr": 0}, "'finetune.lr'"),
    ({"max_epochs": 0}, "'finetune.max_epochs'"),
    ({"patience": 1.5}, "'finetune.patience'"),
    ({"label_smoothing": 1.5}, "'finetune.label_smoothing'"),
    ({"batch_size": 0}, "'finetune.batch_size'"),
    ({"exit_ordering": "SIDEWAYS"}, "'finetune.exit_ordering'"),
    ({"unrelated": 1}, "'unrelated' in 'finetune'"),
])
def test_bad_settings_are_refused_by_the_schema(bad, match):
    with pytest.raises(ConfigError, match=match):
        FinetuneSettings.from_config({"finetune": bad})


def test_finetune_takes_typed_settings(setup):
    supernet, splits, arch = setup
    with pytest.raises(TypeError, match="FinetuneSettings"):
        finetune(supernet, arch, splits, {"max_epochs": 1}, "cpu")
