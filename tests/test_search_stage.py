"""Stages init_archive and search_round on a tiny, untrained SE_B super-network (CPU, digits).

Run A: init + 2 rounds in process. Run B (another directory): init killed after a few
evaluations and restarted, then round 1 as scatter/gather over 2 shards; its archives must equal
run A's byte for byte (determinism, cache reuse, and scatter == in-process in one go).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from natv2 import files as search_stage_files
from natv2.config import validate
from natv2.errors import UserError
from natv2.files import file_sha256, write_json
from natv2.layout import Layout
from natv2.lifeline import WATCH_ENV, watch_token
from natv2.pipeline import search_context, search_stage
from natv2.pipeline.context import space_from_config
from natv2.pipeline.eval_cache import CachedEvaluate, EvalCache
from natv2.pipeline.search_stage import (
    STEP_NAMES,
    evaluate_shard,
    finish_round,
    propose_candidates,
    run_init_archive,
    run_search_round,
)
from natv2.pipeline.supernet_stage import save_teacher
from natv2.records import record_files
from natv2.search import read_archive
from natv2.supernet import build_supernet, load_supernet, read_extra, save_checkpoint
from natv2.train.adapt import AdaptSettings
from natv2.train.eps import make_teacher

N_DOE = 6
KILL_AFTER = 5


def make_cfg(root: Path, **search):
    raw_search = {
        "n_doe": N_DOE, "candidates": 2, "preprocess_factor": 2, "pop_size": 10, "n_gen": 2,
        "subset_n_gen": 5, "rounds": 2,
        "adaptation": {"epochs": 1, "subnets_per_step": 2, "top_n": 4},
    }
    raw_search.update(search)
    return validate({
        "results_dir": str(root), "device": "cpu", "threads": 1, "seed": 0,
        "data": {"train_subset": 64, "calib_size": 32, "batch_size": 32, "val_fraction": 0.05},
        "space": {"resolutions": [16, 24]},
        "search": raw_search,
    })


@pytest.fixture(scope="module", autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def supernet_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = build_supernet("SE_B", n_classes=10)
    return save_checkpoint(net, tmp_path_factory.mktemp("net") / "supernet.pt")


def _install(supernet_file: Path, root: Path) -> None:
    layout = Layout(root)
    layout.supernet_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(supernet_file, layout.supernet)
    save_teacher(make_teacher(load_supernet(layout.supernet), space_from_config(make_cfg(root))),
                 layout, "the super-network's largest")
    write_json(layout.supernet_json, {"files": record_files(layout.supernet, layout.supernet_teacher)})


@pytest.fixture(scope="module")
def run_a(supernet_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("run_a")
    _install(supernet_file, root)
    cfg = make_cfg(root)
    stats = [run_init_archive(cfg, show_progress=False)]
    for k in (1, 2):
        stats.append(run_search_round(cfg, k, show_progress=False))
    return root, stats


@pytest.fixture(scope="module")
def run_b(supernet_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("run_b")
    _install(supernet_file, root)
    cfg = make_cfg(root, shards=2)
    original = search_context.SearchContext._record
    calls = {"n": 0}

    def dying(self, arch):
        if calls["n"] >= KILL_AFTER:
            raise KeyboardInterrupt("killed")
        calls["n"] += 1
        return original(self, arch)

    search_context.SearchContext._record = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            run_init_archive(cfg, show_progress=False)
    finally:
        search_context.SearchContext._record = original
    assert not (root / "search" / "round_00" / "archive.csv").exists()
    init_stats = run_init_archive(cfg, show_progress=False)
    propose_candidates(cfg, 1, show_progress=False)
    for i in (0, 1):
        evaluate_shard(cfg, 1, i, show_progress=False)
    round_stats = finish_round(cfg, 1, show_progress=False)
    return root, init_stats, round_stats


def _round(root: Path, k: int) -> Path:
    return root / "search" / f"round_{k:02d}"


# ------------------------------------------------------------------------ run A


def test_every_file_and_key(run_a):
    root, stats = run_a
    r0 = _round(root, 0)
    for name in ("archive.csv", "evaluated.csv", "stats.json"):
        assert (r0 / name).is_file()
    s0 = json.loads((r0 / "stats.json").read_text())
    for key in ("round", "hypervolume", "reference_point", "ideal", "nadir", "n_evaluated",
                "n_kept", "duplicates_dropped", "steps", "seconds"):
        assert key in s0, key
    assert "predictor" not in s0
    assert s0["n_evaluated"] == 2 * N_DOE and s0["n_kept"] == N_DOE
    assert len(read_archive(r0 / "evaluated.csv")) == 2 * N_DOE
    # reference point: 1.01 x the nadir of round 0 (the thesis' calc_hv)
    nadir, ref = (s0[k] for k in ("nadir", "reference_point"))
    for hi, r in zip(nadir, ref, strict=True):
        assert r == pytest.approx(1.01 * hi)
    assert 0 < s0["hypervolume"] < 1 and s0["hypervolume_normalised"] > 0
    for k in (1, 2):
        d = _round(root, k)
        for name in ("archive.csv", "candidates.csv", "stats.json", "supernet.pt"):
            assert (d / name).is_file(), (k, name)
        s = json.loads((d / "stats.json").read_text())
        assert s == json.loads(json.dumps(stats[k]))
        for key in ("round", "hypervolume", "reference_point", "n_evaluated", "n_kept",
                    "duplicates_dropped", "predictor", "steps", "seconds"):
            assert key in s, key
        assert s["round"] == k
        assert s["reference_point"] == s0["reference_point"]
        assert set(s["predictor"]) >= {"name", "rmse", "spearman", "kendall"}
        assert s["predictor"]["name"] == "lgbm"
        assert set(s["steps"]) == set(STEP_NAMES)
        cand = read_archive(d / "candidates.csv")
        assert s["n_evaluated"] == len(cand) == 2 + N_DOE  # 2 candidates + re-evaluated archive
        assert list(cand["step"]).count("evaluate") == 2
        new = cand[cand["step"] == "evaluate"]
        assert (new["origin"] == "candidate").all() and (new["round"] == k).all()
        assert new["predicted_top1"].notna().all()
        # the archive holds the re-evaluated accuracies
        arch = read_archive(d / "archive.csv")
        re = cand[cand["step"] == "reevaluate"].set_index("arch")["top1"]
        assert (arch.set_index("arch")["top1"] == re.loc[arch["arch"]]).all()
        assert file_sha256(d / "supernet.pt") != file_sha256(root / "supernet" / "supernet.pt")
        # one schedule over both rounds (epoch k - 1 of 2), one fixed teacher: stage 1's network
        adaptation = AdaptSettings.from_config(make_cfg(root))
        assert s["adaptation"]["epoch_lr"] == [pytest.approx(adaptation.lr_at(k - 1, 2))]
        assert s["adaptation"]["teacher"] == "supernet/teacher.pt"
    assert not list((root / "cache" / "adapted").glob("*.pt"))  # removed once written


def test_each_round_hands_its_optimiser_momentum_to_the_next(run_a):
    """The thesis' one optimiser through every round: each round's supernet.pt carries its
    momentum buffers (``extra.optimizer_state``), one per trained parameter, and round 2 goes on
    from round 1's (its buffers moved on from them)."""
    root, _ = run_a
    assert (read_extra(root / "supernet" / "supernet.pt") or {}).get("optimizer_state") is None
    states = [read_extra(_round(root, k) / "supernet.pt")["optimizer_state"] for k in (1, 2)]
    params = list(load_supernet(_round(root, 1) / "supernet.pt").parameters())
    for state in states:
        assert state and all(tuple(e["momentum_buffer"].shape) == tuple(params[i].shape)
                             for i, e in state.items())
    assert set(states[0]) <= set(states[1])
    assert any(not torch.equal(states[0][i]["momentum_buffer"], states[1][i]["momentum_buffer"])
               for i in states[0])


