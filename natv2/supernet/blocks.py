"""Elastic MBConv blocks (and re-exports of their static counterparts).

:class:`ElasticMBConv` is OFA's ``DynamicMBConvLayer`` (1x1 expand -> BN -> act -> depthwise
k x k -> BN -> act -> [SE] -> 1x1 project -> BN) with kernel size and expand ratio given per call.
:class:`ElasticBlock` wraps it like OFA's ``ResidualBlock`` (body in ``.conv``; identity
shortcut when stride 1 and in == out), so ``state_dict`` keys read
``blocks.N.conv.inverted_bottleneck.conv.conv.weight`` exactly as OFA's.

OFAv2: with ``parallel=True`` (P families) the block also holds the two static branches of the
thesis' ``dynamic_parallel_body_stage_layers_builder`` beside ``conv``: ``conv1x1`` and
``transform`` (see :mod:`.static`); ``forward`` takes the branch mask ``nw`` (bits of
:mod:`natv2.space.arch`) and sums the active branches in the thesis' order (MBConv with its
shortcut, 1x1, transformation). Only kernel size and expand ratio are elastic: the branches'
input width is fixed per block, so they are plain modules, copied as they are on extraction.
Dense skips (D) are routed by the super-network per stage and need nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from natv2.space.arch import NW_CONV1X1, NW_MBCONV, NW_TRANSFORM

from .common import active_mid_channels, build_activation
from .elastic import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticDepthwiseConv2d,
    ElasticSE,
    copy_state,
)
from .layers import Block, MBConv, conv1x1_branch, sum_tensors, transform_branch

__all__ = ["Block", "ElasticBlock", "ElasticMBConv", "MBConv"]


class ElasticMBConv(nn.Module):
    """Inverted residual body with elastic kernel size and expand ratio.

    Input and output widths are fixed per block in MobileNetV3 (OFA's ``in_channel_list`` /
    ``out_channel_list`` have one element); the hidden width for expand ratio ``e`` is
    ``make_divisible(round(in * e), 8)`` of the *actual* input width, as in OFA.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int],
                 expand_ratios: Sequence[float], stride: int, act: str, use_se: bool,
                 bn_momentum: float = 0.1, bn_eps: float = 1e-5):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_sizes = tuple(sorted(set(int(k) for k in kernel_sizes)))
        self.expand_ratios = tuple(sorted(set(expand_ratios)))
        if min(self.expand_ratios) <= 1:
            # OFA drops the inverted bottleneck only when max(expand) == 1; elastic blocks here
            # always expand (the fixed expand-1 first block is a static MBConv).
            raise ValueError(f"elastic expand ratios must be > 1, got {list(expand_ratios)}")
        self.stride = stride
        self.act = act
        self.use_se = use_se
        max_mid = active_mid_channels(in_channels, max(self.expand_ratios))
        self.max_mid_channels = max_mid

        def bn(c: int) -> ElasticBatchNorm2d:
            return ElasticBatchNorm2d(c, eps=bn_eps, momentum=bn_momentum)

        self.inverted_bottleneck = nn.ModuleDict({
            "conv": ElasticConv2d(in_channels, max_mid, 1),
            "bn": bn(max_mid),
            "act": build_activation(act),
        })
        depth: dict[str, nn.Module] = {
            "conv": ElasticDepthwiseConv2d(max_mid, self.kernel_sizes, stride),
            "bn": bn(max_mid),
            "act": build_activation(act),
        }
        if use_se:
            depth["se"] = ElasticSE(max_mid)
        self.depth_conv = nn.ModuleDict(depth)
        self.point_linear = nn.ModuleDict({
            "conv": ElasticConv2d(max_mid, out_channels, 1),
            "bn": bn(out_channels),
        })

    def _check(self, kernel_size: int, expand_ratio: float) -> None:
        if kernel_size not in self.kernel_sizes:
            raise ValueError(f"kernel size {kernel_size} not in {list(self.kernel_sizes)}")
        if expand_ratio not in self.expand_ratios:
            raise ValueError(f"expand ratio {expand_ratio} not in {list(self.expand_ratios)}")

    def forward(self, x: torch.Tensor, kernel_size: int, expand_ratio: float) -> torch.Tensor:
        self._check(kernel_size, expand_ratio)
        mid = active_mid_channels(x.size(1), expand_ratio)
        ib, dw, pl = self.inverted_bottleneck, self.depth_conv, self.point_linear
        x = ib["act"](ib["bn"](ib["conv"](x, mid)))
        x = dw["act"](dw["bn"](dw["conv"](x, kernel_size)))
        if self.use_se:
            x = dw["se"](x)
        return pl["bn"](pl["conv"](x, self.out_channels))

    def static_config(self, in_channels: int, kernel_size: int, expand_ratio: float,
                      residual: bool) -> dict[str, Any]:
        """Config of the static :class:`MBConv` this block extracts to."""
        self._check(kernel_size, expand_ratio)
        mid = active_mid_channels(in_channels, expand_ratio)
        se = self.depth_conv["se"].active_mid(mid) if self.use_se else 0
        return {"in_channels": in_channels, "out_channels": self.out_channels,
                "kernel_size": kernel_size, "stride": self.stride,
                "expand_ratio": expand_ratio, "mid_channels": mid, "act": self.act,
                "se_channels": se, "residual": residual}

    @torch.no_grad()
    def extract_into(self, static: MBConv, in_channels: int, kernel_size: int,
                     expand_ratio: float) -> None:
        """Copy the active weights (cloned) into a freshly built static :class:`MBConv`."""
        mid = active_mid_channels(in_channels, expand_ratio)
        ib, dw, pl = self.inverted_bottleneck, self.depth_conv, self.point_linear
        parts = [
            (static.inverted_bottleneck.conv, ib["conv"].active_state(in_channels, mid)),
            (static.inverted_bottleneck.bn, ib["bn"].active_state(mid)),
            (static.depth_conv.conv, dw["conv"].active_state(mid, kernel_size)),
            (static.depth_conv.bn, dw["bn"].active_state(mid)),
            (static.point_linear.conv, pl["conv"].active_state(mid, self.out_channels)),
            (static.point_linear.bn, pl["bn"].active_state(self.out_channels)),
        ]
        if self.use_se:
            parts.append((static.depth_conv.se, dw["se"].active_state(mid)))
        for target, state in parts:
            copy_state(target, state)


