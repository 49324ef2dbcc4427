"""`natv2 predict`, `natv2 export` and `natv2 finetune` from the command line: results and errors
(one line on stderr, exit code 2)."""

from __future__ import annotations

import pytest
import torch
import yaml
from PIL import Image

from natv2.cli import main
from natv2.data import DataSettings, build_splits
from natv2.model import arch_info, save_finetuned
from natv2.space import SearchSpace
from natv2.supernet import build_supernet

R = 16
SPACE = SearchSpace(family="SE_B", resolutions=(R,), widths=(1.0,))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    splits = build_splits(DataSettings.from_config({"seed": 0, "data": {"name": "digits"}}), R)
    arch = SPACE.smallest()
    model = build_supernet("SE_B", n_classes=10).extract(arch).eval()
    enc = SPACE.encode(arch)
    metrics = {"encoding": enc, "top1_before": 10.0, "top1_after": 20.0, "params": 1, "macs": 2,
               "latency_ms": None, "best_epochs": 1, "seconds": 1.0}
    return save_finetuned(tmp_path_factory.mktemp("rank_0"), model, arch_info(arch, enc, splits), metrics, [])


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def test_predict_prints_top_classes(model_dir, tmp_path, capsys):
    image = tmp_path / "digit.png"
    Image.new("L", (8, 8), color=200).save(image)
    assert main(["predict", str(model_dir), str(image), "--top-k", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: ") and line.count(",") == 2


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_writes_a_file(model_dir, tmp_path, capsys, fmt):
    out = tmp_path / f"m.{fmt}"
    assert main(["export", str(model_dir), "--format", fmt, "--output", str(out)]) == 0
    assert out.stat().st_size > 1000 and str(out) in capsys.readouterr().out


def test_missing_model_dir(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "rank_9"), "x.png"]) == 2
    one_line_error(capsys, "rank_9")


def test_missing_image_and_not_an_image(model_dir, tmp_path, capsys):
    assert main(["predict", str(model_dir), str(tmp_path / "nope.png")]) == 2
    one_line_error(capsys, "nope.png")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert main(["predict", str(model_dir), str(text)]) == 2
    one_line_error(capsys, "not an image", "notes.png")


def test_unknown_export_format(model_dir, capsys):
    assert main(["export", str(model_dir), "--format", "tflite"]) == 2
    one_line_error(capsys, "tflite", "onnx")


def test_finetune_rank_outside_the_slots(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "results"), "finetune": {"slots": 3}}))
    assert main(["finetune", "--rank", "7", "--config", str(config)]) == 2
    one_line_error(capsys, "--rank 7", "0..2")
    assert main(["finetune", "--rank", "1", "--config", str(config)]) == 2
    one_line_error(capsys, "round_30/archive.csv", "natv2 search-round --round 30")
    assert not (tmp_path / "results").exists()


def test_export_int8_copies_the_recorded_int8_model(tmp_path, capsys, monkeypatch):
    """`natv2 export --int8` writes the INT8 model the finetune stage measured, checked against
    metrics.json; without one it says how to get it; a changed file is refused."""
    from natv2.measure.int8 import quantize_int8

    torch.manual_seed(0)
    splits = build_splits(DataSettings.from_config({"seed": 0, "data": {"name": "digits"}}), R)
    arch = SPACE.smallest()
    model = build_supernet("SE_B", n_classes=10).extract(arch).eval()
    enc = SPACE.encode(arch)
    rank = tmp_path / "rank_4"
    rank.mkdir()
    metrics = {"encoding": enc, "top1_after": 20.0, "params": 1, "macs": 2}
    assert main(["export", str(save_finetuned(rank, model, arch_info(arch, enc, splits), metrics, [])),
                 "--int8", "--output", str(tmp_path / "x.onnx")]) == 2
    one_line_error(capsys, "no model_int8.onnx", "finetune.measure_int8: true")
    int8 = rank / "model_int8.onnx"
    int8.write_bytes(quantize_int8(model, [torch.randn(4, 3, R, R)]).onnx)
    save_finetuned(rank, model, arch_info(arch, enc, splits), metrics, [], extra_files=[int8])
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(rank), "--int8"]) == 0  # default: ./rank_4.int8.onnx
    assert (tmp_path / "rank_4.int8.onnx").read_bytes() == int8.read_bytes()
    assert "rank_4.int8.onnx" in capsys.readouterr().out
    assert main(["export", str(rank), "--int8", "--format", "torchscript"]) == 2
    one_line_error(capsys, "--int8", "--format onnx")
    int8.write_bytes(int8.read_bytes()[:-10])
    assert main(["export", str(rank), "--int8", "--output", "y.onnx"]) == 2
    one_line_error(capsys, "model_int8.onnx", "natv2 finetune --rank N")
    assert not (tmp_path / "y.onnx").exists()
