"""A per-piece latency lookup table (OFA's latency LUT): measure each distinct piece of the static
sub-networks once, predict an architecture's latency as the sum of its pieces' latencies.

A *piece* is a link of the static network's chain (:func:`natv2.supernet.static.static_pieces`:
stem, each block, final expand, pool, feature mix, flatten, classifier) together with the shape
of one example entering it; a multi-exit network (``all_exits=True``, EE families) adds the
pieces of its early-exit heads, which its forward runs too. Its table key
(:func:`piece_key`) is the canonical JSON of ``[spec, shape]``; input shapes come from a
forward on PyTorch's ``meta`` device (no storage, no initialisation), as in
:class:`~natv2.measure.cost.CostModel`.

:func:`enumerate_pieces` lists every piece any architecture of a space can contain at the given
resolutions. A piece is determined by its position and the choice made there: a block's config
(:meth:`natv2.supernet.SuperNet.static_config`) depends on its stage, on whether it is the
stage's first slot (stride, input width), and on its own kernel size, expand ratio and branch
mask, never on the other slots; its input shape depends on the resolution and the stage only
(widths and strides are fixed per stage); a head depends on the exit it belongs to. So the
``n_codes`` architectures that put one block code in every slot at the largest depth, with every
exit (``nd = 5``, ``all_exits=True`` for EE families), contain every (position, choice) and
every exit head, at each resolution.

:func:`build_latency_table` times each piece once (built on the CPU with PyTorch's default
initialisation: weights do not matter for latency) with
:func:`~natv2.measure.latency.measure_latency`, the code that times whole networks, on an input
of ``settings.batch`` examples of the piece's shape. What the sum leaves out: the dense skips'
additions between blocks (D families), per-call overhead differences (one call per piece
instead of one per network) and cross-piece fusions a backend makes in a whole network;
:func:`table_error` measures how far the predictions are from measured latencies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from scipy.stats import kendalltau

from natv2.errors import UserError
from natv2.files import read_json, write_json
from natv2.space.arch import FAMILIES, MAX_DEPTH, N_STAGES, Arch
from natv2.supernet.static import Piece, head_pieces, static_pieces

from .latency import BACKENDS, LatencySettings, environment, measure_latency

TABLE_FORMAT = "natv2-latency-table"
TABLE_VERSION = 1
META = torch.device("meta")
_SETTING_KEYS = ("backend", "threads", "batch", "warmup", "runs")

# output shape (one example) of each piece key: a pure function of the key, memoised
_OUT_SHAPES: dict[str, tuple[int, ...]] = {}


def piece_key(spec: Any, shape: Sequence[int]) -> str:
    """The table key of a piece: canonical JSON of ``[spec, one example's input shape]``."""
    return json.dumps([spec, [int(n) for n in shape]], sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class PieceInput:
    """One piece of a network with the shape of one example entering it, and its table key."""

    piece: Piece
    shape: tuple[int, ...]
    key: str

    @property
    def label(self) -> str:
        """Short human name: module path (or spec kind) and input shape, e.g. ``blocks.3 at
        40x8x8``."""
        name = self.piece.name or str(self.piece.spec[0])
        return f"{name} at {'x'.join(map(str, self.shape))}"


def _out_shape(piece: Piece, key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    hit = _OUT_SHAPES.get(key)
    if hit is None:
        with torch.device(META):
            module = piece.build()
        module.eval()
        with torch.no_grad():
            out = module(torch.zeros((1, *shape), device=META))
        hit = _OUT_SHAPES[key] = tuple(int(n) for n in out.shape[1:])
    return hit


def _walk(pieces: Iterable[Piece], shape: tuple[int, ...],
          out: list[PieceInput]) -> dict[str, tuple[int, ...]]:
    """Append ``pieces`` (a chain entered with ``shape``) to ``out``; the output shape after
    each named piece."""
    after: dict[str, tuple[int, ...]] = {}
    for piece in pieces:
        key = piece_key(piece.spec, shape)
        out.append(PieceInput(piece, shape, key))
        shape = _out_shape(piece, key, shape)
        if piece.name is not None:
            after[piece.name] = shape
    return after


def piece_inputs(supernet: Any, arch: Any, resolution: int | None = None,
                 all_exits: bool = False, in_channels: int = 3) -> list[PieceInput]:
    """The pieces, in forward order, of ``supernet.extract(arch, all_exits)`` on inputs of
    ``resolution`` px (default ``arch.resolution``): the chain of
    :func:`~natv2.supernet.static.static_pieces`, then the pieces of each early-exit head
    (named ``early_exits.<i>.<module>``) on the output of the stage it follows."""
    r = int(arch.resolution if resolution is None else resolution)
    config = supernet.static_config(arch, all_exits)
    out: list[PieceInput] = []
    after = _walk(static_pieces(config), (int(in_channels), r, r), out)
    for i, head in enumerate(config.get("early_exits") or []):
        last_block = config["stages"][int(head["stage"]) - 1][-1]
        prefixed = [Piece(None if p.name is None else f"early_exits.{i}.{p.name}", p.spec, p.build)
                    for p in head_pieces(head, config["bn"])]
        _walk(prefixed, after[f"blocks.{last_block}"], out)
    return out


def _uniform_archs(space: Any, supernet: Any, resolution: int) -> list[Arch]:
    """One architecture per block code of ``space``: that code in every slot, the largest depth
    in every stage, every exit (``nd = 5``) for EE families."""
    if not any(abs(w - supernet.width_mult) <= 1e-9 for w in space.widths):
        raise UserError(f"the super-network has width {supernet.width_mult}, not one of the "
                        f"space's widths {list(space.widths)}")
    archs = []
    for code in range(1, space.n_codes + 1):
        ks, e, nw = space.block_choice(code)
        archs.append(Arch(family=space.family, resolution=resolution,
                          width=float(supernet.width_mult), ks=[ks] * (N_STAGES * MAX_DEPTH),
                          e=[e] * (N_STAGES * MAX_DEPTH), d=[space.max_depth] * N_STAGES,
                          nd=N_STAGES if space.has_nd else None,
                          nw=None if nw is None else [nw] * (N_STAGES * MAX_DEPTH)))
    return archs


def _check_resolutions(resolutions: Iterable[Any]) -> tuple[int, ...]:
    items = list(resolutions)
    if not items or any(isinstance(r, bool) or not isinstance(r, int | float) or r != int(r)
                        or int(r) < 1 for r in items):
        raise UserError(f"latency table resolutions: {items!r} must be positive integers")
    return tuple(sorted({int(r) for r in items}))


def enumerate_pieces(space: Any, supernet: Any,
                     resolutions: Iterable[int] | None = None) -> list[PieceInput]:
    """Every distinct piece (by key) that an architecture of ``space`` (with or without all its
    exits) can contain at ``resolutions`` (default the space's), in a deterministic order:
    resolutions ascending, block codes ascending, forward order (see the module docstring for
    why this is complete)."""
    seen: dict[str, PieceInput] = {}
    for r in _check_resolutions(space.resolutions if resolutions is None else resolutions):
        for arch in _uniform_archs(space, supernet, r):
            for p in piece_inputs(supernet, arch, all_exits=space.has_nd):
                seen.setdefault(p.key, p)
    return list(seen.values())


@dataclass(frozen=True)
class LatencyTable:
    """Measured latency of every piece of a space at some resolutions, with how it was measured.

    ``settings``: :meth:`LatencySettings.as_dict` plus ``device``; ``machine``:
    :func:`~natv2.measure.latency.environment` of the backend; ``entries``: piece key ->
    ``(median_ms, iqr_ms)``. :meth:`predict` sums entries; the same table always gives the same
    prediction.
    """

    family: str
    width_mult: float
    resolutions: tuple[int, ...]
    settings: dict[str, Any]
    machine: dict[str, str]
    entries: dict[str, tuple[float, float]] = field(repr=False)
    format: str = TABLE_FORMAT
    version: int = TABLE_VERSION

    @property
    def latency_settings(self) -> LatencySettings:
        return LatencySettings(**{k: self.settings[k] for k in _SETTING_KEYS})

    def predict(self, arch: Any, supernet: Any, all_exits: bool = False) -> float:
        """Predicted latency (ms) of ``supernet.extract(arch, all_exits)`` at
        ``arch.resolution``: the sum of its pieces' median latencies. A piece the table lacks
        (another resolution, space or super-network) is a one-line ``UserError`` naming it."""
        total = 0.0
        for p in piece_inputs(supernet, arch, all_exits=all_exits):
            entry = self.entries.get(p.key)
            if entry is None:
                raise UserError(
                    f"latency table ({self.family}, resolutions "
                    f"{', '.join(map(str, self.resolutions))}) has no entry for piece {p.label} "
                    f"of {arch}: rebuild the table for this space, super-network and resolution")
            total += entry[0]
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "version": self.version, "family": self.family,
                "width_mult": self.width_mult, "resolutions": list(self.resolutions),
                "settings": dict(self.settings), "machine": dict(self.machine),
                "entries": {k: {"median_ms": m, "iqr_ms": q}
                            for k, (m, q) in sorted(self.entries.items())}}


def build_latency_table(space: Any, supernet: Any, resolutions: Iterable[int] | None,
                        settings: LatencySettings, device: torch.device | str = "cpu",
                        progress: Callable[[int, int], None] | None = None) -> LatencyTable:
    """Time every piece of :func:`enumerate_pieces` once with ``settings`` (``torch`` on
    ``device``, ``onnxruntime`` on the CPU); ``progress(done, total)`` after each piece."""
    pieces = enumerate_pieces(space, supernet, resolutions)
    entries: dict[str, tuple[float, float]] = {}
    for i, p in enumerate(pieces, start=1):
        with torch.device("cpu"):
            module = p.piece.build()
        lat = measure_latency(module.eval(), None, settings, device, sample_shape=p.shape)
        entries[p.key] = (lat.median_ms, lat.iqr_ms)
        if progress is not None:
            progress(i, len(pieces))
    res = _check_resolutions(space.resolutions if resolutions is None else resolutions)
    return LatencyTable(family=space.family, width_mult=float(supernet.width_mult),
                        resolutions=res, settings={**settings.as_dict(), "device": str(device)},
                        machine=environment(settings.backend), entries=entries)


def write_table(path: str | Path, table: LatencyTable) -> Path:
    """Write ``table`` as JSON to ``path``, atomically."""
    return write_json(path, table.to_dict())


def _number(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and math.isfinite(value) and value >= 0)


def _table_from(data: Any) -> LatencyTable:
    """The table in ``data`` (a parsed JSON value); a ``ValueError`` saying what is wrong."""
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        raise ValueError(f"its format is not {TABLE_FORMAT!r}")
    if data.get("version") != TABLE_VERSION:
        raise ValueError(f"version {data.get('version')!r}, this natv2 reads {TABLE_VERSION}")
    if data.get("family") not in FAMILIES:
        raise ValueError(f"family {data.get('family')!r} not in {', '.join(FAMILIES)}")
    width = data.get("width_mult")
    if not _number(width) or width <= 0:
        raise ValueError(f"width_mult {width!r} is not a positive number")
    res = data.get("resolutions")
    if (not isinstance(res, list) or not res
            or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in res)):
        raise ValueError(f"resolutions {res!r} are not positive integers")
    settings = data.get("settings")
    if (not isinstance(settings, dict) or set(settings) != {*_SETTING_KEYS, "device"}
            or settings["backend"] not in BACKENDS or not isinstance(settings["device"], str)
            or any(isinstance(settings[k], bool) or not isinstance(settings[k], int)
                   for k in _SETTING_KEYS[1:])):
        raise ValueError(f"settings {settings!r} are not {', '.join(_SETTING_KEYS)} and device")
    LatencySettings(**{k: settings[k] for k in _SETTING_KEYS})
    machine = data.get("machine")
    if not isinstance(machine, dict) or any(not isinstance(v, str) for v in machine.values()):
        raise ValueError("machine is not a mapping of strings")
    entries = data.get("entries")
    if not isinstance(entries, dict) or not entries:
        raise ValueError("it has no entries")
    out: dict[str, tuple[float, float]] = {}
    for key, entry in entries.items():
        if (not isinstance(entry, dict) or set(entry) != {"median_ms", "iqr_ms"}
                or not all(_number(v) for v in entry.values())):
            raise ValueError(f"entry {key[:60]!r} is not non-negative median_ms and iqr_ms")
        out[key] = (float(entry["median_ms"]), float(entry["iqr_ms"]))
    return LatencyTable(family=data["family"], width_mult=float(width),
                        resolutions=tuple(res), settings=dict(settings), machine=dict(machine),
                        entries=out)


def read_table(path: str | Path) -> LatencyTable:
    """The table :func:`write_table` wrote to ``path`` (JSON only, validated); a missing,
    unreadable or malformed file is a one-line ``UserError`` naming it."""
    try:
        data = read_json(path)
    except OSError as exc:
        raise UserError(f"cannot read latency table {path}: {exc.strerror or exc}") from None
    try:
        return _table_from(data)
    except ValueError as exc:  # UserError from LatencySettings included
        raise UserError(f"{path} is not a latency table: {exc}; rebuild it with "
                        f"build_latency_table") from None


def table_error(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, Any]:
    """How far predictions are from measurements: ``mape`` (mean absolute percentage error,
    percent of the measured value), ``kendall_tau`` (``scipy.stats.kendalltau``; ``None`` for
    fewer than 2 points or a constant input) and ``n``."""
    p, m = [float(v) for v in predicted], [float(v) for v in measured]
    if len(p) != len(m) or not p:
        raise UserError(f"table_error: needs as many predicted as measured latencies, at least "
                        f"one; got {len(p)} and {len(m)}")
    if any(not (math.isfinite(v) and v > 0) for v in m) or any(not math.isfinite(v) for v in p):
        raise UserError("table_error: measured latencies must be finite and > 0 and predicted "
                        "ones finite")
    mape = 100.0 * sum(abs(a - b) / b for a, b in zip(p, m, strict=True)) / len(m)
    tau = None
    if len(p) >= 2 and len(set(p)) > 1 and len(set(m)) > 1:
        value = float(kendalltau(p, m).statistic)
        tau = None if math.isnan(value) else value
    return {"mape": mape, "kendall_tau": tau, "n": len(p)}
