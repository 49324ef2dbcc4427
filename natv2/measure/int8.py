"""INT8: post-training static quantisation of an extracted network, and its accuracy and size.

:func:`quantize_int8` exports the network to ONNX (:mod:`natv2.onnx_export`) and quantises it
with onnxruntime's static quantiser: weights per channel, activations calibrated (MinMax) on the
given batches (the BN-calibration subset, so no test image is seen), QDQ format, signed 8-bit
weights and activations. :func:`int8_top1` runs the quantised model in an onnxruntime session
(CPU execution provider) over a loader and returns top-1 (%), the same definition as
:func:`natv2.measure.accuracy.top1`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from natv2.onnx_export import export_onnx


@dataclass(frozen=True)
class Int8Model:
    """A quantised network: its ONNX bytes."""

    onnx: bytes

    @property
    def size_bytes(self) -> int:
        return len(self.onnx)

    def session(self, threads: int = 1) -> onnxruntime.InferenceSession:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        return onnxruntime.InferenceSession(self.onnx, options, providers=["CPUExecutionProvider"])


class _Batches(CalibrationDataReader):
    """onnxruntime's calibration reader over a list of input batches."""

    def __init__(self, name: str, batches: Sequence[torch.Tensor]):
        self._items = iter([{name: b.detach().cpu().numpy().astype(np.float32)} for b in batches])

    def get_next(self):
        return next(self._items, None)


def quantize_int8(model: nn.Module, calibration: Sequence[torch.Tensor]) -> Int8Model:
    """``model`` (eval mode, CPU) quantised to INT8, activations calibrated on ``calibration``."""
    if not calibration:
        raise ValueError("quantize_int8 needs at least one calibration batch")
    model = model.to("cpu").eval()
    reader = _Batches("input", calibration)
    with tempfile.TemporaryDirectory(prefix="natv2-int8-") as tmp:
        fp32, prepared, int8 = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        with torch.no_grad():
            export_onnx(model, calibration[0][:1].cpu(), fp32)
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(int8), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8)
        return Int8Model(int8.read_bytes())


def int8_top1(quantized: Int8Model, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
              threads: int = 1) -> float:
    """Top-1 (%) of ``quantized`` over ``(images, labels)`` batches."""
    session = quantized.session(threads)
    name = session.get_inputs()[0].name
    correct = total = 0
    for x, y in batches:
        logits = session.run(None, {name: x.cpu().numpy().astype(np.float32)})[0]
        correct += int((logits.argmax(axis=1) == y.cpu().numpy()).sum())
        total += int(y.numel())
    if total == 0:
        raise ValueError("int8_top1: no images")
    return 100.0 * correct / total
