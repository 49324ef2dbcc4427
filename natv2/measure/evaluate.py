"""Evaluate one architecture: extract, recalibrate BN, top-1 on val, count params and MACs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from natv2.data import Splits, calibration_batches, make_loader, materialize
from natv2.supernet.static import StaticNet

from .accuracy import top1
from .bn import recalibrate_bn
from .counting import ModuleMacCounter, count_macs, count_params
from .device import resolve_device

RECORD_KEYS = ("arch", "top1", "params", "macs", "latency_ms", "r", "w", "d", "nd")


def _encoder_of(encoder: Any) -> Callable[[Any], str]:
    if encoder is None:
        return lambda arch: str(getattr(arch, "encoding", None) or arch)
    if hasattr(encoder, "encode"):
        return encoder.encode
    if callable(encoder):
        return encoder
    raise TypeError(
        f"encoder must be a callable or have .encode(arch), got {type(encoder).__name__}"
    )


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _nbytes(batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> int:
    return sum(x.numel() * x.element_size() + y.numel() * y.element_size() for x, y in batches)


class Evaluator:
    """Evaluates architectures of one super-network; build it once per stage.

    ``splits``: the :class:`~natv2.data.Splits` to evaluate on (their data settings give the
    calibration subset and the batch sizes). The BN-calibration batches (kept on ``device``) and the validation batches are made once per
    resolution and reused by every call. Validation batches are cached while their total stays
    under ``cache_bytes`` (on ``device`` when one resolution's batches are under
    ``device_cache_bytes``, else on the CPU); beyond that budget a resolution is streamed from a
    loader at each call, so large datasets at many resolutions do not exhaust memory.

    ``evaluator(arch)`` -> ``{"arch", "top1", "params", "macs", "latency_ms", "r", "w", "d",
    "nd"}``; ``top1`` is measured on the validation split (the search's), or with
    ``split="test"`` on the test split (the baselines stage, never the search). With
    ``int8=True`` (``search.accuracy: int8``) ``top1`` is the validation top-1 of the
    recalibrated sub-network quantised to INT8 (:mod:`natv2.measure.int8`, calibrated on the
    same BN-calibration images, onnxruntime on the CPU), and ``top1_fp32`` is recorded beside it.
    ``arch`` needs ``resolution``, ``width``, ``d`` and (optionally) ``nd``;
    ``supernet.extract(arch)`` must return a standalone module (its own BN buffers: this is
    checked, since recalibration writes them).
    """

    def __init__(
        self,
        supernet: Any,
        splits: Splits,
        device: torch.device | str = "auto",
        resolutions: Sequence[int] | None = None,
        *,
        encoder: Any = None,
        cache_bytes: int = 2**30,
        device_cache_bytes: int = 2**28,
        int8: bool = False,
        threads: int = 1,
        split: str = "val",
    ):
        if not isinstance(splits, Splits):
            raise TypeError(f"splits must be a natv2.data.Splits, got {type(splits).__name__}")
        self.supernet = supernet
        self.resolutions = tuple(int(r) for r in resolutions) if resolutions else None
        self.splits = splits
        self.settings = splits.settings
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.encode = _encoder_of(encoder)
        self.cache_bytes = int(cache_bytes)
        self.device_cache_bytes = int(device_cache_bytes)
        self._calib: dict[int, list[torch.Tensor]] = {}
        self._val: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._cached_bytes = 0
        self.int8 = bool(int8)
        self.threads = int(threads)  # onnxruntime's intra-op threads for the INT8 evaluation
        if split not in ("val", "test"):
            raise ValueError(f"split {split!r}: an evaluator measures 'val' (the search) or 'test'")
        self.split = split

    # -------------------------------------------------------------- cached inputs
    def _check_resolution(self, r: int) -> None:
        if self.resolutions is not None and r not in self.resolutions:
            raise ValueError(
                f"resolution {r} is not one of this evaluator's {list(self.resolutions)}"
            )

    def calibration(self, resolution: int) -> list[torch.Tensor]:
        """The BN-recalibration batches at ``resolution`` (on the device, made once)."""
        if resolution not in self._calib:
            batches = calibration_batches(self.splits, resolution)
            self._calib[resolution] = [_channels_last(b.to(self.device)) for b in batches]
        return self._calib[resolution]

    def validation(self, resolution: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The ``(x, y)`` batches of the measured split (validation unless built with
        ``split="test"``) at ``resolution``: cached, or a fresh loader when the cache budget is
        spent."""
        if resolution in self._val:
            return self._val[resolution]
        val = self.splits.dataset(self.split, resolution)
        batch = self.settings.eval_batch_size
        per_item = 3 * resolution * resolution * 4 + 8
        if self._cached_bytes + per_item * len(val) > self.cache_bytes:
            return make_loader(
                val,
                batch,
                shuffle=False,
                seed=self.settings.seed,
                num_workers=self.settings.num_workers,
            )
        batches = materialize(val, batch, self.settings.num_workers)
        size = _nbytes(batches)
        if size <= self.device_cache_bytes:
            batches = [(_channels_last(x.to(self.device)), y.to(self.device)) for x, y in batches]
        self._val[resolution] = batches
        self._cached_bytes += size
        return batches

    # -------------------------------------------------------------- evaluation
    def _check_standalone(self, sub: nn.Module) -> None:
        if sub is self.supernet:
            raise RuntimeError("supernet.extract(arch) returned the super-network itself")
        if not isinstance(self.supernet, nn.Module):
            return
        ours = {b.data_ptr() for b in self.supernet.buffers() if b.numel()}
        if any(b.numel() and b.data_ptr() in ours for b in sub.buffers()):
            raise RuntimeError(
                "supernet.extract(arch) returned a module sharing buffers with the super-network;"
                " BN recalibration would overwrite the super-network's statistics"
            )

    def recalibrate_and_count(self, sub: nn.Module, resolution: int) -> tuple[int, int]:
        """Recalibrate ``sub``'s BN on the calibration batches at ``resolution``; return its
        (params, MACs). natv2's static networks do every multiply-accumulate in Conv2d/Linear
        modules, so their MACs are read by hooks during the recalibration forwards (exact:
        equal to :func:`count_macs` on every family, ``tests/test_ofav2.py``; no extra forward
        and no ``FlopCounterMode``); any other module is counted by :func:`count_macs`."""
        calib = self.calibration(resolution)
        if isinstance(sub, StaticNet):
            with ModuleMacCounter(sub) as counter:
                recalibrate_bn(sub, calib, self.device)
            macs = counter.per_image(sum(int(b.shape[0]) for b in calib))
        else:
            recalibrate_bn(sub, calib, self.device)
            macs = count_macs(sub, resolution)
        return count_params(sub), macs

    def _int8_top1(self, sub: nn.Module, resolution: int) -> float:
        from .int8 import int8_top1, quantize_int8

        net = sub.to("cpu", memory_format=torch.contiguous_format).eval()
        calib = [b.cpu().contiguous() for b in self.calibration(resolution)]
        quantized = quantize_int8(net, calib)
        val = ((x.cpu().contiguous(), y.cpu()) for x, y in self.validation(resolution))
        return int8_top1(quantized, val, self.threads)

    def __call__(self, arch: Any) -> dict[str, Any]:
        r = int(arch.resolution)
        self._check_resolution(r)
        sub = self.supernet.extract(arch)
        self._check_standalone(sub)
        # channels-last: several times faster oneDNN convolutions on CPU for these small images
        # (docs/BENCHMARKS.md), the layout GPUs prefer; the cached batches are stored that way too
        sub.to(self.device, memory_format=torch.channels_last)
        params, macs = self.recalibrate_and_count(sub, r)
        acc = top1(sub, self.validation(r), self.device)
        extra = {}
        if self.int8:
            extra["top1_fp32"] = float(acc)
            acc = self._int8_top1(sub, r)
        nd = getattr(arch, "nd", None)
        return {
            **extra,
            "arch": self.encode(arch),
            "top1": float(acc),
            "params": params,
            "macs": macs,
            "latency_ms": None,  # measured by the caller (natv2.measure.cost.LatencyModel)
            "r": r,
            "w": float(arch.width),
            "d": "-".join(str(int(v)) for v in arch.d),
            "nd": None if nd is None else int(nd),
        }
