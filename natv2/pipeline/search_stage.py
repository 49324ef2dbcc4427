"""Stages ``init_archive`` and ``search_round`` (NAT / NATv2 / random search policies).

``run_init_archive(cfg)`` writes ``<results>/search/round_00/{archive.csv, evaluated.csv,
stats.json}`` from ``<results>/supernet/supernet.pt``. ``run_search_round(cfg, k)`` reads round
``k-1`` (its ``archive.csv`` and ``supernet.pt``; the stage-1 super-network for ``k = 1``) and
writes ``round_KK/{archive.csv, candidates.csv, stats.json, supernet.pt}``. A round is three
steps, also callable one by one for scatter/gather on a cluster (``search.shards > 1``):

1. :func:`propose_candidates` -> ``round_KK/proposed.csv`` (``arch``, ``predicted_top1``) and
   ``round_KK/proposed.json`` (predictor, duplicates dropped, step timings): fit the accuracy
   predictor on the archive, evolve against (predicted error, exact cheap objectives), drop
   architectures already in the archive, subset-select ``candidates`` (topped up with random new
   ones if the search found too few);
2. :func:`evaluate_shard` (``i`` in ``0..shards-1``) -> ``round_KK/shard_I.csv``: evaluate the
   proposed rows ``i::shards`` with the round's input super-network;
3. :func:`finish_round`: gather the shards, update the archive (grow / bounded), adapt the
   super-network on sub-networks sampled from the best archive members (NAT; skipped when
   ``search.adaptation.epochs`` is 0), re-evaluate every archive member with it, write the outputs.

``run_search_round`` runs the three in one process (no intermediate files) with the same result.

``candidates.csv`` holds every real evaluation of the round, with a ``step`` column:
``evaluate`` (the round's candidates, with the input super-network, ``predicted_top1`` set) and
``reevaluate`` (the archive members re-evaluated with the adapted super-network; their ``round``
and ``origin`` are those of the archive row). Round 0's ``evaluated.csv`` holds every evaluation
of the initial archive (NATv2's pre-processing evaluates ``preprocess_factor x n_doe``).

Evaluations go through an append-only cache (:mod:`natv2.pipeline.eval_cache`) keyed by the
sha256 of the evaluated checkpoint and a hash of the data/space settings, so a stage killed and
restarted redoes only the evaluation in progress. The adapted super-network of a round is kept
under ``<results>/cache/adapted/`` until the round's outputs are written, so a kill during the
re-evaluation does not redo the adaptation either.

Hypervolume: objectives are normalised with round 0's ideal (min) and nadir (max) over the
round-0 archive, the reference point is 1.01 x the normalised nadir; all three are stored (raw
units) in round 0's ``stats.json`` and reused by every round, so values are comparable.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from natv2.data import build_splits, data_settings, make_loader
from natv2.errors import UserError
from natv2.files import atomic_write, read_json, write_json
from natv2.measure import Evaluator
from natv2.measure.cost import CostModel, LatencyModel, cheap_objectives_fn
from natv2.pipeline.context import results_path, setup_stage, space_from_config
from natv2.pipeline.eval_cache import (
    CachedEvaluate,
    EvalCache,
    cache_path,
    file_sha256,
    settings_hash,
)
from natv2.search import (
    archive_hypervolume,
    concat_archives,
    init_archive,
    normalize_archive,
    objectives,
    propose,
    rank_metrics,
    read_archive,
    records_to_archive,
    resolve_settings,
    round_seed,
    update_archive,
    write_archive,
)
from natv2.supernet import load_checkpoint, load_supernet, save_checkpoint
from natv2.train.adapt import adapt_supernet
from natv2.train.eps import TrainSettings

#: keys of ``search:`` that override the policy's defaults when not null
POLICY_KEYS = ("candidates", "init", "update", "preprocess_factor", "predictor", "features",
               "repair", "sampler", "pop_size", "n_gen", "crossover_prob", "mutation_eta",
               "subset_pop_size", "subset_n_gen")
STEP_NAMES = ("load", "predictor", "search", "subset", "evaluate", "adapt", "reevaluate")

_MAKE_SUPERNET = "natv2 supernet"
_MAKE_INIT = "natv2 init-archive"


# ------------------------------------------------------------------------------ settings


def search_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved policy settings: ``POLICY_DEFAULTS[policy]`` with every non-null key of the
    config's ``search:`` section, objectives ``["top1", *search.objectives]`` and ``n_doe``."""
    s = cfg["search"]
    out: dict[str, Any] = {"policy": s["policy"], "n_doe": int(s["n_doe"]),
                           "objectives": ["top1", *s["objectives"]]}
    for key in POLICY_KEYS:
        if s.get(key) is not None:
            out[key] = s[key]
    try:
        return resolve_settings(out)
    except ValueError as exc:
        raise UserError(f"search: {exc}") from None


