"""The workflow: Snakemake and dvc.yaml describe the same graph, and dvc.yaml is current."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from natv2.cli import main
from natv2.config import load_config, read_yaml
from natv2.pipeline.dag import dvc_yaml, stages

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def snakemake_jobs(configfile: str, cwd: Path = ROOT) -> dict[str, tuple[frozenset, frozenset]]:
    """rule+outputs -> (inputs, outputs) of every job of a dry run from scratch."""
    out = subprocess.run([SNAKEMAKE, "-n", "--cores", "1", "--forceall", "--configfile", configfile],
                         cwd=cwd, capture_output=True, text=True, check=True).stdout
    jobs = {}
    for block in re.split(r"\n(?=rule \w+:)", out):
        m = re.match(r"rule (\w+):", block)
        if not m or m.group(1) == "all":
            continue
        fields = dict(re.findall(r"^\s+(input|output): (.*)$", block, flags=re.M))
        ins = frozenset(s.strip() for s in fields.get("input", "").split(",") if s.strip())
        outs = frozenset(s.strip() for s in fields["output"].split(",") if s.strip())
        jobs[" ".join(sorted(outs))] = (ins, outs)
    return jobs


def dvc_stages(doc: dict) -> dict[str, tuple[frozenset, frozenset]]:
    result = {}
    for entry in doc["stages"].values():
        outs = set(entry["outs"])
        for kind in ("metrics", "plots"):
            outs |= {item if isinstance(item, str) else next(iter(item)) for item in entry.get(kind, [])}
        result[" ".join(sorted(outs))] = (frozenset(entry.get("deps", [])), frozenset(outs))
    return result


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/test.yaml"])
def test_snakemake_dag_equals_dvc_yaml(configfile):
    cfg = load_config(ROOT / configfile)
    doc = dvc_yaml(cfg, read_yaml(ROOT / configfile), configfile)
    smk = snakemake_jobs(configfile)
    dvc = dvc_stages(doc)
    assert set(smk) == set(dvc), set(smk) ^ set(dvc)
    for key, (ins, outs) in smk.items():
        assert dvc[key] == (ins, outs), key
    assert len(smk) == len(stages(cfg))


def test_sharded_rounds_scatter_and_gather(tmp_path):
    configfile = tmp_path / "sharded.yaml"
    raw = read_yaml(ROOT / "config/test.yaml")
    raw["search"]["shards"] = 2
    configfile.write_text(yaml.safe_dump(raw))
    smk = snakemake_jobs(str(configfile))
    dvc = dvc_stages(dvc_yaml(load_config(configfile), raw, str(configfile)))
    assert smk == dvc
    shard_jobs = [k for k in smk if "shard_" in k and "archive.csv" not in k]
    assert len(shard_jobs) == 2 * raw["search"]["rounds"]


def test_committed_dvc_yaml_is_current(tmp_path):
    out = tmp_path / "dvc.yaml"
    assert main(["dvc-yaml", "--config", "config/config.yaml", "--output", str(out)]) == 0
    assert out.read_text() == (ROOT / "dvc.yaml").read_text(), "run `natv2 dvc-yaml` and commit dvc.yaml"


def test_dvc_params_list_only_keys_the_file_states(tmp_path):
    raw = {"search": {"rounds": 2, "n_doe": 4}, "finetune": {"lr": 0.5, "slots": 2}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    doc = dvc_yaml(load_config(path), raw, str(path))
    params = {name: st.get("params", [{}])[0].get(str(path), []) for name, st in doc["stages"].items()}
    assert params["init_archive"] == ["search.n_doe"]
    assert params["finetune_0"] == ["finetune.lr"]  # slots shape the graph, they are no parameter
    # a new round is a new stage; the rounds' adaptation schedule spans them all, so the number of
    # rounds is a parameter of every round and of nothing else
    rounds = [name for name, keys in params.items() if "search.rounds" in keys]
    assert rounds == ["search_round_01", "search_round_02"]
    assert params["supernet"] == []


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/test.yaml"])
def test_shipped_configs_dry_run(configfile):
    result = subprocess.run([SNAKEMAKE, "-n", "--cores", "1", "--configfile", configfile], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
