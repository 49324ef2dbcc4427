"""End to end on the tiny config: Snakemake, change propagation, resume after SIGKILL, DVC repro,
and sharing results through a DVC remote. Each pipeline run takes about a minute on 2 cores."""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from natv2.config import load_config
from natv2.pipeline.dag import stages

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
CONFIG = "config/test.yaml"
FINAL = "results/search/round_02/archive.csv"
PROJECT_FILES = ("workflow", "config")
# Measured latencies (not natv2.files.TIMING_KEYS, the wall times kept out of checkpoints): two runs of the same config agree on everything else, byte for byte.
MEASURED_TIMES = frozenset({"latency_ms", "latency_iqr_ms", "onnx_latency_ms"})

pytestmark = pytest.mark.slow


def run(args, cwd, check=True, **kw):
    result = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def project_copy(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True)
        else:
            shutil.copy2(src, dest / name)
    # the schema link points into the package: make it a plain file in the copy
    link = dest / "workflow/schemas/config.schema.yaml"
    link.unlink()
    shutil.copy2(ROOT / "natv2/schemas/config.schema.yaml", link)
    return dest


def _mask_timings(value):
    if isinstance(value, dict):
        return {k: ("<timed>" if k in MEASURED_TIMES and v is not None else _mask_timings(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_timings(v) for v in value]
    return value


def same_results(a: Path, b: Path) -> bool:
    """Two result files agree: byte for byte, or for JSON everything but measured timings
    (which must be present, or absent, in both)."""
    if a.suffix != ".json":
        return a.read_bytes() == b.read_bytes()
    return _mask_timings(json.loads(a.read_text())) == _mask_timings(json.loads(b.read_text()))


def snakemake(cwd, *extra, check=True):
    return run([str(BIN / "snakemake"), "--cores", "2", "--configfile", CONFIG, *extra], cwd, check=check)


def job_counts(dry_run_stdout: str) -> dict[str, int]:
    counts, on = {}, False
    for line in dry_run_stdout.splitlines():
        if line.startswith("job ") and "count" in line:
            on = True
            continue
        if on:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            if parts[0].startswith("-"):
                continue
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="module")
def smk_project(tmp_path_factory):
    project = project_copy(tmp_path_factory.mktemp("smk"))
    result = snakemake(project)
    assert "Nothing to be done" not in result.stderr
    return project


def test_pipeline_writes_every_stage_output(smk_project):
    res = smk_project / "results"
    info = json.loads((res / "supernet/supernet.json").read_text())
    assert {"family", "width_mult", "source", "sha256", "phases", "val_top1"} <= set(info)
    for k in range(3):
        stats = json.loads((res / f"search/round_{k:02d}/stats.json").read_text())
        assert stats["round"] == k and "hypervolume" in stats
        assert ("predictor" in stats) == (k > 0)
    for n in range(3):
        metrics = json.loads((res / f"finetune/rank_{n}/metrics.json").read_text())
        assert metrics.get("used", True) is False or {"top1_before", "top1_after", "params", "macs"} <= set(metrics)
        if metrics.get("used", True):  # config/test.yaml asks for the INT8 measurement
            assert 0 <= metrics["top1_int8"] <= 100 and metrics["int8_bytes"] > 0
    report = json.loads((res / "report/metrics.json").read_text())
    assert {"hypervolume", "best_top1", "targets"} <= set(report)
    cfg = load_config(smk_project / CONFIG)
    assert [t["name"] for t in report["targets"]] == [t["name"] for t in cfg["targets"]] == ["small", "light"]
    for row in report["targets"]:  # each target's slot: the measured value decides the verdict
        metrics = json.loads((res / f"finetune/rank_{row['rank']}/metrics.json").read_text())
        assert row["measured"] == metrics[row["metric"]] and row["met"] == (row["measured"] <= row["limit"])
        assert metrics["target"]["name"] == row["name"] and metrics["target"]["met"] == row["met"]
        assert (res / "report" / row["card"]).resolve() == (res / f"finetune/rank_{row['rank']}/card.md")
    for n in range(3):  # a card per slot, its files' sha256 those on disk
        card = json.loads((res / f"finetune/rank_{n}/card.json").read_text())
        assert (card["target"] is None) == (n >= len(cfg["targets"]))
        assert "Model card" in (res / f"finetune/rank_{n}/card.md").read_text()
        if card["used"]:
            assert set(card["files"]) == {"model.onnx", "model_int8.onnx"}
            for name, rec in card["files"].items():
                data = (res / f"finetune/rank_{n}" / name).read_bytes()
                assert rec["sha256"] == hashlib.sha256(data).hexdigest() and rec["bytes"] == len(data)
                assert rec["onnxruntime_ms"] > 0
    base = json.loads((res / "baselines/baselines.json").read_text())  # the report's context
    assert [c["name"] for c in base["classical"]] == ["logistic_regression", "svm_rbf"]
    assert all(0 <= c["top1"] <= 100 and c["n_test"] == base["split_sizes"]["test"] for c in base["classical"])
    assert 0 <= base["largest"]["top1"] <= 100 and base["largest"]["params"] > 0
    assert report["baselines"]["svm_rbf"] == base["classical"][1]["top1"]
    best_classical = max(c["top1"] for c in base["classical"])
    versus = report["versus_baselines"]["classical"]
    assert versus["margin"] == round(report["best_top1"] - best_classical, 4)
    assert versus["beaten"] == (report["best_top1"] > best_classical)
    html = (res / "report/index.html").read_text()
    assert 'id="baselines"' in html
    assert 'id="targets"' in html and 'href="../finetune/rank_0/card.md"' in html
    assert (res / "report/index.html").stat().st_size > 10_000
    assert (smk_project / "logs/benchmarks/supernet.tsv").exists()


def test_logs_hold_plain_progress_lines(smk_project):
    """A log file is not a terminal: progress is periodic lines, not carriage-return frames."""
    logs = sorted((smk_project / "logs").glob("*.log"))
    assert len(logs) == len(stages(load_config(smk_project / CONFIG)))
    for log in logs:
        assert "\r" not in log.read_text(), log.name
    supernet = (smk_project / "logs/supernet.log").read_text()
    assert re.search(r"^supernet \w+: (\d+)/\1 \(100%\) \[", supernet, re.M), supernet[-2000:]


def test_two_widths_search_the_w_gene_end_to_end(tmp_path):
    """supernet.width_mult [1.0, 1.2] (issue 12 point 2): EPS trains one super-network per width,
    the archive's bounds are the thesis' lb (w1.0 smallest) and ub (w1.2 largest), the search
    proposes both widths and each fine-tuned network is extracted at its own width."""
    project = project_copy(tmp_path / "w2")
    cfg = yaml.safe_load((project / CONFIG).read_text())
    cfg["supernet"]["width_mult"] = [1.0, 1.2]
    cfg["supernet"]["train"]["phases"] = {"full": {"epochs": 1, "lr": 0.05}, "kernel": {"epochs": 1, "lr": 0.03},
                                          "net_depth": {"epochs": 0}, "depth": {"epochs": 0},
                                          "expand": {"epochs": 0}}
    (project / "config/w2.yaml").write_text(yaml.safe_dump(cfg))
    run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "config/w2.yaml"], project)
    res = project / "results"
    info = json.loads((res / "supernet/supernet.json").read_text())
    assert info["width_mult"] == [1.0, 1.2] and info["source"] == [{"kind": "train"}] * 2
    assert [(p["name"], p["width"]) for p in info["phases"]] == [
        ("full", 1.0), ("kernel", 1.0), ("full", 1.2), ("kernel", 1.2)]
    assert all(len(p["val_top1_exits"]["20"]["per_exit"]) == 5 for p in info["phases"] if p["name"] == "full")
    assert set(info["val_top1"]["widths"]) == {"1.0", "1.2"}
    assert info["val_top1"]["largest"] == info["val_top1"]["widths"]["1.2"]["largest"]
    assert info["val_top1"]["smallest"] == info["val_top1"]["widths"]["1.0"]["smallest"]
    initial = pd.read_csv(res / "search/round_00/evaluated.csv", dtype={"arch": str})
    bounds = initial[initial["origin"] == "bound"].sort_values("params")
    assert bounds["w"].tolist() == [1.0, 1.2]
    evaluated = pd.concat([initial, *(pd.read_csv(f, dtype={"arch": str})
                                      for f in sorted(res.glob("search/round_*/candidates.csv")))])
    assert set(evaluated["w"]) == {1.0, 1.2} == set(evaluated.loc[evaluated["origin"] != "bound", "w"])
    assert all(w == [1.0, 1.2][int(a[2])] for a, w in zip(evaluated["arch"], evaluated["w"], strict=True))
    for n in range(3):  # the encoding's third digit is the w gene
        arch = json.loads((res / f"finetune/rank_{n}/arch.json").read_text())
        if json.loads((res / f"finetune/rank_{n}/metrics.json").read_text()).get("used", True):
            assert arch["width_mult"] == [1.0, 1.2][int(arch["encoding"][2])]


