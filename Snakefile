# natv2 workflow. Each rule is a thin call into `natv2 <stage>`; the stage graph (files and the
# config keys each stage depends on) comes from natv2/pipeline/dag.py, which also writes dvc.yaml.
#
#   snakemake --cores all                                  # config/config.yaml
#   snakemake --cores all --configfile config/cifar10.yaml # another config (files merge in order)
#
# The config is validated, and its defaults filled, against workflow/schemas/config.schema.yaml
# (the schema the natv2 CLI uses) before any job runs: a bad config is one line, exit 1.
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

from natv2.config import ConfigError, load_config, merge, read_yaml  # noqa: E402
from natv2.pipeline.dag import (  # noqa: E402
    REPORT_FILES,
    rank_outputs,
    report_inputs,
    round_inputs,
    stage_params,
)

CONFIG_FILES = [str(p) for p in workflow.overwrite_configfiles] or ["config/config.yaml"]
try:
    CFG = load_config(CONFIG_FILES)
    _from_files = {}
    for _path in CONFIG_FILES:
        _from_files = merge(_from_files, read_yaml(_path))
except ConfigError as exc:
    sys.exit(f"natv2: config error: {exc}")
if workflow.overwrite_configfiles and dict(config) != _from_files or not workflow.overwrite_configfiles and config:
    sys.exit("natv2: config error: --config KEY=VALUE overrides cannot reach the natv2 stages; "
             "put them in a YAML file and pass --configfile FILE")

CONFIG_ARGS = " ".join(f"--config {p}" for p in CONFIG_FILES)
RES = CFG["results_dir"].rstrip("/")
ROUNDS = int(CFG["search"]["rounds"])
SLOTS = int(CFG["finetune"]["slots"])
SHARDS = int(CFG["search"]["shards"])
GPU = 0 if CFG["device"] == "cpu" else 1


include: "workflow/rules/supernet.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        [f"{RES}/report/{name}" for name in (*REPORT_FILES, "metrics.json", "pareto.csv")],
