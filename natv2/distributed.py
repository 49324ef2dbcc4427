"""Data-parallel training under ``torchrun``: the process group, one global batch split across
ranks, synchronised batch statistics and gradients.

A stage started as ``torchrun --nproc-per-node N -m natv2 <stage> ...`` runs in N processes.
Every rank draws the same sub-network and the same global batch (same seeds, same data order
and augmentation), trains on its own slice of that batch, and takes part in two collectives per
step: the batch-norm statistics of each layer (summed over ranks, with gradients, so batch
norm sees the global batch) and the parameter gradients (summed, with each rank's loss scaled
by its share of the batch). One training step of N processes is therefore the step one process
takes on the global batch, up to float rounding, and only rank 0 writes outputs.

Each rank loads the whole global batch and keeps its slice: exact equivalence with one process
at the cost of decoding N times the images (see docs/DESIGN-NOTES.md). ``gloo`` on CPU,
``nccl`` on CUDA; one process (no ``WORLD_SIZE`` or 1) needs no process group at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from natv2.errors import UserError

T = TypeVar("T")

# The environment torchrun sets in every process it starts.
ENV_RANK, ENV_WORLD_SIZE, ENV_LOCAL_RANK = "RANK", "WORLD_SIZE", "LOCAL_RANK"


@dataclass(frozen=True)
class World:
    """This process' place among the data-parallel processes of a stage."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> World:
        env = os.environ if env is None else env
        try:
            size = int(env.get(ENV_WORLD_SIZE, "1"))
            rank = int(env.get(ENV_RANK, "0"))
            local = int(env.get(ENV_LOCAL_RANK, str(rank)))
        except ValueError as exc:
            raise UserError(f"torchrun environment: {exc}; RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
        if size < 1 or not 0 <= rank < size:
            raise UserError(f"torchrun environment: RANK={rank} WORLD_SIZE={size}; valid: 0 <= RANK < WORLD_SIZE")
        return cls(rank, size, local)

    @property
    def parallel(self) -> bool:
        return self.size > 1

    @property
    def writer(self) -> bool:
        """Only rank 0 writes outputs."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: ``cuda:LOCAL_RANK`` for a CUDA device in a parallel run."""
        if self.parallel and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device


SINGLE = World()

# How long a process waits for the others at a collective: in a search round, processes 1..N-1
# wait while process 0 fits the predictor, searches and evaluates (torch's default is 30 min).
PROCESS_GROUP_TIMEOUT = timedelta(hours=24)


def start(world: World, device: torch.device) -> None:
    """Join the process group of ``world`` (no-op for one process): ``nccl`` for CUDA,
    ``gloo`` otherwise."""
    if not world.parallel or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank,
                            world_size=world.size, timeout=PROCESS_GROUP_TIMEOUT)


