"""``WidthSuperNets``: one super-network per width multiplier, the ``w`` gene choosing which.

The thesis searches w1.0 and w1.2 together (``NAT_extended/supernets/supernet.py``,
``GenSupernet``: an ``engine`` list with one OFA super-network per ``width_mult_list`` entry,
``set_active_subnet(w=...)`` picking the engine). ``WidthSuperNets`` is that container with the
interface of :class:`~natv2.supernet.ofa_mbv3.SuperNet`: ``forward(x, arch)``,
``extract(arch)``, ``static_config(arch)`` and ``resolve_arch(arch)`` go to the super-network
of ``arch.width`` (``None``: the widest one's largest network, the thesis' ``ub``). The nets
share family, classes and choice lists; width-independent attributes (``family``,
``n_classes``, ``early_exit``, ...) are read from the narrowest. ``width_mult`` is the tuple of
widths, ``config()`` rebuilds the whole set (``build_supernet(width_mult=[...])``), and the
state dict keys are ``nets.<i>.<key of that width's super-network>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from natv2.errors import UserError

from .ofa_mbv3 import SuperNet

# what must agree between the widths' super-networks
_SHARED = ("family", "n_classes", "ks_list", "expand_list", "depth_list", "dropout",
           "bn_momentum", "bn_eps")


def arch_width(arch: Any) -> float | None:
    """The width of ``arch`` (an ``Arch``, a dict with ``w``/``width``, or None)."""
    if arch is None:
        return None
    width = getattr(arch, "width", None)
    if width is None and isinstance(arch, dict):
        width = arch.get("w", arch.get("width"))
    return None if width is None else float(width)


class WidthSuperNets(nn.Module):
    """Super-networks of one family at several widths (sorted, distinct); see the module doc."""

    def __init__(self, nets: Sequence[SuperNet]):
        super().__init__()
        nets = sorted(nets, key=lambda n: n.width_mult)
        if len(nets) < 2:
            raise ValueError("WidthSuperNets needs at least two widths; use the SuperNet itself")
        widths = [n.width_mult for n in nets]
        if len(set(widths)) != len(widths):
            raise ValueError(f"WidthSuperNets: repeated width in {widths}")
        first = nets[0].config()
        for net in nets[1:]:
            other = net.config()
            for key in _SHARED:
                if other[key] != first[key]:
                    raise ValueError(f"WidthSuperNets: {key} differs between widths "
                                     f"({first[key]!r} at w{widths[0]}, {other[key]!r} at "
                                     f"w{net.width_mult})")
        self.nets = nn.ModuleList(nets)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            nets = self._modules.get("nets")
            if nets is None or name.startswith("_"):
                raise
            return getattr(nets[0], name)

    @property
    def widths(self) -> tuple[float, ...]:
        return tuple(n.width_mult for n in self.nets)

    @property
    def width_mult(self) -> tuple[float, ...]:
        return self.widths

    def net_for(self, arch: Any = None) -> SuperNet:
        """The super-network of ``arch``'s width (None or no width: the widest)."""
        width = arch_width(arch)
        if width is None:
            return self.nets[-1]
        for net in self.nets:
            if abs(net.width_mult - width) <= 1e-9:
                return net
        raise ValueError(f"arch is for width {width}; these super-networks have widths "
                         f"{list(self.widths)}")

    def forward(self, x: torch.Tensor, arch: Any = None,
                all_exits: bool = False) -> torch.Tensor | list[torch.Tensor]:
        return self.net_for(arch)(x, arch, all_exits)

    def resolve_arch(self, arch: Any = None) -> dict[str, Any]:
        return self.net_for(arch).resolve_arch(arch)

    def static_config(self, arch: Any = None, all_exits: bool = False) -> dict[str, Any]:
        return self.net_for(arch).static_config(arch, all_exits)

    def extract(self, arch: Any = None, all_exits: bool = False) -> nn.Module:
        return self.net_for(arch).extract(arch, all_exits)

    def largest_arch(self) -> dict[str, Any]:
        return self.nets[-1].largest_arch()

    def config(self) -> dict[str, Any]:
        """Keyword arguments of ``build_supernet`` that rebuild the set."""
        return {**self.nets[0].config(), "width_mult": list(self.widths)}

    def new_module_names(self) -> list[str]:
        return [f"nets.{i}.{name}" for i, net in enumerate(self.nets)
                for name in net.new_module_names()]

    def replace_classifier(self, n_classes: int, dropout: float | None = None) -> None:
        for net in self.nets:
            net.replace_classifier(n_classes, dropout)

    def extra_repr(self) -> str:
        return f"widths={list(self.widths)}"


def width_list(width_mult: Any) -> list[float]:
    """``supernet.width_mult`` (a number or a list of numbers) as a list of floats."""
    values = list(width_mult) if isinstance(width_mult, list | tuple) else [width_mult]
    if not values:
        raise UserError("supernet.width_mult: an empty list; give a width such as 1.0 or a "
                        "list such as [1.0, 1.2]")
    return [float(v) for v in values]
