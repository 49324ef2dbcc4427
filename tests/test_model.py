"""natv2.model: save a fine-tuned model, load it, export it (ONNX, TorchScript), predict."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import natv2
from natv2.data import DataSettings, build_splits
from natv2.errors import UserError
from natv2.model import arch_info, export_model, load_model, predict, save_finetuned
from natv2.space import SearchSpace
from natv2.supernet import build_supernet

R = 16
SPACE = SearchSpace(family="SE_B", resolutions=(R,), widths=(1.0,))
HISTORY = [
    {"step": 1, "epoch": 1, "lr": 0.01, "train_loss": 2.3, "train_top1": 10.0, "val_top1": 12.0,
     "seconds": 0.5},
    {"step": 2, "epoch": 1, "lr": 0.01, "train_loss": 2.2, "train_top1": 11.0, "val_top1": None,
     "seconds": 0.6},
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    splits = build_splits(DataSettings.from_config({"seed": 0, "data": {"name": "digits"}}), R)
    arch = SPACE.decode("00" + "0" + "1122" + "3300" + "4500" + "6700" + "8900")
    supernet = build_supernet("SE_B", n_classes=10)
    model = supernet.extract(arch)
    model.eval()
    # non-trivial BN statistics, so that a round trip that dropped buffers would show
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    enc = SPACE.encode(arch)
    info = arch_info(arch, enc, splits)
    metrics = {"encoding": enc, "top1_before": 10.0, "top1_after": 20.0, "params": 1,
               "macs": 2, "latency_ms": None, "best_epochs": 1, "seconds": 1.0}
    out = save_finetuned(tmp_path_factory.mktemp("rank_0"), model, info, metrics, HISTORY)
    return out, model, arch, splits


def test_files_written(saved):
    out, model, arch, splits = saved
    assert sorted(p.name for p in out.iterdir()) == ["arch.json", "history.csv", "metrics.json",
                                                     "model.pt"]
    info = json.loads((out / "arch.json").read_text())
    assert info["encoding"] == SPACE.encode(arch) and info["family"] == "SE_B"
    assert info["resolution"] == R and info["width_mult"] == 1.0 and info["n_classes"] == 10
    assert info["config"] == json.loads(json.dumps(arch.to_nat()))
    assert info["class_names"] == list(splits.class_names) and info["grayscale"] is True
    assert info["normalization"]["mean"] == pytest.approx(list(splits.mean))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["top1_after"] == 20.0 and metrics["latency_ms"] is None
    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["step"] for r in rows] == ["1", "2"] and rows[1]["val_top1"] == ""
    assert list(rows[0]) == ["step", "epoch", "lr", "train_loss", "train_top1", "val_loss",
                             "val_top1", "seconds"]
    payload = torch.load(out / "model.pt", weights_only=True)
    assert payload["format"] == "natv2-static" and payload["config"] == model.config()
    assert not list(out.glob(".*.tmp"))


def test_load_model_round_trip(saved):
    out, model, _, splits = saved
    loaded, preprocess = natv2.load_model(out)  # the lazy top-level name
    assert not loaded.training
    x = torch.randn(4, 3, R, R)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # preprocess: grey PIL image -> [3, R, R], channels replicated, normalised like the splits
    img = Image.fromarray((np.arange(64, dtype=np.uint8).reshape(8, 8) * 4), mode="L")
    t = preprocess(img)
    assert t.shape == (3, R, R) and torch.equal(t[0], t[1]) and torch.equal(t[1], t[2])
    black = preprocess(Image.new("RGB", (20, 12)))  # non-square, RGB in: short side to R
    assert black.shape == (3, R, R)
    assert torch.allclose(black, torch.full_like(black, -splits.mean[0] / splits.std[0]))


def test_import_natv2_stays_light():
    code = "import sys, natv2; assert 'torch' not in sys.modules; print(natv2.__version__)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    with pytest.raises(AttributeError):
        natv2.no_such_name  # noqa: B018


def test_onnx_export_matches(saved, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out, model, _, _ = saved
    path = export_model(out, tmp_path / "model.onnx", format="onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # dynamic batch axis
        x = torch.randn(batch, 3, R, R)
        (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            want = model(x).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated
def test_torchscript_export_matches(saved, tmp_path):
    out, model, _, _ = saved
    path = export_model(out, tmp_path / "model.ts", format="torchscript")
    scripted = torch.jit.load(str(path))
    x = torch.randn(3, 3, R, R)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), atol=1e-5, rtol=1e-5)


def test_predict_on_png(saved, tmp_path):
    out, model, _, splits = saved
    img = Image.fromarray((np.eye(8, dtype=np.uint8) * 255), mode="L")
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    img.save(paths[0])
    img.convert("RGB").save(paths[1])
    res = predict(out, paths, top_k=3)
    assert len(res) == 2 and all(len(r) == 3 for r in res)
    for r in res:
        probs = [p for _, p in r]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(name in splits.class_names for name, _ in r)
    # same pixels, grey or RGB: same prediction (digits models replicate a grey channel)
    assert [n for n, _ in res[0]] == [n for n, _ in res[1]]
    assert [p for _, p in res[0]] == pytest.approx([p for _, p in res[1]])
    # matches the model on the preprocessed tensor
    _, preprocess = load_model(out)
    with torch.no_grad():
        probs = model(preprocess(img).unsqueeze(0)).softmax(1)[0]
    top = probs.topk(3)
    assert [n for n, _ in res[0]] == [splits.class_names[int(i)] for i in top.indices]
    assert [p for _, p in res[0]] == pytest.approx(top.values.tolist(), abs=1e-6)
    assert len(predict(out, paths[:1], top_k=50)[0]) == 10  # capped at n_classes


def test_errors(saved, tmp_path):
    out, *_ = saved
    with pytest.raises(UserError, match="does not exist.*natv2 finetune --rank N"):
        load_model(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="lacks model.pt.*natv2 finetune --rank N"):
        load_model(empty)
    (empty / "model.pt").write_bytes(b"")
    with pytest.raises(UserError, match="lacks arch.json"):
        load_model(empty)
    with pytest.raises(UserError, match=r"image not found: .*missing\.png"):
        predict(out, [tmp_path / "missing.png"])
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UserError, match=r"^not an image: .*notes\.txt$"):
        predict(out, [text])
    with pytest.raises(UserError, match="unknown export format 'tflite'; valid: onnx, "
                                        "torchscript"):
        export_model(out, tmp_path / "m.tflite", format="tflite")
    with pytest.raises(UserError, match="top_k"):
        predict(out, [text], top_k=0)
    with pytest.raises(UserError) as info:
        predict(out, [text])
    assert "\n" not in str(info.value)


def test_onnx_without_onnx_package_is_a_user_error(saved, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(UserError, match="needs the 'onnx' package"):
        export_model(saved[0], tmp_path / "m.onnx", format="onnx")
