"""Repair operators: make any integer matrix a valid (and canonical) set of encodings.

Both operators first round to integers and clip every variable to its bounds (which also forces
the mandatory first slots of a stage to be non-zero), then treat the zeros of each stage:

- ``"push"`` (NAT): move the zeros to the end of the stage, keeping the order of the non-zero
  codes -- the decoded architecture does not change (decoding skips zeros wherever they are).
- ``"fill"`` (NATv2): zero every slot after the first zero of the stage -- a zero in slot 3
  means depth 2 whatever slot 4 holds.
"""

from __future__ import annotations

import numpy as np

from natv2.space.arch import MAX_DEPTH, N_STAGES, SpaceError
from natv2.space.encoding import BLOCKS

REPAIR_METHODS = ("push", "fill")


def push(blocks: np.ndarray) -> np.ndarray:
    """Move zeros to the end of each stage (last axis), stable for the non-zero codes."""
    order = np.argsort(blocks == 0, axis=-1, kind="stable")
    return np.take_along_axis(blocks, order, axis=-1)


def fill(blocks: np.ndarray) -> np.ndarray:
    """Zero every slot after the first zero of each stage (last axis)."""
    return blocks * np.cumprod(blocks != 0, axis=-1)


def repair_matrix(X: np.ndarray, xl: np.ndarray, xu: np.ndarray, method: str) -> np.ndarray:
    """Repaired copy of ``X`` (shape ``(n_var,)`` or ``(n, n_var)``) as int64."""
    if method not in REPAIR_METHODS:
        raise SpaceError(f"repair method {method!r} not in {', '.join(REPAIR_METHODS)}")
    arr = np.asarray(X)
    if arr.ndim not in (1, 2) or arr.shape[-1] != len(xl):
        raise SpaceError(f"expected shape ({len(xl)},) or (n, {len(xl)}), got {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise SpaceError(f"expected numbers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise SpaceError("cannot repair a vector holding NaN or infinity")
        arr = np.rint(arr)
    out = np.clip(arr.astype(np.int64), xl, xu)
    blocks = out[..., BLOCKS].reshape(out.shape[:-1] + (N_STAGES, MAX_DEPTH))
    blocks = push(blocks) if method == "push" else fill(blocks)
    out[..., BLOCKS] = blocks.reshape(out.shape[:-1] + (N_STAGES * MAX_DEPTH,))
    return out