def test_second_run_has_nothing_to_do(smk_project):
    assert "Nothing to be done" in snakemake(smk_project, "-n").stdout + snakemake(smk_project, "-n").stderr


def _nothing_to_do(project: Path, *configfile: str) -> None:
    result = run([str(BIN / "snakemake"), "-n", "--cores", "2", *configfile], project)
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]


def test_config_path_spelling_does_not_rerun(smk_project):
    """The rules' commands name the config relative to the project, so an absolute or
    roundabout spelling of the same file is the same command."""
    _nothing_to_do(smk_project, "--configfile", str(smk_project / CONFIG))
    _nothing_to_do(smk_project, "--configfile", f"./config/../{CONFIG}")


def test_plain_snakemake_after_make_run_and_a_moved_project_have_nothing_to_do(tmp_path):
    """`make run` passes --configfile config/config.yaml; the plain `snakemake --cores all`
    that follows must not rerun anything, nor must either form in a copy of the project."""
    project = project_copy(tmp_path / "first")
    shutil.copy2(project / CONFIG, project / "config/config.yaml")  # the tiny config as default
    run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "config/config.yaml"], project)
    _nothing_to_do(project)
    moved = tmp_path / "elsewhere" / "project"
    shutil.copytree(project, moved, symlinks=True)  # keeps modification times
    _nothing_to_do(moved)
    _nothing_to_do(moved, "--configfile", "config/config.yaml")


