"""natv2.train (EPS): phase plans, losses, ENS-KD teacher, a toy run, resume after a crash."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from natv2.space import SearchSpace
from natv2.supernet import build_supernet
from natv2.train import eps
from natv2.train.eps import (
    PhaseSettings,
    TrainSettings,
    make_teacher,
    teacher_logits,
    train_phase,
    train_supernet,
)
from natv2.train.losses import (
    distillation_loss,
    ensemble_logits,
    exit_weighted_loss,
    soft_cross_entropy,
)
from natv2.train.phases import PHASE_ORDER, elastic_dims, phases_for, sample_phase_arch

CPU = torch.device("cpu")
RES = 16
WEIGHTS = (0.06, 0.13, 0.20, 0.27, 0.34)


def train_settings(**changes) -> TrainSettings:
    """The schema's training settings (``TrainSettings.from_config({})``) with ``changes``."""
    return dataclasses.replace(TrainSettings.from_config({}), **changes)


def space_of(family: str) -> SearchSpace:
    return SearchSpace(family, resolutions=[RES], widths=[1.0])


def fixed_batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise plus a per-class template: a task a few steps can make progress on."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(10, 3, RES, RES, generator=g)
    y = torch.arange(n) % 10
    return 0.5 * torch.randn(n, 3, RES, RES, generator=g) + templates[y], y


# ---------------------------------------------------------------- phase plans


@pytest.mark.parametrize(("family", "plan"), [
    ("SE_B", ("full", "kernel", "depth", "expand")),
    ("SE_D", ("full", "kernel", "depth", "expand")),
    ("SE_P", ("full", "kernel", "net_width", "depth", "expand")),
    ("SE_DP", ("full", "kernel", "net_width", "depth", "expand")),
    ("EE_B", ("full", "kernel", "net_depth", "depth", "expand")),
    ("EE_D", ("full", "kernel", "net_depth", "depth", "expand")),
    ("EE_P", ("full", "kernel", "net_width", "net_depth", "depth", "expand")),
    ("EE_DP", ("full", "kernel", "net_width", "net_depth", "depth", "expand")),
])
def test_phases_per_family(family, plan):
    assert phases_for(family) == plan


def test_elastic_dims_open_one_dimension_per_phase():
    assert elastic_dims("full") == frozenset()
    assert elastic_dims("kernel") == {"ks"}
    assert elastic_dims("net_width") == {"ks", "nw"}
    assert elastic_dims("net_depth") == {"ks", "nw", "nd"}
    assert elastic_dims("depth") == {"ks", "nw", "nd", "d"}
    assert elastic_dims("expand") == {"ks", "nw", "nd", "d", "e"}
    assert PHASE_ORDER[-1] == "expand"
    with pytest.raises(ValueError, match="unknown training phase 'width'"):
        elastic_dims("width")


def test_phase_sampling_keeps_closed_dimensions_at_their_maximum():
    import numpy as np

    space = space_of("EE_P")
    rng = np.random.default_rng(0)
    full = sample_phase_arch(space, elastic_dims("full"), RES, rng)
    assert list(full.ks) == [7] * 20 and list(full.e) == [6] * 20 and list(full.d) == [4] * 5
    assert full.nd == 5 and list(full.nw) == [7] * 20
    kernels = [sample_phase_arch(space, elastic_dims("kernel"), RES, rng) for _ in range(20)]
    assert {k for a in kernels for k in a.ks} == {3, 5, 7}
    assert all(set(a.e) == {6} and set(a.d) == {4} and a.nd == 5 and set(a.nw) == {7} for a in kernels)
    depth = [sample_phase_arch(space, elastic_dims("net_depth"), RES, rng) for _ in range(30)]
    assert {a.nd for a in depth} == {1, 2, 3, 4, 5} and all(set(a.d) == {4} for a in depth)
    se = sample_phase_arch(space_of("SE_B"), elastic_dims("expand"), RES, rng)
    assert se.nd is None and se.nw is None


# ---------------------------------------------------------------- losses and the ENS-KD teacher


