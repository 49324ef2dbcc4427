"""Exact parameter and multiply-accumulate counts."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """All parameters of ``model`` (trainable or not; OFA counts only ``requires_grad`` ones,
    which is the same number for an extracted sub-network)."""
    return sum(p.numel() for p in model.parameters())


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def count_macs(model: nn.Module, resolution: int, in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass on a ``1 x 3 x R x R`` input.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix
    products: conv + linear, biases and element-wise ops not counted), FLOPs // 2. This equals
    OFA's ``count_net_flops`` (which, despite its name, returns MACs) up to the float32 rounding
    OFA's counter accumulates in. The model is put in eval mode for the count and each module's
    mode is restored after.
    """
    modes = {m: m.training for m in model.modules()}
    x = torch.zeros(1, in_channels, resolution, resolution, device=_model_device(model))
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for module, training in modes.items():
            module.training = training
    flops = int(counter.get_total_flops())
    if flops % 2:
        raise AssertionError(f"FlopCounterMode returned an odd FLOP count {flops}")
    return flops // 2