def test_dvc_repro_after_make_run_has_nothing_to_do(smk_project, tmp_path):
    """`make run` ends with `dvc commit` where dvc.yaml is the config's: DVC then finds the
    pipeline Snakemake built up to date instead of running it all again."""
    project = tmp_path / "made"
    shutil.copytree(smk_project, project, symlinks=True)
    for name in ("Makefile", "pyproject.toml", ".gitignore"):
        shutil.copy2(ROOT / name, project / name)  # keeps mtimes: make sees the venv as current
    run(["git", "init", "-q"], project)
    run([str(BIN / "dvc"), "init", "-q"], project)
    run([str(BIN / "dvc"), "config", "core.analytics", "false"], project)
    run([str(BIN / "natv2"), "dvc-yaml", "--config", CONFIG], project)
    made = run(["make", "run", f"CONFIG={CONFIG}", f"VENV={BIN.parent}", "CORES=2"], project)
    assert "Nothing to be done" in made.stdout + made.stderr
    assert (project / "dvc.lock").is_file()
    assert "up to date" in run([str(BIN / "dvc"), "status"], project).stdout
    assert "Running stage" not in run([str(BIN / "dvc"), "repro"], project).stdout
    _nothing_to_do(project, "--configfile", CONFIG)


def test_make_run_leaves_dvc_alone_when_dvc_yaml_is_another_configs(smk_project, tmp_path):
    project = tmp_path / "other"
    shutil.copytree(smk_project, project, symlinks=True)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, project / name)
    run(["git", "init", "-q"], project)
    run([str(BIN / "dvc"), "init", "-q"], project)
    shutil.copy2(ROOT / "dvc.yaml", project / "dvc.yaml")  # config/config.yaml's stages
    made = run(["make", "run", f"CONFIG={CONFIG}", f"VENV={BIN.parent}", "CORES=2"], project)
    assert "dvc.yaml is not the one `natv2 dvc-yaml --config config/test.yaml` writes" in made.stderr
    assert not (project / "dvc.lock").exists()