def test_bounded_archive_keeps_n_doe(run_a):
    root, _ = run_a
    for k in (0, 1, 2):
        df = read_archive(_round(root, k) / "archive.csv")
        assert len(df) == N_DOE
        assert df["arch"].is_unique
        if k == 0:  # later rounds keep the bounds only while survival does (the thesis)
            assert (df["origin"] == "bound").sum() == 2


# ------------------------------------------------------------------------ run B


def test_restart_reuses_cache_and_equals_uninterrupted_run(run_a, run_b):
    root_a, _ = run_a
    root_b, init_stats, _ = run_b
    assert init_stats["cache_hits"] == KILL_AFTER
    for name in ("archive.csv", "evaluated.csv"):
        assert (_round(root_a, 0) / name).read_bytes() == (_round(root_b, 0) / name).read_bytes()


def test_scatter_gather_round_equals_in_process_round(run_a, run_b):
    root_a, stats_a = run_a
    root_b, _, stats_b = run_b
    assert (_round(root_b, 1) / "proposed.csv").is_file()
    assert (_round(root_a, 1) / "archive.csv").read_bytes() == \
        (_round(root_b, 1) / "archive.csv").read_bytes()
    ca = read_archive(_round(root_a, 1) / "candidates.csv")
    cb = read_archive(_round(root_b, 1) / "candidates.csv")
    pd.testing.assert_frame_equal(ca, cb)
    for key in ("hypervolume", "n_evaluated", "n_kept", "duplicates_dropped", "predictor"):
        assert stats_a[1][key] == stats_b[key], key


