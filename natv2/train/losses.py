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


def exit_weighted_loss(exit_logits: Sequence[torch.Tensor], labels: torch.Tensor,
                       weights: Sequence[float], label_smoothing: float = 0.0) -> torch.Tensor:
    """``sum_i w_i * CE(exit_i, labels)`` over exits ``1..n`` (``weights`` of exits 1..5, the
    first ``n`` used as given, not renormalised): how the thesis trains a network's exits
    together (``EarlyExitRunManager.train_one_epoch``, ``TrainerEE.train_one_epoch``). Summed
    out of place."""
    if len(exit_logits) > len(weights):
        raise ValueError(f"{len(exit_logits)} exits but {len(weights)} exit loss weights")
    terms = [float(w) * F.cross_entropy(lo, labels, label_smoothing=label_smoothing)
             for w, lo in zip(weights, exit_logits, strict=False)]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """OFA's KD: cross entropy of the student against the teacher's softmax (temperature 1)."""
    return soft_cross_entropy(student_logits, F.softmax(teacher_logits.detach(), dim=1))
