"""natv2.measure.cost: exact params / MACs without extraction, memoised latency."""

from __future__ import annotations

import numpy as np
import pytest

from natv2.measure import count_macs, count_params
from natv2.measure.cost import CostModel, LatencyModel, cheap_objectives_fn
from natv2.measure.latency import LatencySettings
from natv2.space import SearchSpace
from natv2.supernet import build_supernet


@pytest.fixture(scope="module")
def net():
    return build_supernet("SE_B", n_classes=10)


SPACE = SearchSpace("SE_B", resolutions=[16, 24], widths=[1.0])


def test_counts_equal_extract_and_count(net):
    cost = CostModel(net)
    archs = SPACE.sample(28, seed=3, method="balanced") + [SPACE.smallest(), SPACE.largest()]
    for arch in archs:
        sub = net.extract(arch)
        assert cost.params(arch) == count_params(sub)
        for r in (16, 24):
            assert cost.macs(arch, r) == count_macs(sub, r), (SPACE.encode(arch), r)
    # the whole-network fallback (used for configs with parts we cannot split) agrees too
    arch = archs[0]
    whole = cost._whole(net.static_config(arch), 24)
    assert whole == (cost.params(arch), cost.macs(arch, 24))


def test_width_12_and_memo(net):
    wide = build_supernet("SE_B", width_mult=1.2, n_classes=7)
    space = SearchSpace("SE_B", resolutions=[32], widths=[1.2])
    cost = CostModel(wide)
    arch = space.sample(1, seed=0)[0]
    sub = wide.extract(arch)
    assert cost.counts(arch) == (count_params(sub), count_macs(sub, 32))
    n_pieces = len(cost._params)
    assert cost.counts(arch) == cost.counts(arch) and len(cost._params) == n_pieces


def test_cheap_fn_and_latency_memo(net):
    cost = CostModel(net)
    calls = []

    class Spy:
        def extract(self, arch):
            calls.append(arch)
            return net.extract(arch)

    latency = LatencyModel(Spy(), "cpu", LatencySettings("torch", threads=1, batch=1, warmup=0, runs=1))
    fn = cheap_objectives_fn(SPACE, ["params", "macs", "latency"], cost, latency)
    archs = SPACE.sample(2, seed=1)
    X = np.array([SPACE.to_vector(a) for a in archs] * 2)
    F = fn(X)
    assert F.shape == (4, 3) and (F[:2] == F[2:]).all() and (F[:, 2] > 0).all()
    assert len(calls) == 2  # measured once per distinct architecture
    assert F[0, 0] == cost.params(archs[0]) and F[1, 1] == cost.macs(archs[1])
    with pytest.raises(ValueError, match="latency"):
        cheap_objectives_fn(SPACE, ["latency"], cost)