def test_random_policy_round_without_adaptation_copies_supernet(run_a, tmp_path):
    root_a, _ = run_a
    shutil.copytree(root_a / "supernet", tmp_path / "supernet")
    shutil.copytree(_round(root_a, 0), _round(tmp_path, 0))
    shutil.copytree(root_a / "cache", tmp_path / "cache")
    cfg = make_cfg(tmp_path, policy="random", adaptation={"epochs": 0})
    stats = run_search_round(cfg, 1, show_progress=False)
    assert "predictor" not in stats
    assert stats["n_evaluated"] == 2 and stats["steps"]["adapt"] == 0.0
    assert (_round(tmp_path, 1) / "supernet.pt").read_bytes() == \
        (tmp_path / "supernet" / "supernet.pt").read_bytes()
    assert len(read_archive(_round(tmp_path, 1) / "archive.csv")) == N_DOE + 2  # grows


def test_search_seed_changes_the_search_not_the_data(run_a, supernet_file, tmp_path):
    """search.seed null == the top-level seed; another search.seed draws another initial archive
    from the same data split (evaluations of shared architectures are identical)."""
    root_a, _ = run_a
    same = tmp_path / "same"
    other = tmp_path / "other"
    for root in (same, other):
        _install(supernet_file, root)
    run_init_archive(make_cfg(same, seed=0), show_progress=False)
    assert (_round(same, 0) / "archive.csv").read_bytes() == \
        (_round(root_a, 0) / "archive.csv").read_bytes()
    run_init_archive(make_cfg(other, seed=7), show_progress=False)
    a = read_archive(_round(root_a, 0) / "evaluated.csv").set_index("arch")
    b = read_archive(_round(other, 0) / "evaluated.csv").set_index("arch")
    assert set(a.index) != set(b.index)
    shared = a.index.intersection(b.index)
    assert len(shared) >= 2  # at least the smallest and the largest network
    pd.testing.assert_series_equal(a.loc[shared, "top1"], b.loc[shared, "top1"])


# ------------------------------------------------------------------- missing inputs