def search_seed(cfg: Mapping[str, Any]) -> int:
    """``search.seed``, or the top-level ``seed`` when it is null. The data split always follows
    the top-level seed, so searches with different ``search.seed`` share super-network and data."""
    seed = cfg["search"].get("seed")
    return int(cfg["seed"] if seed is None else seed)


def _measures_latency(cfg: Mapping[str, Any]) -> bool:
    s = cfg["search"]
    return bool(s["measure_latency"]) or "latency" in s["objectives"]


# --------------------------------------------------------------------------------- paths


def round_dir(cfg: Mapping[str, Any], k: int) -> Path:
    """``<results>/search/round_KK``."""
    return results_path(cfg, "search", f"round_{int(k):02d}")


def supernet_path(cfg: Mapping[str, Any]) -> Path:
    """The stage-1 super-network, ``<results>/supernet/supernet.pt``."""
    return results_path(cfg, "supernet", "supernet.pt")


def _round_maker(k: int) -> str:
    return _MAKE_INIT if k == 0 else f"natv2 search-round --round {k}"


def _require(path: Path, maker: str) -> Path:
    if not Path(path).is_file():
        raise UserError(f"{path} does not exist; run `{maker}` first")
    return Path(path)


def _check_round(cfg: Mapping[str, Any], k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or int(k) < 1:
        raise UserError(f"search round: {k!r} must be an integer >= 1 (round 0 is init-archive)")
    return int(k)


def _input_supernet(cfg: Mapping[str, Any], k: int) -> Path:
    if k == 1:
        return _require(supernet_path(cfg), _MAKE_SUPERNET)
    return _require(round_dir(cfg, k - 1) / "supernet.pt", _round_maker(k - 1))


def _round_inputs(cfg: Mapping[str, Any], k: int) -> tuple[Path, Path, Path]:
    """(previous archive.csv, round 0 stats.json, input supernet.pt), each checked."""
    prev = _require(round_dir(cfg, k - 1) / "archive.csv", _round_maker(k - 1))
    stats0 = _require(round_dir(cfg, 0) / "stats.json", _MAKE_INIT)
    return prev, stats0, _input_supernet(cfg, k)


# ---------------------------------------------------------------------------- the stage


class _Stage:
    """What one stage process holds: config, space, settings, device, the network, the data and
    evaluator (built once, lazily), the cost models and the step timings."""

    def __init__(self, cfg: Mapping[str, Any], label: str, show_progress: bool):
        self.start = time.perf_counter()
        self.cfg = cfg
        self.label = label
        self.show = bool(show_progress)
        self.device = setup_stage(cfg)
        self.space = space_from_config(cfg)
        self.settings = search_settings(cfg)
        self.names: list[str] = list(self.settings["objectives"])
        self.seed = search_seed(cfg)
        self.steps: dict[str, float] = {}
        self.hits = 0
        self.net: torch.nn.Module | None = None
        self.net_sha = ""
        self._splits = None
        self._evaluator: Evaluator | None = None
        self._cost: CostModel | None = None
        self._latency: LatencyModel | None = None
        self.latency_on = _measures_latency(cfg)
        space = self.space
        self.eval_settings = {
            "data": data_settings(cfg),
            "space": {"family": space.family, "resolutions": list(space.resolutions),
                      "widths": list(space.widths), "ks": list(space.ks_list),
                      "e": list(space.expand_list), "d": list(space.depth_list)},
        }

    # --------------------------------------------------------------- timing
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

    # --------------------------------------------------------------- network / data
    def load_net(self, path: Path) -> torch.nn.Module:
        try:
            net = load_supernet(path)
        except UserError:
            raise
        except Exception as exc:  # unreadable file: one line naming it
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"cannot read super-network checkpoint {path}: {first}") from None
        self.net = net.to(self.device).eval()
        self.net_sha = file_sha256(path)
        self._cost = None
        self._latency = None
        if self._evaluator is not None:
            self._evaluator.supernet = self.net
        return self.net

    @property
    def splits(self):
        if self._splits is None:
            self._splits = build_splits(self.cfg, resolution=self.space.resolutions[0],
                                        augment=False)
        return self._splits

    @property
    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = Evaluator(self.net, self.splits, self.device,
                                        self.space.resolutions, encoder=self.space, cfg=self.cfg)
        return self._evaluator

    @property
    def cost(self) -> CostModel:
        if self._cost is None:
            self._cost = CostModel(self.net)
        return self._cost

    @property
    def latency(self) -> LatencyModel:
        if self._latency is None:
            self._latency = LatencyModel(self.net, self.device, self.cfg["search"]["latency_runs"],
                                         key=self.space.encode)
        return self._latency

    def cheap_fn(self):
        return cheap_objectives_fn(self.space, self.names[1:], self.cost,
                                   self.latency if self.latency_on else None)

    # --------------------------------------------------------------- evaluation
    def _record(self, arch: Any) -> dict[str, Any]:
        rec = dict(self.evaluator(arch))
        if self.latency_on:
            rec["latency_ms"] = float(self.latency(arch))
        return rec

    def cached_evaluate(self, net_sha: str, desc: str) -> CachedEvaluate:
        """``evaluate(list[Arch])`` for the loaded network, whose file has sha256 ``net_sha``."""
        cache = EvalCache(cache_path(self.cfg["results_dir"], net_sha,
                                     settings_hash(self.eval_settings)))
        latency_on = self.latency_on
        return CachedEvaluate(
            self._record, cache, key=self.space.encode,
            needs=lambda rec: not latency_on or rec.get("latency_ms") is not None,
            desc=f"[{self.label}] {desc}", show_progress=self.show,
        )

    def evaluate(self, evaluate: CachedEvaluate, archs: list) -> list[dict[str, Any]]:
        records = evaluate(archs)
        self.hits += evaluate.hits
        evaluate.hits = evaluate.misses = 0
        return records

    # --------------------------------------------------------------- training data
    def train_loader(self):
        settings = self.eval_settings["data"]
        dataset = self.splits.dataset("train", max(self.space.resolutions), augment=True)
        batch = int(settings["batch_size"])

        def loader(seed: int):
            torch.manual_seed(seed)  # augmentation draws from torch's global generator
            return make_loader(dataset, batch, shuffle=True, seed=seed,
                               num_workers=settings["num_workers"],
                               drop_last=len(dataset) > batch)

        return loader


