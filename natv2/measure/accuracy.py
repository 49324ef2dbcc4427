"""Top-1 accuracy."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def logits_of(output) -> torch.Tensor:
    """The logits of a forward: a tensor, or the last (deepest) exit of a list/tuple of exits."""
    if isinstance(output, list | tuple):
        return output[-1]
    return output


def top1(model: nn.Module, loader_or_batches: Iterable, device: torch.device | str) -> float:
    """Top-1 accuracy in percent over ``(images, labels)`` batches (a DataLoader or a list).

    The model is evaluated in eval mode under ``inference_mode`` and left in eval mode.
    Multi-exit outputs (list/tuple) are scored on their last exit.
    """
    model.to(device)
    model.eval()
    correct, total = 0, 0
    with torch.inference_mode():
        for x, y in loader_or_batches:
            pred = logits_of(model(x.to(device, non_blocking=True))).argmax(dim=1)
            correct += int((pred.cpu() == y.view(-1).cpu()).sum())
            total += int(y.numel())
    if total == 0:
        raise ValueError("top1: no examples to evaluate (empty loader)")
    return 100.0 * correct / total
