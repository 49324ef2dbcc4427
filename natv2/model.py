"""Use a fine-tuned model: save it, load it, export it (ONNX, TorchScript), predict with it.

A model directory (``results/finetune/rank_N``, written by ``natv2 finetune --rank N``) holds:

* ``model.pt``: our static checkpoint ``{"format": "natv2-static", "config", "state_dict",
  ...}`` (read with ``torch.load(weights_only=True)``);
* ``arch.json``: ``encoding``, ``family``, ``width_mult``, ``resolution``, ``n_classes``,
  ``config`` (the decoded architecture, ``Arch.to_nat()``), ``normalization`` {mean, std},
  ``class_names``, ``grayscale`` (inputs are grey images replicated to 3 channels);
* ``history.csv``: one row per fine-tuning epoch; ``metrics.json``: accuracies and costs.

```python
import natv2
model, preprocess = natv2.load_model("results/finetune/rank_0")
probs = model(preprocess(PIL.Image.open("x.png")).unsqueeze(0)).softmax(1)
```

Multi-exit models (early-exit families fine-tuned with ``finetune.exit_ordering``, see
:mod:`natv2.train.aep`) are saved as the multi-exit static net (its forward returns the list of
logits of exits ``1..nd``, its config carries the ensemble ``exit_weights``). :func:`load_model`
wraps it in a :class:`MultiExitModel` whose forward returns one logits tensor: by default the
weighted ensemble of the exits (what ``top1_after`` measured), or with ``exit=k`` exit ``k``
alone (1-based; the whole net still runs, the other exits' logits are dropped).
:func:`export_model` and :func:`predict` take the same ``exit``.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from natv2.data import GRAYSCALE_DATASETS
from natv2.errors import UserError
from natv2.files import atomic_write, read_json, write_json
from natv2.layout import ARCH_FILE, HISTORY_FILE, INT8_ONNX_FILE, METRICS_FILE, MODEL_FILE
from natv2.onnx_export import export_onnx
from natv2.records import FILES_KEY, check_recorded, open_set, record_files
from natv2.train.finetune import HISTORY_COLUMNS

EXPORT_FORMATS = ("onnx", "torchscript")

__all__ = [
    "EXPORT_FORMATS",
    "MultiExitModel",
    "arch_info",
    "export_model",
    "export_network",
    "load_model",
    "make_preprocess",
    "predict",
    "read_arch",
    "save_finetuned",
]


# ----------------------------------------------------------------------------- save
def arch_info(arch: Any, encoding: str, splits: Any) -> dict[str, Any]:
    """The ``arch.json`` content for ``arch`` (an ``Arch``) fine-tuned on ``splits``."""
    mean, std = [float(v) for v in splits.mean], [float(v) for v in splits.std]
    return {
        "encoding": str(encoding),
        "family": arch.family,
        "width_mult": float(arch.width),
        "resolution": int(arch.resolution),
        "n_classes": int(splits.n_classes),
        "config": arch.to_nat(),
        "normalization": {"mean": mean, "std": std},
        "class_names": [str(c) for c in splits.class_names],
        "dataset": getattr(splits, "name", None),
        "grayscale": getattr(splits, "name", None) in GRAYSCALE_DATASETS,
    }


def _write_history(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    columns = list(HISTORY_COLUMNS)
    for row in rows:
        columns += [k for k in row if k not in columns]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, restval="")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})

    return atomic_write(path, write)


def save_finetuned(out_dir: str | os.PathLike, model: nn.Module, arch_info: Mapping[str, Any],
                   metrics: Mapping[str, Any],
                   history_rows: Sequence[Mapping[str, Any]],
                   extra_files: Sequence[Path] = ()) -> Path:
    """Write ``model.pt``, ``arch.json``, ``history.csv`` and ``metrics.json`` into ``out_dir``
    (each atomically; the old ``metrics.json`` removed first and the new one, recording the
    other three files and ``extra_files`` (already written by the caller, after it removed the
    old ``metrics.json``; :mod:`natv2.records`), written last, so a directory with
    ``metrics.json`` is complete). Returns ``out_dir``."""
    from natv2.supernet import save_checkpoint

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = dict(arch_info)
    if "config" not in info or "resolution" not in info:
        raise ValueError("arch_info needs at least 'config' and 'resolution' (see arch_info())")
    open_set(out / METRICS_FILE)
    save_checkpoint(model, out / MODEL_FILE,
                    extra={"encoding": info.get("encoding"), "resolution": info["resolution"]})
    _write_history(out / HISTORY_FILE, history_rows)
    write_json(out / ARCH_FILE, info)
    written = record_files(out / MODEL_FILE, out / HISTORY_FILE, out / ARCH_FILE, *extra_files,
                           rows={HISTORY_FILE: len(history_rows)})
    write_json(out / METRICS_FILE, {**metrics, FILES_KEY: written})
    return out


# ----------------------------------------------------------------------------- load
def _model_dir(model_dir: str | os.PathLike) -> Path:
    path = Path(model_dir)
    hint = "it is written by `natv2 finetune --rank N`"
    if not path.exists():
        raise UserError(f"model directory {path} does not exist; {hint}")
    if not path.is_dir():
        raise UserError(f"{path} is not a model directory; {hint}")
    for name in (MODEL_FILE, ARCH_FILE):
        if not (path / name).is_file():
            raise UserError(f"model directory {path} lacks {name}; {hint}")
    if (path / METRICS_FILE).is_file():  # written by natv2: its files are checked (a folder put
        for name in (MODEL_FILE, ARCH_FILE):  # together by hand has no metrics.json)
            check_recorded(path / name, path / METRICS_FILE, "natv2 finetune --rank N")
    return path


def read_arch(model_dir: str | os.PathLike) -> dict[str, Any]:
    """``arch.json`` of a model directory (checked)."""
    path = _model_dir(model_dir)
    try:
        info = read_json(path / ARCH_FILE)
    except ValueError as exc:
        raise UserError(f"{path / ARCH_FILE} is not valid JSON: {exc}") from exc
    for key in ("resolution", "normalization", "class_names"):
        if key not in info:
            raise UserError(f"{path / ARCH_FILE} lacks {key!r}; rerun `natv2 finetune --rank N`")
    return info


def make_preprocess(info: Mapping[str, Any]) -> Callable[[Any], torch.Tensor]:
    """``preprocess(PIL.Image) -> Tensor[3, R, R]`` for ``arch.json`` content ``info``: convert
    to RGB (grey, replicated to 3 channels, for grey datasets such as digits), resize the short
    side to R (bilinear, antialiased), centre-crop R x R, to tensor, normalise."""
    from torchvision import transforms as T

    r = int(info["resolution"])
    norm = info["normalization"]
    grayscale = bool(info.get("grayscale", False))
    transform = T.Compose([
        T.Resize(r, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.CenterCrop(r),
        T.ToTensor(),
        T.Normalize(list(norm["mean"]), list(norm["std"])),
    ])

    def preprocess(image) -> torch.Tensor:
        image = image.convert("L").convert("RGB") if grayscale else image.convert("RGB")
        return transform(image)

    return preprocess


class MultiExitModel(nn.Module):
    """A multi-exit static net seen as a one-output classifier: ``forward(x)`` returns the
    weighted ensemble of the exits' logits (``exit=None``, weights ``net.exit_weights``
    renormalised) or the logits of exit ``exit`` (1-based). Traceable and ONNX-exportable (the
    weights are constants)."""

    def __init__(self, net: nn.Module, exit: int | None = None):
        super().__init__()
        n = int(getattr(net, "n_exits", 1))
        if exit is not None and (isinstance(exit, bool) or not isinstance(exit, int)
                                 or not 1 <= exit <= n):
            raise UserError(f"exit: value {exit!r} must be an exit number in 1..{n} (or None "
                            f"for the weighted ensemble)")
        self.net = net
        self.exit = exit

    @property
    def n_classes(self) -> int:
        return int(self.net.n_classes)

    @property
    def n_exits(self) -> int:
        return int(self.net.n_exits)

    @property
    def exit_weights(self) -> list[float]:
        return list(self.net.exit_weights)

    def config(self) -> dict[str, Any]:
        return self.net.config()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.exit is None:
            return self.net.ensemble(x)
        return self.net(x)[self.exit - 1]


def load_model(model_dir: str | os.PathLike, exit: int | None = None
               ) -> tuple[nn.Module, Callable[[Any], torch.Tensor]]:
    """``(model, preprocess)`` of a fine-tuned model directory; the model is on the CPU in eval
    mode, loaded with ``torch.load(weights_only=True)``. A multi-exit model comes back as a
    :class:`MultiExitModel` (ensemble logits, or exit ``exit``'s); for a single-exit model
    ``exit`` must be None or 1."""
    from natv2.supernet import load_static

    path = _model_dir(model_dir)
    info = read_arch(path)
    model = load_static(path / MODEL_FILE)
    if getattr(model, "multi_exit", False):
        model = MultiExitModel(model, exit)
    elif exit not in (None, 1):
        raise UserError(f"exit: value {exit!r} given but {path} holds a single-exit model "
                        f"(only exit 1)")
    model.eval()
    return model, make_preprocess(info)


# ----------------------------------------------------------------------------- export
def _export_onnx(model: nn.Module, example: torch.Tensor, out: Path) -> None:
    atomic_write(out, lambda tmp: export_onnx(model, example, tmp))


def export_network(model: nn.Module, resolution: int, out: str | os.PathLike) -> Path:
    """Write ``model`` (eval mode, CPU) to ``out`` as ONNX, as :func:`export_model` does
    (traced on a batch of 2 zero images of ``resolution`` px, batch axis dynamic); atomic."""
    out = Path(out)
    model = model.to("cpu").eval()
    with torch.no_grad():
        _export_onnx(model, torch.zeros(2, 3, int(resolution), int(resolution)), out)
    return out


def _export_int8(model_dir: str | os.PathLike, out: Path, format: str, exit: int | None) -> Path:
    """Copy the slot's recorded ``model_int8.onnx`` (the model whose ``top1_int8`` the stage
    measured) to ``out``, checked against ``metrics.json``."""
    if format != "onnx" or exit is not None:
        raise UserError("--int8 exports the INT8 ONNX model the finetune stage measured: only "
                        "with --format onnx and the default (ensemble) exit")
    path = _model_dir(model_dir)
    src = path / INT8_ONNX_FILE
    if not src.is_file():
        raise UserError(f"{path} has no {INT8_ONNX_FILE}; fine-tune with finetune.measure_int8: "
                        "true to quantise it (the INT8 model is the one whose top1_int8 is measured)")
    if (path / METRICS_FILE).is_file():
        check_recorded(src, path / METRICS_FILE, "natv2 finetune --rank N")
    data = src.read_bytes()
    atomic_write(out, lambda tmp: tmp.write_bytes(data))
    return out


def export_model(model_dir: str | os.PathLike, out_path: str | os.PathLike,
                 format: str = "onnx", exit: int | None = None, int8: bool = False) -> Path:
    """Export a fine-tuned model to ONNX (opset 17, dynamic batch axis; input ``input``
    ``[B, 3, R, R]`` normalised as ``arch.json`` says, output ``logits``) or TorchScript
    (``torch.jit.trace``). Written atomically; returns ``out_path``. Multi-exit models export
    the output of :func:`load_model` with the same ``exit`` (default: the ensemble logits).
    ``int8``: the INT8 ONNX model the finetune stage quantised and measured
    (``finetune.measure_int8``), same input and output."""
    if format not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {format!r}; valid: {', '.join(EXPORT_FORMATS)}")
    if Path(out_path).is_dir():
        raise UserError(f"export path {out_path} is a directory; give a file name")
    if int8:
        return _export_int8(model_dir, Path(out_path), format, exit)
    model, _ = load_model(model_dir, exit)
    r = int(read_arch(model_dir)["resolution"])
    example = torch.zeros(2, 3, r, r)
    out = Path(out_path)
    if out.is_dir():
        raise UserError(f"export path {out} is a directory; give a file name")
    if format == "onnx":
        _export_onnx(model, example, out)
    else:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated"
            traced = torch.jit.trace(model, example)
            atomic_write(out, lambda tmp: torch.jit.save(traced, str(tmp)))
    return out


# ----------------------------------------------------------------------------- predict
def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise UserError(f"image not found: {path}")
    if not path.is_file():
        raise UserError(f"not an image: {path} (not a file)")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except UnidentifiedImageError:
        raise UserError(f"not an image: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read image {path}: {exc}") from exc


def predict(model_dir: str | os.PathLike, image_paths: Sequence[str | os.PathLike],
            top_k: int = 5, exit: int | None = None) -> list[list[tuple[str, float]]]:
    """The ``top_k`` (class name, probability) pairs, most likely first, for each image
    (multi-exit models: softmax of the ensemble logits, or of exit ``exit``'s)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UserError(f"top_k: value {top_k!r} must be a positive integer")
    model, preprocess = load_model(model_dir, exit)
    names = [str(c) for c in read_arch(model_dir)["class_names"]]
    n_out = int(getattr(model, "n_classes", len(names)))
    if len(names) != n_out:
        names = [str(i) for i in range(n_out)]
    paths = [Path(p) for p in image_paths]
    images = [_open_image(p) for p in paths]  # check every path before any work
    out: list[list[tuple[str, float]]] = []
    k = min(top_k, n_out)
    with torch.inference_mode():
        for image in images:
            probs = model(preprocess(image).unsqueeze(0)).softmax(dim=1)[0]
            values, indices = probs.topk(k)
            out.append([(names[int(i)], float(v)) for v, i in zip(values, indices, strict=True)])
    return out