# -------------------------------------------------------------------------- hypervolume


def hv_reference_round0(df: pd.DataFrame, names: Sequence[str]) -> dict[str, list[float]]:
    """Ideal (min) and nadir (max) of each objective over the round-0 archive and the reference
    point ``ideal + 1.01 * (nadir - ideal)`` (1.01 x the normalised nadir), raw units."""
    F = objectives(df, list(names))
    ideal, nadir = F.min(axis=0), F.max(axis=0)
    span = np.where(nadir > ideal, nadir - ideal, 1.0)
    return {"ideal": ideal.tolist(), "nadir": nadir.tolist(),
            "reference_point": (ideal + 1.01 * span).tolist()}


def _hv_stats(df: pd.DataFrame, names: Sequence[str], ref: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "hypervolume": archive_hypervolume(df, list(names), ref),
        "reference_point": [float(v) for v in ref["reference_point"]],
        "ideal": [float(v) for v in ref["ideal"]],
        "nadir": [float(v) for v in ref["nadir"]],
        "objectives": list(names),
        "archive_size": int(len(df)),
    }


def _jsonable_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "hv_reference"}


# ---------------------------------------------------------------------- init archive


def run_init_archive(cfg: Mapping[str, Any], show_progress: bool = True) -> dict[str, Any]:
    """Stage ``init_archive``: evaluate the initial architectures of the policy; write
    ``round_00/{archive.csv, evaluated.csv, stats.json}``; returns the stats."""
    net_file = _require(supernet_path(cfg), _MAKE_SUPERNET)
    st = _Stage(cfg, "round 00", show_progress)
    with st.step("load"):
        st.load_net(net_file)
        st.evaluator.calibration(st.space.resolutions[0])
    evaluate = st.cached_evaluate(st.net_sha, "evaluate")
    s = st.settings
    with st.step("evaluate"):
        archive, evaluated = init_archive(
            st.space, s, int(s["n_doe"]), lambda archs: st.evaluate(evaluate, archs),
            seed=st.seed)
    ref = hv_reference_round0(archive, st.names)
    stats = {
        "round": 0,
        **_hv_stats(archive, st.names, ref),
        "n_evaluated": int(len(evaluated)),
        "n_kept": int(len(archive)),
        "duplicates_dropped": 0,
        "cache_hits": int(st.hits),
        "policy": _jsonable_settings(s),
        "supernet_sha256": st.net_sha,
        "steps": dict(st.steps),
    }
    out = round_dir(cfg, 0)
    write_archive(evaluated, out / "evaluated.csv")
    write_archive(archive, out / "archive.csv")
    stats["seconds"] = st.elapsed()
    write_json(out / "stats.json", stats)
    return stats


