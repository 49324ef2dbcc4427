"""The end of a search round: adapt the super-network, then re-evaluate the archive with it.

NAT's per-round adaptation (:func:`natv2.train.adapt.adapt_supernet`) trains the round's input
super-network on sub-networks sampled from the best archive members; every archive member is
then evaluated again with the adapted weights (cached under the adapted file's sha256). Skipped
when ``search.adaptation.epochs`` is 0: the round hands on its input network unchanged.

Round ``k``'s epochs are epochs ``(k - 1) * epochs ..`` of one schedule over all
``search.rounds`` rounds, and its fixed teacher (``teacher: fixed``) is stage 1's
``teacher.pt`` (the largest network after a warm-up's first step, the thesis' phase-2
checkpoint; without a warm-up the input super-network's largest:
:mod:`natv2.pipeline.supernet_stage`), as the thesis' one ``SuperNetTrainer`` carries its
schedule and teacher through every round of ``NAT.search``.
The optimiser's momentum goes on from round to round too: each adapted checkpoint (and so
round ``k``'s ``supernet.pt``) carries it in its ``extra`` (``optimizer_state``), and round
``k + 1`` starts from it (:class:`natv2.train.optim.OptimizerCarry`), as the thesis' one
optimiser, whose state its checkpoints save too (``nat.py`` ``optimizer_w1.0_state_dict``);
``schedule: per_round`` starts each round fresh.

The adapted network waits under ``cache/adapted/`` (named by everything that determines it)
until the round's outputs are written, so a stage killed during the re-evaluation does not redo
the adaptation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from natv2.distributed import World, broadcast_text
from natv2.errors import UserError
from natv2.files import file_sha256, first_line
from natv2.pipeline.eval_cache import settings_hash
from natv2.pipeline.search_context import SearchContext
from natv2.records import check_recorded
from natv2.search import archive_from_csv, normalize_archive
from natv2.seeds import adaptation_seed
from natv2.supernet import load_checkpoint, load_static, read_extra, save_checkpoint
from natv2.train.adapt import AdaptSettings, adapt_supernet
from natv2.train.eps import frozen_teacher
from natv2.train.optim import OptimizerCarry


@dataclass
class Adapted:
    """The archive after re-evaluation, the adaptation's record, the adapted checkpoint (None
    without adaptation) and the re-evaluated rows (``step = reevaluate``) for candidates.csv."""

    archive: pd.DataFrame
    record: dict[str, Any]
    checkpoint: Path | None = None
    reevaluated: list[pd.DataFrame] = field(default_factory=list)

    @property
    def n_reevaluated(self) -> int:
        return sum(len(df) for df in self.reevaluated)


def teacher_file(ctx: SearchContext, adaptation: AdaptSettings) -> Path | None:
    """The fixed teacher's file (stage 1's ``teacher.pt``), or ``None`` when the loaded
    network's own largest sub-network teaches (``teacher: current``) or nothing does."""
    if adaptation.kd_ratio <= 0 or adaptation.teacher != "fixed":
        return None
    return ctx.layout.supernet_teacher


def adapted_path(ctx: SearchContext, archive_df: pd.DataFrame, k: int) -> Path:
    """Where round ``k``'s adapted network waits, named by everything that determines it."""
    cfg = ctx.cfg
    teacher = teacher_file(ctx, AdaptSettings.from_config(cfg))
    key = settings_hash({
        "input": ctx.loaded.sha256, "round": k, "seed": ctx.seed, "eval": ctx.eval_settings,
        "adaptation": dict(cfg["search"]["adaptation"]), "rounds": int(cfg["search"]["rounds"]),
        "teacher": None if teacher is None else file_sha256(teacher),
        "policy": ctx.policy.as_dict(),
        "archive": archive_df.to_csv(index=False),
    })
    return ctx.layout.adapted(k, key)


def _teacher(ctx: SearchContext, adaptation: AdaptSettings) -> torch.nn.Module | None:
    path = teacher_file(ctx, adaptation)
    if path is None:
        return None
    check_recorded(path, ctx.layout.supernet_json, "natv2 supernet")
    try:
        teacher = load_static(path)
    except (OSError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read the adaptation's teacher {path}: {first_line(exc)}; "
                        f"rerun `natv2 supernet` or set search.adaptation.teacher: current"
                        ) from None
    return frozen_teacher(teacher)


