"""The fine-tuning optimiser and OFA's weight-decay parameter groups."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from natv2.train.finetune import FinetuneSettings


def param_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on BN parameters and biases (OFA's ``no_decay_keys='bn#bias'``)."""
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(net: nn.Module, s: FinetuneSettings) -> torch.optim.Optimizer:
    """SGD (``momentum``, ``nesterov``, ``weight_decay``) or AdamW (its own default weight decay,
    as the thesis builds it); ``decay_all: false`` exempts BN parameters and biases."""
    groups = ([p for p in net.parameters() if p.requires_grad] if s.decay_all
              else param_groups(net, s.weight_decay))
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov,
                               weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=s.lr)
    raise ValueError(f"no optimizer {s.optimizer!r}")
