"""NAT's integer encoding of an :class:`~natv2.space.arch.Arch`, extended to OFAv2 families.

Vector layout (``n_var`` integers; positions in messages are 1-based, indices here 0-based):

====================  ==========================================================================
index 0 (``r``)       index into the space's resolution list
index 1 (``w``)       index into the space's width list
index 2..21           20 block slots, stage ``s`` (1..5) slot ``j`` (1..4) at index
                      ``2 + 4*(s-1) + (j-1)``: 0 = skip, else ``1 + ks_idx + nk*e_idx + nk*ne*(nw-1)``
                      (``nk = len(ks_list)``, ``ne = len(expand_list)``: ``1 + ks_idx + 3*e_idx``
                      in 1..9 for the default lists; P families fold ``nw`` in 1..7 in: 1..63)
index 22 (``nd``)     EE families only: the net depth value itself, 1..5
====================  ==========================================================================

**Decoding**: the active blocks of a stage are its non-zero codes, in order (as NAT): a zero in
an optional slot (slots 3 and 4 with the default depth list) means "skip", wherever it is, so
``[1, 1, 0, 5]`` and ``[1, 1, 5, 0]`` decode to the same 3-block stage. Slots 1 and 2 are never
zero (lower bound 1). **Canonical** vectors, what ``encode``/``to_vector`` return, have the
zeros at the end of each stage.

**String form**: ``f"{r:02d}{w:d}"``, then one digit per slot (two, ``:02d``, for P families),
then one digit for ``nd`` (EE families). Whitespace in a string is ignored, so NAT's
``"08 0 1100 1440 5510 5220 8877"`` is accepted.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from natv2.space.arch import (
    INACTIVE_E,
    INACTIVE_KS,
    INACTIVE_NW,
    MAX_DEPTH,
    N_SLOTS,
    N_STAGES,
    Arch,
    SpaceError,
    as_int,
    slot_label,
)

if TYPE_CHECKING:
    from natv2.space.space import SearchSpace

R_INDEX = 0
W_INDEX = 1
BLOCK_START = 2
BLOCKS = slice(BLOCK_START, BLOCK_START + N_SLOTS)
ND_INDEX = BLOCK_START + N_SLOTS


def position_label(index: int) -> str:
    """Name of a 0-based vector index, 1-based: ``position_label(4) == "position 5 (stage 1 slot 3)"``."""
    if index == R_INDEX:
        what = "r, resolution index"
    elif index == W_INDEX:
        what = "w, width index"
    elif BLOCK_START <= index < ND_INDEX:
        what = slot_label(index - BLOCK_START)
    elif index == ND_INDEX:
        what = "nd, net depth"
    else:
        raise IndexError(f"no variable at index {index}")
    return f"position {index + 1} ({what})"


def block_code(ks_idx: int, e_idx: int, nw: int, n_ks: int, n_e: int) -> int:
    """Non-zero code of a block: ``1 + ks_idx + n_ks*e_idx + n_ks*n_e*(nw-1)`` (nw=1 if no P)."""
    return 1 + ks_idx + n_ks * e_idx + n_ks * n_e * (nw - 1)


def block_choice(code: int, n_ks: int, n_e: int) -> tuple[int, int, int]:
    """Inverse of :func:`block_code`: ``(ks_idx, e_idx, nw)`` of a non-zero code."""
    rest, ks_idx = divmod(code - 1, n_ks)
    nw_minus_1, e_idx = divmod(rest, n_e)
    return ks_idx, e_idx, nw_minus_1 + 1


def layout(space: SearchSpace) -> str:
    """One-line description of the string layout of ``space``."""
    slot = "2 digits" if space.has_nw else "1 digit"
    text = f"2 digits r, 1 digit w, 20 slots x {slot}"
    return text + (", 1 digit nd" if space.has_nd else "")


def _range_message(space: SearchSpace, index: int, value: int) -> str:
    lo, hi = int(space.xl[index]), int(space.xu[index])
    text = f"{position_label(index)}: value {value} not in {lo}..{hi}"
    if BLOCKS.start <= index < BLOCKS.stop and value == 0 and lo > 0:
        text += f" (the first {space.min_depth} slots of a stage are never skipped)"
    elif BLOCKS.start <= index < BLOCKS.stop and hi == 0:
        text += f" (max depth is {space.max_depth})"
    return text


def as_vector(space: SearchSpace, vec: Any) -> np.ndarray:
    """``vec`` as a valid (in-bounds, maybe non-canonical) int64 vector, else :class:`SpaceError`."""
    n = space.n_var
    arr = np.asarray(vec, dtype=object if isinstance(vec, list | tuple) else None)
    if arr.ndim != 1:
        raise SpaceError(f"expected a vector of {n} integers, got an array of shape {arr.shape}")
    if arr.shape[0] != n:
        raise SpaceError(
            f"vector has {arr.shape[0]} values; family {space.family} expects {n} "
            f"(r, w, 20 slots{', nd' if space.has_nd else ''})"
        )
    if arr.dtype.kind in "iu":
        ints = arr.astype(np.int64)
    else:
        ints = np.array(
            [as_int(position_label(i), v) for i, v in enumerate(arr.tolist())], dtype=np.int64
        )
    bad = np.flatnonzero((ints < space.xl) | (ints > space.xu))
    if bad.size:
        raise SpaceError(_range_message(space, int(bad[0]), int(ints[bad[0]])))
    return ints


def as_matrix(space: SearchSpace, X: Any) -> np.ndarray:
    """A 2-D array of vectors, validated row by row (vectorised), as int64; errors name the row."""
    arr = np.asarray(X)
    if arr.ndim != 2 or arr.shape[1] != space.n_var:
        raise SpaceError(f"expected an array of shape (n, {space.n_var}), got shape {arr.shape}")
    ok = valid_rows(space, arr)
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        try:
            as_vector(space, arr[row])
        except SpaceError as err:
            raise SpaceError(f"row {row}: {err}") from None
    return arr.astype(np.int64)


def valid_rows(space: SearchSpace, arr: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of a 2-D numeric array that are valid vectors of ``space``."""
    if arr.ndim != 2 or arr.shape[1] != space.n_var or arr.dtype.kind not in "iuf":
        return np.zeros(arr.shape[0] if arr.ndim else 0, dtype=bool)
    ok = np.ones(arr.shape[0], dtype=bool)
    if arr.dtype.kind == "f":
        ok &= np.all(np.isfinite(arr) & (arr == np.round(arr)), axis=1)
        arr = np.where(np.isfinite(arr), arr, -1)
    return ok & np.all((arr >= space.xl) & (arr <= space.xu), axis=1)


