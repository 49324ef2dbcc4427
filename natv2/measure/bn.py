"""Batch-norm recalibration of an extracted sub-network."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _images(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, list | tuple) else batch


def recalibrate_bn(model: nn.Module, batches: Iterable, device: torch.device | str) -> None:
    """Re-estimate every batch-norm layer's running statistics on ``batches``, as OFA's
    ``set_running_statistics`` (``ofa/imagenet_classification/elastic_nn/utils.py``, which the
    thesis' evaluator calls: ``NAT_extended/search/evaluators/ofa_evaluator.py`` ``eval_acc``).

    ``batches``: tensors of images, or ``(images, labels)`` pairs, forwarded under ``no_grad``
    with the BN layers in train mode, so each normalises with its batch's own statistics. For
    each layer and batch the per-channel mean and the **biased** variance (around that batch's
    mean, over batch x height x width) are recorded; the running mean and variance become their
    averages **weighted by the batch size** (OFA's ``AverageMeter.update(value, x.size(0))``), so
    a short last batch counts for what it holds. PyTorch's own running update (unbiased variance,
    equal weight per batch with ``momentum=None``) would differ by ``n / (n - 1)`` per layer,
    1.016 on a last-stage 1x1 map of a 64-image batch, enough to move per-architecture top-1 by
    points at small resolutions. A layer no batch reaches keeps its statistics, as in OFA.

    Only the BN layers are in train mode, so dropout stays off (OFA forwards in whatever mode the
    net is in, the thesis' in train mode; MobileNetV3's dropout sits after the last BN, so this
    changes nothing there). Only ``model`` is touched (an extracted sub-network), never a
    super-network or global state; it is left in eval mode.
    """
    model.to(device)
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    model.eval()
    if not bns:
        return
    sums: dict[int, list] = {id(bn): [0.0, 0.0, 0] for bn in bns}  # weighted mean, var, count

    def record(bn: _BatchNorm, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        dims = [0, *range(2, x.ndim)]
        mean = x.mean(dims)
        shape = [1, -1] + [1] * (x.ndim - 2)
        var = ((x - mean.view(shape)) ** 2).mean(dims)
        acc = sums[id(bn)]
        n = int(x.shape[0])
        acc[0] = acc[0] + mean * n
        acc[1] = acc[1] + var * n
        acc[2] += n

    hooks = [bn.register_forward_pre_hook(record) for bn in bns]
    try:
        for bn in bns:
            bn.train()
        with torch.no_grad():
            for batch in batches:
                model(_images(batch).to(device, non_blocking=True))
    finally:
        for hook in hooks:
            hook.remove()
        model.eval()
    with torch.no_grad():
        for bn in bns:
            total_mean, total_var, count = sums[id(bn)]
            if count == 0:  # never forwarded, so its statistics were never touched
                continue
            bn.running_mean.copy_(total_mean / count)
            bn.running_var.copy_(total_var / count)
