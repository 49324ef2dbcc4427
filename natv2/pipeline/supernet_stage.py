"""Stage ``supernet``: turn ``supernet.source`` into a ready super-network for this dataset.

Writes ``<results>/supernet/supernet.pt`` (our checkpoint format), ``teacher.pt`` (the
search's fixed distillation teacher, :func:`save_teacher`) and ``supernet.json``
(family, width, source, sha256 of the source file, phases with epochs and wall time,
validation top-1 of the largest and smallest sub-networks after BN recalibration). For
early-exit families the record of the ``full`` phase (and of the warm-up's first step) holds
``val_top1_exits``: per resolution, the validation top-1 of each of the largest network's five
exits and of their ensemble right after that phase, which trained them together.

Sources (``natv2.supernet.sources`` fetches, reads and loads them and decides on the head):
``train`` (Extended Progressive Shrinking from scratch, here), ``{pretrained: NAME}``,
``{url: URL, sha256: HEX|null}`` (downloaded into the cache directory) and ``{file: PATH}``. A
checkpoint trained on another label set gets NATv2's warm-up (here): a new classifier head, the
largest network fine-tuned, then the whole super-network trained by uniform sub-network sampling
with KD. An OFA MobileNetV3 checkpoint given to an OFAv2 family warm-starts every shared tensor.

Several widths (``supernet.width_mult: [1.0, 1.2]``, the thesis' search): ``train`` runs EPS
once per width (checkpoints under ``work/w<width>/``, records tagged ``width``); a checkpoint
source is one natv2 file of all widths or a list of one source per width, and the warm-up
trains each width's largest network, then both widths together (``natv2.train.warmup``).
``supernet.pt`` then holds a ``WidthSuperNets``; ``val_top1`` gives the space's bounds (the
narrowest width's smallest, the widest width's largest) and, under ``widths``, each width's.

The teacher is a static network of the space's largest architecture (all exits for early-exit
families): after a warm-up, as its first step left the widest width's largest network (the
thesis' ``run_nat_new.py`` takes the teacher's weights from its warm-up's phase-2 checkpoint,
the largest network before the joint phase 3); otherwise the ready super-network's largest.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from natv2.data import DataSettings, build_splits, make_loader
from natv2.distributed import World, check_batch, joined, rank0_first
from natv2.errors import UserError
from natv2.files import check_writable, write_json
from natv2.layout import Layout
from natv2.measure import Evaluator
from natv2.pipeline.context import setup_stage, space_from_config
from natv2.pipeline.lock import stage_lock
from natv2.records import open_set, record_files
from natv2.space import SearchSpace
from natv2.supernet import WidthSuperNets, build_supernet, save_checkpoint
from natv2.supernet.sources import fit_head, open_source
from natv2.supernet.widths import width_list
from natv2.train.aep import exit_accuracies
from natv2.train.eps import TrainSettings, WarmupSettings, make_teacher, train_supernet
from natv2.train.warmup import warm_up


def epoch_loader(dataset, batch_size: int, num_workers: int):
    """``loader(seed)``: one shuffled pass over ``dataset``; also seeds torch's global generator,
    which draws the augmentation (and dropout), so every epoch is reproducible on its own."""

    def loader(seed: int):
        torch.manual_seed(seed)
        return make_loader(dataset, batch_size, shuffle=True, seed=seed, num_workers=num_workers,
                           drop_last=len(dataset) > batch_size)

    return loader


def data_fingerprint(data: DataSettings, splits) -> dict:
    """What the training data depends on besides the seed (resuming EPS needs the same data)."""
    keys = ("name", "val_fraction", "test_fraction", "batch_size", "train_subset", "num_workers")
    return {**{k: getattr(data, k) for k in keys}, "n_train": len(splits.train),
            "n_classes": splits.n_classes}


def family_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``build_supernet`` (but ``n_classes``) for the configured family."""
    sn = cfg["supernet"]
    return {k: sn[k] for k in ("family", "width_mult", "ks_list", "expand_list", "depth_list")}


def exit_validation(net, space: SearchSpace, evaluator: Evaluator, ensemble_weights) -> dict:
    """``{"val_top1_exits": {resolution: {"per_exit": [...], "ensemble": top1}}}`` of the largest
    network's exits (BN recalibrated per resolution, as every evaluation); ``{}`` without exits."""
    if not space.has_nd:
        return {}
    rows = {}
    for r in space.resolutions:
        multi = net.extract(replace(space.largest(), resolution=int(r)), all_exits=True)
        multi.to(evaluator.device, memory_format=torch.channels_last)
        evaluator.recalibrate_and_count(multi, int(r))
        per_exit, ensemble = exit_accuracies(multi, evaluator.validation(int(r)), evaluator.device,
                                             ensemble_weights)
        rows[str(int(r))] = {"per_exit": [round(a, 4) for a in per_exit], "ensemble": round(ensemble, 4)}
    return {"val_top1_exits": rows}


def validation_top1(net, space: SearchSpace, splits, device) -> dict[str, Any]:
    """Validation top-1 of the space's largest and smallest networks (the thesis' ``ub`` and
    ``lb``); with several widths also ``widths``: both of every width's super-network."""
    evaluator = Evaluator(net, splits, device, space.resolutions, encoder=space)
    out: dict[str, Any] = {
        "largest": evaluator(space.largest())["top1"],
        "smallest": evaluator(space.smallest())["top1"],
    }
    if len(space.widths) > 1:
        out["widths"] = {str(w): {"largest": evaluator(space.at_width(w).largest())["top1"],
                                  "smallest": evaluator(space.at_width(w).smallest())["top1"]}
                         for w in space.widths}
    return out


