"""Small helpers shared by the elastic and the static modules.

Everything here reproduces a fact of OFA's code (``ofa.utils``) that decides shapes or numbers;
the functions are ours.
"""

from __future__ import annotations

import math

from torch import nn

#: channel counts are rounded to multiples of this (OFA's ``MyNetwork.CHANNEL_DIVISIBLE``)
CHANNEL_DIVISIBLE = 8
#: squeeze-excite reduction (OFA's ``SEModule.REDUCTION``)
SE_REDUCTION = 4

ACTIVATIONS = ("relu", "h_swish", "h_sigmoid", "none")


def make_divisible(value: float, divisor: int = CHANNEL_DIVISIBLE, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor``, never more than 10% down (OFA/TF rule).

    Same arithmetic as ``ofa.utils.make_divisible`` (``int(v + d/2) // d * d``, then one more
    ``d`` if that lost more than 10%), so channel counts match OFA's for every width multiplier.
    """
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return int(new_value)


def active_mid_channels(in_channels: int, expand_ratio: float) -> int:
    """Hidden width of an MBConv block: ``make_divisible(round(in * e), 8)`` as in OFA."""
    return make_divisible(round(in_channels * expand_ratio))


def se_mid_channels(channels: int, reduction: int = SE_REDUCTION) -> int:
    """Squeeze-excite bottleneck width: ``make_divisible(channels // 4, 8)`` as in OFA's
    ``SEModule`` and ``DynamicSE`` (integer division first, then rounding)."""
    return make_divisible(channels // reduction)


def build_activation(name: str) -> nn.Module:
    """A fresh activation module.

    Departure from OFA: OFA builds in-place ``ReLU``/``Hswish``; we use the out-of-place
    ``nn.ReLU``/``nn.Hardswish``/``nn.Hardsigmoid`` (same formulas ``x*relu6(x+3)/6`` and
    ``relu6(x+3)/6``) so autograd never sees an in-place op and exporters know the modules.
    """
    if name == "relu":
        return nn.ReLU()
    if name == "h_swish":
        return nn.Hardswish()
    if name == "h_sigmoid":
        return nn.Hardsigmoid()
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


def centre_crop_bounds(kernel_size: int, sub_kernel_size: int) -> tuple[int, int]:
    """``[start, end)`` of the centred ``sub_kernel_size`` window of a ``kernel_size`` kernel."""
    if kernel_size % 2 == 0 or sub_kernel_size % 2 == 0 or sub_kernel_size > kernel_size:
        raise ValueError(f"cannot centre-crop a {sub_kernel_size}x{sub_kernel_size} kernel "
                         f"out of a {kernel_size}x{kernel_size} one")
    start = kernel_size // 2 - sub_kernel_size // 2
    return start, start + sub_kernel_size


def he_fout_init(module: nn.Module) -> None:
    """OFA's default training initialisation (``ofa.utils.init_models(net, "he_fout")``, which
    OFA's run manager applies before training): conv ``N(0, sqrt(2 / (k*k*out)))``, conv bias 0,
    BN weight 1 / bias 0, linear ``U(-1/sqrt(in), 1/sqrt(in))``, linear bias 0.

    Only plain ``nn`` modules are touched; elastic transform matrices keep their identity init.
    """
    import torch

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.normal_(0.0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.weight.size(1))
                m.weight.uniform_(-bound, bound)
                if m.bias is not None:
                    m.bias.zero_()
