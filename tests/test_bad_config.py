"""Bad configs are refused before any job runs, with one line naming the key and what is allowed,
by the natv2 CLI and by Snakemake alike; nothing is written under results/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from natv2.cli import main

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")

BAD = {
    "unknown key": ({"serach": {"rounds": 2}}, "unknown config key 'serach'"),
    "wrong type": ({"search": {"rounds": "three"}}, "'search.rounds': 'three' has the wrong type"),
    "zero rounds": ({"search": {"rounds": 0}}, "'search.rounds': 0 is less than the minimum of 1"),
    "negative rounds": ({"search": {"rounds": -2}}, "'search.rounds': -2 is less than the minimum of 1"),
    "n_doe below 2": ({"search": {"n_doe": 1}}, "'search.n_doe': 1 is less than the minimum of 2"),
    "unknown dataset": ({"data": {"name": "mnist"}}, "'data.name': 'mnist' is not allowed; allowed: digits"),
    "unknown family": ({"supernet": {"family": "EE_X"}}, "'supernet.family': 'EE_X' is not allowed; allowed: SE_B"),
    "unknown policy": ({"search": {"policy": "nsga"}}, "'search.policy': 'nsga' is not allowed; allowed: nat, natv2, random"),
    "unknown predictor": ({"search": {"predictor": "xgb"}}, "'search.predictor': 'xgb' is not allowed; allowed: lgbm"),
    "unknown objective": ({"search": {"objectives": ["flops"]}}, "'search.objectives.0': 'flops' is not allowed; allowed: params, macs, latency"),
    "resolution out of range": ({"supernet": {"source": {"pretrained": "ofa_mbv3_d234_e346_k357_w1.0"}},
                                 "space": {"resolutions": [32]}}, "'space.resolutions': [32] outside"),
    "slots above n_doe": ({"search": {"n_doe": 4}, "finetune": {"slots": 5}}, "'finetune.slots': 5 is more than search.n_doe"),
    "missing file source": ({"supernet": {"source": {"file": "no/such.pt"}}}, "'supernet.source.file': 'no/such.pt' does not exist"),
    "unknown pretrained": ({"supernet": {"source": {"pretrained": "resnet50"}}}, "allowed: ofa_mbv3_d234_e346_k357_w1.0"),
}


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "results"), **raw}))
    return path


@pytest.mark.parametrize("kind", sorted(BAD))
def test_cli_refuses_bad_config(kind, tmp_path, capsys):
    raw, expected = BAD[kind]
    path = write(tmp_path, raw)
    assert main(["init-archive", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("kind", ["unknown key", "slots above n_doe", "unknown family", "missing file source"])
def test_snakemake_refuses_bad_config_before_any_job(kind, tmp_path):
    raw, expected = BAD[kind]
    path = write(tmp_path, raw)
    result = subprocess.run([SNAKEMAKE, "--cores", "1", "--configfile", str(path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0
    # Snakemake's own note that it read workflow/profiles/default comes first; then natv2's line
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not line.startswith("Using workflow specific profile")]
    assert len(lines) == 1 and lines[0].startswith("natv2: config error: ") and expected in lines[0], lines
    assert not (tmp_path / "results").exists()


def test_snakemake_refuses_command_line_overrides(tmp_path):
    result = subprocess.run([SNAKEMAKE, "-n", "--cores", "1", "--config", "seed=3"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "put them in a YAML file and pass --configfile" in result.stderr


# a 'billion laughs' nested under space.resolutions: 8 levels of 9 aliases (380 bytes expand into
# 43 million list items, 9**8; PyYAML's safe_load builds them all)
ALIAS_BOMB = "a: &a [16]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join('*' + chr(97 + i) for _ in range(9))}]\n" for i in range(8)
) + "space: {resolutions: *i}\n"

BAD_FILES = {
    "alias bomb": (ALIAS_BOMB.encode(), "line 2: alias '*a' refused"),
    "duplicate key": (b"seed: 1\nsearch: {rounds: 2}\nseed: 2\n", "line 3: duplicate key 'seed'"),
    "nested duplicate key": (b"search:\n  rounds: 2\n  rounds: 3\n", "line 3: duplicate key 'rounds'"),
    "not UTF-8": (b"seed: 1\nresults_dir: r\xe9sultats\n", "is not UTF-8 text: byte 0xe9 at offset 22"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_cli_refuses_bad_config_files_at_once(kind, tmp_path, capsys):
    data, expected = BAD_FILES[kind]
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and len(err) < 300, err


def test_a_directory_is_not_a_config_file(tmp_path, capsys):
    assert main(["check-config", "--config", str(tmp_path)]) == 2
    assert f"config file '{tmp_path}' is a directory" in capsys.readouterr().err


HUGE = {"search": {"n_doe": 1_000_000_000}}
TINY_SPACE = {"space": {"resolutions": [16]}, "search": {"n_doe": 6},
              "supernet": {"family": "SE_B", "ks_list": [3], "expand_list": [3], "depth_list": [4]}}


@pytest.mark.parametrize("command", ["check-config", "init-archive"])
def test_initial_archive_larger_than_the_space_or_the_memory(command, tmp_path, capsys):
    assert main([command, "--config", str(write(tmp_path, HUGE))]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"natv2 {command}: error: search.n_doe x preprocess_factor 10 = 10,000,000,000 "
                          f"architectures for the initial archive: drawing them needs about ") and \
        " GiB; set search.n_doe to at most " in err and err.count("\n") == 1, err
    assert main([command, "--config", str(write(tmp_path, TINY_SPACE))]) == 2
    assert capsys.readouterr().err == (f"natv2 {command}: error: search.n_doe x preprocess_factor 10 = 60 "
                                       f"architectures for the initial archive, but the search space holds only "
                                       f"1; widen the space (supernet.ks_list, expand_list, depth_list, "
                                       f"space.resolutions)\n")
    assert not (tmp_path / "results").exists()


def test_snakemake_refuses_an_initial_archive_beyond_the_memory_before_any_job(tmp_path):
    result = subprocess.run([SNAKEMAKE, "--cores", "1", "--configfile", str(write(tmp_path, HUGE))], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "natv2: config error: search.n_doe x preprocess_factor 10 = 10,000,000,000 architectures" in result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(("raw", "expected"), [
    ({"finetune": {"lr": float("inf")}}, "config key 'finetune.lr': inf is not a finite number"),
    ({"search": {"adaptation": {"kd_ratio": float("inf")}}},
     "config key 'search.adaptation.kd_ratio': inf is not a finite number"),
])
def test_non_finite_numbers_are_refused(raw, expected, tmp_path, capsys):
    assert main(["check-config", "--config", str(write(tmp_path, raw))]) == 2
    assert capsys.readouterr().err == f"natv2 check-config: error: {expected}\n"


def test_error_lines_are_capped(tmp_path, capsys):
    key = "k" * 5000
    assert main(["check-config", "--config", str(write(tmp_path, {key: 1}))]) == 2
    err = capsys.readouterr().err
    message = err.removeprefix("natv2 check-config: error: ").rstrip("\n")
    assert err.count("\n") == 1 and len(message) <= 300 and " … " in message, err
    assert message.startswith("unknown config key 'kkk")