# ---------------------------------------------------------------------- round steps


def _propose(st: _Stage, archive_df: pd.DataFrame, k: int) -> tuple[pd.DataFrame, dict]:
    """Predictor + evolutionary search + subset selection: the round's candidates (not yet
    evaluated) as a frame ``arch, predicted_top1`` and a description of the step."""
    s = st.settings
    name = s["predictor"]
    cheap_fn = None if name in (None, "random", "none") else st.cheap_fn()
    prop = propose(st.space, archive_df, s, name, cheap_fn, round_seed(st.seed, k), st.step)
    meta: dict[str, Any] = {"predictor": None, "duplicates_dropped": 0,
                            "n_search_population": 0}
    if prop.predictor is not None:
        predictor = prop.predictor
        meta["predictor"] = {"name": predictor.name,
                             **({"chosen": predictor.chosen} if hasattr(predictor, "chosen")
                                else {})}
        meta["duplicates_dropped"] = prop.n_population - prop.n_new
        meta["n_search_population"] = prop.n_population
    proposed = pd.DataFrame({"arch": [st.space.encode(a) for a in prop.archs],
                             "predicted_top1": pd.Series(prop.predicted, dtype="float64")})
    return proposed, meta


def _evaluate_proposed(st: _Stage, proposed: pd.DataFrame, k: int, desc: str) -> pd.DataFrame:
    """Evaluate proposed rows with the loaded (input) network: archive rows, origin candidate."""
    archs = [st.space.decode(a) for a in proposed["arch"]]
    evaluate = st.cached_evaluate(st.net_sha, desc)
    records = st.evaluate(evaluate, archs)
    return records_to_archive(st.space, archs, records, round_k=k, origin="candidate",
                              predicted_top1=proposed["predicted_top1"].to_numpy(dtype=float))


