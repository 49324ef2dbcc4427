"""The OFA MobileNetV3 super-network (family ``SE_B``), stateless with respect to sub-networks.

Layout, widths, strides, activations and SE placement follow
``ofa.imagenet_classification.elastic_nn.networks.OFAMobileNetV3``; module names are chosen so
that ``SuperNet.state_dict()`` has exactly the keys and shapes of OFA's ``state_dict()``.

Departure from OFA: the sub-network is an argument (``net(x, arch)``, ``net.extract(arch)``),
never stored state (OFA's ``set_active_subnet`` / ``runtime_depth``), so one super-network can
serve concurrent callers and there is nothing to forget to reset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .blocks import ElasticBlock
from .common import he_fout_init, make_divisible
from .static import STATIC_FORMAT, Block, StaticNet, conv_bn_act

# MobileNetV3 constants as in OFA (base widths before the width multiplier).
STEM_WIDTH = 16
FIRST_BLOCK_WIDTH = 16
STAGE_WIDTHS = (24, 40, 80, 112, 160)
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_ACTS = ("relu", "relu", "h_swish", "h_swish", "h_swish")
STAGE_SE = (False, True, False, True, True)
FINAL_EXPAND_WIDTH = 960
FEATURE_MIX_WIDTH = 1280


def normalize_arch(arch: Any, n_stages: int, max_depth: int) -> dict[str, list]:
    """``{"ks": [...], "e": [...], "d": [...]}`` lists from an ``Arch`` (anything with
    ``.to_ofa()``) or a mapping with those keys. Lengths are checked here; values by the net."""
    if hasattr(arch, "to_ofa"):
        arch = arch.to_ofa()
    if not isinstance(arch, Mapping):
        raise TypeError(f"arch must have .to_ofa() or be a dict with ks/e/d, got {type(arch)}")
    missing = [k for k in ("ks", "e", "d") if k not in arch]
    if missing:
        raise ValueError(f"arch lacks {missing}; needs 'ks', 'e', 'd'")
    n_slots = n_stages * max_depth
    out = {"ks": [_num(v) for v in arch["ks"]], "e": [_num(v) for v in arch["e"]],
           "d": [_num(v) for v in arch["d"]]}
    for key, n in (("ks", n_slots), ("e", n_slots), ("d", n_stages)):
        if len(out[key]) != n:
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
    """OFA MobileNetV3 super-network. Build it with ``natv2.supernet.build_supernet``."""

    def __init__(self, family: str = "SE_B", width_mult: float = 1.0, n_classes: int = 1000,
                 ks_list: Sequence[int] = (3, 5, 7), expand_list: Sequence[float] = (3, 4, 6),
                 depth_list: Sequence[int] = (2, 3, 4), dropout: float = 0.1,
                 bn_momentum: float = 0.1, bn_eps: float = 1e-5):
        super().__init__()
        if family != "SE_B":
            raise NotImplementedError(f"SuperNet builds family SE_B only, got {family!r}")
        self.family = family
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
        self.first_conv = conv_bn_act(3, stem, 3, 2, "h_swish", bn)
        # fixed first block: MBConv expand 1, k3, relu, stride 1, no SE (static, as in OFA)
        self._first_block_config = {
            "in_channels": stem, "out_channels": first, "kernel_size": 3, "stride": 1,
            "expand_ratio": 1, "mid_channels": stem, "act": "relu", "se_channels": 0,
            "residual": stem == first}
        blocks: list[nn.Module] = [Block(self._first_block_config, bn)]
        # stage_blocks[s] = indices into self.blocks of stage s (OFA's block_group_info)
        self.stage_blocks: list[list[int]] = []
        in_ch = first
        for width, stride, act, se in zip(STAGE_WIDTHS, STAGE_STRIDES, STAGE_ACTS, STAGE_SE,
                                          strict=True):
            out_ch = w(width)
            self.stage_blocks.append(list(range(len(blocks), len(blocks) + self.max_depth)))
            for j in range(self.max_depth):
                blocks.append(ElasticBlock(in_ch, out_ch, self.ks_list, self.expand_list,
                                           stride if j == 0 else 1, act, se,
                                           self.bn_momentum, self.bn_eps))
                in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_width = w(FINAL_EXPAND_WIDTH)
        self.feature_mix_width = w(FEATURE_MIX_WIDTH)
        self.final_expand_layer = conv_bn_act(in_ch, self.final_expand_width, 1, 1, "h_swish", bn)
        self.feature_mix_layer = conv_bn_act(self.final_expand_width, self.feature_mix_width, 1,
                                             1, "h_swish", None)
        self.classifier = nn.Sequential()
        self.classifier.add_module("dropout", nn.Dropout(self.dropout))
        self.classifier.add_module("linear", nn.Linear(self.feature_mix_width, self.n_classes))
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

    def largest_arch(self) -> dict[str, list]:
        n = self.n_stages * self.max_depth
        return {"ks": [self.ks_list[-1]] * n, "e": [self.expand_list[-1]] * n,
                "d": [self.max_depth] * self.n_stages}

    def smallest_arch(self) -> dict[str, list]:
        n = self.n_stages * self.max_depth
        return {"ks": [self.ks_list[0]] * n, "e": [self.expand_list[0]] * n,
                "d": [self.depth_list[0]] * self.n_stages}

    def resolve_arch(self, arch: Any = None) -> dict[str, list]:
        """Validated ``{"ks", "e", "d"}`` for ``arch`` (None = largest).

        Only the active slots (the first ``d[s]`` of each stage) must hold valid kernel sizes
        and expand ratios; values in skipped slots are ignored (encodings may put anything
        there). An ``Arch`` whose ``width``/``family`` disagree with this net is refused.
        """
        if arch is None:
            return self.largest_arch()
        width = getattr(arch, "width", None)
        if isinstance(width, int | float) and abs(float(width) - self.width_mult) > 1e-9:
            raise ValueError(f"arch is for width {width}, this super-network has width "
                             f"{self.width_mult}")
        family = getattr(arch, "family", None)
        if isinstance(family, str) and family != self.family:
            raise ValueError(f"arch is of family {family!r}, this super-network is "
                             f"{self.family!r}")
        a = normalize_arch(arch, self.n_stages, self.max_depth)
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
        return a

    def _active_blocks(self, a: dict[str, list]) -> list[tuple[int, int, float]]:
        """(block index, kernel size, expand ratio) of every active elastic block, in order."""
        out = []
        for s, idx in enumerate(self.stage_blocks):
            for j in range(a["d"][s]):
                slot = s * self.max_depth + j
                out.append((idx[j], a["ks"][slot], a["e"][slot]))
        return out

    # ------------------------------------------------------------------ forward / extract
    def forward(self, x: torch.Tensor, arch: Any = None) -> torch.Tensor:
        a = self.resolve_arch(arch)
        x = self.first_conv(x)
        x = self.blocks[0](x)
        for i, ks, e in self._active_blocks(a):
            x = self.blocks[i](x, ks, e)
        x = self.final_expand_layer(x)
        x = x.mean(3, keepdim=True).mean(2, keepdim=True)  # global average pool, OFA's order
        x = self.feature_mix_layer(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

    def static_config(self, arch: Any = None) -> dict[str, Any]:
        """Config of the static network ``extract(arch)`` returns (no weights involved)."""
        a = self.resolve_arch(arch)
        blocks = [dict(self._first_block_config)]
        stages: list[list[int]] = []
        in_ch = self._first_block_config["out_channels"]
        for s in range(self.n_stages):
            stages.append([])
            for j in range(a["d"][s]):
                slot = s * self.max_depth + j
                block = self.blocks[self.stage_blocks[s][j]]
                blocks.append(block.static_config(in_ch, a["ks"][slot], a["e"][slot]))
                stages[-1].append(len(blocks) - 1)
                in_ch = block.out_channels
        stem = self.first_conv.conv
        return {
            "format": STATIC_FORMAT, "family": self.family, "width_mult": self.width_mult,
            "arch": {"ks": list(a["ks"]), "e": list(a["e"]), "d": list(a["d"])},
            "bn": self._bn_config(),
            "stem": {"in_channels": 3, "out_channels": stem.out_channels, "kernel_size": 3,
                     "stride": 2, "act": "h_swish"},
            "blocks": blocks, "stages": stages,
            "final_expand": {"in_channels": in_ch, "out_channels": self.final_expand_width,
                             "act": "h_swish"},
            "feature_mix": {"in_channels": self.final_expand_width,
                            "out_channels": self.feature_mix_width, "act": "h_swish"},
            "classifier": {"in_features": self.feature_mix_width,
                           "out_features": self.n_classes, "dropout": self.dropout},
        }

    @torch.no_grad()
    def extract(self, arch: Any = None) -> StaticNet:
        """A static network with cloned weights computing ``self(x, arch)`` (eval mode).

        Nothing in the super-network changes (weights and BN statistics are only read). The
        static net comes back in the super-network's train/eval mode, device and dtype.
        """
        config = self.static_config(arch)
        ref = self.classifier.linear.weight
        net = StaticNet(config).to(device=ref.device, dtype=ref.dtype)
        # fixed parts: same shapes, so a state copy is a clone
        for name in ("first_conv", "final_expand_layer", "feature_mix_layer", "classifier"):
            getattr(net, name).load_state_dict(getattr(self, name).state_dict(), strict=True)
        net.blocks[0].load_state_dict(self.blocks[0].state_dict(), strict=True)
        a = config["arch"]
        in_ch = self._first_block_config["out_channels"]
        for k, (i, ks, e) in enumerate(self._active_blocks(a), start=1):
            self.blocks[i].conv.extract_into(net.blocks[k].conv, in_ch, ks, e)
            in_ch = self.blocks[i].out_channels
        net.train(self.training)
        return net

    def replace_classifier(self, n_classes: int, dropout: float | None = None) -> None:
        """A fresh linear head with ``n_classes`` outputs (PyTorch default init) on the same
        device/dtype, e.g. after loading an ImageNet checkpoint for another dataset."""
        old = self.classifier.linear
        if dropout is not None:
            self.dropout = float(dropout)
            self.classifier.dropout = nn.Dropout(self.dropout)
        self.classifier.linear = nn.Linear(old.in_features, int(n_classes)).to(
            device=old.weight.device, dtype=old.weight.dtype)
        self.n_classes = int(n_classes)

    def extra_repr(self) -> str:
        return (f"family={self.family}, width_mult={self.width_mult}, n_classes={self.n_classes}"
                f", ks={self.ks_list}, e={self.expand_list}, d={self.depth_list}")