def test_missing_inputs_name_path_and_stage(tmp_path):
    cfg = make_cfg(tmp_path, shards=2)
    with pytest.raises(UserError, match=r"supernet\.pt.*natv2 supernet"):
        run_init_archive(cfg, show_progress=False)
    with pytest.raises(UserError, match=r"round_00.archive\.csv.*natv2 init-archive"):
        run_search_round(cfg, 1, show_progress=False)
    with pytest.raises(UserError, match=r"round_01.archive\.csv.*search-round --round 1"):
        run_search_round(cfg, 2, show_progress=False)
    with pytest.raises(UserError, match=r"proposed\.csv.*--round 1 --step propose"):
        evaluate_shard(cfg, 1, 0, show_progress=False)
    with pytest.raises(UserError, match=r"0\.\.1"):
        evaluate_shard(cfg, 1, 2, show_progress=False)
    with pytest.raises(UserError, match=r">= 1"):
        run_search_round(cfg, 0, show_progress=False)
    # archive of round 0 present, super-network missing
    r0 = _round(tmp_path, 0)
    r0.mkdir(parents=True)
    (r0 / "archive.csv").write_text("arch\n")
    (r0 / "stats.json").write_text("{}")
    with pytest.raises(UserError, match=r"supernet\.pt.*natv2 supernet"):
        run_search_round(cfg, 1, show_progress=False)


# ------------------------------------------------------------------- evaluation cache


def test_cache_ignores_cut_line_and_appends_on_a_fresh_line(tmp_path):
    path = Layout(tmp_path).eval_cache("a" * 64, "b" * 64)
    calls = []

    def evaluator(arch):
        calls.append(arch)
        return {"top1": float(len(arch)), "params": 1, "macs": 2, "latency_ms": None}

    ev = CachedEvaluate(evaluator, EvalCache(path), key=str)
    assert [r["top1"] for r in ev(["x", "yy"])] == [1.0, 2.0]
    with open(path, "ab") as fh:  # killed in the middle of a write
        fh.write(b'{"key": "zzz", "rec')
    cache = EvalCache(path)
    assert len(cache) == 2 and cache.n_bad_lines == 1
    ev = CachedEvaluate(evaluator, cache, key=str)
    assert [r["top1"] for r in ev(["x", "zzz", "yy"])] == [1.0, 3.0, 2.0]
    assert calls == ["x", "yy", "zzz"] and ev.hits == 2 and ev.misses == 1
    again = EvalCache(path)
    assert len(again) == 3 and again.n_bad_lines == 1  # the cut line stays isolated
    # a record lacking what is needed is evaluated again and superseded
    ev = CachedEvaluate(evaluator, again, key=str, needs=lambda r: r["latency_ms"] is not None)
    ev(["x"])
    assert calls[-1] == "x" and ev.misses == 1


# ------------------------------------------------------------------- damaged inputs


@pytest.fixture
def damaged(run_a, tmp_path):
    """A copy of run A's results before round 2, and round 1's archive lines."""
    root_a, _ = run_a
    for name in ("supernet", "cache"):
        shutil.copytree(root_a / name, tmp_path / name)
    for k in (0, 1):
        shutil.copytree(_round(root_a, k), _round(tmp_path, k))
    archive = _round(tmp_path, 1) / "archive.csv"
    return tmp_path, archive, archive.read_text().splitlines(keepends=True)


def test_archive_cut_at_a_row_boundary_is_refused_and_the_rerun_recovers(run_a, damaged):
    root, archive, lines = damaged
    archive.write_text("".join(lines[:-1]))  # the last architecture gone, the file still parses
    rows = json.loads((_round(root, 1) / "stats.json").read_text())["files"]["archive.csv"]["rows"]
    assert rows == len(lines) - 1
    cfg = make_cfg(root)
    with pytest.raises(UserError, match=rf"round_01/archive\.csv is not the file `natv2 search-round --round 1` "
                                        rf"wrote .*records {rows} rows, .*the file has {rows - 1}\): it was cut or "
                                        rf"changed since; rerun `natv2 search-round --round 1`"):
        run_search_round(cfg, 2, show_progress=False)
    assert not _round(root, 2).exists()
    run_search_round(cfg, 1, show_progress=False)  # the recovery the message names
    run_search_round(cfg, 2, show_progress=False)
    for k in (1, 2):
        assert (_round(root, k) / "archive.csv").read_bytes() == (_round(run_a[0], k) / "archive.csv").read_bytes()


