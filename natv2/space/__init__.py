"""Search-space encodings of OFA / OFAv2 sub-networks (pure Python + numpy, no torch).

>>> space = SearchSpace(family="SE_B", resolutions=list(range(192, 257, 4)), widths=[1.0, 1.2])
>>> arch = space.decode("08011001440551052208877")
>>> arch.to_nat()["d"], arch.resolution
([2, 3, 3, 3, 4], 224)
>>> space.encode(arch)
'08011001440551052208877'

Modules: :mod:`~natv2.space.arch` (the ``Arch`` value object and family constants),
:mod:`~natv2.space.encoding` (vector and string layout), :mod:`~natv2.space.repair`
(push / fill), :mod:`~natv2.space.sampling` (uniform / balanced / depth_uniform),
:mod:`~natv2.space.features` (predictor features), :mod:`~natv2.space.space` (``SearchSpace``).
"""

from natv2.space.arch import (
    DEPTH_CHOICES,
    EXPAND_CHOICES,
    FAMILIES,
    KS_CHOICES,
    MAX_DEPTH,
    N_SLOTS,
    N_STAGES,
    ND_CHOICES,
    NW_CHOICES,
    NW_CONV1X1,
    NW_MBCONV,
    NW_TRANSFORM,
    Arch,
    SpaceError,
    has_dense,
    has_nd,
    has_nw,
)
from natv2.space.features import FEATURE_KINDS
from natv2.space.repair import REPAIR_METHODS
from natv2.space.sampling import P_SKIP, SAMPLING_METHODS
from natv2.space.space import NAT_RESOLUTIONS, SearchSpace

__all__ = [
    "Arch",
    "DEPTH_CHOICES",
    "EXPAND_CHOICES",
    "FAMILIES",
    "FEATURE_KINDS",
    "KS_CHOICES",
    "MAX_DEPTH",
    "NAT_RESOLUTIONS",
    "ND_CHOICES",
    "NW_CHOICES",
    "NW_CONV1X1",
    "NW_MBCONV",
    "NW_TRANSFORM",
    "N_SLOTS",
    "N_STAGES",
    "P_SKIP",
    "REPAIR_METHODS",
    "SAMPLING_METHODS",
    "SearchSpace",
    "SpaceError",
    "has_dense",
    "has_nd",
    "has_nw",
]
