"""count_params / count_macs against the reference OFA package (acceptance numbers)."""

from __future__ import annotations

import pytest
import torch

from natv2.measure import count_macs, count_params

networks = pytest.importorskip("ofa.imagenet_classification.elastic_nn.networks")
ofa_utils = pytest.importorskip("ofa.utils")


@pytest.fixture(scope="module")
def ref():
    torch.manual_seed(0)
    return networks.OFAMobileNetV3(
        n_classes=1000,
        width_mult=1.0,
        ks_list=[3, 5, 7],
        expand_ratio_list=[3, 4, 6],
        depth_list=[2, 3, 4],
    )


def test_largest_and_smallest(ref):
    ref.set_max_net()
    sub = ref.get_active_subnet(preserve_weight=True)
    assert count_macs(sub, 224) == 566_170_656
    assert count_params(sub) == 7_664_760
    ref.set_active_subnet(ks=3, e=3, d=2)
    sub = ref.get_active_subnet(preserve_weight=True)
    assert count_macs(sub, 224) == 121_278_672
    assert count_params(sub) == 3_410_792


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_subnets_match_ofa_counter(ref, seed):
    # OFA's count_net_flops returns MACs (its "flops" are multiply-accumulates), summed in
    # float32 -- hence the relative tolerance rather than equality.
    torch.manual_seed(seed)
    ref.sample_active_subnet()
    sub = ref.get_active_subnet(preserve_weight=True)
    r = 224 if seed else 160  # one other resolution too
    ours = count_macs(sub, r)
    theirs = ofa_utils.count_net_flops(sub, (1, 3, r, r))
    assert abs(ours - theirs) <= 1e-6 * theirs
    assert count_params(sub) == ofa_utils.count_parameters(sub)


def test_recalibrate_bn_agrees_with_ofa_set_running_statistics(ref):
    import copy

    from ofa.imagenet_classification.elastic_nn.utils import set_running_statistics

    from natv2.measure import recalibrate_bn

    torch.manual_seed(3)
    ref.sample_active_subnet()
    ours = ref.get_active_subnet(preserve_weight=True)
    theirs = copy.deepcopy(ours)
    # the thesis' shape of a subset: full batches and a short last one (960 = 9 x 100 + 60)
    batches = [torch.randn(n, 3, 32, 32) * 2 + 1 for n in (16, 16, 5)]
    recalibrate_bn(ours, batches, torch.device("cpu"))
    set_running_statistics(theirs, [(b, torch.zeros(len(b))) for b in batches])
    bns = [
        (a, b)
        for a, b in zip(ours.modules(), theirs.modules(), strict=True)
        if isinstance(a, torch.nn.BatchNorm2d)
    ]
    assert len(bns) > 20
    for a, b in bns:
        assert torch.allclose(a.running_mean, b.running_mean, rtol=1e-4, atol=1e-6)
        assert torch.allclose(a.running_var, b.running_var, rtol=1e-4, atol=1e-6)