def test_snakemake_report(smk_project):
    snakemake(smk_project, "--report", "results/report/snakemake.html")
    html = (smk_project / "results/report/snakemake.html").read_text()
    assert "init_archive" in html and "search_round" in html


def test_changes_rerun_only_what_depends_on_them(smk_project):
    path = smk_project / CONFIG
    original = path.read_text()
    raw = yaml.safe_load(original)
    try:
        path.write_text(yaml.safe_dump(dict(raw, finetune={**raw["finetune"], "lr": 0.02})))
        out = snakemake(smk_project, "-n").stdout
        finetunes = {f"finetune_{n}": 1 for n in range(3)}  # one rule per job of the stage graph
        assert job_counts(out) == {**finetunes, "report": 1, "all": 1}
        # one more round: a new stage, and a longer adaptation schedule (it spans every round's
        # epochs, as the thesis' one SuperNetTrainer), so rounds 1 and 2 rerun too
        path.write_text(yaml.safe_dump(dict(raw, search={**raw["search"], "rounds": 3})))
        out = snakemake(smk_project, "-n").stdout
        rounds = {f"search_round_{k:02d}": 1 for k in (1, 2, 3)}
        assert job_counts(out) == {**rounds, **finetunes, "baselines": 1, "report": 1, "all": 1}
    finally:
        path.write_text(original)


def _cache_lines(project: Path) -> int:
    files = list((project / "results/cache/evaluations").glob("*.jsonl"))
    return sum(len(f.read_text().splitlines()) for f in files)


