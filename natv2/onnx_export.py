"""Export a network to ONNX (one home for the exporter settings): what ``natv2 export`` writes
and what the ``onnxruntime`` latency backend times."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn

from natv2.errors import UserError

ONNX_OPSET = 17


def export_onnx(model: nn.Module, example: torch.Tensor, out: str | Path) -> None:
    """Write ``model`` (traced on ``example``, batch axis dynamic) to ``out`` as ONNX: the dynamo
    exporter where ``onnxscript`` is installed, else the TorchScript one."""
    if importlib.util.find_spec("onnx") is None:
        raise UserError("ONNX export needs the 'onnx' package (pip install onnx), or use "
                        "--format torchscript")
    kwargs = dict(input_names=["input"], output_names=["logits"], opset_version=ONNX_OPSET)
    try:  # the dynamo exporter (default in recent torch) needs onnxscript
        import onnxscript  # noqa: F401

        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(model, (example,), str(out), dynamo=True, external_data=False,
                          dynamic_shapes=({0: batch},), **kwargs)
        return
    except Exception:  # any failure of the new exporter: use the legacy one
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated, still works
        torch.onnx.export(model, (example,), str(out), dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, **kwargs)
