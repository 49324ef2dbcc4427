"""NATv2's warm-up of a super-network pretrained on another label set (its new head in place).

As the thesis' ``run_nat_warmup.py``: first the largest network of each width is fine-tuned
alone (its phases 1 and 2, ``TrainerSE`` / ``TrainerEE``: EPS phase ``full``, no teacher; for
early-exit families all its exits together, ``WarmupSettings.exit_loss_weights``), then the
whole super-network (phase 3, ``SuperNetTrainer``) on ``subnets_per_step`` sub-networks a step,
each variable of the encoding uniform (the thesis' ``search_space.sample``, zeros pushed to the
stage ends; with several widths the width too), with knowledge distillation from the widest
width's largest network as the first step left it (also the search's adaptation teacher, as
the thesis' ``run_nat_new.py`` loads its phase-2 checkpoint: the stage's ``teacher.pt``). Both
steps train as those trainers do
(``NAT_extended/train/trainer.py``): SGD momentum without Nesterov, weight decay on every
parameter, the gradient norm clipped after each sub-network's backward, plain cross entropy,
dropout 0 (the thesis builds the super-network with ``dropout_rate=0``), the KD loss ``(CE + kd
* KD) * 2 / (kd + 1)``, timm's cosine stepped per epoch with a linear warm-up from
``warmup_lr`` (:func:`natv2.train.schedule.timm_cosine_epoch_lr`). The teacher's
batch-norm runs in train mode, on each batch's statistics, as the thesis' (never switched to
``eval()``; :func:`natv2.train.eps.teacher_logits`). Departure (``docs/DESIGN-NOTES.md``):
natv2 keeps each step's last epoch (the thesis keeps the best validation top-1,
``model_best``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
import torch

from natv2.distributed import SINGLE, World
from natv2.seeds import warmup_seed
from natv2.space import Arch, SearchSpace
from natv2.supernet import WidthSuperNets
from natv2.train.adapt import dropout_rate
from natv2.train.eps import PhaseSettings, TrainSettings, WarmupSettings, make_teacher, train_phase
from natv2.train.schedule import timm_cosine_epoch_lr


def _epoch_lr(phase: PhaseSettings, warmup: WarmupSettings) -> Callable[[int, int], float]:
    def lr_at(epoch: int, step: int) -> float:
        return timm_cosine_epoch_lr(epoch, phase.lr, phase.epochs, phase.warmup_epochs,
                                    warmup.warmup_lr, 0.0)
    return lr_at


def uniform_sampler(space: SearchSpace) -> Callable[[np.random.Generator, int], Arch]:
    """The thesis' ``search_space.sample``: every variable uniform, zeros pushed to the ends."""
    def sampler(rng: np.random.Generator, resolution: int) -> Arch:
        arch = space.sample(1, seed=rng, method="uniform", repair="push")[0]
        return dataclasses.replace(arch, resolution=int(resolution))
    return sampler


def warm_up(net: torch.nn.Module, space: SearchSpace, loader: Callable[[int], object],
            train: TrainSettings, warmup: WarmupSettings, device: torch.device,
            show_progress: bool = True, world: World = SINGLE,
            after_phase: Callable[[str, torch.nn.Module], Mapping] | None = None,
            keep_teacher: Callable[[torch.nn.Module], None] | None = None) -> list[dict]:
    """Run the two warm-up steps that have epochs; returns their training records.
    ``after_phase("full", net)`` may add fields to the first step's record. ``keep_teacher``
    receives the widest width's largest network as the first step leaves it (a frozen static
    copy: the second step's teacher, and the search's, the thesis' phase-2 ``model_best``)."""
    records = []
    several = isinstance(net, WidthSuperNets)
    train = dataclasses.replace(train, weight_decay=warmup.weight_decay,
                                label_smoothing=warmup.label_smoothing,
                                ensemble_weights=tuple(warmup.ensemble_weights))
    rule = warmup.rule
    # several widths: each width's largest network on its own first (run_nat_warmup.py phases 1
    # and 2), then all widths together (its phase 3, the widest largest network the teacher)
    first_step = (net.nets if several else [net]) if warmup.largest.epochs > 0 else []
    with dropout_rate(net, 0.0):
        for one in first_step:
            rec = train_phase(one, space.at_width(one.width_mult), loader, "full", warmup.largest,
                              train, None, device, seed=warmup_seed(train.seed, "largest"),
                              show_progress=show_progress, world=world,
                              exit_loss_weights=warmup.exit_loss_weights, rule=rule,
                              lr_at=_epoch_lr(warmup.largest, warmup))
            if after_phase is not None:
                rec.update(after_phase("full", one))
            records.append({**rec, "name": "warmup_largest",
                            **({"width": one.width_mult} if several else {})})
        teacher = make_teacher(net, space).to(device)
        if keep_teacher is not None:
            keep_teacher(teacher)
        if warmup.supernet.epochs > 0:
            teacher = teacher if train.kd_ratio > 0 else None
            rec = train_phase(net, space, loader, "expand", warmup.supernet, train, teacher, device,
                              seed=warmup_seed(train.seed, "supernet"), show_progress=show_progress,
                              world=world, sampler=uniform_sampler(space), rule=rule,
                              lr_at=_epoch_lr(warmup.supernet, warmup))
            records.append({**rec, "name": "warmup_supernet"})
    return records
