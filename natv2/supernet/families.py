"""Super-network families and the factory ``build_supernet``.

The 8 OFAv2 families are ``{SE,EE}_{B,D,P,DP}`` (DESIGN section 1): SE = single exit, EE = early
exits; B = base OFA MobileNetV3, D = dense skip connections, P = parallel branches, DP = both.
All 8 are built by :class:`.ofa_mbv3.SuperNet`; ``SE_B`` is OFA MobileNetV3 itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from natv2.errors import UserError

from .ofa_mbv3 import SuperNet
from .widths import WidthSuperNets, width_list

FAMILIES: tuple[str, ...] = ("SE_B", "SE_D", "SE_P", "SE_DP", "EE_B", "EE_D", "EE_P", "EE_DP")
IMPLEMENTED_FAMILIES: tuple[str, ...] = FAMILIES
WIDTH_MULTS: tuple[float, ...] = (1.0, 1.2)  # the widths OFA/OFAv2 release super-networks for

_DESCRIPTIONS = {
    "SE_B": "single exit, OFA MobileNetV3",
    "SE_D": "single exit, dense skip connections",
    "SE_P": "single exit, parallel branches",
    "SE_DP": "single exit, dense skips + parallel branches",
    "EE_B": "early exits",
    "EE_D": "early exits, dense skip connections",
    "EE_P": "early exits, parallel branches",
    "EE_DP": "early exits, dense skips + parallel branches",
}


def describe_family(family: str) -> str:
    """One line on what ``family`` adds to OFA MobileNetV3."""
    return _DESCRIPTIONS[check_family(family)]


def check_family(family: str) -> str:
    """Return ``family`` if it is one of :data:`FAMILIES`, else raise ``ValueError``."""
    if family not in FAMILIES:
        raise UserError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    return family


def build_supernet(family: str = "SE_B", width_mult: float | Sequence[float] = 1.0,
                   n_classes: int = 1000,
                   ks_list: Sequence[int] = (3, 5, 7), expand_list: Sequence[float] = (3, 4, 6),
                   depth_list: Sequence[int] = (2, 3, 4), dropout: float = 0.1,
                   bn_momentum: float = 0.1, bn_eps: float = 1e-5) -> SuperNet | WidthSuperNets:
    """A freshly initialised super-network; ``build_supernet(**net.config())`` rebuilds ``net``.

    ``width_mult`` a list of two or more widths: one super-network per width
    (:class:`~natv2.supernet.widths.WidthSuperNets`, the thesis' two-width search); a
    one-element list is that width's ``SuperNet``. Raises ``UserError`` (a ``ValueError``) for
    an unknown family or bad sizes.
    """
    check_family(family)
    if isinstance(width_mult, list | tuple):
        widths = width_list(width_mult)
        if len(set(widths)) != len(widths):
            raise UserError(f"width_mult: repeated width in {widths}")
        kwargs = {"family": family, "n_classes": n_classes, "ks_list": ks_list,
                  "expand_list": expand_list, "depth_list": depth_list, "dropout": dropout,
                  "bn_momentum": bn_momentum, "bn_eps": bn_eps}
        nets = [build_supernet(width_mult=w, **kwargs) for w in widths]
        return nets[0] if len(nets) == 1 else WidthSuperNets(nets)
    if not width_mult > 0:
        raise UserError(f"width_mult must be > 0, got {width_mult}")
    if int(n_classes) < 1:
        raise UserError(f"n_classes must be >= 1, got {n_classes}")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"dropout must be in [0, 1), got {dropout}")
    return SuperNet(family=family, width_mult=width_mult, n_classes=n_classes, ks_list=ks_list,
                    expand_list=expand_list, depth_list=depth_list, dropout=dropout,
                    bn_momentum=bn_momentum, bn_eps=bn_eps)
