"""natv2.measure: counting, BN recalibration, top-1, latency, device, Evaluator (fake supernet)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from natv2.data import DataSettings, build_splits
from natv2.measure import (
    RECORD_KEYS,
    Evaluator,
    count_macs,
    count_params,
    latency_ms,
    recalibrate_bn,
    resolve_device,
    top1,
)

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- counting


def test_count_params():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.Linear(8, 10))
    assert count_params(net) == 3 * 8 * 9 + 2 * 8 + 8 * 10 + 10
    net[2].weight.requires_grad_(False)  # frozen parameters still count
    assert count_params(net) == 3 * 8 * 9 + 2 * 8 + 8 * 10 + 10


class TinyNet(nn.Module):
    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)  # bias: not a MAC
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, n_classes)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.dw(x).mean((2, 3))
        return self.fc(self.drop(x))


def test_count_macs_hand_computed_and_modes_restored():
    net = TinyNet()
    net.train()
    net.drop.eval()  # a mixed state must come back as it was
    r = 8
    expected = 3 * 8 * 9 * r * r + 8 * 9 * (r // 2) ** 2 + 8 * 10
    assert count_macs(net, r) == expected
    assert net.training and net.conv.training and not net.drop.training
    assert count_macs(net, 16) == 3 * 8 * 9 * 256 + 8 * 9 * 64 + 80


# ----------------------------------------------------------------------------- BN recalibration


def test_recalibrate_bn_hand_computed():
    # OFA's set_running_statistics: per batch the mean and the BIASED variance, averaged with
    # each batch weighted by its size
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    net = nn.Sequential(conv, nn.BatchNorm2d(4, momentum=0.3))
    net[1].running_mean.fill_(5.0)  # stale stats to be replaced
    net[1].running_var.fill_(7.0)
    net.eval()
    batches = [torch.randn(n, 3, 2, 2) * (i + 1) + i for i, n in enumerate((8, 8, 3))]
    recalibrate_bn(net, batches, CPU)
    with torch.no_grad():
        outs = [F.conv2d(b, conv.weight, padding=1) for b in batches]
    sizes = torch.tensor([8.0, 8.0, 3.0])[:, None]
    means = torch.stack([o.mean((0, 2, 3)) for o in outs])
    biased = torch.stack([o.transpose(0, 1).reshape(4, -1).var(1, correction=0) for o in outs])
    assert torch.allclose(net[1].running_mean, (means * sizes).sum(0) / 19, atol=1e-5)
    assert torch.allclose(net[1].running_var, (biased * sizes).sum(0) / 19, rtol=1e-5)
    unbiased = torch.stack([o.transpose(0, 1).reshape(4, -1).var(1) for o in outs]).mean(0)
    assert not torch.allclose(net[1].running_var, unbiased, rtol=1e-2)  # PyTorch's own update
    assert net[1].momentum == 0.3 and not net.training and not net[1].training
    first = (net[1].running_mean.clone(), net[1].running_var.clone())
    recalibrate_bn(net, [(b, torch.zeros(len(b))) for b in batches], CPU)  # (x, y) pairs too
    assert torch.equal(net[1].running_mean, first[0])
    assert torch.equal(net[1].running_var, first[1])


def test_recalibrate_bn_leaves_a_layer_no_batch_reaches():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.BatchNorm2d(2), nn.BatchNorm2d(2)

        def forward(self, x):
            return self.used(x)

    net = Skip()
    net.unused.running_var.fill_(3.0)
    recalibrate_bn(net, [torch.randn(4, 2, 3, 3)], CPU)
    assert torch.equal(net.unused.running_var, torch.full((2,), 3.0))
    assert torch.equal(net.unused.running_mean, torch.zeros(2))


def test_recalibrate_bn_keeps_dropout_off_and_handles_no_bn():
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Dropout(0.9), nn.BatchNorm2d(2))
    x = torch.ones(4, 3, 2, 2)
    recalibrate_bn(net, [x], CPU)
    # dropout was off: every position sees the same value, so the batch variance is zero
    assert torch.allclose(net[2].running_var, torch.zeros(2), atol=1e-6)
    recalibrate_bn(nn.Linear(2, 2), [torch.ones(1, 2)], CPU)  # no BN: a no-op


# ----------------------------------------------------------------------------- top1, latency


def test_top1_percentage():
    logits = torch.eye(4)
    labels = torch.tensor([0, 1, 2, 0])  # 3 of 4 correct
    assert top1(nn.Identity(), [(logits[:2], labels[:2]), (logits[2:], labels[2:])], CPU) == 75.0

    class MultiExit(nn.Module):
        def forward(self, x):
            return [torch.zeros_like(x), x]  # scored on the last exit

    assert top1(MultiExit(), [(logits, labels)], CPU) == 75.0
    with pytest.raises(ValueError, match="no examples"):
        top1(nn.Identity(), [], CPU)


def test_latency_ms():
    t = latency_ms(TinyNet(), 8, CPU, runs=3, warmup=1)
    assert isinstance(t, float) and t > 0
    with pytest.raises(ValueError):
        latency_ms(TinyNet(), 8, CPU, runs=0)


# ----------------------------------------------------------------------------- device


def test_resolve_device():
    assert resolve_device("cpu") == CPU
    assert resolve_device(" CPU ") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(CPU) == CPU
    for bad in ["gpu", "cuda:x", "", 3]:
        with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N"):
            resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA present, cuda:0 is valid and the no-CUDA error cannot occur")
def test_resolve_device_cuda_unavailable():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:0")


# ----------------------------------------------------------------------------- Evaluator


@dataclass(frozen=True)
class FakeArch:
    resolution: int
    width: float = 1.0
    d: tuple = (2, 3, 3, 3, 4)
    nd: int | None = None
    channels: int = 8


class FakeSupernet(nn.Module):
    """extract(arch) -> a standalone copy of a small conv net with `arch.channels` channels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.nets = nn.ModuleDict({"8": TinyNet()})
        self.nets["8"].bn.running_mean.fill_(3.0)  # stale: recalibration must not touch these
        self.extracted = 0

    def extract(self, arch):
        self.extracted += 1
        return copy.deepcopy(self.nets[str(arch.channels)])