def stop(world: World) -> None:
    if world.parallel and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True inside a process group of more than one rank (torch's own process state)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def check_batch(world: World, batch_size: int) -> None:
    """A clear error when the ranks of ``world`` cannot each take part of a ``batch_size`` batch."""
    if world.size > batch_size:
        raise UserError(f"torchrun: {world.size} processes cannot split a batch of {batch_size} images; "
                        f"use at most {batch_size} processes or a larger batch size")


def local_slice(world: World, *tensors: torch.Tensor) -> tuple[float, tuple[torch.Tensor, ...]]:
    """This rank's contiguous share of a global batch, and that share's fraction of the batch
    (the factor its mean loss is scaled by before the gradients are summed)."""
    n = len(tensors[0])
    if not world.parallel:
        return 1.0, tensors
    check_batch(world, n)
    bounds = [n * r // world.size for r in range(world.size + 1)]
    lo, hi = bounds[world.rank], bounds[world.rank + 1]
    return (hi - lo) / n, tuple(t[lo:hi] for t in tensors)


def sum_gradients(parameters: Sequence[nn.Parameter] | object) -> None:
    """Sum the gradients of ``parameters`` over ranks, in one flat all-reduce. Parameters with
    no gradient (outside this step's sub-network: the same on every rank) are left without."""
    if not active():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def sum_values(values: Sequence[float], device: torch.device | None = None) -> list[float]:
    """``values`` summed over ranks (training statistics for the record rank 0 writes)."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                     device=device if device is not None and device.type == "cuda" else None)
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def broadcast_text(text: str | None, world: World) -> str:
    """Rank 0's ``text`` on every rank (UTF-8 bytes in a tensor; no pickling)."""
    if not world.parallel:
        return "" if text is None else text
    data = torch.tensor(list(text.encode("utf-8")) if world.writer else [], dtype=torch.uint8)
    length = torch.tensor([len(data)], dtype=torch.int64)
    dist.broadcast(length, 0)
    if not world.writer:
        data = torch.empty(int(length), dtype=torch.uint8)
    dist.broadcast(data, 0)
    return bytes(data.tolist()).decode("utf-8")


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) with a gradient: the backward pass sums the gradients over ranks too.
    (torch.distributed.nn.functional.all_reduce does this but is deprecated; its replacement
    is private.)"""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over every rank, differentiably."""
    return _SumOverRanks.apply(tensor)


def batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
               weight: torch.Tensor | None, bias: torch.Tensor | None, training: bool,
               momentum: float, eps: float, synchronised: bool = False) -> torch.Tensor:
    """``F.batch_norm``; ``synchronised`` in training inside a process group, over the batch of
    every rank (statistics summed with differentiable all-reduces, the running statistics
    updated with the global mean and unbiased variance, as one process would)."""
    if not (synchronised and training and active()):
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    c = x.size(1)
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, c] + [1] * (x.dim() - 2)
    # two passes, as F.batch_norm: E[x^2] - E[x]^2 loses digits where the mean dwarfs the spread
    sums = sum_over_ranks(torch.cat([x.sum(dims), x.new_tensor([x.numel() // c])]))
    n = sums[-1]
    mean = sums[:c] / n
    centred = x - mean.view(shape)
    var = sum_over_ranks((centred * centred).sum(dims)) / n
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            unbiased = var.detach() * n / (n - 1).clamp_min(1)  # no host sync: n is a tensor
            running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
    y = centred * torch.rsqrt(var.view(shape) + eps)
    if weight is not None:
        y = y * weight.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    return y


class SyncedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics span every rank (see :func:`batch_norm`);
    the same parameters and buffers, so its state dict is an ``nn.BatchNorm2d``'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not active():
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True,
                          factor, self.eps, synchronised=True)


@contextmanager
def synchronised_batch_norm(*modules: nn.Module | None) -> Iterator[None]:
    """Within the block, every plain ``nn.BatchNorm2d`` of ``modules`` is a
    :class:`SyncedBatchNorm2d` (the class changes, nothing else) and every module with a
    ``synchronised`` flag (the super-network's elastic batch norm) has it set; after it, all
    is as before, so that nothing extracted or evaluated later on one rank waits for the others.
    A no-op outside a process group."""
    members = [m for module in modules if module is not None and active() for m in module.modules()]
    plain = [m for m in members if type(m) is nn.BatchNorm2d]
    flagged = [m for m in members if getattr(m, "synchronised", None) is False]
    for m in plain:
        m.__class__ = SyncedBatchNorm2d
    for m in flagged:
        m.synchronised = True
    try:
        yield
    finally:
        for m in plain:
            m.__class__ = nn.BatchNorm2d
        for m in flagged:
            m.synchronised = False


def rank0_first(world: World, fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, then on the other ranks (a download or cache fill happens once, the
    others then read what it left)."""
    if world.parallel and not world.writer:
        dist.barrier()
    result = fn()
    if world.parallel and world.writer:
        dist.barrier()
    return result


@contextmanager
def joined(world: World, device: torch.device) -> Iterator[None]:
    """The process group of ``world`` for the duration of a stage (nothing for one process)."""
    start(world, device)
    try:
        yield
    finally:
        stop(world)
