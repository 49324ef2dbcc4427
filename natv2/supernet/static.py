"""Static (extracted) networks: plain ``nn`` modules only, rebuilt from a JSON-able config.

A sub-network extracted from a super-network is a :class:`StaticNet`. Its module names, and so
its ``state_dict`` keys, are those of OFA's ``MobileNetV3`` sub-network
(``ofa.imagenet_classification.networks.MobileNetV3`` as returned by
``OFAMobileNetV3.get_active_subnet``): ``first_conv.conv.weight``,
``blocks.3.conv.depth_conv.se.fc.reduce.weight``, ``classifier.linear.weight``, ... so weights of
OFA/NAT sub-networks load 1:1.

One static-structure builder: :func:`static_pieces` turns a static config into the ordered
chain of named pieces (stem, blocks, head with its pool and flatten); :class:`StaticNet` is built
from it and the cost model (:mod:`natv2.measure.cost`) counts it piece by piece. The modules
themselves are in :mod:`.layers`.

``build_static(config)`` rebuilds a network from ``net.config()`` (OFA's symmetric
``config`` / ``build_from_config`` idea), which is how fine-tuned models are saved and reloaded.

OFAv2 families (Sarti et al.; facts from the authors' ``OFA_mbv3_extended`` code) reuse the same
modules and config: **P** blocks carry ``"nw"`` (:class:`.layers.Block`), **D** routes blocks per
stage with :func:`.layers.stage_input`, and **EE** single-exit nets keep the exit they end with at
top level (``final_expand_layer`` ...), so a net at ``nd=5`` has OFA's key layout; multi-exit
nets add ``early_exits`` (one :class:`ExitHead` per earlier exit) and return the list of logits
of exits ``1..nd``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from natv2.space.arch import FAMILIES, has_dense

from .layers import Block, GlobalAvgPool, conv_bn_act, global_avg_pool, stage_input, sum_tensors

STATIC_FORMAT = "natv2-static"


@dataclass(frozen=True)
class Piece:
    """One link of a static network's chain (:func:`static_pieces`), in forward order.

    ``name``: the module's path in :class:`StaticNet` (its ``state_dict`` prefix), or ``None``
    for a parameter-free link the forward applies as a function (pool, flatten). ``spec``: a
    JSON-like value that determines the module (equal specs build equal modules; the cost model
    memoises on it). ``build()``: a fresh module on the current default device.
    """

    name: str | None
    spec: Any
    build: Callable[[], nn.Module]


def stem_module(stem: dict[str, Any], bn: dict[str, float]) -> nn.Sequential:
    """The first convolution (``first_conv``) of a stem config."""
    return conv_bn_act(stem["in_channels"], stem["out_channels"], stem["kernel_size"],
                       stem["stride"], stem["act"], bn)


def _classifier(cl: dict[str, Any]) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("dropout", nn.Dropout(cl["dropout"])),
        ("linear", nn.Linear(cl["in_features"], cl["out_features"], bias=True)),
    ]))


def head_pieces(config: dict[str, Any], bn: dict[str, float]) -> list[Piece]:
    """OFA's head of a head config (keys ``final_expand``, ``feature_mix``, ``classifier``):
    ``final_expand_layer`` -> global average pool -> ``feature_mix_layer`` (no BN, no bias, as
    OFA) -> flatten -> ``classifier`` (dropout + linear); :func:`head_forward` runs it."""
    fe, fm, cl = config["final_expand"], config["feature_mix"], config["classifier"]
    return [
        Piece("final_expand_layer", ("final_expand", fe, bn),
              lambda: conv_bn_act(fe["in_channels"], fe["out_channels"], 1, 1, fe["act"], bn)),
        Piece(None, ("pool",), GlobalAvgPool),
        Piece("feature_mix_layer", ("feature_mix", fm),
              lambda: conv_bn_act(fm["in_channels"], fm["out_channels"], 1, 1, fm["act"], None)),
        Piece(None, ("flatten",), nn.Flatten),
        Piece("classifier", ("classifier", cl), lambda: _classifier(cl)),
    ]


def head_modules(config: dict[str, Any], bn: dict[str, float]) -> dict[str, nn.Module]:
    """The named modules of :func:`head_pieces`, built in order."""
    return {p.name: p.build() for p in head_pieces(config, bn) if p.name is not None}


def head_forward(final_expand: nn.Module, feature_mix: nn.Module, classifier: nn.Module,
                 x: torch.Tensor) -> torch.Tensor:
    """The chain of :func:`head_pieces` with these modules (final expand -> pool -> feature mix
    -> flatten -> classifier)."""
    x = global_avg_pool(final_expand(x))
    return classifier(torch.flatten(feature_mix(x), 1))


def static_pieces(config: dict[str, Any]) -> list[Piece]:
    """The chain of the static network of ``config``, in forward order: stem, every block, the
    head (of the last exit). :class:`StaticNet` is built from it and the cost model
    (:mod:`natv2.measure.cost`) counts it piece by piece.

    Dense skips (D) are sums between the blocks of a stage, no piece (an addition holds no
    parameter and is no MAC); early exits branch off the chain and are not in it
    (:func:`is_chain`).
    """
    bn, stem = config["bn"], config["stem"]
    pieces = [Piece("first_conv", ("stem", stem, bn), lambda: stem_module(stem, bn))]
    pieces += [Piece(f"blocks.{i}", ("block", b, bn), lambda b=b: Block(b, bn))
               for i, b in enumerate(config["blocks"])]
    return pieces + head_pieces(config, bn)


def is_chain(config: dict[str, Any]) -> bool:
    """Whether :func:`static_pieces` is the whole network of ``config`` (no early exits)."""
    return not config.get("early_exits")


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
        self.dense = has_dense(config["family"])
        built = {p.name: p.build() for p in static_pieces(config) if p.name is not None}
        self.first_conv = built.pop("first_conv")
        self.blocks = nn.ModuleList(built.pop(f"blocks.{i}") for i in range(len(config["blocks"])))
        self._n_pre_blocks = len(config["blocks"]) - sum(len(s) for s in config["stages"])
        for name, module in built.items():  # the head
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