class SharingSupernet(FakeSupernet):
    def extract(self, arch):
        net = self.nets["8"]
        return nn.Sequential(net.conv, net.bn, nn.Flatten(), nn.LazyLinear(10))


@pytest.fixture(scope="module")
def splits():
    return build_splits(DataSettings.from_config({"seed": 0, "data": {"name": "digits", "calib_size": 100}}), 16)


def test_evaluator_record(splits):
    sn = FakeSupernet()
    ev = Evaluator(sn, splits, "cpu", [16, 20], encoder=lambda a: f"enc{a.resolution}")
    rec = ev(FakeArch(16))
    assert tuple(rec) == RECORD_KEYS
    assert rec["arch"] == "enc16" and rec["r"] == 16 and rec["w"] == 1.0
    assert rec["d"] == "2-3-3-3-4" and rec["nd"] is None and rec["latency_ms"] is None
    assert 0.0 <= rec["top1"] <= 100.0
    assert rec["params"] == count_params(TinyNet())
    assert rec["macs"] == count_macs(TinyNet(), 16)
    # the super-network's own BN statistics are untouched
    assert torch.equal(sn.nets["8"].bn.running_mean, torch.full((8,), 3.0))
    # deterministic, and cached inputs are reused
    calib, val = ev.calibration(16), ev.validation(16)
    assert sum(b.shape[0] for b in calib) == 100
    assert sum(y.numel() for _, y in val) == len(splits.val)
    again = ev(FakeArch(16))
    assert again == rec and ev.calibration(16) is calib and ev.validation(16) is val
    rec20 = ev(FakeArch(20, width=1.2, nd=3))
    assert rec20["r"] == 20 and rec20["nd"] == 3 and rec20["w"] == 1.2
    assert rec20["latency_ms"] is None and rec20["macs"] == count_macs(TinyNet(), 20)
    with pytest.raises(ValueError, match="resolution 24"):
        ev(FakeArch(24))


def test_evaluator_recalibration_matters(splits):
    """A net with stale BN stats scores like its properly recalibrated copy."""
    sn = FakeSupernet()
    ev = Evaluator(sn, splits, CPU)
    rec = ev(FakeArch(16))
    ref = copy.deepcopy(sn.nets["8"])
    recalibrate_bn(ref, ev.calibration(16), CPU)
    assert rec["top1"] == top1(ref, ev.validation(16), CPU)
    assert rec["arch"] == str(FakeArch(16))  # no encoder: str(arch)


def test_evaluator_encoder_object_and_typed_splits(splits):
    class Space:
        def encode(self, arch):
            return "x" * arch.resolution

    ev = Evaluator(FakeSupernet(), splits, "cpu", resolutions=[12], encoder=Space())
    assert ev.device == CPU and ev.settings.calib_size == 100
    assert ev(FakeArch(12))["arch"] == "x" * 12
    with pytest.raises(TypeError, match="Splits"):
        Evaluator(FakeSupernet(), {"data": {"name": "digits"}}, "cpu")


def test_evaluator_stream_beyond_cache_budget(splits):
    ev = Evaluator(FakeSupernet(), splits, CPU, cache_bytes=0)
    val = ev.validation(16)
    assert not isinstance(val, list)  # a loader, not a cache
    cached = Evaluator(FakeSupernet(), splits, CPU)
    assert ev(FakeArch(16))["top1"] == cached(FakeArch(16))["top1"]


def test_evaluator_refuses_shared_buffers(splits):
    ev = Evaluator(SharingSupernet(), splits, CPU)
    with pytest.raises(RuntimeError, match="sharing buffers"):
        ev(FakeArch(16))


def test_evaluator_counts_static_nets_during_recalibration(splits):
    """A natv2 static network's params and MACs come from hooks during BN recalibration: equal
    to count_params / count_macs (FlopCounterMode) of the same network, SE and EE families."""
    from natv2.space import SearchSpace
    from natv2.supernet import build_supernet

    for family in ("SE_B", "EE_B"):
        torch.manual_seed(0)
        net = build_supernet(family, n_classes=10).eval()
        space = SearchSpace(family=family, resolutions=[16, 20])
        ev = Evaluator(net, splits, CPU, [16, 20], encoder=space)
        for arch in [space.smallest(), space.largest(), *space.sample(2, seed=3)]:
            rec = ev(arch)
            sub = net.extract(arch)
            assert (rec["params"], rec["macs"]) == (count_params(sub),
                                                    count_macs(sub, arch.resolution)), family


def test_evaluator_on_the_test_split(splits):
    """split="test" scores the test images (the baselines stage); the search's val is the default."""
    ev = Evaluator(FakeSupernet(), splits, CPU, split="test")
    assert sum(y.numel() for _, y in ev.validation(16)) == len(splits.test) != len(splits.val)
    ref = copy.deepcopy(FakeSupernet().nets["8"])
    recalibrate_bn(ref, ev.calibration(16), CPU)
    test_loader = [(x.unsqueeze(0), torch.tensor([y])) for x, y in splits.dataset("test", 16)]
    assert ev(FakeArch(16))["top1"] == pytest.approx(top1(ref, test_loader, CPU))
    with pytest.raises(ValueError, match="split 'train'"):
        Evaluator(FakeSupernet(), splits, CPU, split="train")