def test_losses():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    hard = torch.tensor([0, 2])
    assert soft_cross_entropy(logits, F.one_hot(hard, 3).float()).item() == pytest.approx(
        F.cross_entropy(logits, hard).item())
    teacher = torch.tensor([[1.0, 1.0, 0.0], [0.0, 3.0, 0.0]])
    want = -(F.softmax(teacher, 1) * F.log_softmax(logits, 1)).sum(1).mean()
    assert distillation_loss(logits, teacher).item() == pytest.approx(want.item())
    exits = [torch.full((2, 3), float(k)) for k in range(1, 4)]
    w = torch.tensor(WEIGHTS[:3]) / sum(WEIGHTS[:3])
    assert torch.allclose(ensemble_logits(exits, WEIGHTS), sum(wi * e for wi, e in zip(w, exits, strict=True)))
    assert ensemble_logits(exits[:1], WEIGHTS) is exits[0]


def test_exit_weighted_loss_by_hand():
    # two exits, one example each: CE = logsumexp - logit of the label
    exits = [torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]])]
    y = torch.tensor([0])
    ce0, ce1 = math.log(2.0), math.log(1.0 + math.exp(-2.0))
    assert exit_weighted_loss(exits, y, WEIGHTS).item() == pytest.approx(0.06 * ce0 + 0.13 * ce1)
    # the weights are used as given (the thesis' sum to 1 over five exits), not renormalised
    assert exit_weighted_loss(exits[:1], y, [0.5] * 5).item() == pytest.approx(0.5 * ce0)
    with pytest.raises(ValueError, match="3 exits but 2 exit loss weights"):
        exit_weighted_loss(exits + exits[:1], y, [0.5, 0.5])


def test_each_step_trains_at_a_multiple_of_four_between_the_space_ends():
    """The thesis' ``MyModRandomResizedCrop`` (``CONTINUOUS``): every multiple of 4 from the
    smallest to the largest search resolution, not only the space's own sizes."""
    torch.manual_seed(0)
    net = build_supernet("SE_B", n_classes=10, dropout=0.0)
    space = SearchSpace("SE_B", resolutions=[16, 28], widths=[1.0])
    x, y = fixed_batch(8)
    seen = []

    def sampler(rng, resolution):
        seen.append(resolution)
        return space.smallest()

    train_phase(net, space, lambda seed: [(x, y)] * 40, "full", PhaseSettings(1, 0.01, 0, 1),
                train_settings(phases={}, label_smoothing=0.0, seed=0), None, CPU, seed=1,
                show_progress=False, sampler=sampler)
    assert set(seen) == {16, 20, 24, 28}


def _exit_heads(net) -> list[dict[str, torch.Tensor]]:
    """Parameters of exits 1..4 (``early_exits``) and of the last exit (OFA's head)."""
    heads = [{k: v.detach().clone() for k, v in head.named_parameters()} for head in net.early_exits]
    last = {k: v.detach().clone() for k, v in net.named_parameters() if k.startswith("classifier")}
    return [*heads, last]


@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_full_phase_of_an_early_exit_net_trains_every_exit(weights):
    """The thesis' ``full`` task trains all five exits (a weighted sum of their losses); without
    exit weights only the last exit learns, and the ENS-KD teacher built on the four others
    would be untrained."""
    torch.manual_seed(0)
    net = build_supernet("EE_B", n_classes=10, dropout=0.0)
    space = space_of("EE_B")
    x, y = fixed_batch()
    before = _exit_heads(net)
    record = train_phase(net, space, lambda seed: [(x, y)] * 3, "full", PhaseSettings(1, 0.05, 0, 1),
                         train_settings(phases={}, label_smoothing=0.0, seed=0), None, CPU, seed=1,
                         show_progress=False, exit_loss_weights=weights)
    changed = [any(not torch.equal(b[k], v) for k, v in a.items()) for b, a in zip(before, _exit_heads(net), strict=True)]
    assert changed == ([False] * 4 + [True] if weights is None else [True] * 5)
    assert 0.0 <= record["train_top1"] <= 100.0 and math.isfinite(record["loss"])


