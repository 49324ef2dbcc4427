"""The thesis' decoding of a vector with zeros, and its duplicate test (``search.decoding`` and
``search.duplicates: thesis``, the default of every policy).

natv2's option ``canonical`` decodes a vector deterministically: a stage's active blocks are
its non-zero codes, in order (:func:`natv2.space.encoding.vector_to_arch`). The thesis' ``_decode``
(``NAT_extended/search/search_spaces/ea_ofa_search_spaces.py``, with ``var2str``) does not:
it decodes *every* slot, a zero one to a **random** (kernel, expansion) (``var2str(0)`` draws
a code uniformly from 1..max), and sets the stage's depth to the number of non-zero slots, so
OFA's ``set_active_subnet`` runs the stage's *first* ``d`` slots. A zero before a non-zero
code (``[a, b, 0, c]``: depth 3, blocks ``a``, ``b`` and a random one; ``c`` drops out) builds
a network natv2 would not; a vector whose zeros are all at the ends of their stages builds the
same network either way. Samples are repaired (NAT pushes the zeros to the stage ends, NATv2
zeroes every slot after a stage's first zero), so only the evolution's population, its LHS
start and offspring, which nobody repairs, can differ.

:func:`thesis_decode` returns the canonical vectors of the networks the thesis builds, drawing
the random codes from a generator the caller seeds (the thesis: Python's global ``random``).

Duplicates. The thesis drops a candidate when its decoded dict is in the archive's
(``msunas.py`` ``_next``), and the dicts carry every slot's (kernel, expansion), inactive ones
included: with a zero slot the candidate's dict has random values there, so it equals an
archive dict only when those draws happen to match the archive member's own (a chance of 1 in
``n_codes`` per zero slot). :func:`thesis_known` keeps the deterministic part of that test: a
candidate is a duplicate when its network is in the archive and its vector has no zero slot;
the chance matches (at most 1 in 9 per zero slot on the default space) are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from natv2.space.arch import MAX_DEPTH, N_STAGES
from natv2.space.encoding import BLOCK_START

__all__ = ["has_inner_zero", "has_zero_slot", "thesis_decode", "thesis_known"]


def _stages(X: np.ndarray) -> np.ndarray:
    """The block slots of ``X`` (n, n_var) as (n, stages, slots)."""
    blocks = X[:, BLOCK_START:BLOCK_START + N_STAGES * MAX_DEPTH]
    return blocks.reshape(len(X), N_STAGES, MAX_DEPTH)


def has_zero_slot(space, X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` with a zero in a slot the space can use (below its largest depth)."""
    blocks = _stages(np.atleast_2d(np.asarray(X, dtype=np.int64)))[:, :, :space.max_depth]
    return (blocks == 0).any(axis=(1, 2))


def has_inner_zero(X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` with a zero before a non-zero code in some stage (the rows
    :func:`thesis_decode` decodes to another network than natv2)."""
    blocks = _stages(np.atleast_2d(np.asarray(X, dtype=np.int64)))
    zero_seen = np.cumsum(blocks == 0, axis=-1) > 0
    return (zero_seen & (blocks != 0)).any(axis=(1, 2))


def thesis_decode(space, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Canonical vectors (a copy of ``X``, (n, n_var)) of the networks the thesis' ``_decode``
    builds: per stage, depth = its non-zero slots, the first ``depth`` slots active, each zero
    among them a random code in ``1..space.n_codes``."""
    out = np.array(np.atleast_2d(X), dtype=np.int64, copy=True)
    blocks = _stages(out).copy()
    for row in np.flatnonzero(has_inner_zero(out)):
        for stage in range(N_STAGES):  # a stage without an inner zero keeps its codes
            codes = blocks[row, stage]
            depth = int((codes != 0).sum())
            active = codes[:depth].copy()
            zeros = active == 0
            active[zeros] = rng.integers(1, space.n_codes + 1, size=int(zeros.sum()))
            blocks[row, stage] = np.concatenate([active, np.zeros(MAX_DEPTH - depth, np.int64)])
    out[:, BLOCK_START:BLOCK_START + N_STAGES * MAX_DEPTH] = blocks.reshape(len(out), -1)
    return out


def thesis_known(space, X: np.ndarray, strings: Sequence[str], known: Iterable[str]
                 ) -> np.ndarray:
    """Indices of the rows the thesis' duplicate test keeps: not (network in ``known`` and no
    zero slot in the row's vector); a string repeated within ``strings`` is kept once (the
    first), as natv2's own test."""
    known = set(known)
    zero = has_zero_slot(space, X)
    seen: set[str] = set()
    keep = []
    for i, s in enumerate(strings):
        if s in seen or (s in known and not zero[i]):
            continue
        seen.add(s)
        keep.append(i)
    return np.asarray(keep, dtype=int)
