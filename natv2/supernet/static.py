"""Static (extracted) networks: plain ``nn`` modules only, rebuilt from a JSON-able config.

A sub-network extracted from a super-network is a :class:`StaticNet`. Its module names, and so
its ``state_dict`` keys, are those of OFA's ``MobileNetV3`` sub-network
(``ofa.imagenet_classification.networks.MobileNetV3`` as returned by
``OFAMobileNetV3.get_active_subnet``): ``first_conv.conv.weight``,
``blocks.3.conv.depth_conv.se.fc.reduce.weight``, ``classifier.linear.weight``, ... so weights of
OFA/NAT sub-networks load 1:1.

``build_static(config)`` rebuilds a network from ``net.config()`` (OFA's symmetric
``config`` / ``build_from_config`` idea), which is how fine-tuned models are saved and reloaded.

OFAv2 families (Sarti et al.; facts from the authors' ``OFA_mbv3_extended`` code) reuse the same
modules and config:

* **P** blocks carry ``"nw"`` (the branch mask, bits of :mod:`natv2.space.arch`) and build only
  the active branches beside ``conv``: ``conv1x1`` (1x1 conv, stride of the block, BN, act: the
  thesis' ``ConvLayer``) and ``transform`` (max-pool ``k=s=stride, ceil_mode`` when strided,
  1x1 conv *with bias* when the width changes, BN, act: the thesis' ``TransformationLayer``).
  As in the thesis, the identity shortcut belongs to the MBConv branch
  (``ResidualBlock(mbconv, shortcut)`` is branch 0 of its parallel group).
* **D** (``family`` has a D) routes blocks per stage with :func:`stage_input`.
* **EE** single-exit nets keep the exit they end with at top level (``final_expand_layer`` ...),
  so a net at ``nd=5`` has OFA's key layout; multi-exit nets add ``early_exits`` (one
  :class:`ExitHead` per earlier exit) and return the list of logits of exits ``1..nd``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from natv2.space.arch import FAMILIES, NW_CONV1X1, NW_MBCONV, NW_TRANSFORM, has_dense

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


def head_forward(final_expand: nn.Module, feature_mix: nn.Module, classifier: nn.Module,
                 x: torch.Tensor) -> torch.Tensor:
    """OFA's head: final expand -> global average pool -> feature mix -> flatten -> classifier."""
    x = final_expand(x)
    x = x.mean(3, keepdim=True).mean(2, keepdim=True)  # global average pool, OFA's order
    x = feature_mix(x)
    x = torch.flatten(x, 1)
    return classifier(x)


def head_modules(config: dict[str, Any], bn: dict[str, float]) -> dict[str, nn.Module]:
    """``final_expand_layer``, ``feature_mix_layer`` (no BN, no bias, as OFA) and ``classifier``
    (dropout + linear) of a head config (keys ``final_expand``, ``feature_mix``, ``classifier``)."""
    fe, fm, cl = config["final_expand"], config["feature_mix"], config["classifier"]
    return {
        "final_expand_layer": conv_bn_act(fe["in_channels"], fe["out_channels"], 1, 1,
                                          fe["act"], bn),
        "feature_mix_layer": conv_bn_act(fm["in_channels"], fm["out_channels"], 1, 1,
                                         fm["act"], None),
        "classifier": nn.Sequential(OrderedDict([
            ("dropout", nn.Dropout(cl["dropout"])),
            ("linear", nn.Linear(cl["in_features"], cl["out_features"], bias=True)),
        ])),
    }


class ExitHead(nn.Module):
    """One early exit of the EE families (the thesis' ``StaticExitStage``): the same three
    modules, and child names, as the network's own head."""

    def __init__(self, config: dict[str, Any], bn: dict[str, float]):
        super().__init__()
        for name, module in head_modules(config, bn).items():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return head_forward(self.final_expand_layer, self.feature_mix_layer, self.classifier, x)

    def replace_classifier(self, n_classes: int) -> None:
        old = self.classifier.linear
        self.classifier.linear = nn.Linear(old.in_features, int(n_classes), bias=True).to(
            device=old.weight.device, dtype=old.weight.dtype)


