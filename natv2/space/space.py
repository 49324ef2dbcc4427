"""``SearchSpace``: bounds, encode/decode, repair, sampling and features for one family.

See :mod:`natv2.space.encoding` for the vector and string layout. A search space has one family
and fixed choice lists; ``xl``/``xu`` are the integer bounds pymoo needs. Width is a variable
(``w`` indexes ``widths``) as in NAT; each width has its own super-network
(:class:`natv2.supernet.WidthSuperNets`). :meth:`SearchSpace.smallest` and
:meth:`SearchSpace.largest` are the thesis' ``lb`` and ``ub``
(``NAT_extended/search/search_spaces/ea_ofa_search_spaces.py``: ``w`` index 0 in ``lb``,
``len(width_mult_list) - 1`` in ``ub``): the narrowest width's smallest network and the widest
width's largest.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from natv2.space.arch import (
    DEPTH_CHOICES,
    EXPAND_CHOICES,
    KS_CHOICES,
    MAX_DEPTH,
    N_STAGES,
    ND_CHOICES,
    NW_CHOICES,
    NW_TRANSFORM,
    Arch,
    SpaceError,
    check_family,
    has_nd,
    has_nw,
)
from natv2.space.encoding import (
    BLOCKS,
    ND_INDEX,
    arch_to_vector,
    as_matrix,
    as_vector,
    block_choice,
    block_code,
    format_vector,
    parse,
    position_label,
    valid_rows,
    vector_to_arch,
)
from natv2.space.features import features as _features
from natv2.space.repair import repair_matrix
from natv2.space.sampling import default_repair, sample_matrix

NAT_RESOLUTIONS = tuple(range(192, 257, 4))


def _increasing_subset(name: str, values: Any, allowed: tuple[int, ...]) -> tuple[int, ...]:
    items = tuple(int(v) for v in values)
    if not items or any(v not in allowed for v in items) or list(items) != sorted(set(items)):
        raise SpaceError(f"{name}: {values!r} must be a non-empty increasing subset of {allowed}")
    return items


@dataclass(frozen=True)
class SearchSpace:
    """The encoding of one OFA/OFAv2 family over given choice lists (an immutable value).

    ``resolutions``: increasing pixel sizes (at most 100: two digits); ``widths``: width
    multipliers (at most 10: one digit); ``ks_list``, ``expand_list``: increasing subsets of
    (3, 5, 7) and (3, 4, 6); ``depth_list``: a contiguous subset of (2, 3, 4).
    """

    family: str = "SE_B"
    resolutions: tuple[int, ...] = NAT_RESOLUTIONS
    widths: tuple[float, ...] = (1.0,)
    ks_list: tuple[int, ...] = KS_CHOICES
    expand_list: tuple[int, ...] = EXPAND_CHOICES
    depth_list: tuple[int, ...] = DEPTH_CHOICES

    def __post_init__(self) -> None:
        check_family(self.family)
        try:
            res = tuple(int(r) for r in self.resolutions)
            widths = tuple(float(w) for w in self.widths)
        except (TypeError, ValueError):
            raise SpaceError(
                f"resolutions/widths must be numbers, got {self.resolutions!r} / {self.widths!r}"
            ) from None
        if (
            not res
            or len(res) > 100
            or any(r <= 0 or r != x for r, x in zip(res, self.resolutions, strict=True))
            or list(res) != sorted(set(res))
        ):
            raise SpaceError(
                f"resolutions: {self.resolutions!r} must be 1..100 increasing positive integers"
            )
        if (
            not widths
            or len(widths) > 10
            or len(set(widths)) != len(widths)
            or any(not (math.isfinite(w) and w > 0) for w in widths)
            or any(isinstance(w, bool) or not isinstance(w, numbers.Real) for w in self.widths)
        ):
            raise SpaceError(f"widths: {self.widths!r} must be 1..10 distinct positive numbers")
        ks = _increasing_subset("ks_list", self.ks_list, KS_CHOICES)
        ex = _increasing_subset("expand_list", self.expand_list, EXPAND_CHOICES)
        depths = _increasing_subset("depth_list", self.depth_list, DEPTH_CHOICES)
        if depths != tuple(range(depths[0], depths[-1] + 1)):
            raise SpaceError(f"depth_list: {self.depth_list!r} must be contiguous, e.g. (2, 3, 4)")
        for name, value in (
            ("resolutions", res),
            ("widths", widths),
            ("ks_list", ks),
            ("expand_list", ex),
            ("depth_list", depths),
        ):
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        res = self.resolutions
        if len(res) > 3 and len({b - a for a, b in zip(res, res[1:], strict=False)}) == 1:
            res_text = f"range({res[0]}, {res[-1] + 1}, {res[1] - res[0]})"
        else:
            res_text = repr(list(res))
        return (
            f"SearchSpace(family={self.family!r}, resolutions={res_text}, "
            f"widths={list(self.widths)}, ks_list={self.ks_list}, "
            f"expand_list={self.expand_list}, depth_list={self.depth_list}, n_var={self.n_var})"
        )

    # ----------------------------------------------------------------- layout and bounds
    @property
    def has_nd(self) -> bool:
        """EE family: the vector ends with ``nd`` (1..5)."""
        return has_nd(self.family)

    @property
    def has_nw(self) -> bool:
        """P family: block codes fold in the branch mask ``nw`` (1..7)."""
        return has_nw(self.family)

    @property
    def n_var(self) -> int:
        """Number of integer variables: 22, or 23 for EE families."""
        return ND_INDEX + (1 if self.has_nd else 0)

    @property
    def min_depth(self) -> int:
        return self.depth_list[0]

    @property
    def max_depth(self) -> int:
        return self.depth_list[-1]

    @property
    def n_depths(self) -> int:
        """Number of depth choices per stage."""
        return len(self.depth_list)

    @property
    def n_codes(self) -> int:
        """Number of non-zero block codes: ``len(ks_list) * len(expand_list)`` (x7 for P)."""
        return len(self.ks_list) * len(self.expand_list) * (len(NW_CHOICES) if self.has_nw else 1)

    @property
    def size(self) -> int:
        """Number of distinct architectures: resolutions x widths (x exit counts, EE) x, per
        stage, the sum over the depth choices ``d`` of ``n_codes ** d``."""
        per_stage = sum(self.n_codes ** d for d in self.depth_list)
        exits = len(ND_CHOICES) if self.has_nd else 1
        return len(self.resolutions) * len(self.widths) * exits * per_stage ** N_STAGES

    @property
    def var_names(self) -> tuple[str, ...]:
        """Short names of the variables: ``r, w, s1b1 .. s5b4[, nd]``."""
        names = ["r", "w"] + [
            f"s{s + 1}b{j + 1}" for s in range(N_STAGES) for j in range(MAX_DEPTH)
        ]
        return tuple(names + (["nd"] if self.has_nd else []))

    @property
    def xl(self) -> np.ndarray:
        """Lower bounds (int64, a fresh copy): 0 for r/w, 1 for mandatory slots, 0 optional, 1 nd."""
        slot = [1 if j < self.min_depth else 0 for j in range(MAX_DEPTH)]
        tail = [ND_CHOICES[0]] if self.has_nd else []
        return np.array([0, 0] + slot * N_STAGES + tail, dtype=np.int64)

    @property
    def xu(self) -> np.ndarray:
        """Upper bounds (int64, a fresh copy): last indices, ``n_codes`` per usable slot, 5 nd."""
        slot = [self.n_codes if j < self.max_depth else 0 for j in range(MAX_DEPTH)]
        tail = [ND_CHOICES[-1]] if self.has_nd else []
        heads = [len(self.resolutions) - 1, len(self.widths) - 1]
        return np.array(heads + slot * N_STAGES + tail, dtype=np.int64)

    @staticmethod
    def position_label(index: int) -> str:
        """Name of a 0-based variable index, e.g. ``"position 5 (stage 1 slot 3)"``."""
        return position_label(index)

    def block_code(self, ks: int, e: int, nw: int | None = None) -> int:
        """The non-zero code of a block with kernel ``ks``, expand ``e`` (and mask ``nw``)."""
        if (nw is not None) != self.has_nw or (nw is not None and nw not in NW_CHOICES):
            raise SpaceError(f"nw: value {nw!r} invalid for family {self.family}")
        if ks not in self.ks_list or e not in self.expand_list:
            raise SpaceError(f"block (ks={ks}, e={e}) not in {self.ks_list} x {self.expand_list}")
        return block_code(
            self.ks_list.index(ks),
            self.expand_list.index(e),
            nw or 1,
            len(self.ks_list),
            len(self.expand_list),
        )

    def block_choice(self, code: int) -> tuple[int, int, int | None]:
        """``(ks, e, nw)`` of a non-zero block code (``nw`` is None for non-P families)."""
        if not 1 <= code <= self.n_codes:
            raise SpaceError(f"block code: value {code} not in 1..{self.n_codes}")
        ks_idx, e_idx, nw = block_choice(code, len(self.ks_list), len(self.expand_list))
        return self.ks_list[ks_idx], self.expand_list[e_idx], nw if self.has_nw else None

    # ------------------------------------------------------------------ encode / decode
    def decode(self, encoding: str | Sequence[int] | np.ndarray) -> Arch:
        """The Arch of an encoding string or integer vector (any valid one, not only canonical)."""
        vec = parse(self, encoding) if isinstance(encoding, str) else encoding
        return vector_to_arch(self, vec)

    def encode(self, arch: Arch | Sequence[int] | np.ndarray) -> str:
        """The canonical string of an Arch (or of a valid vector)."""
        return format_vector(self, self._canonical_vector(arch))

    def to_vector(self, arch: Arch) -> np.ndarray:
        """The canonical int64 vector of an Arch."""
        return arch_to_vector(self, arch)

    def from_vector(self, vec: Sequence[int] | np.ndarray) -> Arch:
        """The Arch of a valid integer vector."""
        return vector_to_arch(self, vec)

    def canonical(self, vec: Sequence[int] | np.ndarray) -> np.ndarray:
        """The canonical form of a valid vector (``(n_var,)`` or ``(n, n_var)``): zeros last."""
        arr = np.asarray(vec)
        valid = as_matrix(self, arr) if arr.ndim == 2 else as_vector(self, vec)
        return repair_matrix(valid, self.xl, self.xu, "push")

    def is_valid(self, vec: Any) -> bool | np.ndarray:
        """Whether ``vec`` decodes (a string, a vector; a 2-D array gives one bool per row)."""
        if isinstance(vec, str):
            try:
                parse(self, vec)
            except SpaceError:
                return False
            return True
        arr = np.asarray(vec)
        if arr.ndim == 2:
            return valid_rows(self, arr)
        try:
            as_vector(self, vec)
        except SpaceError:
            return False
        return True

    def repair(self, vec: Sequence[int] | np.ndarray, method: str = "push") -> np.ndarray:
        """Repaired int64 copy (``(n_var,)`` or ``(n, n_var)``): round, clip, then push or fill."""
        return repair_matrix(np.asarray(vec), self.xl, self.xu, method)

    def _canonical_vector(self, item: Any) -> np.ndarray:
        if isinstance(item, Arch):
            return self.to_vector(item)
        if isinstance(item, str):
            return self.to_vector(self.decode(item))
        return self.canonical(item)

    # ------------------------------------------------------------------------- sampling
    def sample_vectors(
        self, n: int, seed: Any = 0, method: str = "uniform", repair: str | None = None
    ) -> np.ndarray:
        """``n`` repaired (hence valid and canonical) int64 vectors, shape ``(n, n_var)``."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise SpaceError(f"n: value {n!r} must be a non-negative integer")
        X = sample_matrix(self.xl, self.xu, int(n), np.random.default_rng(seed), method)
        return repair_matrix(X, self.xl, self.xu, repair or default_repair(method))

    def sample(
        self, n: int, seed: Any = 0, method: str = "uniform", repair: str | None = None
    ) -> list[Arch]:
        """``n`` Archs, deterministic for a given seed (``numpy.random.default_rng(seed)``).

        ``method``: ``"uniform"`` (NAT, push repair), ``"balanced"`` (NATv2, fill repair) or
        ``"depth_uniform"``; see :mod:`natv2.space.sampling`. ``repair`` overrides the default.
        """
        return [self.from_vector(v) for v in self.sample_vectors(n, seed, method, repair)]

    def smallest(self) -> Arch:
        """The thesis' ``lb`` decoded: min r, the narrowest width, min depth, k/e min, nd 1; for
        P families every block the transformation branch alone (the thesis' first branch code,
        ``nw_num_to_act_dict[1]`` = (MBConv off, 1x1 off, transformation on) in
        ``OFA_mbv3_extended/networks/nets/my_networks.py``; natv2's code 1 is MBConv alone)."""
        vec = self.xl
        if self.has_nw:
            lowest = self.block_code(self.ks_list[0], self.expand_list[0], NW_TRANSFORM)
            vec[BLOCKS] = np.where(vec[BLOCKS] > 0, lowest, 0)
        return self.from_vector(vec)

    def largest(self) -> Arch:
        """Every variable at its maximum (the thesis' ``ub``): max r, the widest width, every
        slot at its max code (max depth, k/e max, nw 7), nd 5."""
        return self.from_vector(self.xu)

    def at_width(self, width: float) -> SearchSpace:
        """This space with ``widths`` reduced to ``width`` (one width's super-network)."""
        if not any(abs(float(width) - w) <= 1e-9 for w in self.widths):
            raise SpaceError(f"width {width} is not one of {list(self.widths)}")
        return replace(self, widths=(float(width),))

    # ------------------------------------------------------------------------- features
    def features(self, items: Any, kind: str = "integer") -> np.ndarray:
        """Float features, one row per item (Arch, string or vector; or a 2-D array).

        Vectors are canonicalised first, so every encoding of one Arch gets the same row.
        ``"integer"``: the vector (``n_var`` columns); ``"onehot"``: one column per value of
        each variable's bounds, constant columns kept (``sum(xu - xl + 1)`` columns).
        """
        if isinstance(items, np.ndarray) and items.ndim == 2:
            X = self.canonical(items)
        else:
            rows = [self._canonical_vector(item) for item in items]
            X = np.array(rows, dtype=np.int64).reshape(len(rows), self.n_var)
        return _features(X, self.xl, self.xu, kind)