def parse(space: SearchSpace, text: str) -> np.ndarray:
    """The vector of an encoding string (validated; whitespace ignored)."""
    digits = "".join(text.split())
    widths = [2, 1] + [2 if space.has_nw else 1] * N_SLOTS + ([1] if space.has_nd else [])
    if len(digits) != sum(widths):
        raise SpaceError(
            f"encoding {text!r} has {len(digits)} characters; family {space.family} expects "
            f"{sum(widths)} ({layout(space)})"
        )
    values, pos = [], 0
    for i, width in enumerate(widths):
        chunk = digits[pos : pos + width]
        if not (chunk.isascii() and chunk.isdigit()):
            where = f"character {pos + 1}" if width == 1 else f"characters {pos + 1}-{pos + width}"
            raise SpaceError(
                f"{position_label(i)}: value {chunk!r} ({where}) is not a {width}-digit number"
            )
        values.append(int(chunk))
        pos += width
    return as_vector(space, np.array(values, dtype=np.int64))


def format_vector(space: SearchSpace, vec: np.ndarray) -> str:
    """The string form of a valid vector (no canonicalisation here)."""
    slot_fmt = "{:02d}" if space.has_nw else "{:d}"
    text = f"{int(vec[R_INDEX]):02d}{int(vec[W_INDEX]):d}"
    text += "".join(slot_fmt.format(int(c)) for c in vec[BLOCKS])
    if space.has_nd:
        text += f"{int(vec[ND_INDEX]):d}"
    return text


def vector_to_arch(space: SearchSpace, vec: Any) -> Arch:
    """Decode a vector: active blocks of a stage are its non-zero codes, in order."""
    v = as_vector(space, vec)
    n_ks, n_e = len(space.ks_list), len(space.expand_list)
    ks, e, nw = [INACTIVE_KS] * N_SLOTS, [INACTIVE_E] * N_SLOTS, [INACTIVE_NW] * N_SLOTS
    d = []
    for s in range(N_STAGES):
        start = BLOCK_START + s * MAX_DEPTH
        codes = [int(c) for c in v[start : start + MAX_DEPTH] if c != 0]
        d.append(len(codes))
        for j, code in enumerate(codes):
            ks_idx, e_idx, w = block_choice(code, n_ks, n_e)
            slot = s * MAX_DEPTH + j
            ks[slot], e[slot], nw[slot] = space.ks_list[ks_idx], space.expand_list[e_idx], w
    return Arch(
        family=space.family,
        resolution=space.resolutions[int(v[R_INDEX])],
        width=space.widths[int(v[W_INDEX])],
        ks=ks,
        e=e,
        d=d,
        nd=int(v[ND_INDEX]) if space.has_nd else None,
        nw=nw if space.has_nw else None,
    )


def _index(what: str, value: Any, options: tuple, *, close: bool = False) -> int:
    for i, option in enumerate(options):
        if (math.isclose(value, option, rel_tol=1e-9)) if close else value == option:
            return i
    raise SpaceError(f"{what}: value {value!r} not in the search space's {options}")


def arch_to_vector(space: SearchSpace, arch: Arch) -> np.ndarray:
    """The canonical vector of ``arch`` (zeros at the end of each stage)."""
    if not isinstance(arch, Arch):
        raise TypeError(f"expected an Arch, got {type(arch).__name__}")
    if arch.family != space.family:
        raise SpaceError(
            f"Arch.family: value {arch.family!r} but the search space is {space.family!r}"
        )
    vec = np.zeros(space.n_var, dtype=np.int64)
    vec[R_INDEX] = _index("Arch.resolution", arch.resolution, space.resolutions)
    vec[W_INDEX] = _index("Arch.width", arch.width, space.widths, close=True)
    n_ks, n_e = len(space.ks_list), len(space.expand_list)
    for s, depth in enumerate(arch.d):
        if depth not in space.depth_list:
            raise SpaceError(
                f"Arch.d[{s}] (stage {s + 1}): value {depth} not in {space.depth_list}"
            )
        for j in range(depth):
            slot = s * MAX_DEPTH + j
            where = f"({slot_label(slot)})"
            ks_idx = _index(f"Arch.ks[{slot}] {where}", arch.ks[slot], space.ks_list)
            e_idx = _index(f"Arch.e[{slot}] {where}", arch.e[slot], space.expand_list)
            w = arch.nw[slot] if arch.nw is not None else 1
            vec[BLOCK_START + slot] = block_code(ks_idx, e_idx, w, n_ks, n_e)
    if space.has_nd:
        vec[ND_INDEX] = arch.nd
    return vec
