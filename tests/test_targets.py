"""Deployment targets: parsing, the search constraint, one slot per target, model cards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_search_evolution import SPACE, _cheap2, _size, fitted  # noqa: F401 (fixture)
from test_selection import archive

from natv2.cards import build_card, card_markdown, target_verdict
from natv2.config import ConfigError, validate
from natv2.errors import UserError
from natv2.search.evolution import run_search
from natv2.selection import choose_for_target, select_for_finetune, select_slots
from natv2.targets import Target, constraint_fn, needs_latency, param_limits, parse_targets

# ------------------------------------------------------------------------------- parsing


def test_parse_names_and_limits():
    t = parse_targets([{"params": 1e6}, {"latency_ms": 2.5}, {"macs": 5e7, "name": "edge"}])
    assert [x.name for x in t] == ["params <= 1M", "latency_ms <= 2.5 ms", "edge"]
    assert [x.metric for x in t] == ["params", "latency_ms", "macs"]
    assert [x.limit for x in t] == [1e6, 2.5, 5e7]
    assert t[1].column == "latency_ms" and needs_latency(t) and not needs_latency(t[::2])
    assert t[0].meets(1e6) and not t[0].meets(1e6 + 1) and not t[0].meets(None)
    assert not t[0].meets(float("nan"))
    assert t[0].violation(2e6) == pytest.approx(1.0)
    assert param_limits({"targets": [{"params": 3e6}, {"macs": 1}, {"params": 1e6}]}) == [1000000, 3000000]


@pytest.mark.parametrize("entries, message", [
    ([{"flops": 3}], "unknown metric 'flops'; valid: params, macs, latency_ms"),
    ([{"params": 1, "macs": 2}], "must name exactly one of params, macs, latency_ms"),
    ([{"name": "x"}], "must name exactly one"),
    ([{"params": 0}], "params: 0 must be a positive number"),
    ([{"params": -2.0}], "must be a positive number"),
    ([{"params": float("inf")}], "must be a positive number"),
    ([{"params": True}], "must be a positive number"),
    ([{"params": 5}, {"params": 5}], "name 'params <= 5' is used twice"),
    (["params"], "must be a mapping"),
])
def test_bad_targets_are_one_line_errors(entries, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        parse_targets(entries)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError):
        Target("latency", 1.0, "x")


@pytest.mark.parametrize("raw, message", [
    ({"targets": [{"flops": 3}]}, "unknown config key 'flops' in 'targets.0'; allowed: latency_ms, macs, name, params"),
    ({"targets": [{"params": -1}]}, "targets.0.params"),
    ({"targets": [{}]}, "targets.0"),
    ({"report": {"param_budgets": [1000]}}, "'report.param_budgets' ([1000]) was replaced by targets"),
    ({"finetune": {"slots": 1}, "targets": [{"params": 1e6}, {"macs": 1e7}]},
     "'finetune.slots': 1 leaves no slot for some of the 2 targets"),
])
def test_config_errors(raw, message):
    with pytest.raises(UserError) as err:
        validate(raw)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ConfigError | UserError)


# ---------------------------------------------------------------------------- constraint


def test_constraint_is_the_smallest_violation_over_the_targets():
    targets = parse_targets([{"params": 10}, {"macs": 100}])
    G = constraint_fn(targets, ["params", "macs"])
    C = np.array([[5, 500], [20, 50], [20, 500], [10, 100]], dtype=float)
    np.testing.assert_allclose(G(C)[:, 0], [-0.5, -0.5, 1.0, 0.0])
    assert G(C).shape == (4, 1)
    # a target the evolution cannot see (latency searched on params): no constraint at all
    assert constraint_fn(parse_targets([{"params": 10}, {"latency_ms": 1}]), ["params"]) is None
    assert constraint_fn((), ["params"]) is None
    Gl = constraint_fn(parse_targets([{"latency_ms": 2}]), ["params", "latency"])
    np.testing.assert_allclose(Gl(np.array([[1e6, 3.0]]))[:, 0], [0.5])


def test_constrained_search_keeps_the_population_within_the_targets(fitted):  # noqa: F811
    A, pred = fitted
    size = _size(A)
    limit = float(np.percentile(size, 30))  # most of the space is outside the budget
    G = constraint_fn(parse_targets([{"params": limit}]), ["params", "macs"])
    kw = dict(pop_size=20, n_gen=6, seed=3)
    X, F = run_search(SPACE, pred, _cheap2, 2, **kw)
    Xc, Fc = run_search(SPACE, pred, _cheap2, 2, constraint=G, **kw)
    assert (F[:, 1] > limit).sum() > 0  # unconstrained, the front goes beyond the budget
    assert (Fc[:, 1] <= limit).all()  # feasible first: every survivor meets it
    Xc2, _ = run_search(SPACE, pred, _cheap2, 2, constraint=G, **kw)
    np.testing.assert_array_equal(Xc, Xc2)  # deterministic


# ----------------------------------------------------------------------------- selection


def test_target_slot_is_the_most_accurate_row_that_meets_it():
    df = archive()  # params (M) -> top1: 1->50, 2->80, 2.5->75, 3->82 (and 60), ...
    choice = choose_for_target(df, Target("params", 3e6, "p3"))
    assert choice.met and choice.value == 3e6
    assert df.loc[df["arch"] == choice.encoding, "top1"].item() == 82.0
    assert choose_for_target(df, Target("params", 2.9e6, "p")).value == 2e6


def test_unmet_target_gets_the_closest_row_marked_unmet():
    df = archive()
    choice = choose_for_target(df, Target("params", 5e5, "tiny"))
    assert choice.met is False and choice.value == 1e6  # the smallest one
    assert choice.describe() == {"name": "tiny", "metric": "params", "limit": 5e5,
                                 "met_in_archive": False, "archive_value": 1e6}
    # no measured latency in the archive: no architecture for the slot
    lat = choose_for_target(df, Target("latency_ms", 1.0, "fast"))
    assert lat.encoding is None and lat.met is False


def test_latency_target_reads_the_measured_latency_column():
    df = archive()
    df["latency_ms"] = df["params"] / 1e6  # 1 ms per million parameters
    choice = choose_for_target(df, Target("latency_ms", 4.5, "fast"))
    assert choice.met and df.loc[df["arch"] == choice.encoding, "top1"].item() == 83.0


def test_slots_targets_first_then_the_rest_of_the_front():
    df = archive()
    targets = parse_targets([{"params": 3e6}, {"params": 2e6}])
    slots = select_slots(df, 5, 0, targets=targets)
    assert len(slots) == 5
    assert [s.target for s in slots[:2]] == list(targets) and slots[2].target is None
    taken = {slots[0].encoding, slots[1].encoding}
    rest = [s.encoding for s in slots[2:]]
    assert not taken & set(rest)  # no network fine-tuned twice
    assert rest == select_for_finetune(df[~df["arch"].isin(taken)], 3, 0)
    # deterministic under row order
    again = select_slots(df.iloc[::-1].reset_index(drop=True), 5, 0, targets=targets)
    assert [s.encoding for s in again] == [s.encoding for s in slots]
    assert [s.encoding for s in select_slots(df, 2, 0, targets=targets)] == [s.encoding for s in slots[:2]]
    with pytest.raises(UserError, match="leaves no slot"):
        select_slots(df, 1, 0, targets=targets)


# ---------------------------------------------------------------------------------- cards


def _metrics(**kw):
    base = {"used": True, "encoding": "0123", "params": 90_000, "macs": 2_000_000,
            "top1_after": 91.5, "top1_before": 80.25, "top1_int8": 91.0, "int8_bytes": 120_000,
            "latency_ms": 0.8, "latency_iqr_ms": 0.05,
            "latency": {"backend": "onnxruntime", "threads": 2, "batch": 1, "warmup": 5, "runs": 20,
                        "machine": {"cpu": "Test CPU"}}}
    return {**base, **kw}


def test_card_of_a_target_slot_reports_the_measured_verdict():
    target = Target("latency_ms", 1.0, "1 ms")
    verdict = target_verdict(target, _metrics(), {"met_in_archive": True, "archive_value": 0.9})
    assert verdict["measured"] == 0.8 and verdict["met"] is True and verdict["archive_value"] == 0.9
    assert target_verdict(target, _metrics(latency_ms=1.2))["met"] is False
    assert target_verdict(target, _metrics(latency_ms=None))["met"] is None
    assert target_verdict(None, _metrics()) is None
    files = {"model.onnx": {"bytes": 1234, "sha256": "ab" * 32},
             "model_int8.onnx": {"bytes": 600, "sha256": "cd" * 32}}
    card = build_card(1, _metrics(), {"family": "EE_B", "resolution": 20, "width_mult": 1.0,
                                      "dataset": "digits", "n_classes": 10}, verdict, files,
                      {"model.onnx": {"median_ms": 0.7, "iqr_ms": 0.02}})
    assert card["target"]["met"] is True
    assert card["files"]["model.onnx"] == {**files["model.onnx"], "onnxruntime_ms": 0.7,
                                           "onnxruntime_iqr_ms": 0.02}
    assert card["files"]["model_int8.onnx"]["onnxruntime_ms"] is None
    assert card["accuracy"]["top1_int8"] == 91.0 and card["latency"]["ms"] == 0.8
    text = card_markdown(card)
    assert "1 ms (latency_ms <= 1 ms): measured 0.8 ms -> **met**" in text
    assert "- Test top-1: FP32 91.50 %, INT8 91.00 % (before fine-tuning: 80.25 %)" in text
    assert "backend onnxruntime, threads 2, batch 1" in text and "Test CPU" in text
    assert "| model.onnx | 1,234 | 0.700 (IQR 0.020) | `" + "ab" * 32 + "` |" in text
    assert "| model_int8.onnx | 600 | not measured | `" in text
    assert card_markdown(card) == text  # pure


def test_card_of_an_unused_and_an_unmeasured_slot():
    card = build_card(2, {"used": False, "reason": "only 1 architecture"}, None, None, {})
    assert card["used"] is False and "architecture" not in card
    assert "Unused slot: only 1 architecture" in card_markdown(card)
    unmet = target_verdict(Target("params", 5e4, "tiny"), _metrics(),
                           {"met_in_archive": False, "archive_value": 9e4})
    text = card_markdown(build_card(0, _metrics(top1_int8=None, int8_bytes=None), {}, unmet, {}))
    assert "**not met**" in text and "this is the closest one" in text
    assert "INT8 not measured" in text


def test_front_slot_is_not_a_target():
    slots = select_slots(pd.concat([archive()]), 2, 0)
    assert all(s.target is None and s.describe() is None for s in slots)