class StaticNet(nn.Module):
    """A fixed MobileNetV3-like network: stem, blocks, final expand, pool, feature mix, classifier.

    ``config()`` returns the JSON-able dict it was built from; ``build_static(config)``
    rebuilds an identical (freshly initialised) network. ``config["stages"]`` lists the block
    indices of each stage that runs (dense routing per stage for D families). A multi-exit net
    (config key ``early_exits``: one head config per earlier exit, with its 1-based ``stage``)
    returns the list of logits of every exit, the top-level head's last; ``exit_weights`` and
    :meth:`ensemble` combine them.
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        _check_static_config(config)
        self._config = copy.deepcopy(config)
        bn = config["bn"]
        stem = config["stem"]
        self.dense = has_dense(config["family"])
        self.first_conv = conv_bn_act(stem["in_channels"], stem["out_channels"],
                                      stem["kernel_size"], stem["stride"], stem["act"], bn)
        self.blocks = nn.ModuleList(Block(b, bn) for b in config["blocks"])
        self._n_pre_blocks = len(config["blocks"]) - sum(len(s) for s in config["stages"])
        for name, module in head_modules(config, bn).items():
            self.add_module(name, module)
        self.multi_exit = "early_exits" in config
        if self.multi_exit:
            self.early_exits = nn.ModuleList(ExitHead(h, bn) for h in config["early_exits"])
            self._exit_after = {int(h["stage"]) - 1: i
                                for i, h in enumerate(config["early_exits"])}

    @property
    def family(self) -> str:
        return self._config["family"]

    @property
    def n_classes(self) -> int:
        return self._config["classifier"]["out_features"]

    @property
    def exit_weights(self) -> list[float]:
        """Weights of exits 1..n for :meth:`ensemble` (OFAv2's, see ``natv2.supernet.exits``);
        ``[1.0]`` for a single-exit net."""
        return list(self._config.get("exit_weights", [1.0]))

    @property
    def n_exits(self) -> int:
        """Number of exits the forward returns (1 for a single-exit net)."""
        return len(self.early_exits) + 1 if self.multi_exit else 1

    def set_exit_weights(self, weights: Sequence[float]) -> None:
        """Set :attr:`exit_weights` (one non-negative weight per exit, positive sum); they are
        part of :meth:`config`, so a saved checkpoint keeps them (e.g. the ensemble weights of
        an exit ordering, ``natv2.train.aep``)."""
        w = [float(v) for v in weights]
        if len(w) != self.n_exits or any(not v >= 0 for v in w) or sum(w) <= 0:
            raise ValueError(f"exit weights must be {self.n_exits} non-negative numbers with a "
                             f"positive sum, got {w}")
        self._config["exit_weights"] = w

    def config(self) -> dict[str, Any]:
        return copy.deepcopy(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.first_conv(x)
        for i in range(self._n_pre_blocks):  # the fixed first block: before every stage
            x = self.blocks[i](x)
        logits: list[torch.Tensor] = []
        for s, indices in enumerate(self._config["stages"]):
            stage_in, outs = x, []
            for i in indices:
                outs.append(self.blocks[i](stage_input(stage_in, outs, self.dense)))
            x = stage_input(stage_in, outs, self.dense)
            if self.multi_exit and s in self._exit_after:
                logits.append(self.early_exits[self._exit_after[s]](x))
        last = head_forward(self.final_expand_layer, self.feature_mix_layer, self.classifier, x)
        if self.multi_exit:
            return [*logits, last]
        return last

    def ensemble(self, x: torch.Tensor, weights: Sequence[float] | None = None) -> torch.Tensor:
        """Weighted sum of the exits' logits (weights of exits 1..n, renormalised to sum to 1;
        default :attr:`exit_weights`), as OFAv2's ensemble / ENS-KD teacher."""
        out = self(x)
        outs = out if isinstance(out, list) else [out]
        w = list(self.exit_weights if weights is None else weights)
        if len(w) < len(outs):
            raise ValueError(f"{len(w)} exit weights for {len(outs)} exits")
        total = float(sum(w[: len(outs)]))
        if total <= 0:
            raise ValueError(f"exit weights must sum to > 0, got {w[: len(outs)]}")
        return sum_tensors([lo * (wi / total) for wi, lo in zip(w, outs, strict=False)])

    def replace_classifier(self, n_classes: int) -> None:
        """Fresh linear head(s) with ``n_classes`` outputs (PyTorch default init), every exit."""
        old = self.classifier.linear
        self.classifier.linear = nn.Linear(old.in_features, int(n_classes), bias=True).to(
            device=old.weight.device, dtype=old.weight.dtype)
        self._config["classifier"]["out_features"] = int(n_classes)
        if self.multi_exit:
            for head, cfg in zip(self.early_exits, self._config["early_exits"], strict=True):
                head.replace_classifier(n_classes)
                cfg["classifier"]["out_features"] = int(n_classes)


_BLOCK_KEYS = ("in_channels", "out_channels", "kernel_size", "stride", "expand_ratio",
               "mid_channels", "act", "se_channels", "residual")


def _check_static_config(config: dict[str, Any]) -> None:
    if not isinstance(config, dict) or config.get("format") != STATIC_FORMAT:
        raise ValueError(f"not a static network config (needs format={STATIC_FORMAT!r})")
    if config.get("family") not in FAMILIES:
        raise ValueError(f"static network config: unknown family {config.get('family')!r}; "
                         f"valid: {', '.join(FAMILIES)}")
    for key in ("stem", "blocks", "stages", "final_expand", "feature_mix", "classifier", "bn"):
        if key not in config:
            raise ValueError(f"static network config lacks {key!r}")
    for i, b in enumerate(config["blocks"]):
        missing = [k for k in _BLOCK_KEYS if k not in b]
        if missing:
            raise ValueError(f"static block {i} config lacks {missing}")
    n_stages = len(config["stages"])
    staged = [i for stage in config["stages"] for i in stage]
    n_pre = len(config["blocks"]) - len(staged)
    if staged != list(range(n_pre, len(config["blocks"]))):
        raise ValueError(f"static network config: stages {config['stages']} must list blocks "
                         f"{n_pre}..{len(config['blocks']) - 1} in order")
    for i, h in enumerate(config.get("early_exits", [])):
        missing = [k for k in ("stage", "final_expand", "feature_mix", "classifier")
                   if k not in h]
        if missing:
            raise ValueError(f"static early exit {i} config lacks {missing}")
        if not 1 <= int(h["stage"]) < n_stages:
            raise ValueError(f"static early exit {i} follows stage {h['stage']}, outside "
                             f"1..{n_stages - 1}")


def build_static(config: dict[str, Any]) -> StaticNet:
    """Rebuild a static network from ``StaticNet.config()`` (weights freshly initialised)."""
    return StaticNet(config)