def test_train_supernet_trains_every_exit_in_full_and_reports_after_it(monkeypatch, tmp_path):
    calls = []

    def fake_phase(net, space, loader, phase, settings, train, teacher, device, seed, show_progress=True,
                   world=None, exit_loss_weights=None):
        calls.append((phase, exit_loss_weights))
        return {"name": phase, "epochs": settings.epochs, "seconds": 0.0, "loss": 1.0, "train_top1": 0.0,
                "epoch_loss": [1.0]}

    monkeypatch.setattr(eps, "train_phase", fake_phase)
    net = build_supernet("EE_B", n_classes=10, dropout=0.0)
    one = PhaseSettings(1, 0.01, 0, 1)
    train = train_settings(phases={"full": one, "kernel": one}, exit_loss_weights=(0.1, 0.1, 0.2, 0.2, 0.4))
    history = train_supernet(net, space_of("EE_B"), lambda seed: [], train, CPU, tmp_path, show_progress=False,
                             after_phase=lambda phase, n: {"seen_after": phase})
    assert calls == [("full", (0.1, 0.1, 0.2, 0.2, 0.4)), ("kernel", None)]
    assert [r["seen_after"] for r in history] == ["full", "kernel"]


def test_ee_teacher_is_the_multi_exit_largest_net_with_ensemble_logits():
    torch.manual_seed(0)
    net = build_supernet("EE_B", n_classes=10, dropout=0.0)
    space = space_of("EE_B")
    teacher = make_teacher(net, space)
    assert teacher.config()["arch"] == {"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "nd": 5}
    assert len(teacher.config()["early_exits"]) == 4
    assert not any(p.requires_grad for p in teacher.parameters())
    x, _ = fixed_batch(8)
    net.train()
    with torch.no_grad():
        exits = net(x, space.largest(), all_exits=True)  # train mode, as the teacher runs
    assert len(exits) == 5
    w = torch.tensor(WEIGHTS) / sum(WEIGHTS)
    want = sum(wi * e for wi, e in zip(w, exits, strict=True))
    got = teacher_logits(teacher, x, WEIGHTS)
    assert teacher.training and not got.requires_grad
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, exits[-1], atol=1e-3)  # not just the last exit

    se = build_supernet("SE_B", n_classes=10, dropout=0.0).train()
    se_teacher = make_teacher(se, space_of("SE_B"))
    with torch.no_grad():
        assert torch.allclose(teacher_logits(se_teacher, x, WEIGHTS), se(x, None), atol=1e-4)


# ---------------------------------------------------------------- a toy run lowers the loss


def _largest_loss(net, space, x, y) -> float:
    """Cross entropy of the largest sub-network (last exit) on the batch, batch statistics."""
    net.train()  # the nets are built without dropout
    with torch.no_grad():
        return F.cross_entropy(net(x, space.largest()), y).item()


@pytest.mark.parametrize("family", ["SE_B", "EE_B"])
def test_a_phase_on_a_fixed_batch_lowers_the_loss(family, monkeypatch):
    torch.manual_seed(0)
    net = build_supernet(family, n_classes=10, dropout=0.0)
    space = space_of(family)
    x, y = fixed_batch()
    teacher = make_teacher(net, space)  # KD on, as in every phase after "full"
    with torch.no_grad():
        expected_soft = teacher_logits(teacher, x, WEIGHTS)  # ENS-KD for EE_B
    softs = []

    def spy(student, soft):
        softs.append(soft)
        return distillation_loss(student, soft)

    monkeypatch.setattr(eps, "distillation_loss", spy)
    before = _largest_loss(net, space, x, y)
    train = train_settings(phases={}, label_smoothing=0.0, ensemble_weights=WEIGHTS, seed=0)
    record = train_phase(net, space, lambda seed: [(x, y)] * 6, "kernel", PhaseSettings(1, 0.05, 0, 1),
                         train, teacher, CPU, seed=1, show_progress=False)
    after = _largest_loss(net, space, x, y)
    assert record["name"] == "kernel" and record["epochs"] == 1 and record["seconds"] > 0
    assert after < before - 0.3, (before, after)
    # every step distilled from the (frozen) teacher: for EE_B the exit-weighted ensemble
    assert len(softs) == 6
    assert all(torch.allclose(s, expected_soft, atol=1e-4) for s in softs)


