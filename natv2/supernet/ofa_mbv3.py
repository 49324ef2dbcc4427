"""The OFA MobileNetV3 super-network and the OFAv2 families, stateless with respect to
sub-networks.

Layout, widths, strides, activations and SE placement follow
``ofa.imagenet_classification.elastic_nn.networks.OFAMobileNetV3``; module names are chosen so
that ``SuperNet.state_dict()`` of family ``SE_B`` has exactly the keys and shapes of OFA's
``state_dict()``.

OFAv2 families (Sarti et al. 2023; facts from the authors' ``OFA_mbv3_extended`` code) keep
every OFA tensor under the same key and add only new ones, so an OFA checkpoint warm-starts
any family (:mod:`.warm_start`):

* **D** adds no parameters: blocks of a stage are routed by :func:`.layers.stage_input`.
* **P** adds ``blocks.N.conv1x1.*`` and ``blocks.N.transform.*`` to every elastic block.
* **EE** adds ``early_exits.0..3`` (exits after stages 1..4, :class:`.static.ExitHead`); the exit
  after stage 5 is OFA's own ``final_expand_layer`` / ``feature_mix_layer`` / ``classifier``.
  Exit ``nd`` ends the sub-network: stages after it do not run and are not extracted.

Departure from OFA and the thesis: the sub-network is an argument (``net(x, arch)``,
``net.extract(arch)``), never stored state (OFA's ``set_active_subnet`` / ``runtime_depth``,
the thesis' ``active_exit`` / ``layers_activation_status``), so one super-network can serve
concurrent callers and there is nothing to forget to reset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from natv2.space.arch import FAMILIES, NW_MBCONV, has_dense, has_nd, has_nw

from .blocks import ElasticBlock
from .common import he_fout_init, make_divisible
from .elastic import copy_state
from .exits import default_exit_weights, early_exit_widths
from .layers import Block, stage_input
from .static import STATIC_FORMAT, ExitHead, StaticNet, head_forward, head_modules, stem_module

# MobileNetV3 constants as in OFA (base widths before the width multiplier).
STEM_WIDTH = 16
FIRST_BLOCK_WIDTH = 16
STAGE_WIDTHS = (24, 40, 80, 112, 160)
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_ACTS = ("relu", "relu", "h_swish", "h_swish", "h_swish")
STAGE_SE = (False, True, False, True, True)
FINAL_EXPAND_WIDTH = 960
FEATURE_MIX_WIDTH = 1280
NW_ALL = 7  # every branch of a P block


def normalize_arch(arch: Any, n_stages: int, max_depth: int) -> dict[str, Any]:
    """``{"ks", "e", "d", "nd", "nw"}`` from an ``Arch`` (anything with ``.to_ofa()``, plus
    optional ``.nd`` / ``.nw`` attributes) or a mapping with those keys (``nd``/``nw``
    optional: ``None`` when absent). Lengths are checked here; values by the net."""
    nd = getattr(arch, "nd", None)
    nw = getattr(arch, "nw", None)
    if hasattr(arch, "to_ofa"):
        arch = arch.to_ofa()
    if not isinstance(arch, Mapping):
        raise TypeError(f"arch must have .to_ofa() or be a dict with ks/e/d, got {type(arch)}")
    missing = [k for k in ("ks", "e", "d") if k not in arch]
    if missing:
        raise ValueError(f"arch lacks {missing}; needs 'ks', 'e', 'd'")
    nd = arch.get("nd", nd)
    nw = arch.get("nw", nw)
    n_slots = n_stages * max_depth
    out = {"ks": [_num(v) for v in arch["ks"]], "e": [_num(v) for v in arch["e"]],
           "d": [_num(v) for v in arch["d"]], "nd": None if nd is None else _num(nd),
           "nw": None if nw is None else [_num(v) for v in nw]}
    for key, n in (("ks", n_slots), ("e", n_slots), ("d", n_stages), ("nw", n_slots)):
        if out[key] is not None and len(out[key]) != n:
            raise ValueError(f"arch[{key!r}] has {len(out[key])} values, needs {n}")
    return out


def _num(value: Any) -> int | float:
    """Plain Python number (numpy scalars in, JSON-able out); integral values become int.
    Non-numbers pass through unchanged (they fail validation only if the slot is active)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return value
    return int(v) if v.is_integer() else v