def _train_settings(cfg: Mapping[str, Any]) -> TrainSettings:
    t = cfg["supernet"]["train"]
    return TrainSettings(phases={}, kd_ratio=float(cfg["search"]["adaptation"]["kd_ratio"]),
                         label_smoothing=float(t["label_smoothing"]),
                         momentum=float(t["momentum"]), weight_decay=float(t["weight_decay"]),
                         progressive_teacher=bool(t["progressive_teacher"]),
                         ensemble_weights=tuple(t["ensemble_weights"]), seed=search_seed(cfg))


def _adapted_path(st: _Stage, archive_df: pd.DataFrame, k: int) -> Path:
    """Where the adapted network of this round waits until the round's outputs are written,
    named by everything that determines it."""
    key = settings_hash({
        "input": st.net_sha, "round": k, "seed": st.seed, "eval": st.eval_settings,
        "adaptation": dict(st.cfg["search"]["adaptation"]),
        "train": {k2: v for k2, v in st.cfg["supernet"]["train"].items() if k2 != "phases"},
        "policy": _jsonable_settings(st.settings),
        "archive": archive_df.to_csv(index=False),
    })
    return results_path(st.cfg, "cache", "adapted", f"round_{k:02d}-{key[:24]}.pt")


def _finish(st: _Stage, k: int, archive_df: pd.DataFrame, cand: pd.DataFrame, meta: dict,
            net_file: Path, ref: Mapping[str, Any]) -> dict[str, Any]:
    """Update the archive, adapt, re-evaluate, write the round's outputs; returns the stats."""
    s = st.settings
    cfg = st.cfg
    rseed = round_seed(st.seed, k)
    new_archive = update_archive(archive_df, cand, s["update"], int(s["n_doe"]), st.names,
                                 seed=rseed)
    kept = set(new_archive["arch"])
    evaluated = [cand.assign(step="evaluate")]
    adaptation = cfg["search"]["adaptation"]
    adapt_record: dict[str, Any] = {"epochs": 0}
    adapted = None
    n_reevaluated = 0
    if int(adaptation["epochs"]) > 0:
        adapted = _adapted_path(st, new_archive, k)
        with st.step("adapt"):
            if adapted.is_file():  # a killed run adapted already: reuse its network
                load_checkpoint(st.net, adapted)
                adapt_record = {"epochs": int(adaptation["epochs"]), "reused": True}
            else:
                adapt_record = adapt_supernet(
                    st.net, st.space, new_archive, st.names, st.train_loader(), adaptation,
                    _train_settings(cfg), st.device, seed=round_seed(st.seed, k, 3),
                    repair=s["repair"], show_progress=st.show)
                save_checkpoint(st.net, adapted, extra={"round": k, "adaptation": {
                    key: v for key, v in adapt_record.items()
                    if isinstance(v, int | float | str)}})
            st.net.eval()
        with st.step("reevaluate"):
            archs = [st.space.decode(a) for a in new_archive["arch"]]
            evaluate = st.cached_evaluate(file_sha256(adapted), "reevaluate")
            records = st.evaluate(evaluate, archs)
            new_archive = new_archive.copy()
            new_archive["top1"] = [float(r["top1"]) for r in records]
            if st.latency_on:
                new_archive["latency_ms"] = [float(r["latency_ms"]) for r in records]
            new_archive = normalize_archive(new_archive)
            evaluated.append(new_archive.assign(step="reevaluate"))
            n_reevaluated = len(records)
    stats: dict[str, Any] = {
        "round": int(k),
        **_hv_stats(new_archive, st.names, ref),
        "n_evaluated": int(len(cand) + n_reevaluated),
        "n_candidates": int(len(cand)),
        "n_reevaluated": int(n_reevaluated),
        "n_kept": int(sum(a in kept for a in cand["arch"])),
        "duplicates_dropped": int(meta.get("duplicates_dropped", 0)),
        "n_search_population": int(meta.get("n_search_population", 0)),
        "cache_hits": int(st.hits),
        "adaptation": adapt_record,
        "policy": _jsonable_settings(s),
        "input_supernet_sha256": st.net_sha,
    }
    if meta.get("predictor"):
        stats["predictor"] = {
            **meta["predictor"],
            **rank_metrics(cand["top1"].to_numpy(), cand["predicted_top1"].to_numpy()),
        }
    out = round_dir(cfg, k)
    out.mkdir(parents=True, exist_ok=True)
    source = adapted if adapted is not None else net_file
    atomic_write(out / "supernet.pt", lambda tmp: shutil.copyfile(source, tmp))
    candidates = concat_archives(evaluated)
    write_archive(candidates, out / "candidates.csv")
    write_archive(new_archive, out / "archive.csv")
    stats["steps"] = {name: float(st.steps.get(name, 0.0)) for name in STEP_NAMES}
    stats["seconds"] = round(float(meta.get("seconds_before", 0.0)) + st.elapsed(), 3)
    write_json(out / "stats.json", stats)
    if adapted is not None:
        adapted.unlink(missing_ok=True)
    return stats


