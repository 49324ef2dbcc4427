"""Static (extracted) networks: plain ``nn`` modules only, rebuilt from a JSON-able config.

A sub-network extracted from a super-network is a :class:`StaticNet`. Its module names, and so
its ``state_dict`` keys, are those of OFA's ``MobileNetV3`` sub-network
(``ofa.imagenet_classification.networks.MobileNetV3`` as returned by
``OFAMobileNetV3.get_active_subnet``): ``first_conv.conv.weight``,
``blocks.3.conv.depth_conv.se.fc.reduce.weight``, ``classifier.linear.weight``, ... so weights of
OFA/NAT sub-networks load 1:1.

``build_static(config)`` rebuilds a network from ``net.config()`` (OFA's symmetric
``config`` / ``build_from_config`` idea), which is how fine-tuned models are saved and reloaded.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from .common import build_activation

STATIC_FORMAT = "natv2-static"


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
        # OFA pools with two successive means; same order here for bit-level closeness.
        y = x.mean(3, keepdim=True).mean(2, keepdim=True)
        return x * self.fc(y)


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


class Block(nn.Module):
    """OFA's ``ResidualBlock``: ``conv(x) (+ x when residual)``. The body lives in ``.conv`` so
    keys read ``blocks.N.conv....`` as in OFA. OFAv2 parallel branches will sit beside ``conv``."""

    def __init__(self, config: dict[str, Any], bn: dict[str, float]):
        super().__init__()
        self.residual = bool(config["residual"])
        self.conv = MBConv(config, bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y + x if self.residual else y


class StaticNet(nn.Module):
    """A fixed MobileNetV3-like network: stem, blocks, final expand, pool, feature mix, classifier.

    ``config()`` returns the JSON-able dict it was built from; ``build_static(config)``
    rebuilds an identical (freshly initialised) network.
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        _check_static_config(config)
        self._config = copy.deepcopy(config)
        bn = config["bn"]
        stem = config["stem"]
        self.first_conv = conv_bn_act(stem["in_channels"], stem["out_channels"],
                                      stem["kernel_size"], stem["stride"], stem["act"], bn)
        self.blocks = nn.ModuleList(Block(b, bn) for b in config["blocks"])
        fe = config["final_expand"]
        self.final_expand_layer = conv_bn_act(fe["in_channels"], fe["out_channels"], 1, 1,
                                              fe["act"], bn)
        fm = config["feature_mix"]
        # feature mix: no BN, no bias (as OFA)
        self.feature_mix_layer = conv_bn_act(fm["in_channels"], fm["out_channels"], 1, 1,
                                             fm["act"], None)
        cl = config["classifier"]
        self.classifier = nn.Sequential(OrderedDict([
            ("dropout", nn.Dropout(cl["dropout"])),
            ("linear", nn.Linear(cl["in_features"], cl["out_features"], bias=True)),
        ]))

    @property
    def family(self) -> str:
        return self._config["family"]

    @property
    def n_classes(self) -> int:
        return self._config["classifier"]["out_features"]

    def config(self) -> dict[str, Any]:
        return copy.deepcopy(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        # SE_B: a plain chain. ``config["stages"]`` (block indices per stage) is kept so that
        # dense (D) and early-exit (EE) families can route per stage without a new format.
        for block in self.blocks:
            x = block(x)
        x = self.final_expand_layer(x)
        x = x.mean(3, keepdim=True).mean(2, keepdim=True)  # global average pool, OFA's order
        x = self.feature_mix_layer(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

    def replace_classifier(self, n_classes: int) -> None:
        """Fresh linear head with ``n_classes`` outputs (PyTorch default init)."""
        old = self.classifier.linear
        self.classifier.linear = nn.Linear(old.in_features, int(n_classes), bias=True).to(
            device=old.weight.device, dtype=old.weight.dtype)
        self._config["classifier"]["out_features"] = int(n_classes)


_BLOCK_KEYS = ("in_channels", "out_channels", "kernel_size", "stride", "expand_ratio",
               "mid_channels", "act", "se_channels", "residual")


def _check_static_config(config: dict[str, Any]) -> None:
    if not isinstance(config, dict) or config.get("format") != STATIC_FORMAT:
        raise ValueError(f"not a static network config (needs format={STATIC_FORMAT!r})")
    if config.get("family") != "SE_B":
        raise NotImplementedError(
            f"static networks of family {config.get('family')!r} are not built yet; only SE_B")
    for key in ("stem", "blocks", "stages", "final_expand", "feature_mix", "classifier", "bn"):
        if key not in config:
            raise ValueError(f"static network config lacks {key!r}")
    for i, b in enumerate(config["blocks"]):
        missing = [k for k in _BLOCK_KEYS if k not in b]
        if missing:
            raise ValueError(f"static block {i} config lacks {missing}")


def build_static(config: dict[str, Any]) -> StaticNet:
    """Rebuild a static network from ``StaticNet.config()`` (weights freshly initialised)."""
    return StaticNet(config)
