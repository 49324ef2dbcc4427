"""Random encodings (before repair); :meth:`SearchSpace.sample` repairs and decodes them.

- ``"uniform"`` (NAT): every variable uniform on its bounds; default repair ``"push"``.
  The depth of a stage is then 2 + (number of non-zero optional slots): with 9 non-zero codes,
  P(0) = 1/10 per optional slot, so depth 4 dominates (81%, depth 2 only 1%).
- ``"balanced"`` (NATv2): each optional slot (slots 3 and 4 with the default depth list) is 0
  with probability :data:`P_SKIP` = 1/3, otherwise a uniform non-zero code; mandatory slots and
  r, w, nd uniform; default repair ``"fill"``. With fill, P(d=2) = 1/3, P(d=3) = 2/3 * 1/3 =
  2/9, P(d=4) = 4/9 per stage (what NATv2 describes; not exactly uniform).
- ``"depth_uniform"``: the depth of each stage uniform on the depth list (1/3 each by default),
  then uniform non-zero codes for the active slots; r, w, nd uniform; default repair ``"fill"``
  (a no-op: the vectors are canonical already).
"""

from __future__ import annotations

import numpy as np

from natv2.space.arch import MAX_DEPTH, N_STAGES, SpaceError
from natv2.space.encoding import BLOCKS

SAMPLING_METHODS = ("uniform", "balanced", "depth_uniform")
P_SKIP = 1.0 / 3.0


def default_repair(method: str) -> str:
    """The repair each sampling method uses unless told otherwise."""
    check_method(method)
    return "push" if method == "uniform" else "fill"


def check_method(method: str) -> str:
    if method not in SAMPLING_METHODS:
        raise SpaceError(f"sampling method {method!r} not in {', '.join(SAMPLING_METHODS)}")
    return method


def sample_matrix(
    xl: np.ndarray, xu: np.ndarray, n: int, rng: np.random.Generator, method: str
) -> np.ndarray:
    """``n`` raw (unrepaired) int64 vectors drawn by ``method`` within ``[xl, xu]``."""
    check_method(method)
    X = rng.integers(xl, xu + 1, size=(n, len(xl)), dtype=np.int64)
    if method == "uniform":
        return X
    lo, hi = xl[BLOCKS], xu[BLOCKS]
    nonzero = rng.integers(1, np.maximum(hi, 1) + 1, size=(n, len(lo)), dtype=np.int64)
    if method == "balanced":
        optional = (lo == 0) & (hi > 0)
        skip = rng.random((n, len(lo))) < P_SKIP
        X[:, BLOCKS] = np.where(optional, np.where(skip, 0, nonzero), X[:, BLOCKS])
        return X
    stage_lo = (lo > 0).reshape(N_STAGES, MAX_DEPTH).sum(axis=1)
    stage_hi = (hi > 0).reshape(N_STAGES, MAX_DEPTH).sum(axis=1)
    depth = rng.integers(stage_lo, stage_hi + 1, size=(n, N_STAGES))
    active = np.arange(MAX_DEPTH)[None, None, :] < depth[:, :, None]
    X[:, BLOCKS] = np.where(active.reshape(n, N_STAGES * MAX_DEPTH), nonzero, 0)
    return X
