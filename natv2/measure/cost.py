"""Cheap objectives fast: exact parameter / MAC counts without extracting weights, and
memoised latency.

The evolutionary search asks for the cheap objectives of thousands of architectures per round;
``count_params(net.extract(arch))`` + ``count_macs(...)`` copies weights and runs a forward
(~0.1-0.2 s per architecture on a CPU), far too slow for that. :class:`CostModel` gives the same
integers from the super-network's ``static_config(arch)`` alone:

* the static network is a chain of *pieces* (stem, blocks, final expand, pool, feature mix,
  flatten, classifier): :func:`natv2.supernet.static.static_pieces`, the very list
  :class:`~natv2.supernet.static.StaticNet` is built from; each distinct piece (by its
  ``spec``) is built once, on PyTorch's ``meta`` device (shapes, no storage, no
  initialisation), and counted with the same counters as :func:`~natv2.measure.count_params` /
  :func:`~natv2.measure.count_macs` (``FlopCounterMode``; MACs = FLOPs // 2); the MAC count of
  a piece is memoised per input size and the piece's output size comes from the same meta
  forward;
* an architecture's counts are the sums over its pieces, memoised per architecture.

So the numbers are exactly those of the extracted network, whatever the block does inside: a
parallel-branch (P) block built by :class:`~natv2.supernet.layers.Block` from its config is
counted with its branches; dense skips (D) are additions, which neither hold parameters nor
count as MACs. A static config that is not one chain (``is_chain``: the early-exit heads of a
multi-exit network branch off it) falls back to building the *whole* static network on the meta
device and counting it (exact, slower, still memoised per architecture and weight-free).

Latency (:class:`LatencyModel`) must be measured: it extracts the sub-network and times it
(:func:`~natv2.measure.latency_ms`), once per distinct architecture. It is slow (milliseconds
to seconds per architecture) and noisy (other processes, CPU frequency, GPU clocks): an
architecture keeps the first value measured for it, so a search sees one consistent number
per architecture, but two runs will not agree exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from natv2.supernet.static import build_static, is_chain, static_pieces

from .counting import count_params
from .latency import Latency, LatencySettings, measure_latency

META = torch.device("meta")


def _freeze(value: Any) -> Hashable:
    """A hashable key for a JSON-like value (dicts sorted by key)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _flops_forward(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Size]:
    """``(MACs, output shape)`` of one forward of ``module`` on ``x`` (meta tensors)."""
    module.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = module(x)
    flops = int(counter.get_total_flops())
    if flops % 2:
        raise AssertionError(f"FlopCounterMode returned an odd FLOP count {flops}")
    return flops // 2, out.shape


