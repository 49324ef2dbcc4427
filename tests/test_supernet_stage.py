"""The ``supernet`` stage: training from scratch, the url / file sources, warm starts, bad input.

Checkpoints are served by a local HTTP server on 127.0.0.1; every run uses digits at 16 px,
120 training images and one epoch per phase.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from loopback import LoopbackServer

from natv2.cli import main
from natv2.config import validate
from natv2.errors import UserError
from natv2.pipeline.context import space_from_config
from natv2.pipeline.supernet_stage import run_supernet
from natv2.supernet import (
    build_supernet,
    load_static,
    load_supernet,
    read_extra,
    save_checkpoint,
    sources,
)
from natv2.supernet.download import download
from natv2.supernet.sources import PRETRAINED, fetch_source
from natv2.train.eps import make_teacher

SMALL = {"ks_list": [3], "expand_list": [3]}  # small; depth_list stays [2, 3, 4] (the space has 4 slots a stage)
PHASES = ("full", "kernel", "net_width", "net_depth", "depth", "expand")


def make_config(tmp_path: Path, **supernet) -> dict:
    return {
        "seed": 0,
        "device": "cpu",
        "threads": 1,
        "results_dir": str(tmp_path / "results"),
        "data": {"name": "digits", "train_subset": 120, "calib_size": 32, "val_fraction": 0.1,
                 "batch_size": 32, "eval_batch_size": 128},
        "supernet": {
            "cache_dir": str(tmp_path / "cache"),
            "train": {"phases": {p: {"epochs": 1, "subnets_per_step": 1} for p in PHASES}},
            "warmup": {"largest_epochs": 0, "supernet_epochs": 0, "subnets_per_step": 1},
            **supernet,
        },
        "space": {"resolutions": [16]},
    }


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checkpoint_bytes(tmp_path: Path, name: str, family: str, width: float = 1.0, n_classes: int = 10,
                     seed: int = 0, **lists) -> tuple[Path, object]:
    torch.manual_seed(seed)
    net = build_supernet(family, width_mult=width, n_classes=n_classes, **lists)
    return save_checkpoint(net, tmp_path / name), net


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def ofa_layout(tmp_path_factory):
    """An OFA-layout SE_B checkpoint (``{"state_dict": ...}``, 1000 classes) and its net."""
    torch.manual_seed(1)
    net = build_supernet("SE_B", n_classes=1000)
    path = tmp_path_factory.mktemp("ofa") / "ofa_mbv3_d234_e346_k357_w1.0"
    torch.save({"state_dict": net.state_dict()}, path)
    return path, net


# ---------------------------------------------------------------- source: train


def test_train_writes_checkpoint_and_json_and_resumes(tmp_path):
    cfg = validate(make_config(tmp_path))
    info = run_supernet(cfg, show_progress=False)
    out = tmp_path / "results" / "supernet"
    on_disk = json.loads((out / "supernet.json").read_text())
    assert on_disk == info
    for key in ("family", "width_mult", "source", "sha256", "phases", "val_top1", "seconds"):
        assert key in info, key
    assert info["family"] == "SE_B" and info["width_mult"] == 1.0 and info["n_classes"] == 10
    assert info["source"] == {"kind": "train"} and info["sha256"] is None
    assert [p["name"] for p in info["phases"]] == ["full", "kernel", "depth", "expand"]
    assert all(p["epochs"] == 1 and p["seconds"] > 0 for p in info["phases"])
    assert set(info["val_top1"]) == {"largest", "smallest"}
    assert all(0.0 <= v <= 100.0 for v in info["val_top1"].values())
    assert info["seconds"] >= sum(p["seconds"] for p in info["phases"])
    net = load_supernet(out / "supernet.pt")
    assert net.family == "SE_B" and net.n_classes == 10
    # without a warm-up the search's teacher is the super-network's largest network
    assert set(info["files"]) == {"supernet.pt", "teacher.pt"}
    teacher, largest = load_static(out / "teacher.pt"), make_teacher(net, space_from_config(cfg))
    assert teacher.config() == largest.config()
    assert all(torch.equal(v, largest.state_dict()[k]) for k, v in teacher.state_dict().items())
    assert read_extra(out / "teacher.pt") == {"origin": "the super-network's largest"}
    assert sorted(p.name for p in (out / "work").iterdir()) == sorted(
        f"phase_{i:02d}_{p}.{ext}" for i, p in enumerate(["full", "kernel", "depth", "expand"])
        for ext in ("pt", "json"))  # the JSON beside each checkpoint: its records with wall times

    # a rerun resumes after the last finished phase: nothing is trained again
    again = run_supernet(cfg, show_progress=False)
    assert again["phases"] == info["phases"] and again["val_top1"] == info["val_top1"]
    state, before = load_supernet(out / "supernet.pt").state_dict(), net.state_dict()
    assert all(torch.equal(state[k], before[k]) for k in before)


def test_early_exit_full_phase_records_each_exits_validation_top1(tmp_path):
    cfg = make_config(tmp_path, family="EE_B")
    cfg["supernet"]["train"]["phases"] = {p: {"epochs": int(p == "full"), "subnets_per_step": 1}
                                          for p in ("full", "kernel", "net_depth", "depth", "expand")}
    cfg["space"]["resolutions"] = [12, 16]
    info = run_supernet(validate(cfg), show_progress=False)
    full = info["phases"][0]
    assert full["name"] == "full" and set(full["val_top1_exits"]) == {"12", "16"}
    for row in full["val_top1_exits"].values():
        assert len(row["per_exit"]) == 5 and all(0.0 <= a <= 100.0 for a in row["per_exit"])
        assert 0.0 <= row["ensemble"] <= 100.0
    # the last exit at the largest resolution is the largest network val_top1 measures
    assert full["val_top1_exits"]["16"]["per_exit"][-1] == pytest.approx(info["val_top1"]["largest"], abs=1e-3)


# ---------------------------------------------------------------- sources: url, file, warm start


def test_url_source_with_pinned_sha(tmp_path, server):
    path, net = checkpoint_bytes(tmp_path, "se_b.pt", "SE_B", **SMALL)
    data = path.read_bytes()
    server.files["/nets/se_b.pt"] = data
    url = server.url + "/nets/se_b.pt"
    cfg = validate(make_config(tmp_path, source={"url": url, "sha256": sha256_bytes(data)}, **SMALL))
    info = run_supernet(cfg, show_progress=False)
    assert info["sha256"] == sha256_bytes(data)
    assert info["source"] == {"kind": "url", "url": url}
    assert info["load"] == {"loaded": "all tensors"} and info["phases"] == []  # same 10 classes
    cached = files_under(tmp_path / "cache")
    assert len(cached) == 1 and cached[0].read_bytes() == data
    saved = load_supernet(tmp_path / "results" / "supernet" / "supernet.pt").state_dict()
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    assert not (tmp_path / "results" / "supernet" / "work").exists()


def test_file_source_with_another_head_gets_the_warm_up(tmp_path, ofa_layout):
    path, ofa = ofa_layout
    cfg = validate(make_config(tmp_path, source={"file": str(path)},
                               warmup={"largest_epochs": 1, "supernet_epochs": 1, "subnets_per_step": 1}))
    info = run_supernet(cfg, show_progress=False)
    assert info["source"] == {"kind": "file", "file": str(path)}
    assert info["sha256"] == sha256_bytes(path.read_bytes())
    assert info["load"] == {"loaded": "all tensors"} and info["n_classes"] == 10
    assert [(p["name"], p["epochs"]) for p in info["phases"]] == [("warmup_largest", 1), ("warmup_supernet", 1)]
    assert all(p["seconds"] > 0 for p in info["phases"])
    net = load_supernet(tmp_path / "results" / "supernet" / "supernet.pt")
    assert net.n_classes == 10 and net.classifier.linear.out_features == 10
    assert files_under(tmp_path / "cache") == []  # a file source is not copied into the cache


def test_two_widths_from_one_file_each_get_the_thesis_warm_up(tmp_path):
    """run_nat_warmup.py: phase 1 the w1.0 largest, phase 2 the w1.2 largest, phase 3 both widths
    sampled together with the w1.2 largest as teacher; then one file holds both widths."""
    srcs = [checkpoint_bytes(tmp_path / "src", f"w{w}.pt", "SE_B", width=w, n_classes=7, seed=i, **SMALL)
            for i, w in enumerate((1.0, 1.2))]
    cfg = validate(make_config(tmp_path, width_mult=[1.0, 1.2], source=[{"file": str(p)} for p, _ in srcs],
                               warmup={"largest_epochs": 1, "supernet_epochs": 1, "subnets_per_step": 2}, **SMALL))
    info = run_supernet(cfg, show_progress=False)
    assert info["width_mult"] == [1.0, 1.2] and info["n_classes"] == 10
    assert info["source"] == [{"kind": "file", "file": str(p)} for p, _ in srcs]
    assert info["sha256"] == [sha256_bytes(p.read_bytes()) for p, _ in srcs]
    assert [(p["name"], p.get("width")) for p in info["phases"]] == [
        ("warmup_largest", 1.0), ("warmup_largest", 1.2), ("warmup_supernet", None)]
    assert set(info["val_top1"]["widths"]) == {"1.0", "1.2"}
    out = tmp_path / "results" / "supernet" / "supernet.pt"
    net = load_supernet(out)
    assert type(net).__name__ == "WidthSuperNets" and net.widths == (1.0, 1.2) and net.n_classes == 10
    # both widths were trained (their weights moved away from the sources')
    for trained, (_, source) in zip(net.nets, srcs, strict=True):
        key = "blocks.1.conv.depth_conv.conv.conv.weight"
        assert not torch.equal(trained.state_dict()[key], source.state_dict()[key])
    # the search's teacher: the w1.2 largest as phase 2 left it (run_nat_new.py teacher_weights),
    # not as the joint phase 3 went on to train it
    teacher = load_static(out.parent / "teacher.pt")
    final = make_teacher(net, space_from_config(cfg))
    assert read_extra(out.parent / "teacher.pt") == {"origin": "the warm-up's first step"}
    assert teacher.config() == final.config()  # the widest width's largest architecture
    assert any(not torch.equal(v, final.state_dict()[k]) for k, v in teacher.state_dict().items())

    # the result, one file of both widths, is a source of both widths (all tensors, no warm-up)
    again = make_config(tmp_path / "again", width_mult=[1.0, 1.2], source={"file": str(out)}, **SMALL)
    info2 = run_supernet(validate(again), show_progress=False)
    assert info2["load"] == {"loaded": "all tensors"} and info2["phases"] == []
    assert info2["val_top1"] == info["val_top1"]


def test_one_single_width_file_for_two_widths_is_refused(tmp_path, capsys):
    path, _ = checkpoint_bytes(tmp_path / "src", "w10.pt", "SE_B", **SMALL)
    rc, err = run_cli(tmp_path, capsys, width_mult=[1.0, 1.2], source={"file": str(path)}, **SMALL)
    assert_clean_failure(tmp_path, rc, err, "width_mult=1.0", "width_mult=[1.0, 1.2]")
    rc, err = run_cli(tmp_path, capsys, width_mult=[1.0, 1.2], source=[{"file": str(path)}], **SMALL)
    assert_clean_failure(tmp_path, rc, err, "1 sources for the 2 widths", "one source per width")


def test_ofa_layout_se_b_checkpoint_warm_starts_an_ee_b_supernet(tmp_path, ofa_layout):
    path, ofa = ofa_layout
    cfg = validate(make_config(tmp_path, family="EE_B", source={"file": str(path)}))
    info = run_supernet(cfg, show_progress=False)
    assert info["family"] == "EE_B"
    load = info["load"]
    assert load["copied"] == len(ofa.state_dict()) and load["skipped"] == []
    assert load["new_modules"] and all(m.startswith("early_exits") for m in load["new_modules"])
    net = load_supernet(tmp_path / "results" / "supernet" / "supernet.pt")
    assert net.family == "EE_B" and net.n_classes == 10
    src = ofa.state_dict()
    key = "blocks.5.conv.depth_conv.conv.conv.weight"
    assert key in src and torch.equal(net.state_dict()[key], src[key])


def test_our_se_b_checkpoint_warm_starts_an_ofav2_family(tmp_path):
    path, se = checkpoint_bytes(tmp_path, "se_b.pt", "SE_B", seed=3, **SMALL)
    cfg = validate(make_config(tmp_path, family="EE_P", source={"file": str(path)}, **SMALL))
    info = run_supernet(cfg, show_progress=False)
    assert info["load"]["copied"] == len(se.state_dict()) and info["phases"] == []
    state = load_supernet(tmp_path / "results" / "supernet" / "supernet.pt").state_dict()
    assert all(torch.equal(state[k], v) for k, v in se.state_dict().items())


# ---------------------------------------------------------------- bad input: exit 2, one line, nothing left


# a plain progress line of natv2.progress (stderr is not a terminal here)
PROGRESS_LINE = re.compile(r"^[\w. -]+: \S+ .*\[\d+:\d\d")


def run_cli(tmp_path: Path, capsys, **supernet) -> tuple[int, str]:
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(make_config(tmp_path, **supernet)))
    capsys.readouterr()
    rc = main(["supernet", "--config", str(cfg_path)])
    err = capsys.readouterr().err
    return rc, err


def assert_clean_failure(tmp_path: Path, rc: int, err: str, *needles: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    assert err.endswith("\n"), repr(err)
    *before, line = err.splitlines()  # one line, after the download's progress lines if any
    assert all(PROGRESS_LINE.match(b) for b in before), repr(err)
    assert line.startswith("natv2 supernet: error: "), repr(err)
    for needle in needles:
        assert needle in line, (needle, line)
    assert files_under(tmp_path / "cache") == []
    assert files_under(tmp_path / "results") == []
    return line


def test_unknown_pretrained_name(tmp_path, capsys):
    rc, err = run_cli(tmp_path, capsys, source={"pretrained": "ofa_mbv3_nope"})
    assert_clean_failure(tmp_path, rc, err, "supernet.source", "ofa_mbv3_nope")
    # the registry itself names the valid ones (the schema's enum is the same list)
    with pytest.raises(UserError, match="valid: " + ", ".join(PRETRAINED)):
        fetch_source({"pretrained": "ofa_mbv3_nope"}, str(tmp_path / "cache"))
    from natv2.config import schema

    names = schema()["properties"]["supernet"]["properties"]["source"]["oneOf"][1]["properties"]
    assert names["pretrained"]["enum"] == list(PRETRAINED)


def test_unknown_pretrained_name_lists_the_valid_ones(tmp_path, capsys):
    rc, err = run_cli(tmp_path, capsys, source={"pretrained": "ofa_mbv3_nope"})
    assert_clean_failure(tmp_path, rc, err, *PRETRAINED)


def test_url_404(tmp_path, capsys, server):
    url = server.url + "/missing.pt"
    rc, err = run_cli(tmp_path, capsys, source={"url": url})
    assert_clean_failure(tmp_path, rc, err, url, "HTTP 404")


def test_unreachable_url(tmp_path, capsys, monkeypatch):
    # no back-off sleeps between the retries (the real download waits 1+2+4+8 s)
    monkeypatch.setattr(sources, "download", functools.partial(download, backoff=0.0))
    url = "http://127.0.0.1:9/x"
    rc, err = run_cli(tmp_path, capsys, source={"url": url})
    assert_clean_failure(tmp_path, rc, err, url, "connection refused")


def test_sha256_mismatch(tmp_path, capsys, server):
    path, _ = checkpoint_bytes(tmp_path / "src", "se_b.pt", "SE_B", **SMALL)
    data = path.read_bytes()
    server.files["/se_b.pt"] = data
    wrong = "0" * 64
    rc, err = run_cli(tmp_path, capsys, source={"url": server.url + "/se_b.pt", "sha256": wrong}, **SMALL)
    assert_clean_failure(tmp_path, rc, err, "sha256 mismatch", wrong, sha256_bytes(data))


def test_checkpoint_of_another_family_by_url(tmp_path, capsys, server):
    path, _ = checkpoint_bytes(tmp_path / "src", "ee_d.pt", "EE_D", **SMALL)
    server.files["/ee_d.pt"] = path.read_bytes()
    rc, err = run_cli(tmp_path, capsys, source={"url": server.url + "/ee_d.pt"}, **SMALL)
    # the downloaded file is useless for this config: not kept in the cache either
    assert_clean_failure(tmp_path, rc, err, "family EE_D", "SE_B")


def test_checkpoint_of_another_width(tmp_path, capsys):
    path, _ = checkpoint_bytes(tmp_path / "src", "w12.pt", "SE_B", width=1.2, **SMALL)
    rc, err = run_cli(tmp_path, capsys, source={"file": str(path)}, **SMALL)
    assert_clean_failure(tmp_path, rc, err, "width_mult=1.2", "width_mult=1.0")


def test_ofa_layout_checkpoint_of_another_width(tmp_path, capsys):
    torch.manual_seed(0)
    net = build_supernet("SE_B", width_mult=1.2, n_classes=10, **SMALL)
    path = tmp_path / "src" / "ofa_w12"
    path.parent.mkdir()
    torch.save({"state_dict": net.state_dict()}, path)
    rc, err = run_cli(tmp_path, capsys, source={"file": str(path)}, **SMALL)
    assert_clean_failure(tmp_path, rc, err, "holds a raw state_dict of an SE_B or SE_D super-network (width_mult 1.2, 10 classes)",
                         "set supernet.width_mult: 1.2 or use a width_mult 1.0 checkpoint")


def test_missing_file(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "net.pt"
    rc, err = run_cli(tmp_path, capsys, source={"file": str(missing)})
    assert_clean_failure(tmp_path, rc, err, str(missing), "does not exist")


def test_a_diverging_phase_stops_with_one_line_and_writes_nothing(tmp_path, capsys):
    """A finite but absurd learning rate (an infinite one is refused by the config check): the
    first update makes the weights non-finite, the next loss is NaN, and training stops there;
    no checkpoint of the phase, no stage output."""
    phases = {p: {"epochs": 1, "subnets_per_step": 1} for p in PHASES}
    phases["full"] = {"epochs": 2, "subnets_per_step": 1, "lr": 1e30}
    rc, err = run_cli(tmp_path, capsys, train={"phases": phases})
    *before, line = err.splitlines()
    assert rc == 2 and all(PROGRESS_LINE.match(b) for b in before), err  # one line after progress
    assert re.fullmatch(r"natv2 supernet: error: supernet full: training loss is nan at step 2 \(epoch 1\); "
                        r"nothing written for this phase; lower its learning rate \(now 1e\+30\)", line), err
    results = tmp_path / "results"
    assert not (results / "supernet/supernet.pt").exists() and not (results / "supernet/supernet.json").exists()
    assert list((results / "supernet/work").glob("*.pt")) == []
