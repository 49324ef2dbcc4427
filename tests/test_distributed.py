"""Data-parallel training under torchrun (gloo on CPU): the step N processes take is the step one
process takes on the global batch, the supernet stage trains with rank 0 alone writing, and a
run is deterministic for a given number of processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from natv2.distributed import World, local_slice
from natv2.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}


def torchrun(nproc: int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={nproc}", *args]
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


# ------------------------------------------------------------------------------- unit


def test_world_from_torchrun_environment():
    assert World.from_env({}) == World(0, 1, 0)
    world = World.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (world.rank, world.size, world.local_rank, world.writer, world.parallel) == (3, 4, 1, False, True)
    assert world.device(torch.device("cuda")) == torch.device("cuda", 1)
    assert world.device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(UserError, match="RANK=4 WORLD_SIZE=4"):
        World.from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(UserError, match="must be integers"):
        World.from_env({"WORLD_SIZE": "two"})


def test_local_slices_cover_the_batch_once_and_their_shares_sum_to_one():
    x = torch.arange(10)
    parts = [local_slice(World(r, 3, r), x) for r in range(3)]
    assert torch.equal(torch.cat([p[1][0] for p in parts]), x)
    assert sum(p[0] for p in parts) == pytest.approx(1.0)
    assert [len(p[1][0]) for p in parts] == [3, 3, 4]
    assert local_slice(World(), x) == (1.0, (x,))
    with pytest.raises(UserError, match="3 processes cannot split a batch of 2 images"):
        local_slice(World(0, 3, 0), torch.arange(2))


# ------------------------------------------------------------------------------- torchrun


def _update(path: Path) -> tuple[torch.Tensor, dict]:
    saved = torch.load(path, weights_only=True)
    keys = [k for k, v in saved["after"].items() if v.is_floating_point()]
    return torch.cat([(saved["after"][k] - saved["before"][k]).flatten() for k in keys]), saved


@pytest.mark.slow
def test_two_processes_take_the_step_one_process_takes(tmp_path):
    """One EPS step (kernel phase, two sub-networks, KD teacher) on the same global batch.

    The weight update of 2 processes equals that of 1 process up to float rounding: their
    relative difference is about 5e-3, as large as the difference between two mathematically
    equal batch-norm formulas within one process (BN makes some gradients a cancellation of
    large terms). Without synchronised batch norm it is 0.67, without the gradient sum
    larger still; the threshold below tells them apart."""
    worker = str(ROOT / "tests/distributed/one_step.py")
    subprocess.run([sys.executable, worker, str(tmp_path / "one.pt")], cwd=ROOT, env=ENV, check=True,
                   timeout=300)
    torchrun(2, worker, str(tmp_path / "two.pt"))
    one, a = _update(tmp_path / "one.pt")
    two, b = _update(tmp_path / "two.pt")
    assert all(torch.equal(a["before"][k], b["before"][k]) for k in a["before"])
    assert float((one - two).norm() / one.norm()) < 0.02
    assert b["record"]["loss"] == pytest.approx(a["record"]["loss"], rel=1e-5)
    assert b["record"]["train_top1"] == a["record"]["train_top1"]


def _override(tmp_path: Path, name: str, **extra) -> Path:
    path = tmp_path / f"{name}.yaml"
    doc = {"results_dir": str(tmp_path / name),
           "supernet": {"train": {"phases": {"full": {"epochs": 2, "lr": 0.05}}}}}
    doc.update(extra)
    path.write_text(yaml.safe_dump(doc))
    return path


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_supernet_stage_under_torchrun(tmp_path):
    """`natv2 supernet` with 2 processes: the loss decreases, rank 0 alone writes (one summary
    line, the stage's files and nothing else), and a second run gives the same network."""
    runs = []
    for name in ("first", "second"):
        over = _override(tmp_path, name)
        result = torchrun(2, "-m", "natv2", "supernet", "--config", "config/test.yaml", "--config", str(over))
        runs.append(tmp_path / name)
        assert result.stdout.count("supernet: EE_B w1.0 ready") == 1, result.stdout
    first, second = runs
    assert _files(first) == ["supernet/supernet.json", "supernet/supernet.pt", "supernet/teacher.pt",
                             *(f"supernet/work/phase_{i:02d}_{p}.{ext}" for i, p in enumerate(["full", "kernel", "depth"])
                               for ext in ("json", "pt"))]
    info = json.loads((first / "supernet/supernet.json").read_text())
    full = info["phases"][0]
    assert full["name"] == "full" and full["epoch_loss"][1] < full["epoch_loss"][0]
    again = json.loads((second / "supernet/supernet.json").read_text())
    for record in (info, again):
        record.pop("seconds")
        for phase in record["phases"]:
            phase.pop("seconds")
    assert info == again
    for name in _files(first):  # checkpoints hold no wall times: the same bytes
        if name.endswith(".pt"):
            assert (first / name).read_bytes() == (second / name).read_bytes(), name


@pytest.mark.slow
def test_more_processes_than_the_batch_can_split(tmp_path):
    over = _override(tmp_path, "small", data={"batch_size": 2})
    result = torchrun(3, "-m", "natv2", "supernet", "--config", "config/test.yaml", "--config", str(over),
                      check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("natv2 supernet: error:")]
    assert lines and set(lines) == {"natv2 supernet: error: torchrun: 3 processes cannot split a batch "
                                    "of 2 images; use at most 2 processes or a larger batch size"}, result.stderr
    assert not (tmp_path / "small").exists()


@pytest.mark.slow
def test_pipeline_with_two_processes_per_training_job(tmp_path):
    """`processes: 2`: Snakemake starts the supernet, each search round and each fine-tuning
    through torchrun; process 0 alone writes, and the finished pipeline has nothing left to do."""
    from test_pipeline_e2e import CONFIG, project_copy, run

    project = project_copy(tmp_path / "project")
    (project / "config/processes.yaml").write_text("processes: 2\n")
    configs = ["--configfile", CONFIG, "config/processes.yaml"]
    dry = run([str(BIN / "snakemake"), "-n", "-p", "--cores", "2", *configs], project).stdout
    launched = [line for line in dry.splitlines() if "torchrun --standalone --nproc-per-node=2 -m natv2" in line]
    assert len(launched) == 1 + 2 + 3, dry  # supernet, 2 rounds, 3 fine-tunings
    run([str(BIN / "snakemake"), "--cores", "2", *configs], project)
    for stage in ("supernet", "search_round_01", "search_round_02", "finetune_0"):
        log = (project / f"logs/{stage}.log").read_text()
        summary = [line for line in log.splitlines() if line.startswith(("supernet:", "search-round", "finetune rank"))]
        assert len(summary) == 1, (stage, log[-2000:])  # process 0 alone reports
    stats = json.loads((project / "results/search/round_02/stats.json").read_text())
    assert stats["adaptation"]["epochs"] == 1 and len(stats["adaptation"]["epoch_loss"]) == 1
    assert json.loads((project / "results/finetune/rank_0/metrics.json").read_text())["used"] is True
    again = run([str(BIN / "snakemake"), "-n", "--cores", "2", *configs], project)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_slurm_profile_asks_for_a_gpu_per_process(tmp_path):
    """With `processes: 4` and a GPU device, each training job is one torchrun on 4 GPUs and
    4 x threads CPUs; the evaluation-only jobs keep one GPU and plain natv2."""
    extra = tmp_path / "processes.yaml"
    extra.write_text("processes: 4\n")
    result = subprocess.run([str(BIN / "snakemake"), "-n", "-p", "--workflow-profile", "workflow/profiles/slurm",
                             "--configfile", "config/tiny-imagenet.yaml", str(extra)], cwd=ROOT, env=ENV,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = result.stdout.split("\n\n")
    supernet = next(j for j in jobs if "rule supernet:" in j)
    assert "gpu=4" in supernet, supernet
    assert "torchrun --standalone --nproc-per-node=4 -m natv2 supernet" in result.stdout
    init = next(j for j in jobs if "rule init_archive:" in j)
    assert "gpu=1" in init and "torchrun" not in init, init
    local = subprocess.run([str(BIN / "snakemake"), "-n", "--cores", "64", "--configfile", "config/tiny-imagenet.yaml",
                            str(extra)], cwd=ROOT, env=ENV, capture_output=True, text=True).stdout.split("\n\n")
    assert "threads: 32" in next(j for j in local if "rule supernet:" in j)  # 4 x threads: 8
    assert "threads: 8" in next(j for j in local if "rule init_archive:" in j)