def save_teacher(teacher: torch.nn.Module, layout: Layout, origin: str) -> Path:
    """Write the search's fixed teacher ``teacher`` (a static network) to ``teacher.pt``;
    ``origin`` says which weights it has (kept in the file's ``extra``)."""
    return save_checkpoint(teacher, layout.supernet_teacher, extra={"origin": origin})


def run_supernet(cfg: Mapping[str, Any], show_progress: bool = True) -> dict:
    """Run the stage; returns what it wrote to ``supernet.json``. Under ``torchrun`` every rank
    trains (data-parallel, ``natv2.distributed``) and rank 0 writes; the others return ``{}``."""
    world = World.from_env()
    layout = Layout.from_config(cfg)
    if world.writer:
        check_writable(layout.supernet_dir)
    device = world.device(setup_stage(cfg))
    with stage_lock(layout.lock("supernet"), str(layout.supernet_dir), world.writer), \
            joined(world, device):
        return _run_supernet(cfg, show_progress and world.writer, world, device)


def width_sources(source: Any, widths: list[float]) -> list[tuple[Any, Any]]:
    """``(source, width_mult)`` pairs to open: ``train`` once per width, a list one per width (in
    width order), or one checkpoint that holds every width (a natv2 file of several widths)."""
    if source == "train":
        return [("train", w) for w in widths]
    if not isinstance(source, list):
        return [(source, widths if len(widths) > 1 else widths[0])]
    if len(source) != len(widths):
        raise UserError(f"supernet.source: {len(source)} sources for the {len(widths)} widths "
                        f"{widths}; give train, one checkpoint of all widths or a list of one "
                        f"source per width, in that order")
    return list(zip(source, widths, strict=True))


def _run_supernet(cfg: Mapping[str, Any], show_progress: bool, world: World, device: torch.device
                  ) -> dict:
    start = time.perf_counter()
    sn = cfg["supernet"]
    layout = Layout.from_config(cfg)
    space = space_from_config(cfg)
    widths = width_list(sn["width_mult"])
    several = len(widths) > 1
    data, train = DataSettings.from_config(cfg), TrainSettings.from_config(cfg)
    check_batch(world, data.batch_size)
    build = family_kwargs(cfg)
    # fetch, verify and load the sources before any data or training work
    opened = rank0_first(world, lambda: [
        open_source(src, sn["cache_dir"], {**build, "width_mult": w}, show_progress)
        for src, w in width_sources(sn["source"], widths)])
    splits = rank0_first(world, lambda: build_splits(data, resolution=max(space.resolutions)))
    loader = epoch_loader(splits.train, data.batch_size, data.num_workers)

    def after_phase(phase: str, trained) -> dict:
        if phase != "full":
            return {}
        own = space.at_width(trained.width_mult)  # each width's super-network on its own
        evaluator = Evaluator(trained, splits, device, own.resolutions, encoder=own)
        return exit_validation(trained, own, evaluator, train.ensemble_weights)

    if any(o.net is None for o in opened):
        # EPS from scratch, each width's super-network on its own (the thesis trains one OFA
        # super-network per width, OFA_mbv3_extended's run scripts take the width as argument)
        nets, phases = [], []
        for w in widths:
            net = build_supernet(**{**build, "width_mult": w}, n_classes=splits.n_classes)
            records = train_supernet(
                net, space.at_width(w), loader, train, device,
                layout.supernet_work / f"w{w}" if several else layout.supernet_work,
                show_progress=show_progress, fingerprint=data_fingerprint(data, splits),
                world=world, after_phase=after_phase)
            phases += [{**r, "width": w} for r in records] if several else records
            nets.append(net)
    else:
        nets, phases = [o.net for o in opened], []
    net = WidthSuperNets(nets) if len(nets) > 1 else nets[0]
    kept: list[torch.nn.Module] = []  # as the warm-up's first step left it (phase 3 runs it)
    if all(o.net is not None for o in opened):
        net.to(device)
        if fit_head(net, splits.n_classes):
            net.to(device)
            phases = warm_up(net, space, loader, train, WarmupSettings.from_config(cfg), device,
                             show_progress, world, after_phase=after_phase,
                             keep_teacher=lambda t: kept.append(copy.deepcopy(t).cpu()))
    net.eval()
    if not world.writer:
        return {}
    def per_width(values: list) -> Any:
        return values if len(values) > 1 else values[0]

    info = {
        "family": sn["family"],
        "width_mult": per_width(widths),
        "n_classes": splits.n_classes,
        "source": per_width([o.info for o in opened]),
        "sha256": per_width([o.sha256 for o in opened]),
        "load": per_width([o.load for o in opened]),
        "phases": phases,
        "val_top1": validation_top1(net, space, splits, device),
        "dataset": data.name,
        "resolutions": list(space.resolutions),
    }
    open_set(layout.supernet_json)
    save_checkpoint(net, layout.supernet, extra={"info": info})
    save_teacher(kept[0] if kept else make_teacher(net, space), layout,
                 "the warm-up's first step" if kept else "the super-network's largest")
    info["files"] = record_files(layout.supernet, layout.supernet_teacher)
    info["seconds"] = round(time.perf_counter() - start, 3)
    write_json(layout.supernet_json, info)
    return info