def _without_record(root: Path) -> None:
    """Round 1's stats.json as written before file records existed."""
    stats_path = _round(root, 1) / "stats.json"
    stats = json.loads(stats_path.read_text())
    del stats["files"]
    stats_path.write_text(json.dumps(stats))


def test_archive_rows_that_disagree_with_their_encoding_are_refused_by_line(damaged):
    root, archive, lines = damaged
    _without_record(root)
    header = lines[0].rstrip("\n").split(",")
    last = lines[-1].rstrip("\n").split(",")
    cut = ",".join(last[: header.index("d")]) + "," + last[header.index("d")][:-1]  # inside `d`
    archive.write_text("".join(lines[:-1]) + cut + "\n")
    with pytest.raises(UserError, match=rf"round_01/archive\.csv: line {len(lines)}: d = '.*' but encoding \w+ "
                                        rf"decodes to d = '.*'"):
        run_search_round(make_cfg(root), 2, show_progress=False)


def test_archive_cut_inside_a_number_names_file_and_line(damaged):
    root, archive, lines = damaged
    _without_record(root)
    header = lines[0].rstrip("\n").split(",")
    last = lines[-1].rstrip("\n").split(",")
    archive.write_text("".join(lines[:-1]) + ",".join(last[: header.index("macs")]) + ",\n")
    with pytest.raises(UserError, match=rf"round_01/archive\.csv: column 'macs' has empty values "
                                        rf"\(first at line {len(lines)}\)"):
        run_search_round(make_cfg(root), 2, show_progress=False)


def test_cut_stats_json_is_one_line_naming_it_and_the_stage(damaged):
    root, _, _ = damaged
    stats0 = _round(root, 0) / "stats.json"
    stats0.write_text(stats0.read_text()[:40])
    with pytest.raises(UserError, match=r"round_00/stats\.json is not valid JSON \(.*\): it was cut or edited "
                                        r"after it was written; rerun `natv2 init-archive`"):
        run_search_round(make_cfg(root), 1, show_progress=False)


def test_a_reference_point_of_the_older_hypervolume_rule_is_one_line(damaged):
    root, _, _ = damaged
    stats0 = _round(root, 0) / "stats.json"
    stats = json.loads(stats0.read_text())
    stats["reference_point"] = [lo + 1.01 * (hi - lo)  # natv2's rule before issue 12
                                for lo, hi in zip(stats["ideal"], stats["nadir"], strict=True)]
    stats0.write_text(json.dumps(stats))
    with pytest.raises(UserError, match=r"round_00/stats\.json holds a reference point of an older "
                                        r"hypervolume rule \(not 1\.01 x nadir\); rerun "
                                        r"`natv2 init-archive`"):
        run_search_round(make_cfg(root), 2, show_progress=False)


# ------------------------------------------------------- output sets, locks, disks


def _same_as_run_a(run_a, root: Path, rounds=(1, 2)) -> None:
    for k in rounds:
        for name in ("archive.csv", "candidates.csv", "supernet.pt"):
            assert (_round(root, k) / name).read_bytes() == (_round(run_a[0], k) / name).read_bytes(), (k, name)


