"""The fine-tuning optimiser, OFA's weight-decay parameter groups, and an optimiser's state
handed from one training call to the next."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from natv2.errors import UserError

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


@dataclass
class OptimizerCarry:
    """An optimiser's per-parameter state (SGD's momentum buffers) carried from one training
    call to the next, as one optimiser would keep it: NAT's per-round adaptation in the thesis
    runs one ``SuperNetTrainer`` (one optimiser) through every round. ``state`` is
    ``optimizer.state_dict()["state"]`` (parameter index -> ``{"momentum_buffer": tensor}``, on
    the CPU), ``None`` for a fresh optimiser; ``source`` names where it came from, for errors."""

    state: dict[int, dict[str, Any]] | None = None
    source: str = "the previous round"

    def restore(self, optimizer: torch.optim.Optimizer) -> None:
        """Load the carried state into ``optimizer`` (same parameters, same order); its own
        hyper-parameters (learning rate, momentum, weight decay) are kept."""
        if not self.state:
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for index, entry in self.state.items():
            i = int(index)
            buffer = entry.get("momentum_buffer") if isinstance(entry, Mapping) else entry
            if (not 0 <= i < len(params) or not isinstance(buffer, torch.Tensor | None)
                    or (buffer is not None and tuple(buffer.shape) != tuple(params[i].shape))):
                raise UserError(f"the optimiser state of {self.source} does not fit the network "
                                f"(parameter {index} of {len(params)}); rerun that round")
        optimizer.load_state_dict({"state": dict(self.state),
                                   "param_groups": optimizer.state_dict()["param_groups"]})

    def keep(self, optimizer: torch.optim.Optimizer) -> None:
        """Take ``optimizer``'s per-parameter state (copied to the CPU)."""
        self.state = {int(i): {k: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v
                               for k, v in entry.items()}
                      for i, entry in optimizer.state_dict()["state"].items()}
