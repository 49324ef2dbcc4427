"""natv2.train.aep: multi-exit fine-tuning of EE sub-networks (exit orderings ASC, DESC, UNIF,
MIX), and saving / loading / exporting the multi-exit model (natv2.model). Digits at 16 px."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from natv2.config import ConfigError
from natv2.data import DataSettings, build_splits
from natv2.errors import UserError
from natv2.model import MultiExitModel, arch_info, export_model, load_model, predict, save_finetuned
from natv2.space import SearchSpace
from natv2.supernet import build_supernet, load_static, save_checkpoint
from natv2.train.aep import (
    ORDERINGS,
    AEPResult,
    aep_finetune,
    aep_hooks,
    aep_weights,
    exit_weights,
    uses_aep,
)
from natv2.train.finetune import HISTORY_COLUMNS, FinetuneSettings

R = 16
CFG = {"seed": 0, "data": {"name": "digits", "train_subset": 64, "batch_size": 32,
                           "calib_size": 32, "eval_batch_size": 512, "test_fraction": 0.1,
                           "val_fraction": 0.05}}
SETTINGS = FinetuneSettings.from_config(
    {"seed": 3, "data": CFG["data"],
     "finetune": {"max_epochs": 2, "patience": 1, "lr": 0.02, "measure_latency": False,
                  "exit_ordering": "MIX"}})
SPACE = SearchSpace(family="EE_B", resolutions=(R,), widths=(1.0,))
ND = 3


# ----------------------------------------------------------------------------- weights
def _increasing(w):
    return all(a < b for a, b in zip(w, w[1:], strict=False))


def _decreasing(w):
    return all(a > b for a, b in zip(w, w[1:], strict=False))


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("nd", [1, 2, 3, 4, 5])
def test_exit_weights_sum_to_one_and_are_ordered(ordering, nd):
    loss, ens = aep_weights(ordering, nd)
    assert exit_weights(ordering, nd) == loss
    assert exit_weights(ordering, nd, role="ensemble") == ens
    for w in (loss, ens):
        assert len(w) == nd and all(v > 0 for v in w)
        assert math.isclose(sum(w), 1.0, rel_tol=0, abs_tol=1e-12)
    if nd == 1:
        assert loss == ens == [1.0]
        return
    expect = {"ASC": (_increasing, _increasing), "DESC": (_decreasing, _decreasing),
              "MIX": (_decreasing, _increasing)}
    if ordering == "UNIF":
        assert loss == ens == [1.0 / nd] * nd
    else:
        loss_ok, ens_ok = expect[ordering]
        assert loss_ok(loss) and ens_ok(ens)


def test_weights_match_the_thesis_get_weights():
    # finetune_natnet_ens.py get_weights(5, ...) rounds i / 15 to 4 decimals
    ramp = [0.0667, 0.1333, 0.2, 0.2667, 0.3333]
    assert [round(v, 4) for v in exit_weights("ASC", 5)] == ramp
    assert [round(v, 4) for v in exit_weights("DESC", 5, "ensemble")] == ramp[::-1]
    assert [round(v, 4) for v in exit_weights("MIX", 5, "loss")] == ramp[::-1]
    assert [round(v, 4) for v in exit_weights("MIX", 5, "ensemble")] == ramp
    assert exit_weights("asc", 2) == [1 / 3, 2 / 3]  # case-insensitive


def test_bad_ordering_nd_role():
    with pytest.raises(UserError, match="finetune.exit_ordering: unknown value 'UP'"):
        aep_weights("UP", 3)
    with pytest.raises(ValueError, match="nd"):
        aep_weights("ASC", 6)
    with pytest.raises(ValueError, match="role"):
        exit_weights("ASC", 3, role="teacher")


def _ordering(ordering):
    return dataclasses.replace(SETTINGS, exit_ordering=ordering)


def test_uses_aep():
    assert uses_aep("EE_B", _ordering("ASC"))
    assert uses_aep("EE_DP", _ordering("MIX"))
    assert not uses_aep("EE_B", _ordering(None))
    assert not uses_aep("EE_B", FinetuneSettings.from_config({}))  # schema default: null
    assert not uses_aep("SE_B", _ordering("ASC"))
    with pytest.raises(ConfigError, match="'finetune.exit_ordering'"):
        FinetuneSettings.from_config({"finetune": {"exit_ordering": "SIDEWAYS"}})
    with pytest.raises(TypeError, match="FinetuneSettings"):
        uses_aep("EE_B", {"exit_ordering": "ASC"})


def test_hooks_loss_and_logits():
    torch.manual_seed(0)
    outs = [torch.randn(4, 10) for _ in range(ND)]
    y = torch.tensor([0, 1, 2, 3])
    _, loss_fn, logits_fn = aep_hooks("MIX", ND, label_smoothing=0.1)
    loss_w, ens_w = aep_weights("MIX", ND)
    want = sum(w * F.cross_entropy(o, y, label_smoothing=0.1)
               for w, o in zip(loss_w, outs, strict=True))
    torch.testing.assert_close(loss_fn(outs, y), want)
    torch.testing.assert_close(logits_fn(outs), sum(w * o for w, o in zip(ens_w, outs, strict=True)))


# ----------------------------------------------------------------------------- fine-tuning
@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    supernet = build_supernet("EE_B", n_classes=10)
    supernet.eval()
    splits = build_splits(DataSettings.from_config(CFG), R)
    arch = dataclasses.replace(SPACE.smallest(), nd=ND)
    return supernet, splits, arch


@pytest.fixture(scope="module")
def result(setup) -> AEPResult:
    supernet, splits, arch = setup
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    res = aep_finetune(supernet, arch, splits, SETTINGS, "cpu", encoding=SPACE.encode(arch))
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())
    return res


def test_aep_finetune_result(result, setup):
    res = result
    assert isinstance(res, AEPResult)
    assert res.exit_ordering == "MIX"
    assert res.loss_weights == exit_weights("MIX", ND, "loss")
    assert res.ensemble_weights == exit_weights("MIX", ND, "ensemble")
    assert len(res.per_exit_top1) == ND
    for acc in (*res.per_exit_top1, res.ensemble_top1, res.top1_before, res.val_top1_best):
        assert math.isfinite(acc) and 0.0 <= acc <= 100.0
    assert res.ensemble_top1 == pytest.approx(res.top1_after)
    steps = [row["step"] for row in res.history]
    assert steps == [1] * res.epochs_run + [2] * res.best_epochs
    for row in res.history:
        assert tuple(row) == HISTORY_COLUMNS and math.isfinite(row["train_loss"])
    m = res.metrics()
    for key in ("top1_before", "top1_after", "params", "macs", "per_exit_top1", "ensemble_top1",
                "exit_ordering", "loss_weights", "ensemble_weights", "encoding"):
        assert key in m
    assert m["encoding"] == SPACE.encode(setup[2])
    model = res.model
    assert model.multi_exit and model.n_exits == ND and not model.training
    assert model.exit_weights == res.ensemble_weights
    x = torch.randn(2, 3, R, R)
    with torch.no_grad():
        outs = model(x)
    assert isinstance(outs, list) and len(outs) == ND


def test_aep_finetune_is_reproducible(result, setup):
    supernet, splits, arch = setup
    again = aep_finetune(supernet, arch, splits, SETTINGS, "cpu")
    a, b = result.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again.per_exit_top1 == result.per_exit_top1


def test_aep_finetune_needs_an_ee_family(setup):
    _, splits, _ = setup
    se = SearchSpace(family="SE_B", resolutions=(R,), widths=(1.0,))
    with pytest.raises(UserError, match="early-exit family"):
        aep_finetune(build_supernet("SE_B", n_classes=10), se.smallest(), splits, SETTINGS,
                     "cpu")


def test_aep_finetune_needs_an_exit_ordering(setup):
    supernet, splits, arch = setup
    with pytest.raises(UserError, match="finetune.exit_ordering"):
        aep_finetune(supernet, arch, splits, _ordering(None), "cpu")


# ----------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("nd", [1, 4])
def test_multi_exit_checkpoint_round_trip(setup, tmp_path, nd):
    supernet, _, arch = setup
    net = supernet.extract(dataclasses.replace(arch, nd=nd), all_exits=True)
    net.set_exit_weights(exit_weights("DESC", nd, "ensemble"))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    net.eval()
    back = load_static(save_checkpoint(net, tmp_path / "m.pt"))
    back.eval()
    assert back.config() == net.config() and back.n_exits == nd
    x = torch.randn(2, 3, R, R)
    with torch.no_grad():
        for a, b in zip(net(x), back(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(net.ensemble(x), back.ensemble(x), rtol=0, atol=0)


def test_set_exit_weights_checks(setup):
    supernet, _, arch = setup
    net = supernet.extract(arch, all_exits=True)
    with pytest.raises(ValueError, match="3 non-negative"):
        net.set_exit_weights([0.5, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        net.set_exit_weights([1.0, -0.5, 0.5])


@pytest.fixture(scope="module")
def saved(result, setup, tmp_path_factory):
    _, splits, arch = setup
    enc = SPACE.encode(arch)
    out = save_finetuned(tmp_path_factory.mktemp("rank_0"), result.model,
                         arch_info(arch, enc, splits), result.metrics(), result.history)
    return out, result.model


def test_load_model_gives_the_ensemble_and_each_exit(saved):
    out, net = saved
    x = torch.randn(3, 3, R, R)
    model, preprocess = load_model(out)
    assert isinstance(model, MultiExitModel) and not model.training
    assert model.n_classes == 10 and model.n_exits == ND
    with torch.no_grad():
        torch.testing.assert_close(model(x), net.ensemble(x), rtol=0, atol=0)
        outs = net(x)
        for k in range(1, ND + 1):
            torch.testing.assert_close(load_model(out, exit=k)[0](x), outs[k - 1], rtol=0,
                                       atol=0)
    assert preprocess(Image.new("L", (8, 8))).shape == (3, R, R)
    for bad in (0, ND + 1, "1"):
        with pytest.raises(UserError, match="exit"):
            load_model(out, exit=bad)


def test_predict_multi_exit(saved, tmp_path):
    out, _ = saved
    path = tmp_path / "d.png"
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(path)
    [top] = predict(out, [path], top_k=3)
    assert len(top) == 3 and all(0.0 <= p <= 1.0 for _, p in top)
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    [top1] = predict(out, [path], top_k=1, exit=1)
    assert len(top1) == 1


@pytest.mark.parametrize("exit", [None, 2])
def test_onnx_export_matches(saved, tmp_path, exit):
    ort = pytest.importorskip("onnxruntime")
    out, _ = saved
    path = export_model(out, tmp_path / "model.onnx", format="onnx", exit=exit)
    model, _ = load_model(out, exit=exit)
    x = torch.randn(5, 3, R, R)  # another batch size than the export example (dynamic axis)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [got] = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated
def test_torchscript_export_matches(saved, tmp_path):
    out, _ = saved
    path = export_model(out, tmp_path / "model.pt", format="torchscript")
    scripted = torch.jit.load(str(path))
    model, _ = load_model(out)
    x = torch.randn(3, 3, R, R)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-5)
