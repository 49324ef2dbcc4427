"""Warm start of OFAv2 families from OFA MobileNetV3 weights (natv2.supernet.warm_start)."""

from __future__ import annotations

import re

import pytest
import torch
from randomized import randomize

from natv2.errors import UserError
from natv2.space import SearchSpace
from natv2.supernet import (
    FAMILIES,
    build_supernet,
    save_checkpoint,
    warm_start_from_ofa,
)

N_CLASSES = 10
RES = 32


@pytest.fixture(scope="module")
def ofa():
    """An OFA MobileNetV3 super-network with random weights (our SE_B, which equals OFA's
    reference key by key and output by output: tests/test_supernet.py)."""
    torch.manual_seed(0)
    return randomize(build_supernet("SE_B", n_classes=N_CLASSES), 0).eval()


def old_layout(state_dict: dict) -> dict:
    return {re.sub(r"^(blocks\.\d+)\.conv\.", r"\1.mobile_inverted_conv.", k): v
            for k, v in state_dict.items()}


def mbconv_only(arch, family: str) -> dict:
    """``arch`` with nd = 5 and every branch mask = MBConv only, as a dict for ``family``."""
    a = arch.to_ofa()
    if family.startswith("EE"):
        a["nd"] = 5
    if family.endswith("P"):
        a["nw"] = [1] * 20
    return a


@pytest.mark.parametrize("family", FAMILIES)
def test_copies_every_shared_tensor(family, ofa):
    torch.manual_seed(1)
    net = build_supernet(family, n_classes=N_CLASSES)
    fresh = {k: v.clone() for k, v in net.state_dict().items()}
    report = warm_start_from_ofa(net, {"state_dict": ofa.state_dict()})
    source = ofa.state_dict()
    assert report["copied"] == len(source) and report["skipped"] == []
    n_blocks = 20
    expected_new = []
    if family.endswith("P"):
        expected_new += [f"blocks.{i}.{b}" for i in range(1, n_blocks + 1)
                         for b in ("conv1x1", "transform")]
    if family.startswith("EE"):
        expected_new += [f"early_exits.{k}" for k in range(4)]
    assert report["new_modules"] == expected_new
    state = net.state_dict()
    for key, value in state.items():
        if key in source:
            assert torch.equal(value, source[key]), key
        else:
            assert key.startswith(tuple(f"{m}." for m in expected_new)), key
            assert torch.equal(value, fresh[key]), key  # new parts keep their fresh init


@pytest.mark.parametrize("family", ["EE_B", "SE_P", "EE_P"])
def test_same_logits_as_ofa(family, ofa, tmp_path):
    path = tmp_path / "ofa_old_layout.pth"
    torch.save({"state_dict": old_layout(ofa.state_dict()), "epoch": 1}, path)
    net = build_supernet(family, n_classes=N_CLASSES)
    report = warm_start_from_ofa(net, path)
    assert report["copied"] == len(ofa.state_dict())
    net.eval()
    sp = SearchSpace(family, resolutions=[RES], widths=[1.0])
    x = torch.randn(2, 3, RES, RES, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for arch in [sp.largest(), sp.smallest(), *sp.sample(2, seed=3)]:
            a = mbconv_only(arch, family)
            want = ofa(x, arch.to_ofa())
            assert want.abs().mean() > 1e-2
            torch.testing.assert_close(net(x, a), want, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(net.extract(a).eval()(x), want, rtol=1e-5, atol=1e-5)


def test_dense_family_gets_every_tensor_but_computes_another_function(ofa):
    net = build_supernet("SE_D", n_classes=N_CLASSES)
    assert warm_start_from_ofa(net, ofa.state_dict())["new_modules"] == []
    net.eval()
    arch = {"ks": [5] * 20, "e": [4] * 20, "d": [4] * 5}
    x = torch.randn(1, 3, RES, RES)
    with torch.no_grad():
        assert (net(x, arch) - ofa(x, arch)).abs().max() > 1e-3
        two = {"ks": [5] * 20, "e": [4] * 20, "d": [2] * 5}  # depth 2: no dense term at all
        torch.testing.assert_close(net(x, two), ofa(x, two), rtol=1e-5, atol=1e-5)


def test_other_width_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "w12.pth"
    torch.save({"state_dict": build_supernet("SE_B", width_mult=1.2,
                                             n_classes=N_CLASSES).state_dict()}, path)
    with pytest.raises(UserError, match=r"shape mismatch for key 'first_conv\.conv\.weight': "
                                        r"checkpoint \(24, 3, 3, 3\) vs network \(16, 3, 3, 3\)"):
        warm_start_from_ofa(build_supernet("EE_DP", n_classes=N_CLASSES), path)


def test_checkpoints_that_are_not_ofa(tmp_path, ofa):
    ours = save_checkpoint(build_supernet("EE_B", n_classes=N_CLASSES), tmp_path / "ee.pt")
    with pytest.raises(UserError, match="for family EE_B"):
        warm_start_from_ofa(build_supernet("EE_B", n_classes=N_CLASSES), ours)
    se_b = save_checkpoint(ofa, tmp_path / "se_b.pt")  # our format, OFA's layout: accepted
    assert warm_start_from_ofa(build_supernet("EE_D", n_classes=N_CLASSES), se_b)["copied"] > 0
    sd = dict(ofa.state_dict())
    sd["blocks.3.conv.extra.weight"] = torch.zeros(1)
    with pytest.raises(UserError, match=r"unexpected key 'blocks\.3\.conv\.extra\.weight'"):
        warm_start_from_ofa(build_supernet("SE_P", n_classes=N_CLASSES), sd)
    old = {k: v for k, v in ofa.state_dict().items() if not k.endswith("num_batches_tracked")}
    report = warm_start_from_ofa(build_supernet("SE_P", n_classes=N_CLASSES), old)
    assert report["copied"] == len(old)
    assert report["skipped"] and all(k.endswith("num_batches_tracked") for k in report["skipped"])


def test_against_ofa_reference_package():
    """The same, against the ``ofa`` package itself (skipped when it is not installed)."""
    nets = pytest.importorskip("ofa.imagenet_classification.elastic_nn.networks")
    torch.manual_seed(4)
    ref = nets.OFAMobileNetV3(n_classes=N_CLASSES, width_mult=1.0, ks_list=[3, 5, 7],
                              expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    randomize(ref, 4).eval()
    net = build_supernet("EE_P", n_classes=N_CLASSES)
    warm_start_from_ofa(net, {"state_dict": ref.state_dict()})
    net.eval()
    arch = SearchSpace("EE_P", resolutions=[RES], widths=[1.0]).sample(1, seed=5)[0]
    x = torch.randn(1, 3, RES, RES)
    with torch.no_grad():
        ref.set_active_subnet(**arch.to_ofa())
        torch.testing.assert_close(net(x, mbconv_only(arch, "EE_P")), ref(x),
                                   rtol=1e-4, atol=1e-4)
