"""The :class:`Arch` value object: one sub-network of an OFA / OFAv2 super-network.

An ``Arch`` knows nothing of encodings: it holds the decoded choices, per block *slot*. The
super-network has 5 stages of 4 slots (20 slots, numbered 0..19, stage ``s`` owning slots
``4*s .. 4*s+3``); stage ``s`` runs its first ``d[s]`` slots, the others are *inactive*.
Inactive slots always hold the smallest choices (``ks=3``, ``e=3``, ``nw=1``): the constructor
resets them, so two sub-networks that run the same blocks are equal and hash alike, and
:meth:`Arch.to_ofa` is always complete.

Families (OFAv2, Sarti et al. 2023) are ``{SE,EE}_{B,D,P,DP}``: ``EE`` (early exit) families
carry ``nd`` in 1..5, the stage after which the sub-network ends; ``P`` (parallel) families carry
a per-slot branch mask ``nw`` in 1..7 whose bits are :data:`NW_MBCONV` (1, the elastic MBConv
branch), :data:`NW_CONV1X1` (2, the 1x1 conv branch) and :data:`NW_TRANSFORM` (4, the
"transformation" branch). ``D`` (dense skips) changes no choice. ``nd`` is ``None`` for ``SE``
families and ``nw`` is ``None`` for non-``P`` families.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from natv2.errors import UserError

FAMILIES = ("SE_B", "SE_D", "SE_P", "SE_DP", "EE_B", "EE_D", "EE_P", "EE_DP")
KS_CHOICES = (3, 5, 7)
EXPAND_CHOICES = (3, 4, 6)
DEPTH_CHOICES = (2, 3, 4)
N_STAGES = 5
MAX_DEPTH = 4
N_SLOTS = N_STAGES * MAX_DEPTH
ND_CHOICES = (1, 2, 3, 4, 5)
NW_MBCONV = 1
NW_CONV1X1 = 2
NW_TRANSFORM = 4
NW_CHOICES = tuple(range(1, 8))
INACTIVE_KS = KS_CHOICES[0]
INACTIVE_E = EXPAND_CHOICES[0]
INACTIVE_NW = 1


class SpaceError(UserError):
    """An invalid architecture, encoding or search-space setting (message names where and why)."""


def check_family(family: Any) -> str:
    """Return ``family`` if it is one of :data:`FAMILIES`, else raise :class:`SpaceError`."""
    if family not in FAMILIES:
        raise SpaceError(f"family {family!r} not in {', '.join(FAMILIES)}")
    return family


def has_nd(family: str) -> bool:
    """Whether ``family`` has early exits (the elastic net depth ``nd``)."""
    return check_family(family).startswith("EE_")


def has_nw(family: str) -> bool:
    """Whether ``family`` has parallel blocks (the per-block branch mask ``nw``)."""
    return check_family(family).endswith("P")


def has_dense(family: str) -> bool:
    """Whether ``family`` has dense skip connections inside a stage."""
    return "D" in check_family(family).split("_")[1]


def slot_label(slot: int) -> str:
    """Human name of a 0-based slot index, 1-based: ``slot_label(6) == "stage 2 slot 3"``."""
    return f"stage {slot // MAX_DEPTH + 1} slot {slot % MAX_DEPTH + 1}"


def active_slots(d: Sequence[int]) -> tuple[int, ...]:
    """0-based indices of the slots that run for per-stage depths ``d``."""
    return tuple(s * MAX_DEPTH + j for s in range(N_STAGES) for j in range(d[s]))


def as_int(what: str, value: Any) -> int:
    """``value`` as an ``int`` if it is an integral number (numpy too), else raise naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpaceError(f"{what}: value {value!r} is not an integer")
    if isinstance(value, numbers.Integral):
        return int(value)
    if not math.isfinite(value) or value != int(value):
        raise SpaceError(f"{what}: value {value!r} is not an integer")
    return int(value)


def _choice(what: str, value: Any, choices: Sequence[int]) -> int:
    v = as_int(what, value)
    if v not in choices:
        raise SpaceError(f"{what}: value {value!r} not in {tuple(choices)}")
    return v


def _int_tuple(name: str, values: Any, choices: Sequence[int], *, per_stage: bool) -> tuple:
    n = N_STAGES if per_stage else N_SLOTS
    try:
        if isinstance(values, str | bytes):
            raise TypeError
        items = list(values)
    except TypeError:
        raise SpaceError(f"Arch.{name}: expected {n} integers, got {values!r}") from None
    if len(items) != n:
        raise SpaceError(f"Arch.{name}: expected {n} values, got {len(items)}")
    out = []
    for i, v in enumerate(items):
        where = (
            f"Arch.{name}[{i}] (stage {i + 1})"
            if per_stage
            else f"Arch.{name}[{i}] ({slot_label(i)})"
        )
        out.append(_choice(where, v, choices))
    return tuple(out)