class ElasticBlock(nn.Module):
    """One slot of a stage: elastic MBConv body in ``.conv`` plus an identity shortcut when the
    shapes allow (stride 1, in == out), exactly where OFA puts one; with ``parallel=True`` also
    the P families' ``conv1x1`` and ``transform`` branches."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int],
                 expand_ratios: Sequence[float], stride: int, act: str, use_se: bool,
                 bn_momentum: float = 0.1, bn_eps: float = 1e-5, parallel: bool = False):
        super().__init__()
        self.residual = stride == 1 and in_channels == out_channels
        self.parallel = bool(parallel)
        self.conv = ElasticMBConv(in_channels, out_channels, kernel_sizes, expand_ratios,
                                  stride, act, use_se, bn_momentum, bn_eps)
        if self.parallel:
            bn = {"momentum": bn_momentum, "eps": bn_eps}
            self.conv1x1 = conv1x1_branch(in_channels, out_channels, stride, act, bn)
            self.transform = transform_branch(in_channels, out_channels, stride, act, bn)

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def _check_nw(self, nw: int) -> None:
        if not 1 <= nw <= 7:
            raise ValueError(f"branch mask nw {nw} not in 1..7")
        if nw != NW_MBCONV and not self.parallel:
            raise ValueError(f"branch mask nw={nw} needs a parallel (P family) block")

    def forward(self, x: torch.Tensor, kernel_size: int, expand_ratio: float,
                nw: int = NW_MBCONV) -> torch.Tensor:
        self._check_nw(nw)
        outs = []
        if nw & NW_MBCONV:
            y = self.conv(x, kernel_size, expand_ratio)
            outs.append(y + x if self.residual else y)
        if nw & NW_CONV1X1:
            outs.append(self.conv1x1(x))
        if nw & NW_TRANSFORM:
            outs.append(self.transform(x))
        return sum_tensors(outs)

    def static_config(self, in_channels: int, kernel_size: int, expand_ratio: float,
                      nw: int | None = None) -> dict[str, Any]:
        """Config of the static :class:`Block`; ``nw`` (P families) adds the branch mask."""
        config = self.conv.static_config(in_channels, kernel_size, expand_ratio, self.residual)
        if nw is not None:
            self._check_nw(nw)
            config["nw"] = int(nw)
        return config

    @torch.no_grad()
    def extract_into(self, block: Block, in_channels: int, kernel_size: int,
                     expand_ratio: float) -> None:
        """Copy the active weights (cloned) into a static :class:`Block` built from
        :meth:`static_config` (its ``None`` branches are the inactive ones)."""
        if block.conv is not None:
            self.conv.extract_into(block.conv, in_channels, kernel_size, expand_ratio)
        for name in ("conv1x1", "transform"):
            target = getattr(block, name)
            if target is not None:
                copy_state(target, getattr(self, name).state_dict())

    def extract(self, in_channels: int, kernel_size: int, expand_ratio: float,
                bn: dict[str, float], nw: int | None = None) -> Block:
        block = Block(self.static_config(in_channels, kernel_size, expand_ratio, nw), bn)
        block = block.to(device=self.conv.point_linear["bn"].bn.weight.device,
                         dtype=self.conv.point_linear["bn"].bn.weight.dtype)
        self.extract_into(block, in_channels, kernel_size, expand_ratio)
        return block
