"""Batch-norm recalibration of an extracted sub-network."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _images(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, list | tuple) else batch


def recalibrate_bn(model: nn.Module, batches: Iterable, device: torch.device | str) -> None:
    """Re-estimate every batch-norm layer's running statistics on ``batches``.

    ``batches``: tensors of images, or ``(images, labels)`` pairs. Each BN layer's running stats
    are reset and its momentum set to ``None`` (PyTorch's cumulative average) for the pass; the
    batches are forwarded under ``no_grad``; momentum is restored and the model left in eval
    mode. Only ``model`` is touched (an extracted sub-network), never a super-network or global
    state.

    Departures from OFA's ``set_running_statistics``, for simplicity and speed (no deep copy, no
    patched forwards): (1) the running mean/var are the average of per-batch statistics with
    equal weight per batch, while OFA weights by batch size (identical when every batch has the
    same size: ``calibration_batches`` makes full batches whenever ``batch_size`` divides
    ``calib_size``); (2) the variance is PyTorch's unbiased batch variance, OFA's is biased (a
    factor n/(n-1) with n = batch x height x width, negligible); (3) only the BN layers are in
    train mode, so dropout stays off (OFA forwards in whatever mode the net is in; MobileNetV3's
    dropout sits after the last BN, so this changes nothing there).
    """
    model.to(device)
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        model.eval()
        return
    momenta = [bn.momentum for bn in bns]
    model.eval()
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        with torch.no_grad():
            for batch in batches:
                model(_images(batch).to(device, non_blocking=True))
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        model.eval()
