"""Inference latency at batch size 1."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def latency_ms(
    model: nn.Module, resolution: int, device: torch.device | str, runs: int = 20, warmup: int = 5
) -> float:
    """Median wall time in milliseconds of ``runs`` forwards of a ``1 x 3 x R x R`` input, after
    ``warmup`` untimed ones (CUDA is synchronised around each timed run)."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"latency_ms: runs must be >= 1 and warmup >= 0, got {runs}, {warmup}")
    device = torch.device(device)
    model.to(device)
    model.eval()
    x = torch.randn(1, 3, resolution, resolution, device=device)
    cuda = device.type == "cuda"
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(runs):
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))