def _open_round(cfg: Mapping[str, Any], k: int, inputs: tuple[Path, Path, Path], suffix: str,
                show_progress: bool) -> tuple[_Stage, pd.DataFrame, dict]:
    """The stage of a round step, with the previous archive, round 0's hypervolume reference
    (checked against the config's objectives) and the input network loaded. ``inputs``:
    :func:`_round_inputs`, checked by the caller before any set-up."""
    prev, stats0, net_file = inputs
    st = _Stage(cfg, f"round {k:02d}{suffix}", show_progress)
    with st.step("load"):
        archive_df = read_archive(prev)
        ref = _read_reference(stats0, st.names)
        st.load_net(net_file)
    return st, archive_df, ref


def _read_reference(stats0: Path, names: list[str]) -> dict:
    ref = read_json(stats0)
    missing = [key for key in ("ideal", "nadir", "reference_point") if key not in ref]
    if missing:
        raise UserError(f"{stats0} lacks {missing}; rerun `{_MAKE_INIT}`")
    if list(ref.get("objectives", names)) != names:
        raise UserError(f"{stats0} was made for objectives {ref.get('objectives')}, the config "
                        f"asks for {names}; rerun `{_MAKE_INIT}`")
    return ref


# ------------------------------------------------------------------------ public stages


def run_search_round(cfg: Mapping[str, Any], k: int, show_progress: bool = True
                     ) -> dict[str, Any]:
    """Stage ``search_round`` for round ``k >= 1``, all steps in this process; returns stats."""
    k = _check_round(cfg, k)
    inputs = _round_inputs(cfg, k)
    st, archive_df, ref = _open_round(cfg, k, inputs, "", show_progress)
    proposed, meta = _propose(st, archive_df, k)
    with st.step("evaluate"):
        cand = _evaluate_proposed(st, proposed, k, "evaluate")
    return _finish(st, k, archive_df, cand, meta, inputs[2], ref)


def proposed_paths(cfg: Mapping[str, Any], k: int) -> tuple[Path, Path]:
    """``round_KK/proposed.csv`` and ``round_KK/proposed.json``."""
    d = round_dir(cfg, k)
    return d / "proposed.csv", d / "proposed.json"


def shard_path(cfg: Mapping[str, Any], k: int, i: int) -> Path:
    """``round_KK/shard_I.csv``."""
    return round_dir(cfg, k) / f"shard_{int(i)}.csv"


def propose_candidates(cfg: Mapping[str, Any], k: int, show_progress: bool = True
                       ) -> pd.DataFrame:
    """Scatter step 1: write ``round_KK/proposed.csv`` (+ ``proposed.json``); returns the frame."""
    k = _check_round(cfg, k)
    st, archive_df, _ = _open_round(cfg, k, _round_inputs(cfg, k), " propose", show_progress)
    proposed, meta = _propose(st, archive_df, k)
    csv_path, json_path = proposed_paths(cfg, k)
    atomic_write(csv_path, lambda tmp: proposed.to_csv(tmp, index=False, na_rep=""))
    write_json(json_path, {**meta, "steps": dict(st.steps), "seconds": st.elapsed()})
    return proposed


