"""Early exits of the OFAv2 ``EE_*`` families: head widths and ensemble weights.

Facts from the authors' code (``OFA_mbv3_extended/networks/nets/my_networks.py``,
``NetworksParameters``; ``stages/static_stages/stat_stages_builders.py``): one exit after each
of the 5 stages, each built like OFA's head (1x1 final expand + BN + h_swish, global average
pool, 1x1 feature mix without BN/bias + h_swish, dropout + linear classifier, the network's
dropout rate), with final-expand / feature-mix widths 6x / 8x the stage width: [144, 192],
[240, 320], [480, 640], [672, 896], [960, 1280] at width 1.0.

Departure: the thesis computes ``make_divisible(6 * c * w)`` with ``c`` the stage width *already*
multiplied by ``w``, i.e. it applies the width multiplier twice (at w1.2 its last exit would be
[1384, 1840] instead of OFA's [1152, 1536]). We take 6x / 8x of the (scaled) stage width, which
equals the thesis at w1.0 and makes the last exit exactly OFA's head at w1.0 and w1.2, so OFA
checkpoints map onto it. The last exit is always built with OFA's own formula
(``make_divisible(960 w)``, ``make_divisible(1280 w)``), whatever the width.
"""

from __future__ import annotations

from .common import make_divisible

#: final-expand and feature-mix widths are these multiples of the stage width (thesis)
EXIT_EXPAND_RATIO = 6
EXIT_MIX_RATIO = 8
#: OFAv2's exit weights for exits 1..5 (ensembles and ENS-KD)
OFAV2_EXIT_WEIGHTS: tuple[float, ...] = (0.06, 0.13, 0.20, 0.27, 0.34)


def early_exit_widths(stage_width: int) -> tuple[int, int]:
    """(final expand, feature mix) widths of the exit after a stage of ``stage_width`` channels."""
    return (make_divisible(EXIT_EXPAND_RATIO * stage_width),
            make_divisible(EXIT_MIX_RATIO * stage_width))


def default_exit_weights(n_exits: int) -> list[float]:
    """OFAv2's weights of exits ``1..n_exits`` (as listed, not renormalised)."""
    if not 1 <= n_exits <= len(OFAV2_EXIT_WEIGHTS):
        raise ValueError(f"n_exits must be in 1..{len(OFAV2_EXIT_WEIGHTS)}, got {n_exits}")
    return list(OFAV2_EXIT_WEIGHTS[:n_exits])