# ---------------------------------------------------------------- the plan train_supernet runs


def test_train_supernet_plan_and_teachers(monkeypatch, tmp_path):
    calls = []

    def fake_phase(net, space, loader, phase, settings, train, teacher, device, seed, show_progress=True,
                   world=None, exit_loss_weights=None):
        calls.append((phase, settings.epochs, seed, teacher))
        return {"name": phase, "epochs": settings.epochs, "seconds": 0.0}

    monkeypatch.setattr(eps, "train_phase", fake_phase)
    phases = {p: PhaseSettings(1, 0.1, 0, 1) for p in PHASE_ORDER}
    phases["depth"] = PhaseSettings(0, 0.1, 0, 1)  # 0 epochs: skipped
    net = build_supernet("EE_P", n_classes=10)
    history = train_supernet(net, space_of("EE_P"), None, train_settings(phases=phases, seed=3), CPU,
                             tmp_path / "work", show_progress=False)
    assert [c[0] for c in calls] == ["full", "kernel", "net_width", "net_depth", "expand"]
    assert [c[2] for c in calls] == [300, 301, 302, 303, 304]
    assert calls[0][3] is None  # no KD in the full phase
    teachers = [c[3] for c in calls[1:]]
    assert all(t is not None for t in teachers)
    assert len({id(t) for t in teachers}) == 4  # progressive: re-extracted after each phase
    assert [h["name"] for h in history] == [c[0] for c in calls]
    assert sorted(p.name for p in (tmp_path / "work").glob("*.pt")) == [
        "phase_00_full.pt", "phase_01_kernel.pt", "phase_02_net_width.pt", "phase_03_net_depth.pt",
        "phase_04_expand.pt"]

    calls.clear()
    fixed = train_settings(phases=phases, progressive_teacher=False, kd_ratio=1.0)
    train_supernet(build_supernet("SE_B", n_classes=10), space_of("SE_B"), None, fixed, CPU,
                   tmp_path / "fixed", show_progress=False)
    assert [c[0] for c in calls] == ["full", "kernel", "expand"]
    assert calls[1][3] is calls[2][3]  # the teacher stays the network of the full phase

    calls.clear()
    train_supernet(build_supernet("SE_B", n_classes=10), space_of("SE_B"), None,
                   train_settings(phases=phases, kd_ratio=0.0), CPU, tmp_path / "nokd", show_progress=False)
    assert all(c[3] is None for c in calls)


# ---------------------------------------------------------------- resume after a killed phase


def test_checkpoints_of_other_settings_are_not_resumed(monkeypatch, tmp_path):
    calls = []

    def fake_phase(net, space, loader, phase, settings, train, teacher, device, seed, show_progress=True,
                   world=None, exit_loss_weights=None):
        calls.append(phase)
        with torch.no_grad():
            net.classifier.linear.bias.add_(1.0)  # the weights change with every phase
        return {"name": phase, "epochs": settings.epochs, "seconds": 0.0}

    monkeypatch.setattr(eps, "train_phase", fake_phase)
    space, work = space_of("SE_B"), tmp_path / "work"
    phases = {"full": PhaseSettings(1, 0.1, 0, 1), "kernel": PhaseSettings(1, 0.1, 0, 1), "depth": PhaseSettings(1, 0.1, 0, 1)}

    def run(phases=phases, fingerprint=None, **kw):
        calls.clear()
        net = build_supernet("SE_B", n_classes=10)
        train_supernet(net, space, None, train_settings(phases=phases, **kw), CPU, work,
                       show_progress=False, fingerprint=fingerprint)
        return net.classifier.linear.bias[0].item() - build_supernet("SE_B", n_classes=10).classifier.linear.bias[0].item()

    assert run(fingerprint={"data": 1}) == pytest.approx(3.0) and calls == ["full", "kernel", "depth"]
    assert run(fingerprint={"data": 1}) == pytest.approx(3.0) and calls == []  # all finished
    # another lr for the kernel phase: the full phase is kept, the rest retrained
    changed = {**phases, "kernel": PhaseSettings(1, 0.2, 0, 1)}
    assert run(changed, fingerprint={"data": 1}) == pytest.approx(3.0) and calls == ["kernel", "depth"]
    # other data (fingerprint), seed or training setting: nothing is resumed
    assert run(changed, fingerprint={"data": 2}) == pytest.approx(3.0) and calls == ["full", "kernel", "depth"]
    run(changed, fingerprint={"data": 2}, seed=5)
    assert calls == ["full", "kernel", "depth"]
    run(changed, fingerprint={"data": 2}, seed=5, kd_ratio=0.5)
    assert calls == ["full", "kernel", "depth"]