class SuperNet(nn.Module):
    """OFA MobileNetV3 / OFAv2 super-network. Build it with ``natv2.supernet.build_supernet``."""

    def __init__(self, family: str = "SE_B", width_mult: float = 1.0, n_classes: int = 1000,
                 ks_list: Sequence[int] = (3, 5, 7), expand_list: Sequence[float] = (3, 4, 6),
                 depth_list: Sequence[int] = (2, 3, 4), dropout: float = 0.1,
                 bn_momentum: float = 0.1, bn_eps: float = 1e-5):
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
        self.family = family
        self.dense = has_dense(family)
        self.parallel = has_nw(family)
        self.early_exit = has_nd(family)
        self.width_mult = float(width_mult)
        self.n_classes = int(n_classes)
        self.ks_list = sorted(set(int(k) for k in ks_list))
        self.expand_list = sorted(set(expand_list))
        self.depth_list = sorted(set(int(d) for d in depth_list))
        if not self.ks_list or not self.expand_list or not self.depth_list:
            raise ValueError("ks_list, expand_list and depth_list must be non-empty")
        if self.depth_list[0] < 1:
            raise ValueError(f"depths must be >= 1, got {self.depth_list}")
        self.dropout = float(dropout)
        self.bn_momentum = float(bn_momentum)
        self.bn_eps = float(bn_eps)
        self.n_stages = len(STAGE_WIDTHS)
        self.max_depth = self.depth_list[-1]

        def w(base: int) -> int:
            return make_divisible(base * self.width_mult)

        bn = self._bn_config()
        stem, first = w(STEM_WIDTH), w(FIRST_BLOCK_WIDTH)
        self._stem_config = {"in_channels": 3, "out_channels": stem, "kernel_size": 3, "stride": 2,
                             "act": "h_swish"}
        self.first_conv = stem_module(self._stem_config, bn)
        # fixed first block: MBConv expand 1, k3, relu, stride 1, no SE (static, as in OFA and
        # the thesis' head stage: no parallel branches, outside the dense routing)
        self._first_block_config = {
            "in_channels": stem, "out_channels": first, "kernel_size": 3, "stride": 1,
            "expand_ratio": 1, "mid_channels": stem, "act": "relu", "se_channels": 0,
            "residual": stem == first}
        blocks: list[nn.Module] = [Block(self._first_block_config, bn)]
        # stage_blocks[s] = indices into self.blocks of stage s (OFA's block_group_info)
        self.stage_blocks: list[list[int]] = []
        self.stage_widths: list[int] = []
        in_ch = first
        for width, stride, act, se in zip(STAGE_WIDTHS, STAGE_STRIDES, STAGE_ACTS, STAGE_SE,
                                          strict=True):
            out_ch = w(width)
            self.stage_widths.append(out_ch)
            self.stage_blocks.append(list(range(len(blocks), len(blocks) + self.max_depth)))
            for j in range(self.max_depth):
                blocks.append(ElasticBlock(in_ch, out_ch, self.ks_list, self.expand_list,
                                           stride if j == 0 else 1, act, se,
                                           self.bn_momentum, self.bn_eps,
                                           parallel=self.parallel))
                in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_width = w(FINAL_EXPAND_WIDTH)
        self.feature_mix_width = w(FEATURE_MIX_WIDTH)
        # OFA's head (the last exit): final_expand_layer, feature_mix_layer, classifier
        for name, module in head_modules(self.exit_config(self.n_stages), bn).items():
            self.add_module(name, module)
        if self.early_exit:
            # exits after stages 1..n-1; the last exit is the head above (OFA's)
            self.early_exits = nn.ModuleList(
                ExitHead(self.exit_config(k), bn) for k in range(1, self.n_stages))
        # OFA's training init ("he_fout"), which OFA's run manager applies before training.
        he_fout_init(self)

    # ------------------------------------------------------------------ config / archs
    def _bn_config(self) -> dict[str, float]:
        return {"momentum": self.bn_momentum, "eps": self.bn_eps}

    def config(self) -> dict[str, Any]:
        """Keyword arguments of ``build_supernet`` that rebuild this network."""
        return {"family": self.family, "width_mult": self.width_mult,
                "n_classes": self.n_classes, "ks_list": list(self.ks_list),
                "expand_list": list(self.expand_list), "depth_list": list(self.depth_list),
                "dropout": self.dropout, "bn_momentum": self.bn_momentum, "bn_eps": self.bn_eps}

    def exit_config(self, k: int) -> dict[str, Any]:
        """Head config of exit ``k`` (1-based: after stage ``k``); exit ``n_stages`` is OFA's
        head, the others are OFAv2's early exits (:mod:`.exits`)."""
        if not 1 <= k <= self.n_stages:
            raise ValueError(f"exit {k} outside 1..{self.n_stages}")
        in_ch = self.stage_widths[k - 1]
        if k == self.n_stages:
            fe, fm = self.final_expand_width, self.feature_mix_width
        else:
            fe, fm = early_exit_widths(in_ch)
        return {"stage": k,
                "final_expand": {"in_channels": in_ch, "out_channels": fe, "act": "h_swish"},
                "feature_mix": {"in_channels": fe, "out_channels": fm, "act": "h_swish"},
                "classifier": {"in_features": fm, "out_features": self.n_classes,
                               "dropout": self.dropout}}

    def _exit_modules(self, k: int) -> tuple[nn.Module, nn.Module, nn.Module]:
        """(final expand, feature mix, classifier) of exit ``k`` (1-based)."""
        if k == self.n_stages:
            return self.final_expand_layer, self.feature_mix_layer, self.classifier
        if not self.early_exit:
            raise ValueError(f"family {self.family} has no exit after stage {k}")
        head = self.early_exits[k - 1]
        return head.final_expand_layer, head.feature_mix_layer, head.classifier

    def new_module_names(self) -> list[str]:
        """Modules that OFA MobileNetV3 lacks (P branches, early exits): what a warm start
        from an OFA checkpoint leaves at their fresh initialisation."""
        names = []
        if self.parallel:
            for idx in self.stage_blocks:
                for i in idx:
                    names += [f"blocks.{i}.conv1x1", f"blocks.{i}.transform"]
        if self.early_exit:
            names += [f"early_exits.{k}" for k in range(len(self.early_exits))]
        return names

    def largest_arch(self) -> dict[str, Any]:
        n = self.n_stages * self.max_depth
        arch: dict[str, Any] = {"ks": [self.ks_list[-1]] * n, "e": [self.expand_list[-1]] * n,
                                "d": [self.max_depth] * self.n_stages}
        if self.early_exit:
            arch["nd"] = self.n_stages
        if self.parallel:
            arch["nw"] = [NW_ALL] * n
        return arch

    def resolve_arch(self, arch: Any = None) -> dict[str, Any]:
        """Validated ``{"ks", "e", "d", "nd", "nw"}`` for ``arch`` (None = largest).

        Only the active slots (the first ``d[s]`` of each stage) must hold valid kernel sizes,
        expand ratios and branch masks; values in skipped slots are ignored (encodings may put
        anything there). ``nd`` is required for EE families (``None`` or the last stage for the
        others), ``nw`` for P families (``None`` or all MBConv for the others); the result
        always has both (``nd = n_stages``, ``nw`` all MBConv when the family lacks them). An
        ``Arch`` whose ``width``/``family`` disagree with this net is refused.
        """
        if arch is None:
            arch = self.largest_arch()
        width = getattr(arch, "width", None)
        if isinstance(width, int | float) and abs(float(width) - self.width_mult) > 1e-9:
            raise ValueError(f"arch is for width {width}, this super-network has width "
                             f"{self.width_mult}")
        family = getattr(arch, "family", None)
        if isinstance(family, str) and family != self.family:
            raise ValueError(f"arch is of family {family!r}, this super-network is "
                             f"{self.family!r}")
        a = normalize_arch(arch, self.n_stages, self.max_depth)
        if self.early_exit:
            if a["nd"] is None:
                raise ValueError(f"family {self.family} needs the net depth nd "
                                 f"(1..{self.n_stages}) in the arch")
            if a["nd"] not in range(1, self.n_stages + 1):
                raise ValueError(f"net depth nd={a['nd']} not in 1..{self.n_stages}")
        elif a["nd"] not in (None, self.n_stages):
            raise ValueError(f"family {self.family} has no early exits; nd={a['nd']} given")
        else:
            a["nd"] = self.n_stages
        if self.parallel and a["nw"] is None:
            raise ValueError(f"family {self.family} needs the branch masks nw (20 values in "
                             f"1..{NW_ALL}) in the arch")
        for s, d in enumerate(a["d"]):
            if d not in self.depth_list:
                raise ValueError(f"depth {d} of stage {s + 1} not in {self.depth_list}")
            for j in range(d):
                i = s * self.max_depth + j
                if a["ks"][i] not in self.ks_list:
                    raise ValueError(f"kernel size {a['ks'][i]} of block {i} not in "
                                     f"{self.ks_list}")
                if a["e"][i] not in self.expand_list:
                    raise ValueError(f"expand ratio {a['e'][i]} of block {i} not in "
                                     f"{self.expand_list}")
                if a["nw"] is not None:
                    nw = a["nw"][i]
                    if self.parallel and nw not in range(1, NW_ALL + 1):
                        raise ValueError(f"branch mask nw={nw!r} of block {i} not in "
                                         f"1..{NW_ALL}")
                    if not self.parallel and nw != NW_MBCONV:
                        raise ValueError(f"family {self.family} has no parallel branches; "
                                         f"nw={nw!r} given for block {i}")
        if a["nw"] is None:
            a["nw"] = [NW_MBCONV] * (self.n_stages * self.max_depth)
        return a

    def _active_stages(self, a: dict[str, Any]) -> list[list[tuple[int, int, Any, int]]]:
        """Per stage that runs (1..nd): (block index, kernel size, expand ratio, nw) of every
        active elastic block, in order."""
        out = []
        for s in range(a["nd"]):
            stage = []
            for j in range(a["d"][s]):
                slot = s * self.max_depth + j
                stage.append((self.stage_blocks[s][j], a["ks"][slot], a["e"][slot],
                              a["nw"][slot]))
            out.append(stage)
        return out

    def _active_blocks(self, a: dict[str, Any]) -> list[tuple[int, int, Any, int]]:
        """(block index, kernel size, expand ratio, nw) of every active elastic block."""
        return [b for stage in self._active_stages(a) for b in stage]

    # ------------------------------------------------------------------ forward / extract
    def forward(self, x: torch.Tensor, arch: Any = None,
                all_exits: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Logits of the sub-network ``arch`` (None = largest): of its exit ``nd`` (EE), or with
        ``all_exits=True`` the list of logits of exits ``1..nd`` (one element for SE)."""
        a = self.resolve_arch(arch)
        x = self.first_conv(x)
        x = self.blocks[0](x)
        logits: list[torch.Tensor] = []
        stages = self._active_stages(a)
        for s, stage in enumerate(stages, start=1):
            stage_in, outs = x, []
            for i, ks, e, nw in stage:
                block_in = stage_input(stage_in, outs, self.dense)
                outs.append(self.blocks[i](block_in, ks, e, nw))
            x = stage_input(stage_in, outs, self.dense)
            if all_exits and self.early_exit and s < len(stages):
                logits.append(head_forward(*self._exit_modules(s), x))
        logits.append(head_forward(*self._exit_modules(len(stages)), x))
        return logits if all_exits else logits[-1]

    def static_config(self, arch: Any = None, all_exits: bool = False) -> dict[str, Any]:
        """Config of the static network ``extract(arch, all_exits)`` returns (no weights)."""
        a = self.resolve_arch(arch)
        blocks = [dict(self._first_block_config)]
        stages: list[list[int]] = []
        in_ch = self._first_block_config["out_channels"]
        for stage in self._active_stages(a):
            stages.append([])
            for i, ks, e, nw in stage:
                block = self.blocks[i]
                blocks.append(block.static_config(in_ch, ks, e, nw if self.parallel else None))
                stages[-1].append(len(blocks) - 1)
                in_ch = block.out_channels
        arch_out: dict[str, Any] = {"ks": list(a["ks"]), "e": list(a["e"]), "d": list(a["d"])}
        if self.early_exit:
            arch_out["nd"] = a["nd"]
        if self.parallel:
            arch_out["nw"] = list(a["nw"])
        head = self.exit_config(a["nd"])
        config: dict[str, Any] = {
            "format": STATIC_FORMAT, "family": self.family, "width_mult": self.width_mult,
            "arch": arch_out,
            "bn": self._bn_config(),
            "stem": dict(self._stem_config),
            "blocks": blocks, "stages": stages,
            "final_expand": head["final_expand"],
            "feature_mix": head["feature_mix"],
            "classifier": head["classifier"],
        }
        if all_exits:  # SE families: one exit, a one-element list of logits
            n_early = a["nd"] - 1 if self.early_exit else 0
            config["early_exits"] = [self.exit_config(k) for k in range(1, n_early + 1)]
            config["exit_weights"] = (default_exit_weights(a["nd"]) if self.early_exit
                                      else [1.0])
        return config

    @torch.no_grad()
    def extract(self, arch: Any = None, all_exits: bool = False) -> StaticNet:
        """A static network with cloned weights computing ``self(x, arch, all_exits)`` (eval
        mode): the active blocks and branches of stages ``1..nd`` and exit ``nd`` only, or with
        ``all_exits=True`` exits ``1..nd`` (its forward returns their logits as a list).

        Nothing in the super-network changes (weights and BN statistics are only read). The
        static net comes back in the super-network's train/eval mode, device and dtype.
        """
        config = self.static_config(arch, all_exits)
        a = self.resolve_arch(arch)
        ref = self.classifier.linear.weight
        net = StaticNet(config)
        built = net.first_conv.conv.weight
        if (built.device, built.dtype) != (ref.device, ref.dtype):  # (a no-op .to still walks)
            net = net.to(device=ref.device, dtype=ref.dtype)
        # fixed parts: same shapes, so a state copy is a clone
        copy_state(net.first_conv, self.first_conv.state_dict())
        copy_state(net.blocks[0], self.blocks[0].state_dict())
        for target, source in zip((net.final_expand_layer, net.feature_mix_layer,
                                   net.classifier), self._exit_modules(a["nd"]), strict=True):
            copy_state(target, source.state_dict())
        if all_exits and self.early_exit:
            for k in range(1, a["nd"]):
                copy_state(net.early_exits[k - 1], self.early_exits[k - 1].state_dict())
        in_ch = self._first_block_config["out_channels"]
        for k, (i, ks, e, _nw) in enumerate(self._active_blocks(a), start=1):
            self.blocks[i].extract_into(net.blocks[k], in_ch, ks, e)
            in_ch = self.blocks[i].out_channels
        net.train(self.training)
        return net

    def replace_classifier(self, n_classes: int, dropout: float | None = None) -> None:
        """A fresh linear head with ``n_classes`` outputs (PyTorch default init) on the same
        device/dtype for every exit, e.g. after loading an ImageNet checkpoint for another
        dataset."""
        if dropout is not None:
            self.dropout = float(dropout)
        heads = [self.classifier] + ([h.classifier for h in self.early_exits]
                                     if self.early_exit else [])
        for cl in heads:
            old = cl.linear
            if dropout is not None:
                cl.dropout = nn.Dropout(self.dropout)
            cl.linear = nn.Linear(old.in_features, int(n_classes)).to(
                device=old.weight.device, dtype=old.weight.dtype)
        self.n_classes = int(n_classes)

    def extra_repr(self) -> str:
        return (f"family={self.family}, width_mult={self.width_mult}, n_classes={self.n_classes}"
                f", ks={self.ks_list}, e={self.expand_list}, d={self.depth_list}")