class CostModel:
    """Exact ``params(arch)`` / ``macs(arch)`` of ``supernet.extract(arch)``, without extracting.

    ``supernet`` needs ``static_config(arch)`` (a :class:`~natv2.supernet.SuperNet`); its
    weights are never read. ``arch`` is anything ``static_config`` accepts (an ``Arch``); MACs
    are at ``arch.resolution`` unless ``resolution`` is given. Caches live on the instance.
    """

    def __init__(self, supernet: Any, in_channels: int = 3):
        self.supernet = supernet
        self.in_channels = int(in_channels)
        self._params: dict[Hashable, int] = {}
        self._macs: dict[tuple[Hashable, tuple[int, ...]], tuple[int, tuple[int, ...]]] = {}
        self._arch: dict[Hashable, tuple[int, int]] = {}

    # ------------------------------------------------------------------ pieces
    def _piece(self, key: Hashable, build: Callable[[], nn.Module],
               shape: tuple[int, ...]) -> tuple[int, int, tuple[int, ...]]:
        """(params, MACs, output shape) of one piece on an input of ``shape`` (memoised)."""
        hit = self._macs.get((key, shape))
        if hit is None or key not in self._params:
            with torch.device(META):
                module = build()
            self._params[key] = count_params(module)
            macs, out = _flops_forward(module, torch.zeros(shape, device=META))
            hit = self._macs[(key, shape)] = (macs, tuple(out))
        return self._params[key], hit[0], hit[1]

    def _whole(self, config: dict[str, Any], resolution: int) -> tuple[int, int]:
        """Fallback: build the whole static network on the meta device and count it."""
        with torch.device(META):
            net = build_static(config)
        macs, _ = _flops_forward(net, torch.zeros(1, self.in_channels, resolution, resolution,
                                                  device=META))
        return count_params(net), macs

    # ------------------------------------------------------------------ public
    def counts(self, arch: Any, resolution: int | None = None) -> tuple[int, int]:
        """``(params, MACs)`` of the sub-network ``arch`` at ``resolution`` (default
        ``arch.resolution``)."""
        r = int(arch.resolution if resolution is None else resolution)
        memo = (_freeze(arch.to_ofa()) if hasattr(arch, "to_ofa") else _freeze(arch),
                getattr(arch, "nd", None), _freeze(getattr(arch, "nw", None)), r)
        hit = self._arch.get(memo)
        if hit is not None:
            return hit
        config = self.supernet.static_config(arch)
        if not is_chain(config):
            result = self._whole(config, r)
        else:
            params = macs = 0
            shape: tuple[int, ...] = (1, self.in_channels, r, r)
            for piece in static_pieces(config):
                p, m, shape = self._piece(_freeze(piece.spec), piece.build, shape)
                params += p
                macs += m
            result = (params, macs)
        self._arch[memo] = result
        return result

    def params(self, arch: Any) -> int:
        """Parameters of ``supernet.extract(arch)`` (equal to ``count_params`` of it)."""
        return self.counts(arch)[0]

    def macs(self, arch: Any, resolution: int | None = None) -> int:
        """MACs of ``supernet.extract(arch)`` at ``resolution`` (equal to ``count_macs``)."""
        return self.counts(arch, resolution)[1]


class LatencyModel:
    """Measured latency (ms, :func:`~natv2.measure.latency.measure_latency` with ``settings``)
    per distinct architecture, memoised (slow and noisy)."""

    def __init__(self, supernet: Any, device: torch.device | str = "cpu",
                 settings: LatencySettings | None = None,
                 key: Callable[[Any], Hashable] | None = None):
        self.supernet = supernet
        self.device = torch.device(device)
        self.settings = settings or dataclasses.replace(LatencySettings.from_config({}),
                                                        threads=torch.get_num_threads())
        self.key = key or (lambda arch: arch)
        self._memo: dict[Hashable, Latency] = {}

    def measure(self, arch: Any) -> Latency:
        k = self.key(arch)
        if k not in self._memo:
            sub = self.supernet.extract(arch)
            self._memo[k] = measure_latency(sub, int(arch.resolution), self.settings, self.device)
        return self._memo[k]

    def __call__(self, arch: Any) -> float:
        return self.measure(arch).median_ms


def cheap_objectives_fn(space: Any, names: Sequence[str], cost: CostModel,
                        latency: Callable[[Any], float] | None = None,
                        ) -> Callable[[np.ndarray], np.ndarray]:
    """``cheap_fn(X) -> (n, len(names))`` for the search: ``names`` among params, macs (flops),
    latency (latency_ms) of the architectures of the integer vectors ``X``."""
    names = list(names)
    for name in names:
        if name not in ("params", "macs", "flops", "latency", "latency_ms"):
            raise ValueError(f"cheap objective {name!r} not in params, macs, latency")
    if any(n.startswith("latency") for n in names) and latency is None:
        raise ValueError("the latency objective needs a latency model")

    def one(arch: Any) -> list[float]:
        row = []
        for name in names:
            if name == "params":
                row.append(float(cost.params(arch)))
            elif name in ("macs", "flops"):
                row.append(float(cost.macs(arch)))
            else:
                row.append(float(latency(arch)))  # type: ignore[misc]
        return row

    def cheap_fn(X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=int))
        if len(X) == 0:
            return np.empty((0, len(names)))
        return np.array([one(space.from_vector(x)) for x in X], dtype=float)

    return cheap_fn

