"""natv2.measure.latency_table: per-piece latency lookup table (enumeration, prediction, files)."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from natv2.errors import UserError
from natv2.measure import count_macs
from natv2.measure import latency_table as lt
from natv2.measure.latency import Latency, LatencySettings, measure_latency
from natv2.space import SearchSpace
from natv2.space.arch import FAMILIES
from natv2.supernet import build_supernet

RES = (16, 20)
SMALL = {"ks_list": (3,), "expand_list": (3,)}  # one block code (seven for P families)
TORCH = LatencySettings("torch", threads=1, batch=1, warmup=0, runs=2)


def _space(family, **lists):
    return SearchSpace(family, resolutions=RES, **lists)


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return build_supernet("SE_B", n_classes=10, **SMALL).eval()


@pytest.fixture(scope="module")
def small_table(small_net):
    return lt.build_latency_table(_space("SE_B", **SMALL), small_net, RES, TORCH)


# ------------------------------------------------------------------ enumeration
@pytest.mark.parametrize("family", FAMILIES)
def test_every_piece_of_random_architectures_is_enumerated(family):
    # P families: two kernels x two expands x 7 masks = 28 codes; the others all 9 codes
    lists = {"ks_list": (3, 7), "expand_list": (3, 6)} if family.endswith("P") else {}
    net = build_supernet(family, n_classes=10)
    space = _space(family, **lists)
    keys = {p.key for p in lt.enumerate_pieces(space, net, RES)}
    archs = (space.sample(60, seed=1) + space.sample(60, seed=2, method="balanced")
             + [space.smallest(), space.largest()])
    for arch in archs:
        for all_exits in (False, True):
            for p in lt.piece_inputs(net, arch, all_exits=all_exits):
                assert p.key in keys, (family, str(arch), all_exits, p.label)


def test_enumeration_is_deterministic_and_distinct():
    net = build_supernet("SE_B", n_classes=10)
    space = _space("SE_B")
    one = [p.key for p in lt.enumerate_pieces(space, net, [16])]
    assert one == [p.key for p in lt.enumerate_pieces(space, net, [16])]
    assert len(set(one)) == len(one)
    # stem + fixed first block + 5 stages x (first slot, later slots) x 9 codes + 5 head links
    assert len(one) == 2 + 5 * 2 * 9 + 5
    both = lt.enumerate_pieces(space, net, [20, 16])
    assert [p.key for p in both][: len(one)] == one  # resolutions ascending
    with pytest.raises(UserError, match="resolutions"):
        lt.enumerate_pieces(space, net, [0])


def test_a_width_the_space_lacks_is_refused():
    net = build_supernet("SE_B", n_classes=10, width_mult=1.2)
    with pytest.raises(UserError, match=r"width 1\.2.*\[1\.0\]"):
        lt.enumerate_pieces(_space("SE_B"), net, RES)


def _fake_measure(model, resolution, settings, device="cpu", sample_shape=None):
    """A deterministic 'latency': the MACs of one example through ``model``."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *sample_shape))
    return Latency(counter.get_total_flops() // 2, 0.0, 1)


@pytest.mark.parametrize("family", ["SE_D", "EE_B", "EE_DP"])
def test_pieces_are_the_whole_network_multi_exit_heads_included(family, monkeypatch):
    """With a piece's MACs as its 'latency', predict is the network's MAC count: the pieces are
    exactly what the extracted network runs, early-exit heads included when all_exits."""
    monkeypatch.setattr(lt, "measure_latency", _fake_measure)
    net = build_supernet(family, n_classes=10, **SMALL).eval()
    space = _space(family, **SMALL)
    table = lt.build_latency_table(space, net, RES, TORCH)
    for arch in space.sample(6, seed=4) + [space.largest()]:
        for all_exits in (False, True):
            sub = net.extract(arch, all_exits=all_exits)
            assert table.predict(arch, net, all_exits) == count_macs(sub, arch.resolution)
    if space.has_nd:
        arch = space.largest()  # nd = 5: four early exits
        heads = [p for p in lt.piece_inputs(net, arch, all_exits=True)
                 if (p.piece.name or "").startswith("early_exits.")]
        assert {p.piece.name.split(".")[1] for p in heads} == {"0", "1", "2", "3"}
        extra = sum(table.entries[p.key][0] for p in heads)
        assert extra > 0
        assert table.predict(arch, net, True) == table.predict(arch, net, False) + extra


# ------------------------------------------------------------------ table and prediction
def test_the_table_holds_every_piece_and_predict_is_their_sum(small_net, small_table):
    space = _space("SE_B", **SMALL)
    keys = [p.key for p in lt.enumerate_pieces(space, small_net, RES)]
    assert sorted(small_table.entries) == sorted(keys)
    assert all(m > 0 and math.isfinite(m) and q >= 0 for m, q in small_table.entries.values())
    assert small_table.resolutions == RES and small_table.family == "SE_B"
    assert small_table.settings == {**TORCH.as_dict(), "device": "cpu"}
    assert small_table.latency_settings == TORCH and small_table.machine["torch"]
    for arch in space.sample(5, seed=0):
        expected = sum(small_table.entries[p.key][0] for p in lt.piece_inputs(small_net, arch))
        assert small_table.predict(arch, small_net) == expected
        assert small_table.predict(arch, small_net) == small_table.predict(arch, small_net)
    # the largest network runs the smallest's pieces and more (one code: same keys)
    one_res = SearchSpace("SE_B", resolutions=(20,), **SMALL)
    small, large = one_res.smallest(), one_res.largest()
    assert small_table.predict(large, small_net) > small_table.predict(small, small_net)


def test_the_prediction_follows_measured_latency():
    """Loose: a much larger network (more blocks, larger kernels and inputs) is both predicted
    and measured slower than a much smaller one."""
    net = build_supernet("SE_B", n_classes=10).eval()
    space = _space("SE_B")
    settings = LatencySettings("torch", threads=1, batch=1, warmup=1, runs=5)
    table = lt.build_latency_table(space, net, RES, LatencySettings("torch", 1, 1, 1, 3))
    small, large = space.smallest(), space.largest()
    assert (small.resolution, large.resolution) == RES
    predicted = [table.predict(a, net) for a in (small, large)]
    measured = [measure_latency(net.extract(a).eval(), a.resolution, settings).median_ms
                for a in (small, large)]
    assert predicted[1] > predicted[0] and measured[1] > measured[0], (predicted, measured)
    err = lt.table_error(predicted, measured)
    assert err["n"] == 2 and err["kendall_tau"] == 1.0 and err["mape"] >= 0


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_both_backends_build_a_table(small_net, backend):
    settings = LatencySettings(backend, threads=1, batch=2, warmup=0, runs=2)
    calls = []
    table = lt.build_latency_table(_space("SE_B", **SMALL), small_net, [16], settings,
                                   progress=lambda done, total: calls.append((done, total)))
    n = len(table.entries)
    assert calls == [(i, n) for i in range(1, n + 1)] and n == 2 + 5 * 2 + 5
    assert table.settings["backend"] == backend and table.settings["batch"] == 2
    assert ("onnxruntime" in table.machine) == (backend == "onnxruntime")
    assert table.predict(_space("SE_B", **SMALL).smallest(), small_net) > 0  # at 16 px


def test_a_missing_piece_is_a_one_line_error(small_net, small_table):
    arch = SearchSpace("SE_B", resolutions=(24,), **SMALL).smallest()
    with pytest.raises(UserError) as info:
        small_table.predict(arch, small_net)
    msg = str(info.value)
    assert "\n" not in msg and "first_conv at 3x24x24" in msg and "resolutions 16, 20" in msg
    wide = SearchSpace("SE_B", resolutions=RES, ks_list=(5,), expand_list=(3,)).smallest()
    net = build_supernet("SE_B", n_classes=10, ks_list=(3, 5), expand_list=(3,))
    with pytest.raises(UserError, match=r"no entry for piece blocks\.1 at 16x8x8"):
        small_table.predict(wide, net)


# ------------------------------------------------------------------ files
def test_write_read_round_trip(small_net, small_table, tmp_path):
    path = lt.write_table(tmp_path / "sub" / "lut.json", small_table)
    data = json.loads(path.read_text())
    assert data["format"] == lt.TABLE_FORMAT and data["version"] == lt.TABLE_VERSION
    back = lt.read_table(path)
    assert back == small_table
    arch = _space("SE_B", **SMALL).sample(1, seed=3)[0]
    assert back.predict(arch, small_net) == small_table.predict(arch, small_net)


def _mutations():
    yield "not JSON", None, "not valid JSON"
    yield "format", lambda d: d.update(format="other"), "format is not 'natv2-latency-table'"
    yield "version", lambda d: d.update(version=2), "version 2"
    yield "family", lambda d: d.update(family="XX"), "family 'XX'"
    yield "resolutions", lambda d: d.update(resolutions=[16, "20"]), "resolutions"
    yield "backend", lambda d: d["settings"].update(backend="tvm"), "settings"
    yield "runs", lambda d: d["settings"].update(runs=0), "runs, batch and threads must be >= 1"
    yield "entry", lambda d: next(iter(d["entries"].values())).update(median_ms=-1.0), "entry"
    yield "empty", lambda d: d.update(entries={}), "no entries"


@pytest.mark.parametrize(("what", "mutate", "expected"), list(_mutations()),
                         ids=[m[0] for m in _mutations()])
def test_a_bad_table_file_is_a_one_line_error(small_table, tmp_path, what, mutate, expected):
    path = tmp_path / "lut.json"
    if mutate is None:
        path.write_text('{"format": "natv2-latency-table", "entr')
    else:
        data = small_table.to_dict()
        mutate(data)
        path.write_text(json.dumps(data))
    with pytest.raises(UserError) as info:
        lt.read_table(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and expected in msg, msg


def test_a_pickle_or_missing_file_is_refused_without_unpickling(small_table, tmp_path):
    path = tmp_path / "lut.pkl"
    path.write_bytes(pickle.dumps(small_table))
    with pytest.raises(UserError, match="not valid JSON"):
        lt.read_table(path)
    with pytest.raises(UserError, match=r"cannot read latency table .*missing\.json"):
        lt.read_table(tmp_path / "missing.json")


# ------------------------------------------------------------------ table_error
def test_table_error_on_known_values():
    err = lt.table_error([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 4.0, 4.0])
    assert err["n"] == 4 and err["mape"] == pytest.approx(100 * (0.5 + 0 + 0.25 + 0) / 4)
    assert err["kendall_tau"] == pytest.approx(4 / math.sqrt(6 * 4))  # tau-b, two ties
    assert lt.table_error([3.0, 2.0, 1.0], [1.0, 2.0, 3.0])["kendall_tau"] == pytest.approx(-1.0)
    assert lt.table_error([2.0], [1.0]) == {"mape": 100.0, "kendall_tau": None, "n": 1}
    assert lt.table_error([1.0, 2.0], [3.0, 3.0])["kendall_tau"] is None  # constant measured
    assert lt.table_error([5.0, 5.0], [1.0, 2.0])["kendall_tau"] is None  # constant predicted
    with pytest.raises(UserError, match="as many"):
        lt.table_error([1.0], [1.0, 2.0])
    with pytest.raises(UserError, match="> 0"):
        lt.table_error([1.0, 2.0], [0.0, 2.0])