def _read_proposed(cfg: Mapping[str, Any], k: int) -> tuple[pd.DataFrame, dict]:
    csv_path, json_path = proposed_paths(cfg, k)
    maker = f"natv2 search-round --round {k} --step propose"
    _require(csv_path, maker)
    _require(json_path, maker)
    extra = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
    df = pd.read_csv(csv_path, dtype={"arch": str}, keep_default_na=False, na_values=[""],
                     **extra)
    df["predicted_top1"] = pd.to_numeric(df["predicted_top1"]).astype("float64")
    return df, read_json(json_path)


def evaluate_shard(cfg: Mapping[str, Any], k: int, i: int, show_progress: bool = True
                   ) -> pd.DataFrame:
    """Scatter step 2: evaluate proposed rows ``i::shards``; write ``round_KK/shard_I.csv``."""
    k = _check_round(cfg, k)
    shards = int(cfg["search"]["shards"])
    if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= int(i) < shards:
        raise UserError(f"shard: {i!r} must be an integer in 0..{shards - 1} "
                        f"(search.shards = {shards})")
    i = int(i)
    proposed, _ = _read_proposed(cfg, k)
    net_file = _input_supernet(cfg, k)
    st = _Stage(cfg, f"round {k:02d} shard {i}", show_progress)
    with st.step("load"):
        st.load_net(net_file)
    with st.step("evaluate"):
        cand = _evaluate_proposed(st, proposed.iloc[i::shards].reset_index(drop=True), k,
                                  "evaluate")
    cand["shard_seconds"] = st.elapsed()
    write_archive(cand, shard_path(cfg, k, i))
    return cand


def finish_round(cfg: Mapping[str, Any], k: int, show_progress: bool = True) -> dict[str, Any]:
    """Gather step 3: read the shards, update the archive, adapt, re-evaluate, write the round's
    ``archive.csv``, ``candidates.csv``, ``stats.json`` and ``supernet.pt``; returns stats."""
    k = _check_round(cfg, k)
    inputs = _round_inputs(cfg, k)
    shards = int(cfg["search"]["shards"])
    proposed, meta = _read_proposed(cfg, k)
    paths = [_require(shard_path(cfg, k, i),
                      f"natv2 search-round --round {k} --step evaluate --shard {i}")
             for i in range(shards)]
    st, archive_df, ref = _open_round(cfg, k, inputs, " finish", show_progress)
    with st.step("load"):
        parts = [read_archive(p) for p in paths]
    for name, seconds in (meta.get("steps") or {}).items():
        if name != "load":
            st.steps[name] = round(st.steps.get(name, 0.0) + float(seconds), 3)
    shard_seconds = sum(float(p["shard_seconds"].iloc[0]) for p in parts
                        if len(p) and "shard_seconds" in p)
    st.steps["evaluate"] = round(shard_seconds, 3)
    cand = concat_archives(parts)
    cand = cand.drop(columns=[c for c in ("shard_seconds",) if c in cand.columns])
    order = {a: n for n, a in enumerate(proposed["arch"])}
    if sorted(cand["arch"]) != sorted(proposed["arch"]):
        raise UserError(f"the shard files of round {k} do not match {proposed_paths(cfg, k)[0]}; "
                        f"rerun `natv2 search-round --round {k} --step evaluate` for every shard")
    cand = normalize_archive(cand.iloc[np.argsort([order[a] for a in cand["arch"]],
                                                  kind="stable")])
    meta = {**meta, "seconds_before": float(meta.get("seconds", 0.0)) + shard_seconds}
    return _finish(st, k, archive_df, cand, meta, inputs[2], ref)


__all__ = [
    "POLICY_KEYS",
    "STEP_NAMES",
    "evaluate_shard",
    "finish_round",
    "hv_reference_round0",
    "propose_candidates",
    "proposed_paths",
    "round_dir",
    "run_init_archive",
    "run_search_round",
    "search_seed",
    "search_settings",
    "shard_path",
    "supernet_path",
]

