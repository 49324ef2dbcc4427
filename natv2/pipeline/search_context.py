"""What one search-stage process holds: settings, the loaded super-network, data and evaluation.

:class:`SearchContext` is built once per stage process from the config: device and threads, the
search space, the :class:`~natv2.search.policy.Policy`, the search seed, the results layout and
the step timings. The super-network is loaded explicitly (:meth:`SearchContext.load`), which
returns a :class:`LoadedNet` holding everything that depends on those weights (the file's
sha256, the cost and latency models); loading another file replaces it and points the evaluator
at the new network in the same call, so nothing is invalidated by hand. The data splits and the
evaluator, which do not depend on the weights, are built on first use (a propose step needs
neither).

Evaluations go through an append-only cache (:mod:`natv2.pipeline.eval_cache`) keyed by the
sha256 of the evaluated checkpoint and a hash of the data/space settings, so a stage killed and
restarted redoes only the evaluation in progress.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from natv2.data import DataSettings, build_splits, make_loader
from natv2.distributed import SINGLE, World
from natv2.errors import UserError
from natv2.files import file_sha256, first_line
from natv2.layout import Layout
from natv2.measure import Evaluator
from natv2.measure.cost import CostModel, LatencyModel, cheap_objectives_fn
from natv2.measure.latency import LatencySettings
from natv2.measure.latency_table import table_error
from natv2.pipeline.context import setup_stage, space_from_config
from natv2.pipeline.dag import uses_latency_table
from natv2.pipeline.eval_cache import CachedEvaluate, EvalCache, settings_hash
from natv2.pipeline.latency_stage import load_latency_table
from natv2.search.policy import Policy
from natv2.supernet import load_supernet
from natv2.targets import constraint_fn, needs_latency, targets_from_config

STEP_NAMES = ("load", "predictor", "search", "subset", "evaluate", "adapt", "reevaluate")


def search_seed(cfg: Mapping[str, Any]) -> int:
    """``search.seed``, or the top-level ``seed`` when it is null. The data split always follows
    the top-level seed, so searches with different ``search.seed`` share super-network and data."""
    seed = cfg["search"].get("seed")
    return int(cfg["seed"] if seed is None else seed)


def policy_from_config(cfg: Mapping[str, Any]) -> Policy:
    try:
        return Policy.from_config(cfg)
    except ValueError as exc:
        raise UserError(f"search: {exc}") from None


@dataclass
class LoadedNet:
    """A super-network loaded from ``path`` and what depends on its weights."""

    net: torch.nn.Module
    path: Path
    sha256: str
    cost: CostModel
    latency: LatencyModel


class SearchContext:
    """Config, space, policy, device, layout, timings and the loaded super-network of a stage."""

    def __init__(self, cfg: Mapping[str, Any], label: str, show_progress: bool, world: World = SINGLE):
        self.start = time.perf_counter()
        self.cfg = cfg
        self.label = label
        self.world = world  # the data-parallel processes of the adaptation (natv2.distributed)
        self.show = bool(show_progress) and world.writer
        self.device = world.device(setup_stage(cfg))
        self.space = space_from_config(cfg)
        self.layout = Layout.from_config(cfg)
        self.policy = policy_from_config(cfg)
        self.names: list[str] = list(self.policy.objectives)
        self.seed = search_seed(cfg)
        self.steps: dict[str, float] = {}
        self.hits = 0
        self.loaded: LoadedNet | None = None
        self.data = DataSettings.from_config(cfg)
        self.targets = targets_from_config(cfg)
        self.latency_on = (bool(cfg["search"]["measure_latency"]) or "latency" in self.names
                           or needs_latency(self.targets))
        space = self.space
        self.eval_settings = {
            "data": self.data.as_dict(),
            "space": {"family": space.family, "resolutions": list(space.resolutions),
                      "widths": list(space.widths), "ks": list(space.ks_list),
                      "e": list(space.expand_list), "d": list(space.depth_list)},
        }
        self.latency_settings = LatencySettings.from_config(cfg)
        if cfg["search"]["accuracy"] != "fp32":  # another accuracy: other cached records
            self.eval_settings["accuracy"] = cfg["search"]["accuracy"]
        if self.latency_on:  # a latency is reused only for the same settings on the same machine
            self.eval_settings["latency"] = self.latency_settings.cache_key(self.device)

    # --------------------------------------------------------------------- timing
    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.steps[name] = round(self.steps.get(name, 0.0) + dt, 3)
            if self.show:
                tqdm.write(f"[{self.label}] {name}: {dt:.1f} s")

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.start, 3)

    # -------------------------------------------------------------------- network
    def load(self, path: Path) -> LoadedNet:
        """Load the super-network at ``path`` (our checkpoint format) and make it the one every
        evaluation, cost and latency of this context uses."""
        try:  # an unreadable file is a UserError from load_supernet already
            net = load_supernet(path)
        except (OSError, KeyError, TypeError) as exc:  # a checkpoint of ours missing parts
            raise UserError(f"cannot read super-network checkpoint {path}: {first_line(exc)}"
                            ) from None
        net = net.to(self.device).eval()
        self.loaded = LoadedNet(
            net, Path(path), file_sha256(path), CostModel(net),
            LatencyModel(net, self.device, self.latency_settings, key=self.space.encode))
        if "evaluator" in self.__dict__:  # built for the previous network: point it here
            self.evaluator.supernet = net
        return self.loaded

    @property
    def net(self) -> torch.nn.Module:
        if self.loaded is None:
            raise RuntimeError("no super-network loaded (call load first)")
        return self.loaded.net

    def cheap_fn(self):
        """Cheap objectives of integer vectors for the evolution (loaded network): exact params
        and MACs; latency from the lookup table where the search uses one, else measured."""
        lat = self.loaded.latency if self.latency_on else None
        if self.latency_table is not None:
            table, net, encode, memo = self.latency_table, self.net, self.space.encode, {}

            def lat(arch: Any) -> float:
                key = encode(arch)
                if key not in memo:
                    memo[key] = table.predict(arch, net)
                return memo[key]
        return cheap_objectives_fn(self.space, self.names[1:], self.loaded.cost, lat)

    @functools.cached_property
    def latency_table(self):
        """The latency lookup table (``natv2.pipeline.latency_stage``), or ``None``."""
        if not uses_latency_table(self.cfg):
            return None
        return load_latency_table(self.cfg, self.device)

    def latency_table_error(self, cand: pd.DataFrame) -> dict[str, Any] | None:
        """The table's error on the round's candidates, whose latency was measured: MAPE,
        Kendall tau and the (predicted, measured) points; ``None`` without a table."""
        if self.latency_table is None or len(cand) == 0:
            return None
        measured = [float(v) for v in cand["latency_ms"]]
        predicted = [self.latency_table.predict(self.space.decode(a), self.net) for a in cand["arch"]]
        return {**table_error(predicted, measured),
                "points": [[round(p, 6), round(m, 6)] for p, m in zip(predicted, measured, strict=True)]}

    def constraint(self):
        """The evolution's target constraint (``search.target_constraints``), or ``None``."""
        if not self.cfg["search"]["target_constraints"]:
            return None
        return constraint_fn(self.targets, self.names[1:])

    # ----------------------------------------------------------------------- data
    @functools.cached_property
    def splits(self):
        return build_splits(self.data, self.space.resolutions[0], augment=False)

    @functools.cached_property
    def evaluator(self) -> Evaluator:
        return Evaluator(self.net, self.splits, self.device, self.space.resolutions,
                         encoder=self.space, int8=self.cfg["search"]["accuracy"] == "int8",
                         threads=self.latency_settings.threads)

    def train_loader(self):
        """``loader(seed)``: one shuffled, augmented pass over the training split at the
        largest resolution (seeds torch's global generator, which draws the augmentation)."""
        settings = self.splits.settings
        dataset = self.splits.dataset("train", max(self.space.resolutions), augment=True)
        batch = int(settings.batch_size)

        def loader(seed: int):
            torch.manual_seed(seed)
            return make_loader(dataset, batch, shuffle=True, seed=seed,
                               num_workers=settings.num_workers,
                               drop_last=len(dataset) > batch)

        return loader

    # ----------------------------------------------------------------- evaluation
    def _record(self, arch: Any) -> dict[str, Any]:
        rec = dict(self.evaluator(arch))
        if self.latency_on:
            measured = self.loaded.latency.measure(arch)
            rec["latency_ms"], rec["latency_iqr_ms"] = measured.median_ms, measured.iqr_ms
        return rec

    def cached_evaluate(self, net_sha: str, desc: str) -> CachedEvaluate:
        """``evaluate(list[Arch])`` for the loaded network, whose file has sha256 ``net_sha``."""
        cache = EvalCache(self.layout.eval_cache(net_sha, settings_hash(self.eval_settings)))
        latency_on = self.latency_on
        return CachedEvaluate(
            self._record, cache, key=self.space.encode,
            needs=lambda rec: not latency_on or rec.get("latency_ms") is not None,
            desc=f"[{self.label}] {desc}", show_progress=self.show,
        )

    def evaluate(self, net_sha: str, desc: str, archs: list) -> list[dict[str, Any]]:
        """Records of ``archs`` with the loaded network (cached under ``net_sha``)."""
        evaluate = self.cached_evaluate(net_sha, desc)
        records = evaluate(archs)
        self.hits += evaluate.hits
        return records
