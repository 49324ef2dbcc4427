"""Which dimensions are elastic in each phase of (Extended) Progressive Shrinking, and sampling.

OFA's progressive shrinking trains the full network, then makes kernel size, depth and expand
ratio elastic one after the other; OFAv2's Extended PS inserts net width (parallel branches,
P families) and net depth (early exits, EE families) after the kernel phase. Departure from OFA:
OFA splits the depth and expand phases in two sub-steps each (e.g. depth {3,4} then {2,3,4});
here each phase opens its dimension fully, and the epochs of the sub-steps are summed into one
phase. Elastic resolution is on in every phase, as in OFA: each step's resolution is uniform
over every multiple of 4 between the space's smallest and largest (:func:`continuous_resolutions`,
the thesis' ``MyModRandomResizedCrop`` with ``CONTINUOUS = True``; the same sizes as the space's
when they are 4 apart, as on the embedded default).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from natv2.space import Arch, SearchSpace

PHASE_ORDER = ("full", "kernel", "net_width", "net_depth", "depth", "expand")
_OPENS = {"full": None, "kernel": "ks", "net_width": "nw", "net_depth": "nd", "depth": "d", "expand": "e"}


def phases_for(family: str) -> tuple[str, ...]:
    """The EPS phases that apply to ``family`` (net width needs P, net depth needs EE)."""
    has_p = family.split("_")[1].endswith("P")
    has_ee = family.startswith("EE")
    return tuple(
        p for p in PHASE_ORDER if (p != "net_width" or has_p) and (p != "net_depth" or has_ee)
    )


def elastic_dims(phase: str) -> frozenset[str]:
    """Dimensions sampled at random during ``phase`` (those opened by it and every earlier one)."""
    if phase not in _OPENS:
        raise ValueError(f"unknown training phase '{phase}'; valid: {', '.join(PHASE_ORDER)}")
    upto = PHASE_ORDER[: PHASE_ORDER.index(phase) + 1]
    return frozenset(_OPENS[p] for p in upto if _OPENS[p] is not None)


#: the resolutions of ``MyModRandomResizedCrop``'s continuous mode are multiples of this
RESOLUTION_STEP = 4


def continuous_resolutions(resolutions: Sequence[int]) -> tuple[int, ...]:
    """Every multiple of 4 from the smallest to the largest of ``resolutions``
    (``MyModRandomResizedCrop.get_candidate_image_size`` with ``CONTINUOUS``), both ends always
    included (the thesis keeps only multiples of 4; its sizes are)."""
    lo, hi = min(int(r) for r in resolutions), max(int(r) for r in resolutions)
    inner = range(-(-lo // RESOLUTION_STEP) * RESOLUTION_STEP, hi + 1, RESOLUTION_STEP)
    return tuple(sorted({lo, hi, *inner}))


def sample_phase_arch(space: SearchSpace, elastic: frozenset[str], resolution: int,
                      rng: np.random.Generator) -> Arch:
    """A sub-network with the ``elastic`` dimensions drawn uniformly, the others at their maximum."""
    n = 20

    def pick(dim: str, choices, size=None):
        choices = list(choices)
        if dim in elastic:
            return rng.choice(choices, size=size).tolist()
        return [max(choices)] * size if size else max(choices)

    ks = pick("ks", space.ks_list, n)
    e = pick("e", space.expand_list, n)
    d = pick("d", space.depth_list, 5)
    nd = pick("nd", range(1, 6)) if space.has_nd else None
    nw = pick("nw", range(1, 8), n) if space.has_nw else None
    # several widths (one super-network each, trained together): the width drawn uniformly as
    # the thesis' GenSupernet.sample_active_subnet does
    width = space.widths[int(rng.integers(len(space.widths)))] if len(space.widths) > 1 else space.widths[0]
    return Arch(family=space.family, resolution=int(resolution), width=float(width),
                ks=ks, e=e, d=d, nd=nd, nw=nw)
