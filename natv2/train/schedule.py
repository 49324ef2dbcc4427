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