class Crash(RuntimeError):
    pass


class Loader:
    """``loader(seed)`` over a small fixed data set; counts calls, crashes on request."""

    def __init__(self, n_batches: int = 2, batch: int = 8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n_batches * batch, 3, RES, RES, generator=g)
        self.y = torch.arange(n_batches * batch) % 10
        self.batch = batch
        self.seeds: list[int] = []
        self.crash_seed: int | None = None
        self.crash_after = 1

    def __call__(self, seed: int):
        self.seeds.append(seed)
        torch.manual_seed(seed)  # as the stage's epoch_loader: dropout draws are per epoch
        order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(seed))
        outer = self

        class Epoch:
            def __len__(self):
                return len(order) // outer.batch

            def __iter__(self):
                for i in range(len(self)):
                    if seed == outer.crash_seed and i == outer.crash_after:
                        raise Crash(f"killed in epoch seed {seed}")
                    idx = order[i * outer.batch:(i + 1) * outer.batch]
                    yield outer.x[idx], outer.y[idx]

        return Epoch()


RESUME_PHASES = {"full": PhaseSettings(1, 0.05, 0, 1), "kernel": PhaseSettings(1, 0.05, 0, 1),
                 "depth": PhaseSettings(1, 0.05, 0, 1)}


def _fresh_net():
    torch.manual_seed(0)
    return build_supernet("SE_B", n_classes=10)


@pytest.mark.parametrize("progressive", [True, False])
def test_resume_after_a_killed_phase_gives_the_same_weights(tmp_path, progressive):
    space = space_of("SE_B")
    # phase i trains with seed 100 + i
    train = train_settings(phases=RESUME_PHASES, progressive_teacher=progressive, seed=1)

    reference = _fresh_net()
    ref_history = train_supernet(reference, space, Loader(), train, CPU, tmp_path / "ref", show_progress=False)
    assert [h["name"] for h in ref_history] == ["full", "kernel", "depth"]

    loader = Loader()
    loader.crash_seed = 102 * 1000  # first epoch of the third phase (index 2, seed 102)
    with pytest.raises(Crash):
        train_supernet(_fresh_net(), space, loader, train, CPU, tmp_path / "run", show_progress=False)
    assert sorted(p.name for p in (tmp_path / "run").glob("*.pt")) == ["phase_00_full.pt", "phase_01_kernel.pt"]
    assert 100_000 in loader.seeds and 101_000 in loader.seeds

    loader.crash_seed = None
    loader.seeds.clear()
    net = _fresh_net()
    history = train_supernet(net, space, loader, train, CPU, tmp_path / "run", show_progress=False)
    # only the unfinished phase ran again (0: the step count taken from loader(0))
    assert loader.seeds == [0, 102_000]
    assert [h["name"] for h in history] == ["full", "kernel", "depth"]
    def strip(h):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in h]

    assert strip(history) == strip(ref_history)  # the first two records come from the checkpoint
    ref_state, state = reference.state_dict(), net.state_dict()
    assert list(state) == list(ref_state)
    different = [k for k in state if not torch.equal(state[k], ref_state[k])]
    assert not different, different[:5]

    # a rerun after the last phase finished trains nothing
    loader.seeds.clear()
    again = train_supernet(_fresh_net(), space, loader, train, CPU, tmp_path / "run", show_progress=False)
    assert loader.seeds == [] and [h["name"] for h in again] == ["full", "kernel", "depth"]
