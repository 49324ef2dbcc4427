"""Width search (issue 12 point 2): one super-network per width, the ``w`` gene choosing, the
widest largest network the upper bound and teacher, as the thesis' ``GenSupernet``
(``NAT_extended/supernets/supernet.py``) and ``ea_ofa_search_spaces.py`` (``lb``/``ub``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from natv2.config import validate as validate_config
from natv2.errors import UserError
from natv2.pipeline.context import space_from_config
from natv2.pipeline.supernet_stage import width_sources
from natv2.space import SearchSpace
from natv2.supernet import (
    SuperNet,
    WidthSuperNets,
    build_supernet,
    load_supernet,
    save_checkpoint,
)
from natv2.train import eps
from natv2.train.eps import PhaseSettings, StepRule, TrainSettings, make_teacher, train_phase
from natv2.train.phases import elastic_dims, sample_phase_arch

CPU = torch.device("cpu")
RES = 16
LISTS = {"ks_list": (3, 5), "expand_list": (3, 4), "depth_list": (2, 3, 4)}


def two_widths(family: str = "EE_B") -> WidthSuperNets:
    torch.manual_seed(0)
    return build_supernet(family, width_mult=[1.2, 1.0], n_classes=10, dropout=0.0, **LISTS)


def space_of(family: str = "EE_B", widths=(1.0, 1.2)) -> SearchSpace:
    return SearchSpace(family, resolutions=[RES], widths=list(widths), **LISTS)


def test_a_list_of_widths_builds_one_supernet_per_width_sorted():
    net = two_widths()
    assert isinstance(net, WidthSuperNets) and net.widths == (1.0, 1.2)
    assert [type(n) for n in net.nets] == [SuperNet, SuperNet]
    assert net.family == "EE_B" and net.n_classes == 10 and net.early_exit
    # one width in a list is that width's plain super-network
    assert isinstance(build_supernet("SE_B", width_mult=[1.2], n_classes=3), SuperNet)
    with pytest.raises(UserError, match="repeated width"):
        build_supernet("SE_B", width_mult=[1.0, 1.0])


def test_bounds_are_the_thesis_lb_and_ub():
    space = space_of()
    assert space.largest().width == 1.2 and space.smallest().width == 1.0
    assert space.encode(space.largest())[2] == "1" and space.encode(space.smallest())[2] == "0"
    assert space.at_width(1.2).widths == (1.2,) and space.at_width(1.2).largest().width == 1.2
    with pytest.raises(ValueError, match="not one of"):
        space.at_width(1.1)


def test_each_arch_runs_on_its_widths_supernet_and_extracts_the_same():
    net, space = two_widths().eval(), space_of()
    x = torch.randn(2, 3, RES, RES)
    for arch in (space.largest(), space.smallest(), *space.sample(4, seed=1)):
        own = net.nets[[1.0, 1.2].index(arch.width)]
        assert torch.equal(net(x, arch), own(x, arch))
        assert torch.allclose(net.extract(arch)(x), own(x, arch), atol=1e-5)
        assert net.static_config(arch)["width_mult"] == arch.width
    # the two widths are different networks: more parameters at w1.2
    params = [sum(p.numel() for p in net.extract(dataclasses.replace(space.largest(), width=w)).parameters())
              for w in (1.0, 1.2)]
    assert params[0] < params[1]
    with pytest.raises(ValueError, match=r"width 1.1.*widths \[1.0, 1.2\]"):
        net(x, dataclasses.replace(space.largest(), width=1.1))


def test_checkpoint_round_trip_keeps_every_width(tmp_path):
    net = two_widths().eval()
    path = save_checkpoint(net, tmp_path / "s.pt")
    back = load_supernet(path).eval()
    assert isinstance(back, WidthSuperNets) and back.config() == net.config()
    assert back.config()["width_mult"] == [1.0, 1.2]
    x, space = torch.randn(2, 3, RES, RES), space_of()
    for arch in (space.largest(), space.smallest()):
        assert torch.equal(back(x, arch), net(x, arch))


def test_teacher_is_the_widest_largest_network():
    net, space = two_widths().eval(), space_of()
    teacher = make_teacher(net, space).eval()
    x = torch.randn(2, 3, RES, RES)
    expected = net.nets[1](x, space.largest(), all_exits=True)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(teacher(x), expected, strict=True))


def test_joint_sampling_draws_both_widths_and_single_width_draws_none():
    rng = np.random.default_rng(0)
    drawn = {sample_phase_arch(space_of(), elastic_dims("expand"), RES, rng).width for _ in range(40)}
    assert drawn == {1.0, 1.2}
    # one width: the stream is the former one (no extra draw), so old runs reproduce
    a = np.random.default_rng(3)
    b = np.random.default_rng(3)
    one = sample_phase_arch(space_of(widths=(1.2,)), elastic_dims("expand"), RES, a)
    assert one.width == 1.2
    sample_phase_arch(space_of(widths=(1.0,)), elastic_dims("expand"), RES, b)
    assert a.integers(1000) == b.integers(1000)


def test_clipping_covers_the_active_widths_parameters_only(monkeypatch):
    """The thesis clips ``self.supernet.parameters()`` after each sub-network's backward, and its
    GenSupernet's parameters are the active width's engine's."""
    net, space = two_widths("SE_B"), space_of("SE_B")
    archs = [dataclasses.replace(space.largest(), width=w) for w in (1.0, 1.2, 1.2, 1.0)]
    seen = []
    real = eps._clipped_backward

    def spy(loss, params, max_norm):
        seen.append({id(p) for p in params})
        real(loss, params, max_norm)

    monkeypatch.setattr(eps, "_clipped_backward", spy)
    x, y = torch.randn(4, 3, RES, RES), torch.arange(4)
    before = [p.detach().clone() for p in net.nets[1].parameters()]
    train_phase(net, space, lambda seed: [(x, y)] * 2, "adapt", PhaseSettings(1, 0.01, 0, 2),
                dataclasses.replace(TrainSettings.from_config({}), phases={}, seed=0), None, CPU,
                seed=0, show_progress=False, sampler=lambda rng, r: archs.pop(0),
                rule=StepRule(nesterov=False, decay_all=True, grad_clip=5.0, kd_mean=True))
    ids = [{id(p) for p in n.parameters()} for n in net.nets]
    assert seen == [ids[0], ids[1], ids[1], ids[0]]
    assert any(not torch.equal(b, a) for b, a in zip(before, net.nets[1].parameters(), strict=True))


def test_config_width_lists_and_per_width_sources():
    cfg = validate_config({"supernet": {"width_mult": [1.2, 1.0]}})
    assert space_from_config(cfg).widths == (1.0, 1.2)
    assert width_sources("train", [1.0, 1.2]) == [("train", 1.0), ("train", 1.2)]
    files = [{"file": "a.pt"}, {"file": "b.pt"}]
    assert width_sources(files, [1.0, 1.2]) == [(files[0], 1.0), (files[1], 1.2)]
    assert width_sources(files[0], [1.0, 1.2]) == [(files[0], [1.0, 1.2])]
    assert width_sources(files[0], [1.2]) == [(files[0], 1.2)]
    with pytest.raises(UserError, match=r"1 sources for the 2 widths"):
        width_sources(files[:1], [1.0, 1.2])
    with pytest.raises(UserError, match="width_mult"):
        validate_config({"supernet": {"width_mult": [1.0, 1.1]}})
    with pytest.raises(UserError, match="latency lookup table holds one width"):
        validate_config({"supernet": {"width_mult": [1.0, 1.2]}, "search": {"objectives": ["latency"]},
                         "latency": {"table": True}})
