"""Stage latency_table: the lookup table the search reads its latency objective from, the
stage graph around it, and each round's table error on its measured candidates."""

from __future__ import annotations

import json

import pytest
from test_search_stage import _install, make_cfg, supernet_file  # noqa: F401 (fixture)

from natv2.config import validate
from natv2.errors import UserError
from natv2.layout import Layout
from natv2.measure.latency_table import read_table
from natv2.pipeline.dag import stages
from natv2.pipeline.latency_stage import load_latency_table, run_latency_table
from natv2.pipeline.search_stage import run_init_archive, run_search_round
from natv2.search import read_archive
from natv2.space import SearchSpace

LATENCY = {"backend": "torch", "runs": 2, "warmup": 0, "threads": 1}


def _cfg(root, **latency):
    cfg = dict(make_cfg(root, objectives=["params", "latency"], rounds=1))
    cfg["latency"] = {**LATENCY, **latency}
    return validate(cfg)


def test_the_graph_has_the_table_stage_only_with_a_latency_objective(tmp_path):
    cfg = _cfg(tmp_path)
    st = {s.name: s for s in stages(cfg)}
    table = str(Layout.from_config(cfg).latency_table)
    assert st["latency_table"].outs == (table,) and st["latency_table"].deps == (str(Layout.from_config(cfg).supernet),)
    assert table in st["search_round_01"].deps and table not in st["init_archive"].deps
    assert "latency_table" not in {s.name for s in stages(_cfg(tmp_path, table=False))}
    assert "latency_table" not in {s.name for s in stages(make_cfg(tmp_path))}
    sharded = {s.name: s for s in stages(validate({**dict(cfg), "search": {**cfg["search"], "shards": 2}}))}
    assert table in sharded["propose_01"].deps
    with pytest.raises(UserError, match="does not use a latency table"):
        run_latency_table(make_cfg(tmp_path))


@pytest.fixture(scope="module")
def searched(supernet_file, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("lut")
    _install(supernet_file, root)
    cfg = _cfg(root)
    table = run_latency_table(cfg, show_progress=False)
    run_init_archive(cfg, show_progress=False)
    stats = run_search_round(cfg, 1, show_progress=False)
    return root, cfg, table, stats


def test_round_records_the_tables_error_on_its_measured_candidates(searched):
    from natv2.supernet import load_supernet

    root, cfg, table, stats = searched
    layout = Layout.from_config(cfg)
    assert read_table(layout.latency_table).entries == table.entries
    lut = stats["latency_table"]
    cand = read_archive(layout.candidates(1))
    cand = cand[cand["step"] == "evaluate"] if "step" in cand.columns else cand
    assert lut["n"] == len(cand) == len(lut["points"]) == cfg["search"]["candidates"]
    space = SearchSpace(family="SE_B", resolutions=[16, 24], widths=[1.0])
    net = load_supernet(layout.supernet)
    for (pred, measured), arch, lat in zip(lut["points"], cand["arch"], cand["latency_ms"], strict=True):
        assert pred == pytest.approx(table.predict(space.decode(arch), net), abs=1e-6)
        assert measured == pytest.approx(lat, abs=1e-6)
    assert lut["mape"] >= 0 and (lut["kendall_tau"] is None or -1 <= lut["kendall_tau"] <= 1)
    assert json.loads(layout.stats(1).read_text())["latency_table"] == lut


def test_a_table_built_with_other_settings_is_refused(searched):
    root, cfg, _, _ = searched
    other = validate({**dict(cfg), "latency": {**cfg["latency"], "runs": 3}})
    with pytest.raises(UserError, match="rerun `natv2 latency-table`") as err:
        load_latency_table(other, "cpu")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="rerun `natv2 search-round --round 1`|rerun `natv2 latency-table`"):
        run_search_round(other, 1, show_progress=False)
    (Layout.from_config(cfg).latency_table).unlink()
    with pytest.raises(UserError, match="run `natv2 latency-table` first"):
        load_latency_table(cfg, "cpu")