def test_a_round_stopped_while_writing_leaves_no_set_that_passes_and_the_rerun_recovers(run_a, damaged,
                                                                                        monkeypatch):
    root, _, _ = damaged
    shutil.copytree(_round(run_a[0], 2), _round(root, 2))  # a complete old round 2
    (_round(root, 2) / "candidates.csv").write_text("old\n")  # old bytes, to tell a mix
    cfg = make_cfg(root)
    real_replace = search_stage_files.os.replace

    def immutable_archive(src, dst):  # `chattr +i` on round 2's archive.csv
        if str(dst).endswith("round_02/archive.csv"):
            raise PermissionError(errno.EPERM, "Operation not permitted", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(search_stage_files.os, "replace", immutable_archive)
    with pytest.raises(UserError, match=r"^cannot write .*round_02/archive\.csv: Operation not permitted; make the "
                                        r"folder writable or set results_dir to a writable one, then rerun$"):
        run_search_round(cfg, 2, show_progress=False)
    monkeypatch.undo()
    # new supernet.pt and candidates.csv beside the old archive.csv: no stats.json, refused
    assert not (_round(root, 2) / "stats.json").exists()
    assert list(_round(root, 2).glob(".*.tmp")) == []
    with pytest.raises(UserError, match=r"round_02/archive\.csv belongs to an incomplete set: .*round_02/stats\.json, "
                                        r"which `natv2 search-round --round 2` writes last, is missing \(a run stopped "
                                        r"part-way\); rerun `natv2 search-round --round 2`"):
        run_search_round(cfg, 3, show_progress=False)
    run_search_round(cfg, 2, show_progress=False)
    _same_as_run_a(run_a, root, rounds=(2,))


def test_a_changed_input_supernet_is_refused_by_its_record(damaged):
    root, _, _ = damaged
    net = root / "supernet" / "supernet.pt"
    size = net.stat().st_size
    with open(net, "r+b") as fh:
        fh.truncate(size - 100)
    with pytest.raises(UserError, match=rf"supernet/supernet\.pt is not the file `natv2 supernet` wrote \(.*supernet\.json "
                                        rf"records {size} bytes, sha256 \w{{12}}; the file has {size - 100}\): it was cut "
                                        rf"or changed since; rerun `natv2 supernet`"):
        run_search_round(make_cfg(root), 1, show_progress=False)


LOCK_HOLDER = """
import sys, time
from pathlib import Path
from natv2.pipeline.lock import stage_lock
with stage_lock(Path(sys.argv[1]), "the round"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_writer_of_a_round_refuses_naming_the_first_and_a_killed_owner_frees_it(run_a, damaged):
    root, _, _ = damaged
    cfg = make_cfg(root)
    lock = Layout(root).lock("round_02")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"round_02 is being written by another natv2 process \(pid {holder.pid}, "
                                            rf"`-c .*`, since [-\d]+ [:\d]+\); wait for it to finish or stop it, then "
                                            rf"rerun \(lock: .*locks/round_02\.lock\)"):
            run_search_round(cfg, 2, show_progress=False)
        assert not _round(root, 2).exists()
    finally:
        holder.kill()  # SIGKILL: the kernel drops the flock; the file stays, stale and harmless
        holder.wait()
    run_search_round(cfg, 2, show_progress=False)
    _same_as_run_a(run_a, root, rounds=(2,))
    assert not (root / "locks").exists()  # a lock file lives only while its stage runs


@pytest.fixture
def small_disk(tmp_path):
    """``mount(size)``: a tmpfs of ``size`` bytes under tmp_path (root with CAP_SYS_ADMIN, as on
    CI; elsewhere the test is skipped), unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: int, name: str = "disk") -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode:
            if os.environ.get("CI"):
                pytest.fail(f"cannot mount a tmpfs on CI: {done.stderr.strip()}")
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=True)


def _copy_inputs(run_a, root: Path) -> None:
    for name in ("supernet", "cache"):
        shutil.copytree(run_a[0] / name, root / name)
    for k in (0, 1):
        shutil.copytree(_round(run_a[0], k), _round(root, k))


def test_a_read_only_results_folder_is_refused_before_any_work(run_a, small_disk, monkeypatch):
    root = small_disk(200 << 20)
    _copy_inputs(run_a, root)
    subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
    monkeypatch.setattr(search_stage, "run_round", lambda *a, **k: pytest.fail("the search ran"))
    with pytest.raises(UserError, match=rf"^cannot write {root}/search: Read-only file system; make the folder "
                                        rf"writable or set results_dir to a writable one, then rerun$"):
        run_search_round(make_cfg(root), 2, show_progress=False)


