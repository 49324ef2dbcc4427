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


def _forward_one_image(model: nn.Module, resolution: int, in_channels: int) -> None:
    """One eval-mode, no-grad forward of a ``1 x C x R x R`` zero input; each module's mode is
    restored after."""
    modes = {m: m.training for m in model.modules()}
    x = torch.zeros(1, in_channels, resolution, resolution, device=_model_device(model))
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for module, training in modes.items():
            module.training = training


def count_macs(model: nn.Module, resolution: int, in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass on a ``1 x 3 x R x R`` input.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix
    products: conv + linear, biases and element-wise ops not counted), FLOPs // 2. This equals
    OFA's ``count_net_flops`` (which, despite its name, returns MACs) up to the float32 rounding
    OFA's counter accumulates in. The model is put in eval mode for the count and each module's
    mode is restored after.
    """
    with FlopCounterMode(display=False) as counter:
        _forward_one_image(model, resolution, in_channels)
    flops = int(counter.get_total_flops())
    if flops % 2:
        raise AssertionError(f"FlopCounterMode returned an odd FLOP count {flops}")
    return flops // 2


class ModuleMacCounter:
    """Context manager: while open, forward hooks on every ``nn.Conv2d`` and ``nn.Linear`` of
    ``model`` add up the multiply-accumulates of whatever passes through them (``total``), with
    the formulas ``FlopCounterMode`` uses: a convolution costs ``batch * out_h * out_w *
    out_channels * (in_channels / groups) * kh * kw``, a linear layer ``in_features *
    out_features`` per output row; biases are not counted.

    Exact for networks whose every multiply-accumulate happens inside such modules (natv2's
    static networks: checked for every family against :func:`count_macs` in the tests). A
    functional convolution or matrix product elsewhere would be missed: use :func:`count_macs`
    for arbitrary models.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.total = 0
        self._handles: list = []

    def _conv(self, module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        c_out, c_in_per_group, kh, kw = module.weight.shape
        self.total += (output.shape[0] * output.shape[2] * output.shape[3]
                       * c_out * c_in_per_group * kh * kw)

    def _linear(self, module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        self.total += ((output.numel() // module.out_features)
                       * module.in_features * module.out_features)

    def __enter__(self) -> ModuleMacCounter:
        self.total = 0
        for module in self.model.modules():
            if isinstance(module, nn.Conv2d):
                self._handles.append(module.register_forward_hook(self._conv))
            elif isinstance(module, nn.Linear):
                self._handles.append(module.register_forward_hook(self._linear))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def per_image(self, n_images: int) -> int:
        """MACs of one image, after ``n_images`` images (of one size) went through."""
        if n_images < 1 or self.total % n_images:
            raise AssertionError(f"{self.total} MACs do not split evenly over {n_images} images")
        return self.total // n_images


def count_macs_by_modules(model: nn.Module, resolution: int, in_channels: int = 3) -> int:
    """:func:`count_macs` by :class:`ModuleMacCounter` hooks (no ``TorchDispatchMode``, whose
    per-operator Python overhead is most of :func:`count_macs`'s time on small networks): one
    ``1 x 3 x R x R`` eval-mode forward. Only for networks :class:`ModuleMacCounter` is exact
    for (natv2's static networks)."""
    with ModuleMacCounter(model) as counter:
        _forward_one_image(model, resolution, in_channels)
    return counter.total
