"""Stage ``finetune`` (rank slot N): NATv2 post-processing of one chosen sub-network.

The final archive (``search/round_RR/archive.csv``, RR = ``search.rounds``) gives the
non-dominated set plus ``finetune.n_high_tradeoff`` high trade-off points, ordered
deterministically into ``finetune.slots`` fixed slots (``natv2.selection``). Slot N fine-tunes
its sub-network from the last round's (adapted) super-network in NATv2's two steps and writes
``finetune/rank_N/{model.pt, arch.json, history.csv, metrics.json}``. A slot with no
architecture writes the same four files saying so (``used: false``), so the DAG stays static.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from natv2.data import DataSettings, build_splits
from natv2.distributed import World, check_batch, joined
from natv2.errors import UserError
from natv2.files import atomic_write, check_writable, write_json
from natv2.layout import ARCH_FILE, HISTORY_FILE, METRICS_FILE, MODEL_FILE, Layout
from natv2.model import arch_info, save_finetuned
from natv2.pipeline.context import setup_stage, space_from_config
from natv2.pipeline.lock import stage_lock
from natv2.records import FILES_KEY, check_recorded, open_set, record_files
from natv2.search.archive import read_archive
from natv2.seeds import finetune_seed
from natv2.selection import select_for_finetune
from natv2.supernet import load_supernet
from natv2.train.aep import aep_finetune, uses_aep
from natv2.train.finetune import HISTORY_COLUMNS, FinetuneSettings, finetune

#: ``model.pt`` of a slot the final archive had no architecture for
UNUSED_FORMAT = "natv2-unused"


def _check_rank(cfg: Mapping[str, Any], rank: Any) -> int:
    slots = int(cfg["finetune"]["slots"])
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < slots:
        raise UserError(f"--rank {rank!r} is not a fine-tune slot; valid: 0..{slots - 1} (finetune.slots: {slots})")
    return rank


def selected_encodings(cfg: Mapping[str, Any]) -> list[str | None]:
    """The encodings of every slot, from the final archive (same for every rank job)."""
    rounds = int(cfg["search"]["rounds"])
    layout = Layout.from_config(cfg)
    path = check_recorded(layout.archive(rounds), layout.stats(rounds), f"natv2 search-round --round {rounds}")
    ft = cfg["finetune"]
    objectives = ["top1", *cfg["search"]["objectives"]]
    archive = read_archive(path, space_from_config(cfg))
    return select_for_finetune(archive, int(ft["slots"]), int(ft["n_high_tradeoff"]), objectives)


def _write_unused(out: Path, rank: int, reason: str) -> dict:
    record = {"used": False, "reason": reason, "rank": rank}
    open_set(out / METRICS_FILE)
    atomic_write(out / MODEL_FILE, lambda tmp: torch.save({"format": UNUSED_FORMAT, "reason": reason}, tmp))
    atomic_write(out / HISTORY_FILE, lambda tmp: tmp.write_text(",".join(HISTORY_COLUMNS) + "\n"))
    write_json(out / ARCH_FILE, record)
    written = record_files(out / MODEL_FILE, out / HISTORY_FILE, out / ARCH_FILE, rows={HISTORY_FILE: 0})
    write_json(out / METRICS_FILE, {**record, FILES_KEY: written})
    return record


def run_finetune(cfg: Mapping[str, Any], rank: int, show_progress: bool = True) -> dict:
    """Fine-tune slot ``rank``; returns what it wrote to ``metrics.json``. Under ``torchrun``
    every process trains (data-parallel, ``natv2.distributed``) and process 0 writes; the
    others return ``{}``."""
    world = World.from_env()
    rank = _check_rank(cfg, rank)
    layout = Layout.from_config(cfg)
    encodings = selected_encodings(cfg)
    if world.writer:
        check_writable(layout.rank_dir(rank))
    with stage_lock(layout.lock(layout.rank_dir(rank).name), str(layout.rank_dir(rank)), world.writer):
        return _finetune_slot(cfg, rank, encodings, layout, world, show_progress)


def _finetune_slot(cfg: Mapping[str, Any], rank: int, encodings: list[str | None], layout: Layout,
                   world: World, show_progress: bool) -> dict:
    encoding = encodings[rank]
    if encoding is None:
        n_used = sum(e is not None for e in encodings)
        if not world.writer:
            return {}
        return _write_unused(layout.rank_dir(rank), rank, f"the final archive gave {n_used} architecture(s) for {len(encodings)} slots")
    rounds = int(cfg["search"]["rounds"])
    supernet_file = check_recorded(layout.round_supernet(rounds), layout.stats(rounds),
                                   f"natv2 search-round --round {rounds}")
    device = world.device(setup_stage(cfg, seed=finetune_seed(int(cfg["seed"]), rank)))
    with joined(world, device):
        return _run_finetune(cfg, rank, encoding, supernet_file, device, show_progress and world.writer,
                             world)


def int8_metrics(model: torch.nn.Module, splits, settings: FinetuneSettings) -> dict[str, Any]:
    """``top1_int8`` (test top-1, %) and ``int8_bytes`` of ``model`` quantised to INT8
    (:mod:`natv2.measure.int8`, calibrated on the BN-calibration subset); a multi-exit model is
    quantised as the weighted ensemble of its exits, what ``top1_after`` measured."""
    from natv2.data.splits import calibration_batches
    from natv2.measure.int8 import int8_top1, quantize_int8
    from natv2.model import MultiExitModel
    from natv2.train.finetune import eval_batches

    net = MultiExitModel(model) if getattr(model, "multi_exit", False) else model
    quantized = quantize_int8(net.eval(), calibration_batches(splits, splits.resolution))
    test = eval_batches(splits.test, settings.eval_batch_size, settings.num_workers, settings.seed)
    return {"top1_int8": int8_top1(quantized, test, settings.latency.threads),
            "int8_bytes": quantized.size_bytes}


def _run_finetune(cfg: Mapping[str, Any], rank: int, encoding: str, supernet_file, device,
                  show_progress: bool, world: World) -> dict:
    layout = Layout.from_config(cfg)
    space = space_from_config(cfg)
    arch = space.decode(encoding)
    net = load_supernet(supernet_file)
    splits = build_splits(DataSettings.from_config(cfg), resolution=arch.resolution)
    settings = FinetuneSettings.from_config(cfg)
    check_batch(world, settings.batch_size)
    if uses_aep(arch.family, settings):  # multi-exit (AEP) fine-tuning, EE families
        result = aep_finetune(net, arch, splits, settings, device, show_progress=show_progress,
                              encoding=encoding, world=world)
    else:
        result = finetune(net, arch, splits, settings, device, show_progress=show_progress, encoding=encoding,
                          world=world)
    if not world.writer:
        return {}
    metrics = {**result.metrics(), "used": True, "rank": rank, "encoding": encoding}
    if cfg["finetune"]["measure_int8"]:
        metrics.update(int8_metrics(result.model, splits, settings))
    info = {**arch_info(arch, encoding, splits), "exit_ordering": settings.exit_ordering if space.has_nd else None}
    save_finetuned(layout.rank_dir(rank), result.model, info, metrics, result.history)
    return metrics