@dataclass(frozen=True)
class Arch:
    """One sub-network: a frozen, hashable value object.

    ``ks``, ``e`` (and ``nw`` for P families) hold one value per slot (20); ``d`` one depth per
    stage (5). Lists and numpy integers are accepted and stored as tuples of ``int``; inactive
    slots are reset to ``ks=3, e=3, nw=1``. Invalid values raise :class:`SpaceError` (a
    ``ValueError``) naming the field, position, value and valid choices.
    """

    family: str
    resolution: int
    width: float
    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    nd: int | None = None
    nw: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        family = check_family(self.family)
        resolution = as_int("Arch.resolution", self.resolution)
        if resolution <= 0:
            raise SpaceError(f"Arch.resolution: value {resolution} must be a positive pixel count")
        if isinstance(self.width, bool) or not isinstance(self.width, numbers.Real):
            raise SpaceError(f"Arch.width: value {self.width!r} is not a number")
        width = float(self.width)
        if not (math.isfinite(width) and width > 0):
            raise SpaceError(f"Arch.width: value {self.width!r} must be a positive number")
        d = _int_tuple("d", self.d, DEPTH_CHOICES, per_stage=True)
        ks = list(_int_tuple("ks", self.ks, KS_CHOICES, per_stage=False))
        e = list(_int_tuple("e", self.e, EXPAND_CHOICES, per_stage=False))
        if has_nd(family):
            if self.nd is None:
                raise SpaceError(f"Arch.nd: family {family} needs nd in {ND_CHOICES}")
            nd = _choice("Arch.nd", self.nd, ND_CHOICES)
        elif self.nd is not None:
            raise SpaceError(
                f"Arch.nd: value {self.nd!r} given but family {family} has no nd (None)"
            )
        else:
            nd = None
        nw: list[int] | None = None
        if has_nw(family):
            if self.nw is None:
                raise SpaceError(f"Arch.nw: family {family} needs nw (20 values in 1..7)")
            nw = list(_int_tuple("nw", self.nw, NW_CHOICES, per_stage=False))
        elif self.nw is not None:
            raise SpaceError(
                f"Arch.nw: value {self.nw!r} given but family {family} has no nw (None)"
            )
        active = set(active_slots(d))
        for slot in range(N_SLOTS):
            if slot not in active:
                ks[slot], e[slot] = INACTIVE_KS, INACTIVE_E
                if nw is not None:
                    nw[slot] = INACTIVE_NW
        for name, value in (
            ("resolution", resolution),
            ("width", width),
            ("d", d),
            ("ks", tuple(ks)),
            ("e", tuple(e)),
            ("nd", nd),
            ("nw", None if nw is None else tuple(nw)),
        ):
            object.__setattr__(self, name, value)

    @property
    def n_blocks(self) -> int:
        """Number of elastic blocks that run: ``sum(d)`` (all 5 stages, whatever ``nd``)."""
        return sum(self.d)

    @property
    def active_slots(self) -> tuple[int, ...]:
        """0-based indices of the slots that run (``d[s]`` first slots of each stage)."""
        return active_slots(self.d)

    def to_ofa(self) -> dict[str, list]:
        """OFA's ``set_active_subnet`` arguments: ``{"ks": [20], "e": [20], "d": [5]}``."""
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d)}

    def to_nat(self) -> dict[str, Any]:
        """NAT's config: ks/e (and nw) of active blocks only, d, r, w (and nd)."""
        slots = self.active_slots
        out: dict[str, Any] = {
            "ks": [self.ks[i] for i in slots],
            "e": [self.e[i] for i in slots],
            "d": list(self.d),
            "r": self.resolution,
            "w": self.width,
        }
        if self.nd is not None:
            out["nd"] = self.nd
        if self.nw is not None:
            out["nw"] = [self.nw[i] for i in slots]
        return out

    @classmethod
    def from_nat(cls, config: dict[str, Any], family: str = "SE_B") -> Arch:
        """Inverse of :meth:`to_nat` (``family`` is not part of NAT's config)."""
        try:
            d = [int(v) for v in config["d"]]
            n_active = sum(d)
            lists = {k: list(config[k]) for k in ("ks", "e")}
            if has_nw(family):
                lists["nw"] = list(config["nw"])
        except KeyError as err:
            raise SpaceError(f"NAT config: missing key {err.args[0]!r}") from None
        for key, values in lists.items():
            if len(values) != n_active:
                raise SpaceError(
                    f"NAT config: {key!r} has {len(values)} values but sum(d) = {n_active}"
                )
        full: dict[str, list] = {}
        for key, values in lists.items():
            fill = {"ks": INACTIVE_KS, "e": INACTIVE_E, "nw": INACTIVE_NW}[key]
            slots = [fill] * N_SLOTS
            for slot, v in zip(active_slots(d), values, strict=True):
                slots[slot] = v
            full[key] = slots
        return cls(
            family=family,
            resolution=config["r"],
            width=config["w"],
            ks=full["ks"],
            e=full["e"],
            d=d,
            nd=config.get("nd"),
            nw=full.get("nw"),
        )

    def __str__(self) -> str:
        stages = []
        for s in range(N_STAGES):
            blocks = []
            for slot in range(s * MAX_DEPTH, s * MAX_DEPTH + self.d[s]):
                text = f"k{self.ks[slot]}e{self.e[slot]}"
                if self.nw is not None:
                    text += f"n{self.nw[slot]}"
                blocks.append(text)
            stages.append(" ".join(blocks))
        head = f"{self.family} r={self.resolution} w={self.width} d={''.join(map(str, self.d))}"
        if self.nd is not None:
            head += f" nd={self.nd}"
        return f"{head} [{' | '.join(stages)}]"
