"""Every command in the README is exercised: cheap ones here, the others by the named tests."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
README = (ROOT / "README.md").read_text()

# command prefix -> where it is exercised
COVERED = {
    "make run": "tests/test_pipeline_e2e.py (snakemake --cores on the tiny config; make run adds set-up)",
    "make test": "CI runs it (.ci/run)",
    "make bench": "tests/test_benchmarks.py (every script on the tiny config)",
    "natv2 check-config": "test_check_config_command_in_readme",
    "dvc repro": "tests/test_pipeline_e2e.py::test_dvc_repro_matches_snakemake_and_is_idempotent",
    "dvc remote add": "tests/test_pipeline_e2e.py::test_share_through_a_dvc_remote",
    "dvc push": "tests/test_pipeline_e2e.py::test_share_through_a_dvc_remote",
    "snakemake --workflow-profile workflow/profiles/slurm": "test_slurm_profile_dry_run, tests/test_slurm.py (a real cluster)",
    "torchrun --standalone": "tests/test_distributed.py (supernet stage under torchrun, gloo)",
    "natv2 predict": "tests/test_cli_model.py",
    "natv2 export": "tests/test_cli_model.py",
}


def shell_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def test_readme_opens_with_the_two_commands():
    first = shell_commands()[:2]
    assert first == ["make run", "make test"]


@pytest.mark.parametrize("command", shell_commands())
def test_every_readme_command_is_covered(command):
    assert any(command.startswith(prefix) for prefix in COVERED), f"no test covers README command: {command}"


def test_check_config_command_in_readme():
    result = subprocess.run([str(BIN / "natv2"), "check-config", "--config", "config/config.yaml"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0 and "valid" in result.stdout


def test_slurm_profile_dry_run():
    commands = [c for c in shell_commands() if c.startswith("snakemake --workflow-profile workflow/profiles/slurm")]
    assert len(commands) == 2
    for command in commands:  # each README form, as a dry run
        args = [str(BIN / "snakemake"), "-n", *command.split()[1:]]
        result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "gpu=1" in result.stdout + result.stderr
    assert "slurm_account=myproject, slurm_partition=cpu" in result.stdout  # the override took


@pytest.mark.parametrize("configfile", ["config/cifar10.yaml", "config/cifar100.yaml", "config/tiny-imagenet.yaml",
                                        "config/cifar10-ofa-imagenet.yaml"])
def test_paper_configs_validate_and_dry_run(configfile, tmp_path):
    """Each shipped GPU config dry-runs; the thesis' CIFAR configs once their source, the Tiny
    ImageNet run's two-width super-network, exists (and not before: one line naming it)."""
    project = tmp_path / "project"
    for name in ("workflow", "config"):
        shutil.copytree(ROOT / name, project / name, symlinks=False)
    cfg = yaml.safe_load((project / configfile).read_text())
    source = cfg["supernet"]["source"]
    args = [str(BIN / "snakemake"), "-n", "--cores", "1", "--configfile", configfile]
    if isinstance(source, dict) and "file" in source:
        result = subprocess.run(args, cwd=project, capture_output=True, text=True)
        assert result.returncode != 0 and f"'{source['file']}' does not exist" in result.stderr
        upstream = project / source["file"]
        upstream.parent.mkdir(parents=True)
        upstream.write_bytes(b"")
    result = subprocess.run(args, cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "search_round" in result.stdout
    assert cfg["supernet"]["width_mult"] == (1.0 if "ofa-imagenet" in configfile else [1.0, 1.2])


def test_python_api_snippet_runs():
    block = re.findall(r"## Python API\n\n```python\n(.*?)```", README, flags=re.S)[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["arch"].to_nat()["d"] == [2, 3, 3, 3, 4]


def test_snakemake_lint_has_only_explained_lints():
    result = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=ROOT, capture_output=True, text=True)
    lints = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip().startswith("*")]
    # the one remaining lint is explained in the Snakefile (one environment for every rule)
    assert set(lints) <= {"* Specify a conda environment or container for each rule.:"}, lints
