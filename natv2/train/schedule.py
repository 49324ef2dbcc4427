"""Learning-rate schedule: linear warm-up then cosine decay, evaluated per step (OFA's default)."""

from __future__ import annotations

import math


def cosine_lr(base_lr: float, step: int, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based) of ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t))


def scheduled_step(step: int) -> int:
    """The cosine step whose rate step ``step`` (0-based) trains at: the thesis' loop
    (``finetune_natnet.py`` ``train_one_epoch``) calls ``scheduler.step((epoch - 1) + batch /
    n_batches)`` *after* each batch, so step ``t`` runs at the rate the cosine gives step
    ``t - 1`` (steps 0 and 1 both at the initial rate)."""
    return max(int(step) - 1, 0)


def timm_cosine_epoch_lr(epoch: int, base_lr: float, total_epochs: int, warmup_epochs: int = 0,
                         warmup_lr: float = 0.0, min_lr: float = 0.0) -> float:
    """Learning rate of (0-based) ``epoch``, constant over the epoch: timm's
    ``CosineLRScheduler`` as the thesis configures it for NAT's super-network adaptation
    (``NAT_extended/train/schedulers.py``, built by ``SuperNetTrainer.__init__`` with
    ``t_initial`` = every round's epochs, one cycle, ``warmup_prefix=False``,
    ``t_in_epochs=True``; stepped once per epoch by ``NAT._adapt_supernet``).

    A linear warm-up from ``warmup_lr`` over ``warmup_epochs``; then
    ``min_lr + (base_lr - min_lr) * (1 + cos(pi * epoch / total_epochs)) / 2``, the cosine
    counted from epoch 0 (not from the warm-up's end); ``min_lr`` from ``total_epochs`` on.
    """
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return warmup_lr + epoch * (base_lr - warmup_lr) / warmup_epochs
    if epoch >= total_epochs:
        return min_lr
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * epoch / total_epochs))