def test_sigkill_during_a_round_resumes_to_the_same_archive(smk_project, tmp_path):
    project = project_copy(tmp_path / "resume")
    proc = subprocess.Popen([str(BIN / "snakemake"), "--cores", "2", "--configfile", CONFIG], cwd=project,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # wait for round 1's first candidate evaluation
            if (project / "results/search/round_00/stats.json").exists():
                init_done = json.loads((project / "results/search/round_00/stats.json").read_text())["n_evaluated"]
                if _cache_lines(project) > init_done:
                    break
            if proc.poll() is not None:
                pytest.fail("the pipeline finished before it could be killed")
            time.sleep(0.2)
        else:
            pytest.fail("round 1 never started")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (project / "results/search/round_01/archive.csv").exists()
    run([str(BIN / "snakemake"), "--unlock", "--cores", "1", "--configfile", CONFIG], project)
    snakemake(project, "--rerun-incomplete")
    stats = json.loads((project / "results/search/round_01/stats.json").read_text())
    assert stats["cache_hits"] >= 1
    assert (project / FINAL).read_text() == (smk_project / FINAL).read_text()


def _pids_running(*words: str) -> list[int]:
    """Processes whose command line holds every one of ``words``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if all(w.encode() in argv for w in words):
                pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    """Process ``pid`` runs (an exited one nobody reaped yet, a zombie, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


def test_a_stage_stops_when_its_snakemake_is_sigkilled(smk_project, tmp_path):
    project = tmp_path / "orphan"
    shutil.copytree(smk_project, project, symlinks=True)
    proc = subprocess.Popen([str(BIN / "snakemake"), "--cores", "2", "--configfile", CONFIG, "--forcerun",
                             "search_round_02"], cwd=project,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = project / "results/locks/round_02.lock"
    try:
        deadline = time.time() + 300
        while not lock.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        stages = _pids_running("search-round", "2")
        assert lock.exists() and stages, "round 2 never started"
        proc.kill()  # SIGKILL to Snakemake alone: its job gets no signal
    finally:
        proc.wait()
    deadline = time.time() + 60
    while any(_alive(pid) for pid in stages) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in stages), "the stage outlived its Snakemake"
    assert not (project / "results/search/round_02/stats.json").exists()
    assert [p for p in (project / "results").rglob("*.tmp")] == []
    run([str(BIN / "snakemake"), "--unlock", "--cores", "1", "--configfile", CONFIG], project)
    # the same command again (the outputs --forcerun removed are not "incomplete" to Snakemake)
    snakemake(project, "--forcerun", "search_round_02")
    assert (project / FINAL).read_text() == (smk_project / FINAL).read_text()


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory):
    project = project_copy(tmp_path_factory.mktemp("dvc") / "repo")
    run(["git", "init", "-q"], project)
    run(["git", "config", "user.email", "t@example.com"], project)
    run(["git", "config", "user.name", "t"], project)
    run([str(BIN / "dvc"), "init", "-q"], project)
    run([str(BIN / "dvc"), "config", "core.analytics", "false"], project)
    run([str(BIN / "natv2"), "dvc-yaml", "--config", CONFIG], project)
    shutil.copy2(ROOT / ".gitignore", project / ".gitignore")  # as the project: /results/ not in git
    run([str(BIN / "dvc"), "repro", "-q"], project)
    return project


def test_dvc_repro_matches_snakemake_and_is_idempotent(dvc_project, smk_project):
    assert (dvc_project / FINAL).read_text() == (smk_project / FINAL).read_text()
    for name in ("report/metrics.json", "report/pareto.csv", "search/round_00/archive.csv"):
        assert same_results(dvc_project / "results" / name, smk_project / "results" / name), name
    again = run([str(BIN / "dvc"), "repro"], dvc_project).stdout
    assert "Running stage" not in again


def test_share_through_a_dvc_remote(dvc_project, tmp_path):
    remote = tmp_path / "remote"
    run([str(BIN / "dvc"), "remote", "add", "-d", "local", str(remote)], dvc_project)
    run(["git", "add", "-A"], dvc_project)
    run(["git", "commit", "-qm", "pipeline"], dvc_project)
    run([str(BIN / "dvc"), "push", "-q"], dvc_project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(dvc_project), str(clone)], tmp_path)
    run([str(BIN / "dvc"), "pull", "-q"], clone)
    run([str(BIN / "snakemake"), "--touch", "--cores", "1", "--configfile", CONFIG], clone)
    dry = run([str(BIN / "snakemake"), "-n", "--cores", "1", "--configfile", CONFIG], clone)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    status = run([str(BIN / "dvc"), "status"], clone).stdout
    assert "up to date" in status
    outputs = [path for st in stages(load_config(clone / CONFIG))
               for path in (*st.outs, *st.metrics, *st.plots)]
    assert len(outputs) >= 20
    for path in outputs:  # every output of every stage came back, byte-identical
        assert (clone / path).is_file(), f"{path} missing after dvc pull"
        assert filecmp.cmp(clone / path, dvc_project / path, shallow=False), path
    metrics = run([str(BIN / "dvc"), "metrics", "show", "--json"], clone).stdout
    assert "hypervolume" in metrics and "best_top1" in metrics
    plots = run([str(BIN / "dvc"), "plots", "show", "--json"], clone).stdout
    assert "pareto.csv" in plots
