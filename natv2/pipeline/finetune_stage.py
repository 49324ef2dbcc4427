"""Stage ``finetune`` (rank slot N): NATv2 post-processing of one chosen sub-network.

The final archive (``search/round_RR/archive.csv``, RR = ``search.rounds``) gives one slot per
deployment target (``targets:``, the first slots), then the non-dominated set plus
``finetune.n_high_tradeoff`` high trade-off points, ordered deterministically into
``finetune.slots`` fixed slots (:func:`natv2.selection.select_slots`). Slot N fine-tunes its
sub-network from the last round's (adapted) super-network in NATv2's two steps, exports it to
ONNX (``model.onnx``, and ``model_int8.onnx`` with ``finetune.measure_int8``) and writes
``finetune/rank_N/{model.pt, arch.json, history.csv, card.md, card.json, metrics.json}``
(:mod:`natv2.cards`; ``metrics.json`` last, recording the others). A slot with no architecture
writes the same named files saying so (``used: false``), so the DAG stays static.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from natv2.cards import build_card, card_markdown, target_verdict
from natv2.data import DataSettings, build_splits
from natv2.distributed import World, check_batch, joined
from natv2.errors import UserError
from natv2.files import atomic_write, check_writable, file_sha256, write_json
from natv2.layout import (
    ARCH_FILE,
    CARD_JSON_FILE,
    CARD_MD_FILE,
    HISTORY_FILE,
    INT8_ONNX_FILE,
    METRICS_FILE,
    MODEL_FILE,
    ONNX_FILE,
    Layout,
)
from natv2.measure.latency import onnx_latency
from natv2.model import arch_info, save_finetuned
from natv2.pipeline.context import setup_stage, space_from_config
from natv2.pipeline.lock import stage_lock
from natv2.records import FILES_KEY, check_recorded, open_set, record_files
from natv2.search.archive import read_archive
from natv2.seeds import finetune_seed
from natv2.selection import SlotChoice, select_slots
from natv2.supernet import load_supernet
from natv2.targets import format_value, targets_from_config
from natv2.train.aep import aep_finetune, uses_aep
from natv2.train.finetune import HISTORY_COLUMNS, FinetuneSettings, finetune

#: ``model.pt`` of a slot the final archive had no architecture for
UNUSED_FORMAT = "natv2-unused"


def _check_rank(cfg: Mapping[str, Any], rank: Any) -> int:
    slots = int(cfg["finetune"]["slots"])
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < slots:
        raise UserError(f"--rank {rank!r} is not a fine-tune slot; valid: 0..{slots - 1} (finetune.slots: {slots})")
    return rank


def selected_slots(cfg: Mapping[str, Any]) -> list[SlotChoice]:
    """What every slot gets, from the final archive (the same for every rank job)."""
    rounds = int(cfg["search"]["rounds"])
    layout = Layout.from_config(cfg)
    path = check_recorded(layout.archive(rounds), layout.stats(rounds), f"natv2 search-round --round {rounds}")
    ft = cfg["finetune"]
    objectives = ["top1", *cfg["search"]["objectives"]]
    archive = read_archive(path, space_from_config(cfg))
    return select_slots(archive, int(ft["slots"]), int(ft["n_high_tradeoff"]), objectives,
                        targets_from_config(cfg), ft["tradeoff"])


def selected_encodings(cfg: Mapping[str, Any]) -> list[str | None]:
    """The encodings of every slot (``None``: unused)."""
    return [slot.encoding for slot in selected_slots(cfg)]


def _write_cards(out: Path, card: dict) -> list[Path]:
    write_json(out / CARD_JSON_FILE, card)
    text = card_markdown(card)
    atomic_write(out / CARD_MD_FILE, lambda tmp: tmp.write_text(text))
    return [out / CARD_JSON_FILE, out / CARD_MD_FILE]


def _write_unused(out: Path, rank: int, reason: str, slot: SlotChoice) -> dict:
    record = {"used": False, "reason": reason, "rank": rank, "target": slot.describe()}
    open_set(out / METRICS_FILE)
    atomic_write(out / MODEL_FILE, lambda tmp: torch.save({"format": UNUSED_FORMAT, "reason": reason}, tmp))
    atomic_write(out / HISTORY_FILE, lambda tmp: tmp.write_text(",".join(HISTORY_COLUMNS) + "\n"))
    write_json(out / ARCH_FILE, record)
    target = target_verdict(slot.target, {}, slot.describe())
    cards = _write_cards(out, build_card(rank, record, None, target, {}))
    written = record_files(out / MODEL_FILE, out / HISTORY_FILE, out / ARCH_FILE, *cards,
                           rows={HISTORY_FILE: 0})
    write_json(out / METRICS_FILE, {**record, FILES_KEY: written})
    return record


def run_finetune(cfg: Mapping[str, Any], rank: int, show_progress: bool = True) -> dict:
    """Fine-tune slot ``rank``; returns what it wrote to ``metrics.json``. Under ``torchrun``
    every process trains (data-parallel, ``natv2.distributed``) and process 0 writes; the
    others return ``{}``."""
    world = World.from_env()
    rank = _check_rank(cfg, rank)
    layout = Layout.from_config(cfg)
    slots = selected_slots(cfg)
    if world.writer:
        check_writable(layout.rank_dir(rank))
    with stage_lock(layout.lock(layout.rank_dir(rank).name), str(layout.rank_dir(rank)), world.writer):
        return _finetune_slot(cfg, rank, slots, layout, world, show_progress)


def _unmet_line(rank: int, slot: SlotChoice) -> str:
    t = slot.target
    return (f"finetune rank {rank}: no architecture of the final archive meets target "
            f"{t.describe()}; fine-tuning the closest one ({t.metric} "
            f"{format_value(t.metric, slot.value)}), its slot is marked unmet")


def _finetune_slot(cfg: Mapping[str, Any], rank: int, slots: list[SlotChoice], layout: Layout,
                   world: World, show_progress: bool) -> dict:
    slot = slots[rank]
    if slot.encoding is None:
        n_used = sum(s.encoding is not None for s in slots)
        if not world.writer:
            return {}
        return _write_unused(layout.rank_dir(rank), rank, f"the final archive gave {n_used} architecture(s) for {len(slots)} slots", slot)
    if slot.target is not None and not slot.met and world.writer:
        print(_unmet_line(rank, slot), file=sys.stderr, flush=True)
    rounds = int(cfg["search"]["rounds"])
    supernet_file = check_recorded(layout.round_supernet(rounds), layout.stats(rounds),
                                   f"natv2 search-round --round {rounds}")
    device = world.device(setup_stage(cfg, seed=finetune_seed(int(cfg["seed"]), rank)))
    with joined(world, device):
        return _run_finetune(cfg, rank, slot, supernet_file, device, show_progress and world.writer,
                             world)


def _deployable(model: torch.nn.Module) -> torch.nn.Module:
    """The network as exported and quantised: a multi-exit model as the weighted ensemble of its
    exits (what ``top1_after`` measured and ``natv2 export`` writes)."""
    from natv2.model import MultiExitModel

    return (MultiExitModel(model) if getattr(model, "multi_exit", False) else model).eval()


def int8_metrics(model: torch.nn.Module, splits, settings: FinetuneSettings) -> tuple[dict[str, Any], Any]:
    """``({"top1_int8", "int8_bytes"}, Int8Model)``: test top-1 (%) and size of ``model``
    quantised to INT8 (:mod:`natv2.measure.int8`, calibrated on the BN-calibration subset)."""
    from natv2.data.splits import calibration_batches
    from natv2.measure.int8 import int8_top1, quantize_int8
    from natv2.train.finetune import eval_batches

    quantized = quantize_int8(_deployable(model), calibration_batches(splits, splits.resolution))
    test = eval_batches(splits.test, settings.eval_batch_size, settings.num_workers, settings.seed)
    return ({"top1_int8": int8_top1(quantized, test, settings.latency.threads),
             "int8_bytes": quantized.size_bytes}, quantized)


def _write_exports(out: Path, model: torch.nn.Module, resolution: int, quantized,
                   settings: FinetuneSettings) -> tuple[list[Path], dict[str, dict]]:
    """Write ``model.onnx`` (and ``model_int8.onnx``); returns the files and, with
    ``finetune.measure_latency``, each file's latency in onnxruntime with the ``latency:``
    threads, batch, warm-up and runs (file name -> ``{"median_ms", "iqr_ms"}``)."""
    from natv2.model import export_network

    files = [export_network(_deployable(model), resolution, out / ONNX_FILE)]
    if quantized is None:  # a file of an earlier run with INT8 would be left unrecorded
        (out / INT8_ONNX_FILE).unlink(missing_ok=True)
    else:
        atomic_write(out / INT8_ONNX_FILE, lambda tmp: tmp.write_bytes(quantized.onnx))
        files.append(out / INT8_ONNX_FILE)
    timed = {}
    if settings.measure_latency:
        for path in files:
            lat = onnx_latency(path.read_bytes(), (3, resolution, resolution), settings.latency)
            timed[path.name] = {"median_ms": lat.median_ms, "iqr_ms": lat.iqr_ms}
    return files, timed


def _run_finetune(cfg: Mapping[str, Any], rank: int, slot: SlotChoice, supernet_file, device,
                  show_progress: bool, world: World) -> dict:
    layout = Layout.from_config(cfg)
    space = space_from_config(cfg)
    encoding = slot.encoding
    arch = space.decode(encoding)
    net = load_supernet(supernet_file)
    splits = build_splits(DataSettings.from_config(cfg), resolution=arch.resolution)
    settings = FinetuneSettings.from_config(cfg)
    if slot.target is not None and slot.target.metric == "latency_ms" and not settings.measure_latency:
        settings = dataclasses.replace(settings, measure_latency=True)  # the target needs it
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
    quantized = None
    if cfg["finetune"]["measure_int8"]:
        int8, quantized = int8_metrics(result.model, splits, settings)
        metrics.update(int8)
    target = target_verdict(slot.target, metrics, slot.describe())
    metrics["target"] = target
    info = {**arch_info(arch, encoding, splits), "exit_ordering": settings.exit_ordering if space.has_nd else None}
    out = layout.rank_dir(rank)
    out.mkdir(parents=True, exist_ok=True)
    open_set(out / METRICS_FILE)  # from here on the slot's set is incomplete until metrics.json
    exported, timed = _write_exports(out, result.model, int(arch.resolution), quantized, settings)
    files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in exported}
    card = build_card(rank, metrics, info, target, files, timed)
    metrics["onnx_latency_ms"] = {name: t["median_ms"] for name, t in timed.items()}
    save_finetuned(out, result.model, info, metrics, result.history,
                   extra_files=[*exported, *_write_cards(out, card)])
    return metrics
