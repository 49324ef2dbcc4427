"""The pipeline on a real one-node SLURM cluster (tests/slurm/start-cluster.sh, started and
stopped by pid here): the tiny config with ``search.shards: 2`` through
``snakemake --workflow-profile workflow/profiles/slurm``, every rule as a SLURM job, the same
final archive as a local run; and an unknown partition fails at the first submission.

Skipped only where the SLURM binaries are missing (``apt-get install slurm-wlm``); CI installs
them (.ci/install-slurm.sh) and sets NATV2_REQUIRE_SLURM=1, which turns that skip into a
failure. Needs root (slurmd starts the jobs). Costs 5 to 7 minutes on 2 cores (measured 285 to
405 s for the two pipelines while other tests ran): the SLURM run's 12 sequential steps each
wait for the executor's next status check (each job also starts its own Snakemake), and the
local reference run goes alongside it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_pipeline_e2e import BIN, CONFIG, ENV, FINAL, ROOT, project_copy, run, same_results

from natv2.config import load_config
from natv2.pipeline.dag import stages

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "tests/slurm/start-cluster.sh"
DAEMONS = ("slurmd", "slurmctld", "munged")  # stopped in this order
SBIN = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))
SHARDS = "config/shards2.yaml"
# INT8 measurement is covered by the local end-to-end test; here it would only lengthen both pipelines.
SHARDS_YAML = ("# written by tests/test_slurm.py: test.yaml with sharded search rounds, without INT8\n"
               "search:\n  shards: 2\nfinetune:\n  measure_int8: false\n")
COMPARED = (FINAL, "results/search/round_00/archive.csv", "results/report/pareto.csv", "results/report/metrics.json")
# The profile as a user runs it, told where this cluster differs from a real one: no accounts
# (no accounting database), the one partition `debug`, small requests, and status checks that
# start after 7 s instead of 40 s. `squeue` reads the job states from slurmctld, which keeps
# finished jobs for MinJobAge (3600 s here); `sacct` has no database to ask on this cluster.
# The plugin waits 10 s longer after every check that finds no job finished (checks at 7, 24,
# 51 s...) and 7 s after one that does; this cluster's jobs take 10 to 30 s (natv2's 5 to 20 s,
# plus the Snakemake each job starts), so most are seen at the second check.
SLURM_ARGS = ("--workflow-profile", "workflow/profiles/slurm",
              "--slurm-status-command", "squeue",
              "--slurm-init-seconds-before-status-checks", "7",
              "--seconds-between-status-checks", "7",
              "--slurm-keep-successful-logs")


def _resources(partition: str) -> tuple[str, ...]:
    return ("--default-resources", "slurm_account=", f"slurm_partition={partition}", "mem_mb=1000", "runtime=60",
            "--set-resources", f"report:slurm_partition={partition}")


def _missing_binaries() -> list[str]:
    path = f"{os.environ.get('PATH', '')}{os.pathsep}{SBIN}"
    return [c for c in ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "srun", "scancel")
            if shutil.which(c, path=path) is None]


if _missing_binaries():
    reason = f"no SLURM binaries ({', '.join(_missing_binaries())} missing): apt-get install slurm-wlm"
    if os.environ.get("NATV2_REQUIRE_SLURM"):
        raise RuntimeError(f"NATV2_REQUIRE_SLURM is set but there are {reason}")
    pytest.skip(reason, allow_module_level=True)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _stop(pid: int, name: str) -> None:
    """SIGTERM the daemon ``name`` recorded as ``pid`` (only if that pid still runs ``name``),
    then SIGKILL it after 15 s."""
    try:
        if name not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return  # gone, and the pid reused by another process
    except FileNotFoundError:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 15
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """The cluster's directory, with ENV (the helpers' environment) pointing at it."""
    state = tmp_path_factory.mktemp("slurm")
    pids = {}
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(ENV, "PATH", f"{state / 'bin'}{os.pathsep}{ENV['PATH']}{os.pathsep}{SBIN}")
            mp.setitem(ENV, "SLURM_CONF", str(state / "slurm.conf"))
            try:
                run(["bash", str(SCRIPT), str(state)], ROOT, timeout=120)
            finally:  # the script stops what it started when it fails; this covers the rest
                pids = {name: int((state / f"{name}.pid").read_text())
                        for name in DAEMONS if (state / f"{name}.pid").is_file()}
            yield state
            run(["scancel", "--user", getpass.getuser()], state, check=False)  # jobs of a failed test
    finally:
        for name in DAEMONS:
            if name in pids:
                _stop(pids[name], name)


def _project(root: Path) -> Path:
    project = project_copy(root)
    (project / SHARDS).write_text(SHARDS_YAML)
    return project


def _snakemake(project: Path, *args: str, check: bool = True):
    return run([str(BIN / "snakemake"), "--configfile", CONFIG, SHARDS, *args], project, check=check, timeout=1200)


def _jobs_of_run(output: str) -> dict[str, tuple[str, str]]:
    """rule -> (SLURM job id, state) for every job squeue knows of the run that printed ``output``."""
    run_id = next(line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("SLURM run ID:"))
    rows = run(["squeue", "--noheader", "--states=all", "--name", run_id, "--format=%i|%T|%k"], ROOT).stdout
    jobs = {}
    for row in rows.split():
        job_id, state, comment = row.split("|")
        assert comment.startswith("rule_") and comment[5:] not in jobs, rows
        jobs[comment[5:]] = (job_id, state)
    return jobs


def test_unknown_partition_fails_at_the_first_submission(slurm_cluster, tmp_path):
    project = _project(tmp_path / "bad")
    result = _snakemake(project, *SLURM_ARGS, *_resources("nonexistent"), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    lines = output.splitlines()
    first = next(i for i, line in enumerate(lines) if "Error in rule" in line)
    assert lines[first] == "Error in rule supernet:", output[-3000:]  # the first job, the first error
    assert "sbatch: error: invalid partition specified: nonexistent" in lines[first + 1], output[-3000:]
    assert "has been submitted with SLURM jobid" not in output
    assert _jobs_of_run(output) == {}
    written = list((project / "results").rglob("*"))
    assert written == [], written


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    """The pipeline through SLURM and, meanwhile, the local reference run (plain `snakemake
    --cores 2` on another copy): the SLURM run mostly waits on its status checks, one job at
    a time, so the two together take little longer than the SLURM run alone."""
    root = tmp_path_factory.mktemp("pipelines")
    project, local = _project(root / "slurm"), _project(root / "local")
    start = time.time()
    with (root / "local.out").open("w") as out:
        reference = subprocess.Popen([str(BIN / "snakemake"), "--cores", "2", "--configfile", CONFIG, SHARDS],
                                     cwd=local, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    try:
        result = _snakemake(project, *SLURM_ARGS, *_resources("debug"))
        print(f"pipeline through SLURM: {time.time() - start:.0f} s")
        reference.wait(timeout=1200)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    print(f"both pipelines: {time.time() - start:.0f} s")
    assert reference.returncode == 0, (root / "local.out").read_text()[-3000:]
    return project, local, result.stdout + result.stderr


def test_every_rule_ran_as_a_slurm_job(slurm_run):
    project, _, output = slurm_run
    expected = {st.name for st in stages(load_config([project / CONFIG, project / SHARDS]))}
    assert {"evaluate_01_0", "evaluate_01_1", "finish_02"} <= expected
    jobs = _jobs_of_run(output)
    assert set(jobs) == expected, output[-3000:]
    for rule, (job_id, state) in jobs.items():
        assert state == "COMPLETED", (rule, job_id, state)
        log = (project / f".snakemake/slurm_logs/rule_{rule}/{job_id}.log").read_text()
        assert f"rule {rule}:" in log and "1 of 1 steps (100%) done" in log, log[-2000:]


def test_final_archive_matches_the_local_run(slurm_run):
    project, local, _ = slurm_run
    for name in COMPARED:
        assert same_results(project / name, local / name), name
