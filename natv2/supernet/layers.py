"""Plain building blocks of the static (extracted) networks: ``nn`` modules only, each built
from a JSON-able block config, with OFA's child names (so ``state_dict`` keys match OFA's).

``conv_bn_act`` (OFA's ``ConvLayer``), :class:`SqueezeExcite` (``SEModule``), :class:`MBConv`
(``MBConvLayer``) and :class:`Block` (``ResidualBlock``, plus the P families' branches), the
dense routing of the D families (:func:`stage_input`) and OFA's global average pool. How they
are chained into a network is :mod:`.static`'s business; the elastic super-network
(:mod:`.blocks`, :mod:`.elastic`) extracts into these modules.

OFAv2 families (Sarti et al.; facts from the authors' ``OFA_mbv3_extended`` code):

* **P** blocks carry ``"nw"`` (the branch mask, bits of :mod:`natv2.space.arch`) and build only
  the active branches beside ``conv``: ``conv1x1`` (1x1 conv, stride of the block, BN, act: the
  thesis' ``ConvLayer``) and ``transform`` (max-pool ``k=s=stride, ceil_mode`` when strided,
  1x1 conv *with bias* when the width changes, BN, act: the thesis' ``TransformationLayer``).
  As in the thesis, the identity shortcut belongs to the MBConv branch
  (``ResidualBlock(mbconv, shortcut)`` is branch 0 of its parallel group).
* **D** (``family`` has a D) routes blocks per stage with :func:`stage_input`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from natv2.space.arch import NW_CONV1X1, NW_MBCONV, NW_TRANSFORM

from .common import build_activation


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pool as OFA computes it: two successive means (its order, for bit-level
    closeness), keeping ``N x C x 1 x 1``."""
    return x.mean(3, keepdim=True).mean(2, keepdim=True)


class GlobalAvgPool(nn.Module):
    """:func:`global_avg_pool` as a module (a link of the chain of :func:`static_pieces`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_avg_pool(x)


def _bn(channels: int, bn: dict[str, float]) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=bn["eps"], momentum=bn["momentum"])


def conv_bn_act(in_channels: int, out_channels: int, kernel_size: int, stride: int, act: str,
                bn: dict[str, float] | None, groups: int = 1) -> nn.Sequential:
    """OFA's ``ConvLayer`` (weight -> BN -> act) as a plain ``nn.Sequential`` with the same
    child names (``conv``, ``bn``, ``act``); ``bn=None`` leaves BN out (the feature-mix layer)."""
    layers: list[tuple[str, nn.Module]] = [
        ("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                           groups=groups, bias=False)),
    ]
    if bn is not None:
        layers.append(("bn", _bn(out_channels, bn)))
    if act != "none":
        layers.append(("act", build_activation(act)))
    return nn.Sequential(OrderedDict(layers))


class SqueezeExcite(nn.Module):
    """OFA's ``SEModule``: global mean -> 1x1 reduce (bias) -> ReLU -> 1x1 expand (bias) ->
    hard-sigmoid -> scale. ``fc`` keeps OFA's child names (``reduce``, ``relu``, ``expand``,
    ``h_sigmoid``), so keys are ``se.fc.reduce.weight`` etc."""

    def __init__(self, channels: int, mid_channels: int):
        super().__init__()
        self.channels = channels
        self.mid_channels = mid_channels
        self.fc = nn.Sequential(OrderedDict([
            ("reduce", nn.Conv2d(channels, mid_channels, 1, 1, 0, bias=True)),
            ("relu", nn.ReLU()),
            ("expand", nn.Conv2d(mid_channels, channels, 1, 1, 0, bias=True)),
            ("h_sigmoid", nn.Hardsigmoid()),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(global_avg_pool(x))


class MBConv(nn.Module):
    """Static inverted-residual body (OFA's ``MBConvLayer``), built from a block config.

    Config keys: ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``,
    ``expand_ratio`` (1 = no inverted bottleneck, as in OFA), ``mid_channels``, ``act``,
    ``se_channels`` (0 = no squeeze-excite), ``residual`` (used by :class:`Block`).
    """

    def __init__(self, config: dict[str, Any], bn: dict[str, float]):
        super().__init__()
        c = config
        mid = c["mid_channels"]
        if c["expand_ratio"] == 1:
            if mid != c["in_channels"]:
                raise ValueError(f"expand_ratio 1 needs mid_channels == in_channels, got {c}")
            self.inverted_bottleneck = None
        else:
            self.inverted_bottleneck = conv_bn_act(c["in_channels"], mid, 1, 1, c["act"], bn)
        depth = conv_bn_act(mid, mid, c["kernel_size"], c["stride"], c["act"], bn, groups=mid)
        if c["se_channels"]:
            depth.add_module("se", SqueezeExcite(mid, c["se_channels"]))
        self.depth_conv = depth
        self.point_linear = conv_bn_act(mid, c["out_channels"], 1, 1, "none", bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


def transform_branch(in_channels: int, out_channels: int, stride: int, act: str,
                     bn: dict[str, float]) -> nn.Sequential:
    """The P families' "transformation" branch (the thesis' ``TransformationLayer``): max-pool
    (kernel = stride = ``stride``, ``ceil_mode=True``) when strided, a 1x1 conv *with bias* (a
    plain ``nn.Conv2d``, as in the thesis) when the width changes, then BN and the activation."""
    layers: list[tuple[str, nn.Module]] = []
    if stride > 1:
        layers.append(("pool", nn.MaxPool2d(stride, stride, ceil_mode=True)))
    if in_channels != out_channels:
        layers.append(("conv", nn.Conv2d(in_channels, out_channels, 1, bias=True)))
    layers.append(("bn", _bn(out_channels, bn)))
    layers.append(("act", build_activation(act)))
    return nn.Sequential(OrderedDict(layers))


def conv1x1_branch(in_channels: int, out_channels: int, stride: int, act: str,
                   bn: dict[str, float]) -> nn.Sequential:
    """The P families' 1x1 branch (the thesis' ``ConvLayer(k=1, stride, act)``: conv without
    bias, BN, activation)."""
    return conv_bn_act(in_channels, out_channels, 1, stride, act, bn)


def sum_tensors(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Out-of-place sum in list order (one tensor comes back as is)."""
    out = tensors[0]
    for t in tensors[1:]:
        out = out + t
    return out