def input_carry(ctx: SearchContext, adaptation: AdaptSettings) -> OptimizerCarry | None:
    """The optimiser state the loaded network's checkpoint carries (none in stage 1's file: a
    fresh optimiser), or ``None`` when each round starts fresh (``schedule: per_round``)."""
    if adaptation.schedule != "across_rounds":
        return None
    extra = read_extra(ctx.loaded.path)
    state = extra.get("optimizer_state") if isinstance(extra, dict) else None
    return OptimizerCarry(state, source=str(ctx.loaded.path))


def train_adaptation(ctx: SearchContext, k: int, archive: pd.DataFrame, adaptation: AdaptSettings,
                     carry: OptimizerCarry | None = None) -> dict[str, Any]:
    """Train the loaded network on round ``k``'s ``archive`` (every data-parallel process of
    ``ctx.world`` calls this with the same archive), the optimiser from ``carry`` (default: the
    loaded checkpoint's, :func:`input_carry`) and its state left there; returns the training
    record."""
    rounds = int(ctx.cfg["search"]["rounds"])
    carry = input_carry(ctx, adaptation) if carry is None else carry
    teacher = teacher_file(ctx, adaptation) or (ctx.loaded.path if adaptation.kd_ratio > 0 else None)
    record = adapt_supernet(
        ctx.net, ctx.space, archive, ctx.names, ctx.train_loader(), adaptation, ctx.device,
        seed=adaptation_seed(ctx.seed, k), repair=ctx.policy.repair,
        first_epoch=(int(k) - 1) * adaptation.epochs, total_epochs=rounds * adaptation.epochs,
        teacher=_teacher(ctx, adaptation), show_progress=ctx.show, world=ctx.world, carry=carry)
    # the file of the network that taught, under the results folder
    root = ctx.layout.root
    record["teacher"] = (None if teacher is None else str(teacher.relative_to(root))
                         if teacher.is_relative_to(root) else str(teacher))
    return record


def share_archive(archive: pd.DataFrame | None, world: World) -> pd.DataFrame | None:
    """Process 0's ``archive`` on every process (``None``: nothing to train); unchanged for one
    process."""
    if not world.parallel:
        return archive
    text = broadcast_text("" if archive is None else archive.to_csv(index=False, na_rep=""), world)
    return archive_from_csv(text) if text else None


def follow_adaptation(ctx: SearchContext, k: int) -> None:
    """A data-parallel process other than 0 in round ``k``: wait for process 0's archive (after
    its search and evaluation), then train the adaptation with it. Writes nothing."""
    adaptation = AdaptSettings.from_config(ctx.cfg)
    if adaptation.epochs <= 0:
        return
    archive = share_archive(None, ctx.world)
    if archive is not None:
        train_adaptation(ctx, k, archive, adaptation)


def _adapt(ctx: SearchContext, k: int, archive: pd.DataFrame, path: Path,
           adaptation: AdaptSettings) -> dict[str, Any]:
    if path.is_file():  # a killed run adapted already: reuse its network
        share_archive(None, ctx.world)  # the other processes have nothing to train
        load_checkpoint(ctx.net, path)
        return {"epochs": adaptation.epochs, "reused": True}
    carry = input_carry(ctx, adaptation)
    record = train_adaptation(ctx, k, share_archive(archive, ctx.world), adaptation, carry)
    extra = {"round": k, "adaptation": {
        key: v for key, v in record.items() if isinstance(v, int | float | str)}}
    if carry is not None:
        extra["optimizer_state"] = carry.state
    save_checkpoint(ctx.net, path, extra=extra)
    return record


def adapt_and_reevaluate(ctx: SearchContext, k: int, archive: pd.DataFrame) -> Adapted:
    """Adapt the loaded super-network after round ``k`` (updated ``archive``) and re-evaluate
    every archive member with it; the loaded network is the adapted one afterwards."""
    adaptation = AdaptSettings.from_config(ctx.cfg)
    if adaptation.epochs <= 0:
        return Adapted(archive, {"epochs": 0})
    path = adapted_path(ctx, archive, k)
    with ctx.step("adapt"):
        record = _adapt(ctx, k, archive, path, adaptation)
        ctx.net.eval()
    with ctx.step("reevaluate"):
        archs = [ctx.space.decode(a) for a in archive["arch"]]
        records = ctx.evaluate(file_sha256(path), "reevaluate", archs)
        archive = archive.copy()
        archive["top1"] = [float(r["top1"]) for r in records]
        if ctx.latency_on:
            archive["latency_ms"] = [float(r["latency_ms"]) for r in records]
        archive = normalize_archive(archive)
    return Adapted(archive, record, path, [archive.assign(step="reevaluate")])
