"""OFAv2 super-network families {SE,EE}_{B,D,P,DP}: forward, extraction, params, routing.

Networks get random BN statistics/affines, pushed transform matrices and large classifier
weights (as tests/test_supernet.py does), so that equalities are not an accident of a near-zero
initial output.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from randomized import randomize
from torch import nn

from natv2.errors import UserError
from natv2.measure import count_macs, count_params
from natv2.space import SearchSpace
from natv2.space.arch import NW_CONV1X1, NW_MBCONV, NW_TRANSFORM
from natv2.supernet import (
    FAMILIES,
    OFAV2_EXIT_WEIGHTS,
    build_static,
    build_supernet,
    load_checkpoint,
    load_static,
    load_supernet,
    save_checkpoint,
)
from natv2.supernet.common import make_divisible

N_CLASSES = 10
RES = 32
STAGE_BASE = (24, 40, 80, 112, 160)
STRIDES = (2, 2, 2, 1, 2)
SE = (False, True, False, True, True)


@pytest.fixture(scope="module")
def nets():
    cache: dict[str, nn.Module] = {}

    def get(family: str) -> nn.Module:
        if family not in cache:
            torch.manual_seed(FAMILIES.index(family))
            cache[family] = randomize(build_supernet(family, n_classes=N_CLASSES),
                                      FAMILIES.index(family)).eval()
        return cache[family]

    return get


def space(family: str) -> SearchSpace:
    return SearchSpace(family, resolutions=[RES], widths=[1.0])


def archs(family: str, seed: int = 0) -> list:
    sp = space(family)
    return [sp.largest(), sp.smallest(), *sp.sample(3, seed=seed)]


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- independent param counts
def mbconv_params(cin: int, cout: int, k: int, e: int, se: bool) -> int:
    mid = make_divisible(round(cin * e))
    n = cin * mid + 2 * mid + k * k * mid + 2 * mid + mid * cout + 2 * cout
    if se:
        r = make_divisible(mid // 4)
        n += mid * r + r + r * mid + mid
    return n


def head_params(k: int, n_classes: int) -> int:
    c = STAGE_BASE[k - 1]
    fe, fm = (960, 1280) if k == 5 else (6 * c, 8 * c)
    return c * fe + 2 * fe + fe * fm + fm * n_classes + n_classes


def expected_params(family: str, arch, n_classes: int = N_CLASSES,
                    all_exits: bool = False) -> int:
    """Parameters of the extracted net from the architecture alone (width 1.0)."""
    total = 3 * 16 * 9 + 2 * 16 + (9 * 16 + 2 * 16 + 16 * 16 + 2 * 16)  # stem, first block
    nd = arch.nd or 5
    cin = 16
    for s in range(nd):
        cout = STAGE_BASE[s]
        for j in range(arch.d[s]):
            slot = 4 * s + j
            nw = arch.nw[slot] if arch.nw is not None else NW_MBCONV
            if nw & NW_MBCONV:
                total += mbconv_params(cin, cout, arch.ks[slot], arch.e[slot], SE[s])
            if nw & NW_CONV1X1:
                total += cin * cout + 2 * cout
            if nw & NW_TRANSFORM:
                total += (cin * cout + cout if cin != cout else 0) + 2 * cout
            cin = cout
    exits = range(1, nd + 1) if all_exits and family.startswith("EE") else [nd]
    return total + sum(head_params(k, n_classes) for k in exits)


def test_param_formula_matches_ofa_literal():
    sp = SearchSpace("SE_B", resolutions=[224], widths=[1.0])
    assert expected_params("SE_B", sp.smallest(), 1000) == 3_410_792
    assert expected_params("SE_B", sp.largest(), 1000) == 7_664_760


# ---------------------------------------------------------------- forward / extract / params
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_extract_params(family, nets):
    net = nets(family)
    x = torch.randn(2, 3, RES, RES, generator=torch.Generator().manual_seed(1))
    outputs = []
    with torch.no_grad():
        for arch in archs(family, seed=FAMILIES.index(family)):
            nd = arch.nd or 5
            n_exits = nd if family.startswith("EE") else 1
            y = net(x, arch)
            ys = net(x, arch, all_exits=True)
            assert y.shape == (2, N_CLASSES)
            assert isinstance(ys, list) and len(ys) == n_exits
            assert all(o.shape == (2, N_CLASSES) for o in ys)
            close(ys[-1], y)
            single = net.extract(arch).eval()
            multi = net.extract(arch, all_exits=True).eval()
            close(single(x), y)
            got = multi(x)
            assert isinstance(got, list) and len(got) == n_exits
            for a, b in zip(got, ys, strict=True):
                close(a, b)
            assert count_params(single) == expected_params(family, arch)
            assert count_params(multi) == expected_params(family, arch, all_exits=True)
            outputs.append(y)
    # teeth: the sub-networks compute different functions, on non-trivial logits
    assert outputs[0].abs().mean() > 1e-2
    assert (outputs[0] - outputs[1]).abs().max() > 1e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_static_config_symmetric(family, nets, tmp_path):
    net = nets(family)
    arch = space(family).sample(1, seed=11)[0]
    x = torch.randn(1, 3, RES, RES)
    for all_exits in (False, True):
        sub = net.extract(arch, all_exits=all_exits).eval()
        config = sub.config()
        json.dumps(config)
        rebuilt = build_static(config)
        assert rebuilt.config() == config
        rebuilt.load_state_dict(sub.state_dict())
        path = save_checkpoint(sub, tmp_path / f"m{int(all_exits)}.pt")
        loaded = load_static(path).eval()
        with torch.no_grad():
            want = sub(x)
            for other in (rebuilt.eval(), loaded):
                got = other(x)
                if all_exits:
                    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
                else:
                    assert torch.equal(got, want)
    assert build_supernet(**net.config()).config() == net.config()


def test_single_exit_keys_are_a_subset_of_multi_exit(nets):
    net = nets("EE_DP")
    arch = space("EE_DP").sample(4, seed=3)
    arch = next(a for a in arch if a.nd >= 3)
    single, multi = net.extract(arch), net.extract(arch, all_exits=True)
    s, m = single.state_dict(), multi.state_dict()
    assert set(s) < set(m)
    assert all(torch.equal(s[k], m[k]) for k in s)
    assert {k.split(".")[1] for k in m if k.startswith("early_exits.")} == {
        str(i) for i in range(arch.nd - 1)}


# ---------------------------------------------------------------- gradients
def expected_active(name: str, arch, all_exits: bool) -> bool:
    nd = arch.nd or 5
    if name.startswith(("first_conv.", "blocks.0.")):
        return True
    m = re.match(r"blocks\.(\d+)\.(conv|conv1x1|transform)\.", name)
    if m:
        i, branch = int(m.group(1)) - 1, m.group(2)
        s, j = divmod(i, 4)
        if s >= nd or j >= arch.d[s]:
            return False
        nw = arch.nw[i] if arch.nw is not None else NW_MBCONV
        bit = {"conv": NW_MBCONV, "conv1x1": NW_CONV1X1, "transform": NW_TRANSFORM}[branch]
        if not nw & bit:
            return False
        if name.endswith("7to5_matrix"):
            return arch.ks[i] <= 5
        if name.endswith("5to3_matrix"):
            return arch.ks[i] == 3
        return True
    m = re.match(r"early_exits\.(\d+)\.", name)
    if m:
        k = int(m.group(1)) + 1
        return k == nd or (all_exits and k < nd)
    assert name.startswith(("final_expand_layer.", "feature_mix_layer.", "classifier.")), name
    return nd == 5


def _grad_arch(family: str):
    """A sampled arch with something inactive in every dimension the family has."""
    for arch in space(family).sample(50, seed=5):
        if family.startswith("EE") and arch.nd not in (3, 4):
            continue
        if family.endswith("P"):
            used = {arch.nw[i] for i in arch.active_slots if i < 4 * (arch.nd or 5)}
            if len(used) < 4:
                continue
        if min(arch.d) < 4:
            return arch
    raise AssertionError("no suitable arch sampled")


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_active_params_only(family):
    # eval mode: a conv bias right before a train-mode BN (the transform branch's) gets an
    # exactly-cancelling gradient, which would make "reaches" untestable
    torch.manual_seed(7)
    net = randomize(build_supernet(family, n_classes=N_CLASSES), 7).eval()
    arch = _grad_arch(family)
    x = torch.randn(2, 3, RES, RES, generator=torch.Generator().manual_seed(8))
    for all_exits in ((False, True) if family.startswith("EE") else (False,)):
        net.zero_grad(set_to_none=True)
        out = net(x, arch, all_exits=all_exits)
        outs = out if isinstance(out, list) else [out]
        sum(o.logsumexp(1).sum() for o in outs).backward()
        for name, p in net.named_parameters():
            if expected_active(name, arch, all_exits):
                assert p.grad is not None and p.grad.abs().sum() > 0, name
            else:
                assert p.grad is None, name


# ---------------------------------------------------------------- dense routing (thesis rule)
def _record(blocks):
    seen = []

    def hook(_module, args, output):
        seen.append((args[0].detach().clone(), output.detach().clone()))

    handles = [b.register_forward_hook(hook) for b in blocks]
    return seen, handles


@pytest.mark.parametrize("family", ["SE_D", "EE_DP"])
def test_dense_inputs_follow_the_thesis(family, nets):
    """Thesis ``get_input_tensor``: block 3 gets out2; block 4 gets out3 + out1; a stage of
    depth 4 outputs out4 + out1 + out2, of depth 3 out3 + out1 (blocks 1-based)."""
    net = nets(family)
    arch = {"ks": [5] * 20, "e": [4] * 20, "d": [4, 3, 2, 2, 2], "nd": 5, "nw": [7] * 20}
    if not family.startswith("EE"):
        arch.pop("nd")
    if not family.endswith("P"):
        arch.pop("nw")
    x = torch.randn(1, 3, RES, RES)
    sub = net.extract(arch).eval()
    for model, stage1, stage2, stage3 in (
        (net, [1, 2, 3, 4], [5, 6, 7], [9]),  # super-network slots
        (sub, [1, 2, 3, 4], [5, 6, 7], [8]),  # static blocks (first block is blocks.0)
    ):
        blocks = [model.blocks[i] for i in stage1 + stage2 + stage3]
        seen, handles = _record(blocks)
        with torch.no_grad():
            model(x, arch) if model is net else model(x)
        for h in handles:
            h.remove()
        (i1, o1), (i2, o2), (i3, o3), (i4, o4) = seen[:4]
        (j1, p1), (j2, p2), (j3, p3) = seen[4:7]
        k1 = seen[7][0]
        close(i2, o1)
        close(i3, o2)  # not o1 + o2: o1 already reaches block 3 through block 2's shortcut
        close(i4, o3 + o1)
        close(j1, o4 + o1 + o2)
        close(j3, p2)
        close(k1, p3 + p1)
        assert (i4 - o3).abs().max() > 1e-3  # the dense term is really there


def test_plain_stage_is_a_chain(nets):
    net = nets("SE_B")
    arch = {"ks": [5] * 20, "e": [4] * 20, "d": [4] * 5}
    seen, handles = _record([net.blocks[i] for i in (1, 2, 3, 4, 5)])
    with torch.no_grad():
        net(torch.randn(1, 3, RES, RES), arch)
    for h in handles:
        h.remove()
    for (_, out), (nxt, _) in zip(seen[:-1], seen[1:], strict=True):
        assert torch.equal(out, nxt)


# ---------------------------------------------------------------- parallel branches
def test_parallel_branches_structure(nets):
    net = nets("SE_P")
    first, later = net.blocks[1], net.blocks[2]  # stage 1: stride 2, 16 -> 24; then 24 -> 24
    assert isinstance(first.transform.pool, nn.MaxPool2d) and first.transform.pool.ceil_mode
    assert first.transform.conv.bias is not None  # thesis: plain nn.Conv2d (bias=True)
    assert not hasattr(later.transform, "pool") and not hasattr(later.transform, "conv")
    assert first.conv1x1.conv.stride == (2, 2) and first.conv1x1.conv.bias is None
    x = torch.randn(1, 16, 16, 16)
    with torch.no_grad():
        y1 = first(x, 3, 3, NW_MBCONV)
        y2 = first(x, 3, 3, NW_CONV1X1)
        y4 = first(x, 3, 3, NW_TRANSFORM)
        close(first(x, 3, 3, 7), y1 + y2 + y4)
        z = torch.randn(1, 24, 8, 8)
        # the identity shortcut belongs to the MBConv branch
        close(later(z, 3, 3, NW_MBCONV), later.conv(z, 3, 3) + z)
        close(later(z, 3, 3, NW_CONV1X1 | NW_TRANSFORM),
              later.conv1x1(z) + later.transform(z))


def test_inactive_branches_absent_from_extracted_net(nets):
    net = nets("EE_P")
    arch = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "nd": 2,
            "nw": [NW_CONV1X1, NW_TRANSFORM] + [7] * 18}
    sub = net.extract(arch)
    assert sub.blocks[1].conv is None and sub.blocks[1].transform is None
    assert sub.blocks[2].conv is None and sub.blocks[2].conv1x1 is None
    assert len(sub.blocks) == 1 + 4 and not hasattr(sub, "early_exits")
    keys = sub.state_dict()
    assert not any(".conv.inverted_bottleneck" in k for k in keys if k.startswith("blocks.1."))
    assert sub.final_expand_layer.conv.out_channels == 240  # exit 2's head
    assert count_macs(sub, RES) < count_macs(net.extract({**arch, "nd": 5}), RES)


# ---------------------------------------------------------------- exits
def test_exit_widths():
    net = build_supernet("EE_B", n_classes=N_CLASSES)
    widths = [(h.final_expand_layer.conv.out_channels, h.feature_mix_layer.conv.out_channels)
              for h in net.early_exits]
    widths.append((net.final_expand_layer.conv.out_channels,
                   net.feature_mix_layer.conv.out_channels))
    assert widths == [(144, 192), (240, 320), (480, 640), (672, 896), (960, 1280)]
    wide = build_supernet("EE_B", width_mult=1.2, n_classes=N_CLASSES)
    ofa = build_supernet("SE_B", width_mult=1.2, n_classes=N_CLASSES)
    assert wide.early_exits[0].final_expand_layer.conv.out_channels == 6 * 32
    assert {k: v.shape for k, v in ofa.state_dict().items()} == {
        k: v.shape for k, v in wide.state_dict().items() if not k.startswith("early_exits.")}


def test_ensemble_and_exit_weights(nets):
    net = nets("EE_D")
    arch = next(a for a in space("EE_D").sample(20, seed=2) if a.nd == 3)
    multi = net.extract(arch, all_exits=True).eval()
    assert multi.exit_weights == list(OFAV2_EXIT_WEIGHTS[:3])
    x = torch.randn(2, 3, RES, RES)
    with torch.no_grad():
        outs = multi(x)
        w = torch.tensor(OFAV2_EXIT_WEIGHTS[:3])
        w = w / w.sum()
        close(multi.ensemble(x), sum(wi * o for wi, o in zip(w, outs, strict=True)))
        close(multi.ensemble(x, [0, 0, 1]), outs[2])
    single = net.extract(arch).eval()
    assert single.exit_weights == [1.0]
    se = nets("SE_B").extract(space("SE_B").largest(), all_exits=True).eval()
    with torch.no_grad():
        got = se(x)
    assert isinstance(got, list) and len(got) == 1


def test_replace_classifier_every_exit():
    net = build_supernet("EE_P", n_classes=1000)
    net.replace_classifier(7)
    assert all(h.classifier.linear.out_features == 7 for h in net.early_exits)
    assert net.classifier.linear.out_features == 7 and net.config()["n_classes"] == 7
    arch = space("EE_P").sample(1, seed=0)[0]
    multi = net.extract(arch, all_exits=True)
    multi.replace_classifier(3)
    assert all(o.shape == (1, 3) for o in multi.eval()(torch.randn(1, 3, RES, RES)))
    assert build_static(multi.config()).n_classes == 3


# ---------------------------------------------------------------- arch validation
def test_arch_validation():
    ee = build_supernet("EE_B", n_classes=N_CLASSES)
    p = build_supernet("SE_P", n_classes=N_CLASSES)
    b = build_supernet("SE_B", n_classes=N_CLASSES)
    base = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5}
    x = torch.randn(1, 3, RES, RES)
    with pytest.raises(ValueError, match="needs the net depth nd"):
        ee(x, base)
    with pytest.raises(ValueError, match="nd=6"):
        ee(x, {**base, "nd": 6})
    with pytest.raises(ValueError, match="needs the branch masks nw"):
        p(x, base)
    with pytest.raises(ValueError, match="nw=8"):
        p(x, {**base, "nw": [8] * 20})
    with pytest.raises(ValueError, match="no parallel branches"):
        b(x, {**base, "nw": [3] * 20})
    with pytest.raises(ValueError, match="no early exits"):
        b(x, {**base, "nd": 2})
    with pytest.raises(ValueError, match="arch is of family 'EE_B'"):
        b(x, space("EE_B").smallest())
    # skipped slots may hold anything
    junk = {**base, "nw": [1] * 20}
    junk["nw"][3] = 0
    with torch.no_grad():
        assert torch.equal(p.eval()(x, junk), p(x, {**base, "nw": [1] * 20}))
    # a sampled arch of a family without nd / nw gets them filled in (last exit, MBConv only)
    arch = space("SE_B").sample(1, seed=0)[0]
    assert arch.nd is None and arch.nw is None
    assert b.resolve_arch(arch)["nd"] == 5 and b.resolve_arch(arch)["nw"] == [NW_MBCONV] * 20
    # an EE arch carries its own nd (and no nw); resolving keeps it
    arch = space("EE_B").sample(1, seed=0)[0]
    assert arch.nd in range(1, 6) and arch.nw is None
    assert ee.resolve_arch(arch)["nd"] == arch.nd


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_refuses_other_family_or_width(tmp_path):
    path = save_checkpoint(build_supernet("EE_D", n_classes=N_CLASSES), tmp_path / "ee_d.pt")
    with pytest.raises(UserError) as err:
        load_checkpoint(build_supernet("SE_B", n_classes=N_CLASSES), path)
    assert str(err.value) == ("checkpoint is for family EE_D, width_mult=1.0; this "
                              "super-network is SE_B, width_mult=1.0")
    wide = save_checkpoint(build_supernet("SE_DP", width_mult=1.2, n_classes=N_CLASSES),
                           tmp_path / "w12.pt")
    with pytest.raises(UserError, match="family SE_DP, width_mult=1.2; this super-network "
                                        "is SE_DP, width_mult=1.0"):
        load_checkpoint(build_supernet("SE_DP", n_classes=N_CLASSES), wide)


def test_supernet_checkpoint_round_trip(tmp_path, nets):
    net = nets("EE_DP")
    path = save_checkpoint(net, tmp_path / "net.pt", extra={"phase": "expand"})
    again = load_supernet(path).eval()
    assert again.config() == net.config()
    arch = space("EE_DP").sample(1, seed=9)[0]
    x = torch.randn(1, 3, RES, RES)
    with torch.no_grad():
        for a, b in zip(net(x, arch, all_exits=True), again(x, arch, all_exits=True),
                        strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("family", FAMILIES)
def test_module_mac_counter_equals_flop_counter(family):
    """The evaluator's fast MAC count (hooks on Conv2d/Linear) equals FlopCounterMode's on
    every family, single- and multi-exit, at two resolutions."""
    from natv2.measure.counting import ModuleMacCounter, count_macs_by_modules

    torch.manual_seed(0)
    net = build_supernet(family, n_classes=10)
    space = SearchSpace(family=family, resolutions=[16, 24])
    for arch in [space.smallest(), space.largest(), *space.sample(3, seed=1)]:
        for all_exits in (False, True):
            sub = net.extract(arch, all_exits=all_exits)
            for r in (16, 24):
                expected = count_macs(sub, r)
                assert count_macs_by_modules(sub, r) == expected, (family, all_exits, r)
                with torch.no_grad(), ModuleMacCounter(sub) as counter:  # a batch of 3
                    sub(torch.randn(3, 3, r, r))
                assert counter.per_image(3) == expected