def stage_input(stage_in: torch.Tensor, outputs: Sequence[torch.Tensor],
                dense: bool) -> torch.Tensor:
    """Input of the next block of a stage (or the stage output once every block ran), given the
    stage input and the outputs of the blocks run so far.

    Plain: the last output. Dense (D families), the thesis' ``get_input_tensor``: with
    ``n = len(outputs)`` blocks done, ``n <= 2`` gives the last output (or the stage input),
    else ``outputs[n-1] + outputs[0] + ... + outputs[n-3]`` -- block ``j`` (1-based, j >= 4)
    gets block ``j-1``'s output plus those of blocks ``1..j-3``. Block 3 gets block 2's output
    only; a stage of depth 3 outputs ``out3 + out1``, of depth 4 ``out4 + out1 + out2``. (Our
    reading of why ``j-2`` is left out: its output already reaches block ``j`` through block
    ``j-1``'s identity shortcut.) The rule is the thesis', not DESIGN section 1's first sketch
    ("blocks 1..j-2"). Departure: the thesis adds in place (``+=``); we sum out of place.
    """
    if not outputs:
        return stage_in
    n = len(outputs)
    if not dense or n <= 2:
        return outputs[-1]
    return sum_tensors([outputs[-1], *outputs[: n - 2]])


class Block(nn.Module):
    """OFA's ``ResidualBlock``: ``conv(x) (+ x when residual)``. The body lives in ``.conv`` so
    keys read ``blocks.N.conv....`` as in OFA.

    P families: a config with ``"nw"`` builds only the active branches (``conv``, ``conv1x1``,
    ``transform``; absent ones are ``None``) and sums their outputs in that order; the identity
    shortcut is part of the MBConv branch (thesis: ``ResidualBlock`` is the first branch).
    """

    def __init__(self, config: dict[str, Any], bn: dict[str, float]):
        super().__init__()
        c = config
        self.residual = bool(c["residual"])
        nw = int(c.get("nw", NW_MBCONV))
        if not 1 <= nw <= 7:
            raise ValueError(f"block branch mask nw must be in 1..7, got {nw}")
        self.nw = nw
        self.conv = MBConv(c, bn) if nw & NW_MBCONV else None
        self.conv1x1 = (conv1x1_branch(c["in_channels"], c["out_channels"], c["stride"],
                                       c["act"], bn) if nw & NW_CONV1X1 else None)
        self.transform = (transform_branch(c["in_channels"], c["out_channels"], c["stride"],
                                           c["act"], bn) if nw & NW_TRANSFORM else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        if self.conv is not None:
            y = self.conv(x)
            outs.append(y + x if self.residual else y)
        if self.conv1x1 is not None:
            outs.append(self.conv1x1(x))
        if self.transform is not None:
            outs.append(self.transform(x))
        return sum_tensors(outs)
