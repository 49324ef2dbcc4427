"""Elastic operations: one set of maximal weights, sliced per call.

Each op takes the active sizes as ``forward`` arguments (no "active" attributes, no class-level
switches: departure from OFA's ``active_kernel_size`` / ``KERNEL_TRANSFORM_MODE`` /
``SET_RUNNING_STATISTICS`` state) and has ``extract(...)`` returning a plain ``nn`` module with
*cloned* weights whose output equals the elastic op's output for those sizes.

Input widths are read from the input tensor (``x.size(1)``), as OFA does. Sub-widths always
take the *first* channels of the maximal weights (OFA's slicing convention; OFA's
``re_organize_middle_weights`` sorts channels by importance to make this work well).

Module/parameter names follow OFA's ``dynamic_op`` so the super-network's ``state_dict`` keys
equal ``OFAMobileNetV3().state_dict()`` keys: the wrapped weight lives in ``.conv`` /
``.bn`` / ``.linear`` (giving ``...conv.conv.weight``, ``...bn.bn.running_mean``) and the
kernel transforms are named ``7to5_matrix`` / ``5to3_matrix``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from natv2.distributed import batch_norm

from .common import centre_crop_bounds, se_mid_channels
from .layers import SqueezeExcite, global_avg_pool

M = TypeVar("M", bound=nn.Module)


def _check_width(name: str, active: int, maximum: int) -> None:
    if not 0 < active <= maximum:
        raise ValueError(f"{name}: active width {active} outside 1..{maximum}")



@torch.no_grad()
def copy_state(module: M, tensors: Mapping[str, torch.Tensor]) -> M:
    """Copy ``tensors`` (names as in ``module.state_dict()``) into ``module``'s parameters and
    buffers in place; the names and every shape must match exactly (``load_state_dict``'s
    ``strict=True``, without its per-module Python overhead). Extraction copies the active
    slices of the elastic layers straight into the static network this way, instead of building
    a module per layer first and loading its state."""
    own = dict(module.named_parameters())
    own.update(module.named_buffers())
    if own.keys() != tensors.keys():
        raise ValueError(f"{type(module).__name__}: state names {sorted(tensors)} do not match "
                         f"{sorted(own)}")
    for name, tensor in tensors.items():
        target = own[name]
        if target.shape != tensor.shape:
            raise ValueError(f"{type(module).__name__}.{name}: shape {tuple(tensor.shape)} does "
                             f"not match {tuple(target.shape)}")
        target.copy_(tensor)
    return module

class ElasticConv2d(nn.Module):
    """Dense (groups=1) convolution with elastic input and output widths (OFA's
    ``DynamicConv2d``). 'Same' padding ``k // 2``."""

    def __init__(self, max_in_channels: int, max_out_channels: int, kernel_size: int = 1,
                 stride: int = 1, bias: bool = False):
        super().__init__()
        self.max_in_channels = max_in_channels
        self.max_out_channels = max_out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = nn.Conv2d(max_in_channels, max_out_channels, kernel_size, stride,
                              kernel_size // 2, bias=bias)

    def active_weight(self, in_channels: int, out_channels: int) -> torch.Tensor:
        _check_width("ElasticConv2d in", in_channels, self.max_in_channels)
        _check_width("ElasticConv2d out", out_channels, self.max_out_channels)
        return self.conv.weight[:out_channels, :in_channels]

    def active_bias(self, out_channels: int) -> torch.Tensor | None:
        return None if self.conv.bias is None else self.conv.bias[:out_channels]

    def forward(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        out = self.max_out_channels if out_channels is None else out_channels
        w = self.active_weight(x.size(1), out)
        return F.conv2d(x, w, self.active_bias(out), self.stride, self.kernel_size // 2)

    def active_state(self, in_channels: int, out_channels: int | None = None
                     ) -> dict[str, torch.Tensor]:
        """The state (views) of the static ``nn.Conv2d`` this extracts to."""
        out = self.max_out_channels if out_channels is None else out_channels
        state = {"weight": self.active_weight(in_channels, out)}
        if self.conv.bias is not None:
            state["bias"] = self.active_bias(out)
        return state

    @torch.no_grad()
    def extract(self, in_channels: int, out_channels: int | None = None) -> nn.Conv2d:
        out = self.max_out_channels if out_channels is None else out_channels
        conv = nn.Conv2d(in_channels, out, self.kernel_size, self.stride, self.kernel_size // 2,
                         bias=self.conv.bias is not None)
        conv = conv.to(device=self.conv.weight.device, dtype=self.conv.weight.dtype)
        return copy_state(conv, self.active_state(in_channels, out))


class ElasticDepthwiseConv2d(nn.Module):
    """Depthwise convolution with elastic channels and kernel size (OFA's
    ``DynamicSeparableConv2d`` with ``KERNEL_TRANSFORM_MODE = 1``).

    A kernel smaller than the maximum is made, as in OFA, by walking down the sorted kernel
    list: centre-crop the current kernel to the next size ``t``, flatten each channel's
    ``t x t`` filter and multiply it by the learned ``t^2 x t^2`` matrix ``"{s}to{t}_matrix"``
    (``F.linear``, i.e. ``filter @ M.T``), until size ``t`` is the asked one. Matrices start as
    the identity, so the untrained transform is a plain centre crop.
    """

    def __init__(self, max_channels: int, kernel_sizes: Sequence[int], stride: int = 1):
        super().__init__()
        self.max_channels = max_channels
        self.kernel_sizes = tuple(sorted(set(int(k) for k in kernel_sizes)))
        if not self.kernel_sizes or any(k % 2 == 0 or k < 1 for k in self.kernel_sizes):
            raise ValueError(f"kernel sizes must be odd positive ints, got {kernel_sizes}")
        self.max_kernel_size = self.kernel_sizes[-1]
        self.stride = stride
        self.conv = nn.Conv2d(max_channels, max_channels, self.max_kernel_size, stride,
                              self.max_kernel_size // 2, groups=max_channels, bias=False)
        for big, small in zip(self.kernel_sizes[1:], self.kernel_sizes[:-1], strict=True):
            # names start with a digit, so register_parameter and getattr are the only ways in
            self.register_parameter(self._matrix_name(big, small),
                                    nn.Parameter(torch.eye(small * small)))

    @staticmethod
    def _matrix_name(big: int, small: int) -> str:
        return f"{big}to{small}_matrix"

    def active_weight(self, channels: int, kernel_size: int) -> torch.Tensor:
        _check_width("ElasticDepthwiseConv2d", channels, self.max_channels)
        if kernel_size not in self.kernel_sizes:
            raise ValueError(f"kernel size {kernel_size} not in {list(self.kernel_sizes)}")
        weight = self.conv.weight[:channels]  # (C, 1, K, K)
        size = self.max_kernel_size
        for big, small in zip(reversed(self.kernel_sizes[1:]), reversed(self.kernel_sizes[:-1]),
                              strict=True):
            if big <= kernel_size:
                break
            start, end = centre_crop_bounds(big, small)
            flat = weight[:, :, start:end, start:end].reshape(-1, small * small)
            flat = F.linear(flat, getattr(self, self._matrix_name(big, small)))
            weight = flat.reshape(channels, 1, small, small)
            size = small
        assert size == kernel_size
        return weight

    def forward(self, x: torch.Tensor, kernel_size: int | None = None) -> torch.Tensor:
        k = self.max_kernel_size if kernel_size is None else kernel_size
        channels = x.size(1)
        w = self.active_weight(channels, k)
        return F.conv2d(x, w, None, self.stride, k // 2, 1, channels)

    def active_state(self, channels: int, kernel_size: int | None = None
                     ) -> dict[str, torch.Tensor]:
        """The state of the static depthwise ``nn.Conv2d`` this extracts to."""
        k = self.max_kernel_size if kernel_size is None else kernel_size
        return {"weight": self.active_weight(channels, k)}

    @torch.no_grad()
    def extract(self, channels: int, kernel_size: int | None = None) -> nn.Conv2d:
        k = self.max_kernel_size if kernel_size is None else kernel_size
        conv = nn.Conv2d(channels, channels, k, self.stride, k // 2, groups=channels, bias=False)
        conv = conv.to(device=self.conv.weight.device, dtype=self.conv.weight.dtype)
        return copy_state(conv, self.active_state(channels, k))


class ElasticBatchNorm2d(nn.Module):
    """BatchNorm over the first ``C`` channels of a maximal ``nn.BatchNorm2d`` (``.bn``),
    as OFA's ``DynamicBatchNorm2d``.

    Training mode normalises with batch statistics (those of every rank's batch in a
    data-parallel run, ``natv2.distributed.batch_norm``) and updates the sliced running statistics
    in place (they are buffers, not autograd inputs) with the BN's momentum, or the cumulative
    average when momentum is None, like ``nn.BatchNorm2d``. BN re-calibration for a sub-network
    is done on the *extracted* static net (no OFA-style global switch needed).
    """

    def __init__(self, max_features: int, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__()
        self.max_features = max_features
        self.bn = nn.BatchNorm2d(max_features, eps=eps, momentum=momentum)
        self.synchronised = False  # set by natv2.distributed.synchronised_batch_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        c = x.size(1)
        _check_width("ElasticBatchNorm2d", c, self.max_features)
        factor = 0.0
        if self.training:
            bn.num_batches_tracked.add_(1)
            factor = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                      else bn.momentum)
        return batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c],
                          bn.bias[:c], self.training, factor, bn.eps, self.synchronised)

    def active_state(self, features: int) -> dict[str, torch.Tensor]:
        """The state of the static ``nn.BatchNorm2d`` this extracts to."""
        src = self.bn
        return {"weight": src.weight[:features], "bias": src.bias[:features],
                "running_mean": src.running_mean[:features],
                "running_var": src.running_var[:features],
                "num_batches_tracked": src.num_batches_tracked}

    @torch.no_grad()
    def extract(self, features: int) -> nn.BatchNorm2d:
        src = self.bn
        bn = nn.BatchNorm2d(features, eps=src.eps, momentum=src.momentum)
        bn = bn.to(device=src.weight.device, dtype=src.weight.dtype)
        return copy_state(bn, self.active_state(features))


class ElasticSE(nn.Module):
    """Squeeze-excite with elastic channels (OFA's ``DynamicSE``): for ``C`` active channels
    the reduce width is ``make_divisible(C // 4, 8)`` and the first rows/columns are used."""

    def __init__(self, max_channels: int, reduction: int = 4):
        super().__init__()
        self.max_channels = max_channels
        self.reduction = reduction
        mid = se_mid_channels(max_channels, reduction)
        # child names as OFA's SEModule.fc, so keys are ``se.fc.reduce.weight`` etc.
        self.fc = nn.ModuleDict({
            "reduce": nn.Conv2d(max_channels, mid, 1, 1, 0, bias=True),
            "expand": nn.Conv2d(mid, max_channels, 1, 1, 0, bias=True),
        })

    def active_mid(self, channels: int) -> int:
        return se_mid_channels(channels, self.reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1)
        _check_width("ElasticSE", c, self.max_channels)
        mid = self.active_mid(c)
        reduce, expand = self.fc["reduce"], self.fc["expand"]
        y = global_avg_pool(x)
        y = F.relu(F.conv2d(y, reduce.weight[:mid, :c], reduce.bias[:mid]))
        y = F.hardsigmoid(F.conv2d(y, expand.weight[:c, :mid], expand.bias[:c]))
        return x * y

    def active_state(self, channels: int) -> dict[str, torch.Tensor]:
        """The state of the static :class:`SqueezeExcite` this extracts to."""
        mid = self.active_mid(channels)
        reduce, expand = self.fc["reduce"], self.fc["expand"]
        return {"fc.reduce.weight": reduce.weight[:mid, :channels],
                "fc.reduce.bias": reduce.bias[:mid],
                "fc.expand.weight": expand.weight[:channels, :mid],
                "fc.expand.bias": expand.bias[:channels]}

    @torch.no_grad()
    def extract(self, channels: int) -> SqueezeExcite:
        reduce = self.fc["reduce"]
        se = SqueezeExcite(channels, self.active_mid(channels)).to(device=reduce.weight.device,
                                                                   dtype=reduce.weight.dtype)
        return copy_state(se, self.active_state(channels))


class ElasticLinear(nn.Module):
    """Linear layer with elastic input and output features (OFA's ``DynamicLinear``); meant
    for OFAv2 heads whose input width varies."""

    def __init__(self, max_in_features: int, max_out_features: int, bias: bool = True):
        super().__init__()
        self.max_in_features = max_in_features
        self.max_out_features = max_out_features
        self.linear = nn.Linear(max_in_features, max_out_features, bias=bias)

    def forward(self, x: torch.Tensor, out_features: int | None = None) -> torch.Tensor:
        out = self.max_out_features if out_features is None else out_features
        c = x.size(1)
        _check_width("ElasticLinear in", c, self.max_in_features)
        _check_width("ElasticLinear out", out, self.max_out_features)
        bias = None if self.linear.bias is None else self.linear.bias[:out]
        return F.linear(x, self.linear.weight[:out, :c], bias)

    @torch.no_grad()
    def extract(self, in_features: int, out_features: int | None = None) -> nn.Linear:
        out = self.max_out_features if out_features is None else out_features
        src = self.linear
        lin = nn.Linear(in_features, out, bias=src.bias is not None)
        lin = lin.to(device=src.weight.device, dtype=src.weight.dtype)
        state = {"weight": src.weight[:out, :in_features]}
        if src.bias is not None:
            state["bias"] = src.bias[:out]
        return copy_state(lin, state)