def test_too_little_room_for_the_round_is_refused_before_any_work(run_a, small_disk, monkeypatch):
    net_bytes = (run_a[0] / "supernet" / "supernet.pt").stat().st_size
    used = sum(p.stat().st_size for p in run_a[0].rglob("*") if p.is_file() and "round_02" not in str(p))
    root = small_disk(used + net_bytes + (4 << 20))  # room for one copy of the network, not two
    _copy_inputs(run_a, root)
    monkeypatch.setattr(search_stage, "run_round", lambda *a, **k: pytest.fail("the search ran"))
    with pytest.raises(UserError, match=rf"^{root}/search/round_02 has [\d.]+ MB free; this stage writes about "
                                        rf"[\d.]+ MB: free space or set results_dir on a larger disk, then rerun$"):
        run_search_round(make_cfg(root), 2, show_progress=False)


def test_a_disk_that_fills_during_the_round_is_one_line_and_the_evaluations_are_kept(run_a, small_disk):
    root = small_disk(200 << 20)
    _copy_inputs(run_a, root)
    shutil.rmtree(root / "cache")  # round 2 evaluates afresh, into the cache
    cfg = make_cfg(root)
    filler = root / "filler"
    real_evaluate = search_context.SearchContext.evaluate
    calls = {"n": 0}

    def filling(self, *args, **kwargs):  # the disk fills once the first evaluations are cached
        out = real_evaluate(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            with open(filler, "wb") as fh, contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * (1 << 20))
                    fh.flush()
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(search_context.SearchContext, "evaluate", filling)
        with pytest.raises(UserError, match=r"^cannot write .*: no space left on the device \([\d.]+ MB left on its "
                                            r"file system\); free space or set results_dir on a larger disk, then "
                                            r"rerun \(finished evaluations are kept in the cache\)$"):
            run_search_round(cfg, 2, show_progress=False)
    kept = sum(len(EvalCache(p)) for p in (root / "cache" / "evaluations").glob("*.jsonl"))
    assert kept >= 1
    assert not (_round(root, 2) / "stats.json").exists()
    filler.unlink()
    run_search_round(cfg, 2, show_progress=False)
    _same_as_run_a(run_a, root, rounds=(2,))


def test_a_stage_whose_snakemake_dies_stops_and_commits_nothing(run_a, damaged, tmp_path_factory):
    root, _, _ = damaged
    config = tmp_path_factory.mktemp("cfg") / "config.yaml"
    config.write_text(yaml.safe_dump(json.loads(json.dumps(make_cfg(root)))))
    snakemake = subprocess.Popen(["sleep", "600"])  # stands in for the Snakemake that started the stage
    env = {**os.environ, WATCH_ENV: watch_token(snakemake.pid)}
    stage = subprocess.Popen([sys.executable, "-m", "natv2", "search-round", "--round", "2", "--config",
                              str(config)], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lock = Layout(root).lock("round_02")
    try:
        deadline = time.monotonic() + 120
        while not lock.exists() and stage.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.exists(), stage.stderr.read() if stage.poll() is not None else "no lock"
        snakemake.kill()  # SIGKILL: no signal reaches the stage
        snakemake.wait()
        _, err = stage.communicate(timeout=60)
    finally:
        stage.kill()
        snakemake.kill()
    assert stage.returncode == 3, err
    assert err.splitlines()[-1] == (f"natv2 search-round: stopped: the Snakemake process that started it (pid "
                                    f"{snakemake.pid}) is gone; nothing of this stage was committed; rerun the workflow")
    assert not (_round(root, 2) / "stats.json").exists()
    assert [p for p in root.rglob("*") if p.name.endswith(".tmp")] == []
    assert not (root / "locks").exists()
    run_search_round(make_cfg(root), 2, show_progress=False)
    _same_as_run_a(run_a, root, rounds=(2,))
