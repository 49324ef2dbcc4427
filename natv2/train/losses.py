"""Losses for super-network training: label-smoothed cross entropy and knowledge distillation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Cross entropy against a probability distribution (OFA's ``cross_entropy_loss_with_soft_target``)."""
    return torch.sum(-soft_targets * F.log_softmax(logits, dim=1), dim=1).mean()


def ensemble_logits(exit_logits: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Weighted sum of the logits of several exits (OFAv2's ENS-KD teacher, before the softmax).

    ``weights`` are the exit weights of exits 1..n; only the first ``len(exit_logits)`` are used
    and renormalised to sum to 1. Built out of place (no in-place sums on autograd tensors).
    """
    if len(exit_logits) == 1:
        return exit_logits[0]
    w = torch.tensor(list(weights)[: len(exit_logits)], dtype=exit_logits[0].dtype)
    w = w / w.sum()
    return sum((wi * lo for wi, lo in zip(w.tolist(), exit_logits, strict=True)), torch.zeros_like(exit_logits[0]))


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """OFA's KD: cross entropy of the student against the teacher's softmax (temperature 1)."""
    return soft_cross_entropy(student_logits, F.softmax(teacher_logits.detach(), dim=1))
