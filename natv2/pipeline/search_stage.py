"""Stages ``init_archive`` and ``search_round`` (NAT / NATv2 / random search policies).

``run_init_archive(cfg)`` writes ``round_00/{archive.csv, evaluated.csv, stats.json}`` from the
stage-1 super-network. ``run_search_round(cfg, k)`` reads round ``k-1`` (its ``archive.csv`` and
``supernet.pt``; the stage-1 super-network for ``k = 1``) and writes ``round_KK/{archive.csv,
candidates.csv, stats.json, supernet.pt}`` (paths: :class:`natv2.layout.Layout`). A round is
:func:`natv2.search.round.run_round` (propose, evaluate, update the archive) followed by the
super-network adaptation and the re-evaluation of the archive (:mod:`natv2.pipeline.adaptation`).
For scatter/gather on a cluster (``search.shards > 1``) the same steps run one by one:

1. :func:`propose_candidates` -> ``proposed.csv`` (``arch``, ``predicted_top1``) and
   ``proposed.json`` (predictor, duplicates dropped, step timings);
2. :func:`evaluate_shard` (``i`` in ``0..shards-1``) -> ``shard_I.csv``: the proposed rows
   ``i::shards`` evaluated with the round's input super-network;
3. :func:`finish_round`: gather the shards, update the archive, adapt, re-evaluate, write.

``candidates.csv`` holds every real evaluation of the round, with a ``step`` column:
``evaluate`` (the round's candidates, with the input super-network, ``predicted_top1`` set) and
``reevaluate`` (the archive members re-evaluated with the adapted super-network; their ``round``
and ``origin`` are those of the archive row). Round 0's ``evaluated.csv`` holds every evaluation
of the initial archive (NATv2's pre-processing evaluates ``preprocess_factor x n_doe``).

Hypervolume (:mod:`natv2.search.hypervolume`, the thesis' ``calc_hv``, and a min-max normalised
one named ``hypervolume_normalised``): the reference is built from the round-0 archive, stored in
round 0's ``stats.json`` and reused by every round, so values are comparable.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from natv2.distributed import SINGLE, World, joined
from natv2.errors import UserError
from natv2.files import atomic_write, check_writable, read_json, write_json
from natv2.layout import SUPERNET_COMMAND, Layout, round_command, round_name
from natv2.measure import resolve_device
from natv2.pipeline.adaptation import adapt_and_reevaluate, follow_adaptation
from natv2.pipeline.context import check_search_fits
from natv2.pipeline.lock import stage_lock
from natv2.pipeline.search_context import STEP_NAMES, SearchContext, search_seed
from natv2.records import check_recorded, open_set, record_files
from natv2.search import concat_archives, normalize_archive, read_archive, write_archive
from natv2.search.hypervolume import MARGIN, Reference, hypervolume_stats
from natv2.search.round import (
    candidate_rows,
    predictor_stats,
    proposal_frame,
    propose,
    run_round,
)
from natv2.seeds import round_seed

_MAKE_SUPERNET = SUPERNET_COMMAND
_MAKE_INIT = round_command(0)
_round_maker = round_command


def _require(path: Path, maker: str) -> Path:
    if not Path(path).is_file():
        raise UserError(f"{path} does not exist; run `{maker}` first")
    return Path(path)


def _check_round(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or int(k) < 1:
        raise UserError(f"search round: {k!r} must be an integer >= 1 (round 0 is init-archive)")
    return int(k)


def _input_supernet(layout: Layout, k: int) -> Path:
    """Round ``k``'s input super-network, checked against the record of the stage that wrote it
    (``supernet.json`` for round 1, round ``k - 1``'s ``stats.json`` after)."""
    if k == 1:
        return check_recorded(layout.supernet, layout.supernet_json, _MAKE_SUPERNET)
    return check_recorded(layout.round_supernet(k - 1), layout.stats(k - 1), _round_maker(k - 1))


def _round_lock(layout: Layout, k: int, name: str | None = None, active: bool = True):
    """The lock of round ``k``'s set (``name``: a part of it written on its own, a shard)."""
    name = name or round_name(k)
    return stage_lock(layout.lock(name), str(layout.round_dir(k)), active)


def _check_room(layout: Layout, k: int, net_file: Path | None) -> None:
    """Before the expensive work: the round folder and the cache are writable and have room for
    the round's copy of the super-network and the adapted one waiting in the cache."""
    need = 2 * net_file.stat().st_size if net_file is not None else 0
    check_writable(layout.round_dir(k), need)
    check_writable(layout.root / "cache")


def _round_inputs(cfg: Mapping[str, Any], k: int) -> tuple[Path, Path, Path]:
    """(previous archive.csv, round 0 stats.json, input supernet.pt), each checked."""
    layout = Layout.from_config(cfg)
    prev = check_recorded(layout.archive(k - 1), layout.stats(k - 1), _round_maker(k - 1))
    stats0 = _require(layout.stats(0), _MAKE_INIT)
    return prev, stats0, _input_supernet(layout, k)


def _read_reference(stats0: Path, names: list[str]) -> Reference:
    ref = read_json(stats0, _MAKE_INIT)
    missing = [key for key in ("ideal", "nadir", "reference_point") if key not in ref]
    if missing:
        raise UserError(f"{stats0} lacks {missing}; rerun `{_MAKE_INIT}`")
    if not np.allclose(ref["reference_point"], MARGIN * np.asarray(ref["nadir"], dtype=float)):
        raise UserError(f"{stats0} holds a reference point of an older hypervolume rule (not "
                        f"{MARGIN} x nadir); rerun `{_MAKE_INIT}`")
    if list(ref.get("objectives", names)) != names:
        raise UserError(f"{stats0} was made for objectives {ref.get('objectives')}, the config "
                        f"asks for {names}; rerun `{_MAKE_INIT}`")
    return Reference.from_dict(ref)


# ---------------------------------------------------------------------- init archive


def run_init_archive(cfg: Mapping[str, Any], show_progress: bool = True) -> dict[str, Any]:
    """Stage ``init_archive``: evaluate the initial architectures of the policy; write
    ``round_00/{archive.csv, evaluated.csv, stats.json}``; returns the stats."""
    check_search_fits(cfg)
    layout = Layout.from_config(cfg)
    net_file = check_recorded(layout.supernet, layout.supernet_json, _MAKE_SUPERNET)
    _check_room(layout, 0, None)
    with _round_lock(layout, 0):
        return _init_archive(cfg, layout, net_file, show_progress)


def _init_archive(cfg: Mapping[str, Any], layout: Layout, net_file: Path, show_progress: bool
                  ) -> dict[str, Any]:
    ctx = SearchContext(cfg, "round 00", show_progress)
    with ctx.step("load"):
        loaded = ctx.load(net_file)
        ctx.evaluator.calibration(ctx.space.resolutions[0])
    with ctx.step("evaluate"):
        archive, evaluated = ctx.policy.initial_archive(
            ctx.space, lambda archs: ctx.evaluate(loaded.sha256, "evaluate", archs), ctx.seed)
    ref = Reference.of_archive(archive, ctx.names)
    stats = {
        "round": 0,
        **hypervolume_stats(archive, ctx.names, ref),
        "n_evaluated": int(len(evaluated)),
        "n_kept": int(len(archive)),
        "duplicates_dropped": 0,
        "cache_hits": int(ctx.hits),
        "policy": ctx.policy.as_dict(),
        "supernet_sha256": loaded.sha256,
        "latency": ctx.eval_settings.get("latency"),
        "accuracy": ctx.cfg["search"]["accuracy"],
        "steps": dict(ctx.steps),
    }
    open_set(layout.stats(0))
    write_archive(evaluated, layout.evaluated)
    write_archive(archive, layout.archive(0))
    stats["files"] = record_files(layout.evaluated, layout.archive(0),
                                  rows={"evaluated.csv": len(evaluated), "archive.csv": len(archive)})
    stats["seconds"] = ctx.elapsed()
    write_json(layout.stats(0), stats)
    return stats


# ---------------------------------------------------------------------- round steps


def _open_round(cfg: Mapping[str, Any], k: int, inputs: tuple[Path, Path, Path], suffix: str,
                show_progress: bool, world: World = SINGLE
                ) -> tuple[SearchContext, pd.DataFrame, Reference]:
    """The context of a round step with the previous archive, round 0's hypervolume reference
    (checked against the config's objectives) and the input network loaded."""
    prev, stats0, net_file = inputs
    ctx = SearchContext(cfg, f"round {k:02d}{suffix}", show_progress, world)
    with ctx.step("load"):
        archive_df = read_archive(prev, ctx.space)
        ref = _read_reference(stats0, ctx.names)
        ctx.load(net_file)
    return ctx, archive_df, ref


def _finish(ctx: SearchContext, k: int, new_archive: pd.DataFrame, cand: pd.DataFrame,
            meta: dict, ref: Reference, seconds_before: float = 0.0) -> dict[str, Any]:
    """Adapt, re-evaluate, write the round's outputs; returns the stats."""
    input_file, input_sha = ctx.loaded.path, ctx.loaded.sha256
    kept = set(new_archive["arch"])
    adapted = adapt_and_reevaluate(ctx, k, new_archive)
    stats: dict[str, Any] = {
        "round": int(k),
        **hypervolume_stats(adapted.archive, ctx.names, ref),
        "n_evaluated": int(len(cand) + adapted.n_reevaluated),
        "n_candidates": int(len(cand)),
        "n_reevaluated": int(adapted.n_reevaluated),
        "n_kept": int(sum(a in kept for a in cand["arch"])),
        "duplicates_dropped": int(meta.get("duplicates_dropped", 0)),
        "n_search_population": int(meta.get("n_search_population", 0)),
        "inner_zero_candidates": int(meta.get("inner_zero_candidates", 0)),
        "cache_hits": int(ctx.hits),
        "adaptation": adapted.record,
        "policy": ctx.policy.as_dict(),
        "input_supernet_sha256": input_sha,
        "latency": ctx.eval_settings.get("latency"),
        "accuracy": ctx.cfg["search"]["accuracy"],
    }
    predictor = predictor_stats(meta, cand)
    if predictor is not None:
        stats["predictor"] = predictor
    lut = ctx.latency_table_error(cand)
    if lut is not None:
        stats["latency_table"] = lut
    layout = ctx.layout
    open_set(layout.stats(k))
    source = adapted.checkpoint or input_file
    atomic_write(layout.round_supernet(k), lambda tmp: shutil.copyfile(source, tmp))
    candidates = concat_archives([cand.assign(step="evaluate"), *adapted.reevaluated])
    write_archive(candidates, layout.candidates(k))
    write_archive(adapted.archive, layout.archive(k))
    stats["files"] = record_files(
        layout.round_supernet(k), layout.candidates(k), layout.archive(k),
        rows={"candidates.csv": len(candidates), "archive.csv": len(adapted.archive)})
    stats["steps"] = {name: float(ctx.steps.get(name, 0.0)) for name in STEP_NAMES}
    stats["seconds"] = round(seconds_before + ctx.elapsed(), 3)
    write_json(layout.stats(k), stats)
    if adapted.checkpoint is not None:
        adapted.checkpoint.unlink(missing_ok=True)
    return stats


def _data_parallel(cfg: Mapping[str, Any], k: int, lead: Callable[[World], dict[str, Any]]
                   ) -> dict[str, Any]:
    """``lead(world)`` in process 0; under ``torchrun``, the other processes load the round's
    input network and join the adaptation (``natv2.pipeline.adaptation.follow_adaptation``),
    writing nothing; they return ``{}``."""
    world = World.from_env()
    if not world.parallel:
        return lead(world)
    with joined(world, world.device(resolve_device(cfg["device"]))):
        if world.writer:
            return lead(world)
        ctx = SearchContext(cfg, f"round {k:02d} process {world.rank}", False, world)
        ctx.load(_input_supernet(ctx.layout, k))
        follow_adaptation(ctx, k)
        return {}


def run_search_round(cfg: Mapping[str, Any], k: int, show_progress: bool = True
                     ) -> dict[str, Any]:
    """Stage ``search_round`` for round ``k >= 1``, all steps in this process (the adaptation
    data-parallel under ``torchrun``); returns stats."""
    k = _check_round(k)
    return _data_parallel(cfg, k, lambda world: _search_round(cfg, k, show_progress, world))


def _search_round(cfg: Mapping[str, Any], k: int, show_progress: bool, world: World) -> dict[str, Any]:
    inputs = _round_inputs(cfg, k)
    layout = Layout.from_config(cfg)
    _check_room(layout, k, inputs[2])
    with _round_lock(layout, k):
        return _search_round_locked(cfg, k, inputs, show_progress, world)


def _search_round_locked(cfg: Mapping[str, Any], k: int, inputs: tuple[Path, Path, Path],
                         show_progress: bool, world: World) -> dict[str, Any]:
    ctx, archive_df, ref = _open_round(cfg, k, inputs, "", show_progress, world)
    sha = ctx.loaded.sha256
    result = run_round(ctx.space, archive_df, ctx.policy,
                       lambda archs: ctx.evaluate(sha, "evaluate", archs), ctx.cheap_fn(), k,
                       ctx.seed, ctx.step, ctx.constraint())
    return _finish(ctx, k, result.archive, result.candidates, result.meta, ref)


def propose_candidates(cfg: Mapping[str, Any], k: int, show_progress: bool = True
                       ) -> pd.DataFrame:
    """Scatter step 1: write ``proposed.csv`` (+ ``proposed.json``); returns the frame."""
    k = _check_round(k)
    inputs = _round_inputs(cfg, k)
    layout = Layout.from_config(cfg)
    check_writable(layout.round_dir(k))
    with _round_lock(layout, k):
        return _propose(cfg, k, inputs, show_progress)


def _propose(cfg: Mapping[str, Any], k: int, inputs: tuple[Path, Path, Path], show_progress: bool
             ) -> pd.DataFrame:
    ctx, archive_df, _ = _open_round(cfg, k, inputs, " propose", show_progress)
    proposal = propose(ctx.space, archive_df, ctx.policy, ctx.cheap_fn(), round_seed(ctx.seed, k),
                       ctx.step, ctx.constraint())
    proposed = proposal_frame(ctx.space, proposal)
    csv_path, json_path = ctx.layout.proposed(k)
    open_set(json_path)
    atomic_write(csv_path, lambda tmp: proposed.to_csv(tmp, index=False, na_rep=""))
    write_json(json_path, {**proposal.describe(), "steps": dict(ctx.steps),
                           "files": record_files(csv_path, rows={csv_path.name: len(proposed)}),
                           "seconds": ctx.elapsed()})
    return proposed


def _read_proposed(layout: Layout, k: int) -> tuple[pd.DataFrame, dict]:
    csv_path, json_path = layout.proposed(k)
    maker = f"natv2 search-round --round {k} --step propose"
    check_recorded(csv_path, json_path, maker)
    extra = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
    df = pd.read_csv(csv_path, dtype={"arch": str}, keep_default_na=False, na_values=[""],
                     **extra)
    df["predicted_top1"] = pd.to_numeric(df["predicted_top1"]).astype("float64")
    return df, read_json(json_path)


def evaluate_shard(cfg: Mapping[str, Any], k: int, i: int, show_progress: bool = True
                   ) -> pd.DataFrame:
    """Scatter step 2: evaluate proposed rows ``i::shards``; write ``shard_I.csv``."""
    k = _check_round(k)
    shards = int(cfg["search"]["shards"])
    if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= int(i) < shards:
        raise UserError(f"shard: {i!r} must be an integer in 0..{shards - 1} "
                        f"(search.shards = {shards})")
    i = int(i)
    layout = Layout.from_config(cfg)
    proposed, _ = _read_proposed(layout, k)
    net_file = _input_supernet(layout, k)
    check_writable(layout.round_dir(k))
    with _round_lock(layout, k, f"{round_name(k)}.shard_{i}"):
        return _evaluate_shard(cfg, k, i, proposed, net_file, show_progress)


def _evaluate_shard(cfg: Mapping[str, Any], k: int, i: int, proposed: pd.DataFrame, net_file: Path,
                    show_progress: bool) -> pd.DataFrame:
    shards = int(cfg["search"]["shards"])
    layout = Layout.from_config(cfg)
    ctx = SearchContext(cfg, f"round {k:02d} shard {i}", show_progress)
    with ctx.step("load"):
        loaded = ctx.load(net_file)
    with ctx.step("evaluate"):
        mine = proposed.iloc[i::shards].reset_index(drop=True)
        records = ctx.evaluate(loaded.sha256, "evaluate",
                               [ctx.space.decode(a) for a in mine["arch"]])
        cand = candidate_rows(ctx.space, mine, records, k)
    cand["shard_seconds"] = ctx.elapsed()
    write_archive(cand, layout.shard(k, i))
    return cand


def _gather(layout: Layout, k: int, shards: int, proposed: pd.DataFrame
            ) -> tuple[pd.DataFrame, float]:
    """The shards' candidates in proposal order, and the shards' total wall time."""
    paths = [_require(layout.shard(k, i),
                      f"natv2 search-round --round {k} --step evaluate --shard {i}")
             for i in range(shards)]
    parts = [read_archive(p) for p in paths]
    seconds = sum(float(p["shard_seconds"].iloc[0]) for p in parts
                  if len(p) and "shard_seconds" in p)
    cand = concat_archives(parts)
    cand = cand.drop(columns=[c for c in ("shard_seconds",) if c in cand.columns])
    if sorted(cand["arch"]) != sorted(proposed["arch"]):
        raise UserError(f"the shard files of round {k} do not match {layout.proposed(k)[0]}; "
                        f"rerun `natv2 search-round --round {k} --step evaluate` for every shard")
    order = {a: n for n, a in enumerate(proposed["arch"])}
    cand = normalize_archive(cand.iloc[np.argsort([order[a] for a in cand["arch"]],
                                                  kind="stable")])
    return cand, seconds


def finish_round(cfg: Mapping[str, Any], k: int, show_progress: bool = True) -> dict[str, Any]:
    """Gather step 3: read the shards, update the archive, adapt (data-parallel under
    ``torchrun``), re-evaluate, write the round's ``archive.csv``, ``candidates.csv``,
    ``stats.json`` and ``supernet.pt``; returns stats."""
    k = _check_round(k)
    return _data_parallel(cfg, k, lambda world: _finish_round(cfg, k, show_progress, world))


def _finish_round(cfg: Mapping[str, Any], k: int, show_progress: bool, world: World) -> dict[str, Any]:
    inputs = _round_inputs(cfg, k)
    layout = Layout.from_config(cfg)
    _check_room(layout, k, inputs[2])
    with _round_lock(layout, k):
        return _finish_round_locked(cfg, k, inputs, show_progress, world)


def _finish_round_locked(cfg: Mapping[str, Any], k: int, inputs: tuple[Path, Path, Path],
                         show_progress: bool, world: World) -> dict[str, Any]:
    layout = Layout.from_config(cfg)
    proposed, meta = _read_proposed(layout, k)
    ctx, archive_df, ref = _open_round(cfg, k, inputs, " finish", show_progress, world)
    with ctx.step("load"):
        cand, shard_seconds = _gather(layout, k, int(cfg["search"]["shards"]), proposed)
    for name, seconds in (meta.get("steps") or {}).items():
        if name != "load":
            ctx.steps[name] = round(ctx.steps.get(name, 0.0) + float(seconds), 3)
    ctx.steps["evaluate"] = round(shard_seconds, 3)
    new_archive = ctx.policy.update_archive(archive_df, cand, round_seed(ctx.seed, k))
    return _finish(ctx, k, new_archive, cand, meta, ref,
                   seconds_before=float(meta.get("seconds", 0.0)) + shard_seconds)


__all__ = [
    "STEP_NAMES",
    "evaluate_shard",
    "finish_round",
    "propose_candidates",
    "run_init_archive",
    "run_search_round",
    "search_seed",
]
