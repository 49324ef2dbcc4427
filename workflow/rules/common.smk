# Shared set-up of every rule: the validated config, the natv2 command and the stage graph.
import os
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("8.0")

# The natv2 command of the Python running Snakemake, also without an activated venv. (Lint
# "specify a conda environment or container for each rule": deliberately not done; every rule runs
# the natv2 CLI of the environment Snakemake itself runs in, installed once by `make`, instead of
# building a multi-GB PyTorch environment per rule.)
envvars:
    "PATH",


os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

from natv2.config import load_config, merge, read_yaml  # noqa: E402
from natv2.errors import UserError, one_line  # noqa: E402
from natv2.lifeline import WATCH_ENV, watch_token  # noqa: E402
from natv2.pipeline.context import check_search_fits  # noqa: E402

# Every job stops when this Snakemake dies, SIGKILL included (natv2.lifeline): no orphan stage.
os.environ[WATCH_ENV] = watch_token()
from natv2.layout import Layout  # noqa: E402
from natv2.pipeline.dag import PARALLEL_KINDS, launcher, named, stage_params, stages  # noqa: E402

def _as_given_here(path) -> str:
    """``path`` relative to the working directory when it lies inside it. Snakemake hands
    ``--configfile`` over as an absolute path, and a rule's command is part of what it compares
    to decide a rerun: written relative, the command is the same with or without
    ``--configfile config/config.yaml``, however the path is spelled, and after the project
    directory is moved or cloned elsewhere."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:  # a config outside the project: its absolute path
        return str(resolved)


CONFIG_FILES = [_as_given_here(p) for p in workflow.overwrite_configfiles] or ["config/config.yaml"]
try:
    CFG = load_config(CONFIG_FILES)
    check_search_fits(CFG)
    _from_files = {}
    for _path in CONFIG_FILES:
        _from_files = merge(_from_files, read_yaml(_path))
except UserError as exc:  # ConfigError is one
    sys.exit(f"natv2: config error: {one_line(str(exc))}")
if workflow.overwrite_configfiles and dict(config) != _from_files or not workflow.overwrite_configfiles and config:
    sys.exit("natv2: config error: --config KEY=VALUE overrides cannot reach the natv2 stages; "
             "put them in a YAML file and pass --configfile FILE")

CONFIG_ARGS = " ".join(f"--config {p}" for p in CONFIG_FILES)
LAYOUT = Layout.from_config(CFG)
STAGES = stages(CFG)
GPU = 0 if CFG["device"] == "cpu" else 1

# What a job of each kind asks the scheduler for beyond workflow/profiles/default (mem_mb 8000,
# runtime 720 min, gpu 0): the torch stages a GPU unless `device: cpu`, longer or shorter runtimes.
KIND_RESOURCES = {
    "supernet": {"runtime": 24 * 60, "gpu": GPU},
    "init_archive": {"gpu": GPU},
    "search_round": {"gpu": GPU},
    "search_propose": {"runtime": 4 * 60},
    "search_evaluate": {"runtime": 4 * 60, "gpu": GPU},
    "search_finish": {"gpu": GPU},
    "finetune": {"gpu": GPU},
    "baselines": {"runtime": 2 * 60, "gpu": GPU},
    "report": {"mem_mb": 2000, "runtime": 30},
    "latency_table": {"runtime": 4 * 60, "gpu": GPU if CFG["latency"]["backend"] == "torch" else 0},
}
KIND_THREADS = {"report": 1}
# A data-parallel training job (`processes` > 1) runs that many torchrun processes on one node:
# as many GPUs (with a GPU device) and `threads` CPUs per process.
PROCESSES = int(CFG["processes"])


def threads_of(kind):
    threads = KIND_THREADS.get(kind, CFG["threads"])
    return threads * PROCESSES if kind in PARALLEL_KINDS else threads


def resources_of(kind):
    res = dict(KIND_RESOURCES[kind])
    if kind in PARALLEL_KINDS and res.get("gpu"):
        res["gpu"] = res["gpu"] * PROCESSES
    return res
