"""NATv2's warm-up of a super-network pretrained on another label set (its new head in place).

First the largest network is fine-tuned (EPS phase ``full``, no teacher; for early-exit
families all its exits together, ``WarmupSettings.exit_loss_weights``), then the whole
super-network is trained on uniformly sampled sub-networks (phase ``expand``) with knowledge
distillation from the largest network as the first step left it. With several widths
(``WidthSuperNets``) the first step trains each width's largest network in turn and the second
samples the width too, the widest width's largest network teaching (the thesis'
``run_nat_warmup.py``: phases 1 and 2 per width, phase 3 together with the w1.2 teacher).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from natv2.distributed import SINGLE, World
from natv2.seeds import warmup_seed
from natv2.space import SearchSpace
from natv2.supernet import WidthSuperNets
from natv2.train.eps import TrainSettings, WarmupSettings, make_teacher, train_phase


def warm_up(net: torch.nn.Module, space: SearchSpace, loader: Callable[[int], object],
            train: TrainSettings, warmup: WarmupSettings, device: torch.device,
            show_progress: bool = True, world: World = SINGLE,
            after_phase: Callable[[str, torch.nn.Module], Mapping] | None = None) -> list[dict]:
    """Run the two warm-up steps that have epochs; returns their training records.
    ``after_phase("full", net)`` may add fields to the first step's record."""
    records = []
    several = isinstance(net, WidthSuperNets)
    # several widths: each width's largest network on its own first (run_nat_warmup.py phases 1
    # and 2), then all widths together (its phase 3, the widest largest network the teacher)
    first_step = (net.nets if several else [net]) if warmup.largest.epochs > 0 else []
    for one in first_step:
        rec = train_phase(one, space.at_width(one.width_mult), loader, "full", warmup.largest, train, None, device,
                          seed=warmup_seed(train.seed, "largest"), show_progress=show_progress, world=world,
                          exit_loss_weights=warmup.exit_loss_weights)
        if after_phase is not None:
            rec.update(after_phase("full", one))
        records.append({**rec, "name": "warmup_largest", **({"width": one.width_mult} if several else {})})
    if warmup.supernet.epochs > 0:
        teacher = make_teacher(net, space).to(device) if train.kd_ratio > 0 else None
        rec = train_phase(net, space, loader, "expand", warmup.supernet, train, teacher, device,
                          seed=warmup_seed(train.seed, "supernet"), show_progress=show_progress, world=world)
        records.append({**rec, "name": "warmup_supernet"})
    return records
