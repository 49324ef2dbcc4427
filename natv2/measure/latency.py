"""Inference latency: the median of timed forwards on the configured backend.

Backends (``latency.backend``):

* ``torch``: PyTorch eager on the stage's device (CUDA synchronised around each timed run);
* ``onnxruntime``: the network exported to ONNX (:mod:`natv2.onnx_export`) and timed in an
  ``onnxruntime.InferenceSession`` on the CPU execution provider with ``threads`` intra-op
  threads, the runtime CPU deployments ship.

Each measurement is ``runs`` timed forwards of a ``batch x 3 x R x R`` input after ``warmup``
untimed ones: the median is the latency, the interquartile range its spread.
:func:`environment` says what machine and versions measured it; it is part of the evaluation
cache key, so a latency measured elsewhere is never reused.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from natv2.config import ensure_config
from natv2.errors import UserError

BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class LatencySettings:
    """The ``latency:`` section; ``threads`` resolved (null: the config's ``threads``). The
    defaults live in the schema: ``LatencySettings.from_config({})`` has them."""

    backend: str
    threads: int
    batch: int
    warmup: int
    runs: int

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"latency.backend: {self.backend!r} is not a backend; valid: "
                            f"{', '.join(BACKENDS)}")
        if self.runs < 1 or self.warmup < 0 or self.batch < 1 or self.threads < 1:
            raise UserError(f"latency: runs, batch and threads must be >= 1 and warmup >= 0, got "
                            f"{self.runs}, {self.batch}, {self.threads}, {self.warmup}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LatencySettings:
        cfg = ensure_config(cfg)
        lat = cfg["latency"]
        return cls(backend=lat["backend"], threads=int(lat["threads"] or cfg["threads"]),
                   batch=int(lat["batch"]), warmup=int(lat["warmup"]), runs=int(lat["runs"]))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cache_key(self, device: torch.device | str) -> dict[str, Any]:
        """What a cached latency depends on: these settings, the device and the machine."""
        return {**self.as_dict(), "device": str(device), "machine": environment(self.backend)}


@dataclass(frozen=True)
class Latency:
    """One measurement: median and interquartile range of the timed forwards (ms)."""

    median_ms: float
    iqr_ms: float
    runs: int


@cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(backend: str) -> dict[str, str]:
    """The machine and the versions that measure with ``backend``."""
    env = {"cpu": cpu_model(), "platform": platform.platform(), "torch": torch.__version__}
    if backend == "onnxruntime":
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    return env


def _example(batch: int, sample_shape: Sequence[int]) -> torch.Tensor:
    """The timed input: ``batch`` examples of ``sample_shape``, seeded (the same every time)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, *(int(n) for n in sample_shape), generator=generator)


def _summary(times: list[float]) -> Latency:
    if len(times) >= 2:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    else:
        q1 = q3 = times[0]
    return Latency(float(statistics.median(times)), float(q3 - q1), len(times))


def _timed(forward: Callable[[], Any], settings: LatencySettings,
           sync: Callable[[], None] = lambda: None) -> Latency:
    for _ in range(settings.warmup):
        forward()
    times = []
    for _ in range(settings.runs):
        sync()
        start = time.perf_counter()
        forward()
        sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return _summary(times)


def _torch_latency(model: nn.Module, x: torch.Tensor, settings: LatencySettings,
                   device: torch.device) -> Latency:
    model.to(device).eval()
    x = x.to(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    before = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        with torch.inference_mode():
            return _timed(lambda: model(x), settings, sync)
    finally:
        torch.set_num_threads(before)


def _onnxruntime_latency(model: nn.Module, x: torch.Tensor, settings: LatencySettings) -> Latency:
    from natv2.onnx_export import export_onnx

    model.to("cpu").eval()
    with tempfile.TemporaryDirectory(prefix="natv2-latency-") as tmp:
        path = Path(tmp) / "net.onnx"
        with torch.no_grad():
            export_onnx(model, x[:1], path)
        return onnx_latency(path.read_bytes(), tuple(x.shape[1:]), settings)


def onnx_latency(onnx: bytes, sample_shape: Sequence[int], settings: LatencySettings) -> Latency:
    """The latency of an ONNX model (its bytes, e.g. an exported or INT8 file) in an onnxruntime
    ``InferenceSession`` (CPU, ``settings.threads`` intra-op threads, one inter-op), on a batch
    of ``settings.batch`` inputs of ``sample_shape`` (e.g. ``(3, R, R)``): what the
    ``onnxruntime`` backend times."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
    x = _example(settings.batch, sample_shape)
    feed = {session.get_inputs()[0].name: x.numpy()}
    return _timed(lambda: session.run(None, feed), settings)


def measure_latency(model: nn.Module, resolution: int | None, settings: LatencySettings,
                    device: torch.device | str = "cpu",
                    sample_shape: Sequence[int] | None = None) -> Latency:
    """The latency of ``model`` on ``resolution`` px inputs with ``settings`` (the ``torch``
    backend on ``device``; ``onnxruntime`` on the CPU). ``sample_shape`` (one example's shape,
    e.g. a network piece's ``(C, H, W)``) replaces ``3 x resolution x resolution``."""
    shape = (3, int(resolution), int(resolution)) if sample_shape is None else sample_shape
    x = _example(settings.batch, shape)
    if settings.backend == "onnxruntime":
        return _onnxruntime_latency(model, x, settings)
    return _torch_latency(model, x, settings, torch.device(device))


def latency_ms(model: nn.Module, resolution: int, device: torch.device | str, runs: int = 20,
               warmup: int = 5) -> float:
    """Median milliseconds of a batch-1 PyTorch forward (the ``torch`` backend, this process'
    threads)."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"latency_ms: runs must be >= 1 and warmup >= 0, got {runs}, {warmup}")
    settings = replace(LatencySettings.from_config({}), backend="torch",
                       threads=torch.get_num_threads(), batch=1, runs=runs, warmup=warmup)
    return measure_latency(model, resolution, settings, device).median_ms
