"""(Extended) Progressive Shrinking: train a super-network so that its sub-networks work.

Per phase (``natv2.train.phases``): SGD with Nesterov momentum, linear warm-up then cosine decay
per step, label smoothing, ``subnets_per_step`` sub-networks sampled per batch with their
gradients accumulated before one optimiser step (OFA's ``dynamic_batch_size``), and knowledge
distillation from the largest network after the first phase (OFA's KD: soft cross entropy
against the teacher's softmax, ``loss = CE + kd_ratio * KD``). For early-exit families the
teacher's logits are the exit-weighted sum over all exits (OFAv2's ENS-KD). With
``progressive_teacher`` the teacher is re-extracted after each phase, else it stays the network
trained by the ``full`` phase.

As in OFA, the teacher runs in train mode (batch statistics) under ``no_grad``: the super-network's
shared BN running statistics mix every sampled sub-network and do not describe the largest one.
The teacher is a static copy, so this changes nothing in the super-network.

A checkpoint is written after each phase (atomically); a run that was killed resumes after the
last finished phase and, since each phase seeds its own generators, ends with the same weights
as an uninterrupted run. Each checkpoint carries a resume key (network config, the training
settings, the phase plan up to that phase, the caller's ``fingerprint`` such as the data
settings): a checkpoint left by a run with other settings is ignored, never resumed from.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from natv2.config import ensure_config
from natv2.distributed import (
    SINGLE,
    World,
    local_slice,
    sum_gradients,
    sum_values,
    synchronised_batch_norm,
)
from natv2.errors import UserError
from natv2.files import read_json, without_timings, write_json
from natv2.progress import progress
from natv2.seeds import epoch_seed, phase_seed
from natv2.space import SearchSpace
from natv2.supernet import WidthSuperNets, load_checkpoint, read_extra, save_checkpoint
from natv2.train.losses import distillation_loss, ensemble_logits, exit_weighted_loss
from natv2.train.optim import OptimizerCarry, param_groups
from natv2.train.phases import continuous_resolutions, elastic_dims, phases_for, sample_phase_arch
from natv2.train.schedule import cosine_lr


@dataclass(frozen=True)
class PhaseSettings:
    """One training phase (``supernet.train.phases.<name>``)."""

    epochs: int
    lr: float
    warmup_epochs: int
    subnets_per_step: int


@dataclass(frozen=True)
class TrainSettings:
    """Super-network training (``supernet.train``) and the top-level ``seed``; from the
    validated config, whose schema holds every default."""

    phases: Mapping[str, PhaseSettings]
    kd_ratio: float
    label_smoothing: float
    momentum: float
    weight_decay: float
    progressive_teacher: bool
    ensemble_weights: Sequence[float]
    seed: int
    exit_loss_weights: Sequence[float]

    @classmethod
    def from_config(cls, cfg: Mapping) -> TrainSettings:
        cfg = ensure_config(cfg)
        t = cfg["supernet"]["train"]
        return cls(
            phases={name: PhaseSettings(**p) for name, p in t["phases"].items()},
            kd_ratio=t["kd_ratio"], label_smoothing=t["label_smoothing"],
            momentum=t["momentum"], weight_decay=t["weight_decay"],
            progressive_teacher=t["progressive_teacher"],
            ensemble_weights=tuple(t["ensemble_weights"]), seed=int(cfg["seed"]),
            exit_loss_weights=tuple(t["exit_loss_weights"]))


@dataclass(frozen=True)
class WarmupSettings:
    """NATv2's warm-up of a super-network pretrained on another label set (``supernet.warmup``):
    ``largest`` (phase ``full``; early-exit families train every exit with
    ``exit_loss_weights``) then ``supernet`` (uniform sub-networks, KD), each on timm's cosine
    per epoch from ``warmup_lr`` (:func:`natv2.train.warmup.warm_up`)."""

    largest: PhaseSettings
    supernet: PhaseSettings
    exit_loss_weights: Sequence[float]
    ensemble_weights: Sequence[float]
    warmup_lr: float
    weight_decay: float
    grad_clip: float
    label_smoothing: float

    @classmethod
    def from_config(cls, cfg: Mapping) -> WarmupSettings:
        w = ensure_config(cfg)["supernet"]["warmup"]
        return cls(largest=PhaseSettings(w["largest_epochs"], w["lr"], w["largest_warmup_epochs"], 1),
                   supernet=PhaseSettings(w["supernet_epochs"], w["lr"], w["supernet_warmup_epochs"],
                                          w["subnets_per_step"]),
                   exit_loss_weights=tuple(w["exit_loss_weights"]),
                   ensemble_weights=tuple(w["ensemble_weights"]), warmup_lr=float(w["warmup_lr"]),
                   weight_decay=float(w["weight_decay"]), grad_clip=float(w["grad_clip"]),
                   label_smoothing=float(w["label_smoothing"]))

    @property
    def rule(self) -> StepRule:
        """The thesis' trainers: plain momentum, decay on every parameter, clipped, KD mean."""
        return StepRule(nesterov=False, decay_all=True, grad_clip=self.grad_clip, kd_mean=True)


@dataclass(frozen=True)
class StepRule:
    """How one optimiser step is taken, beyond the learning rate.

    ``nesterov``: SGD with Nesterov momentum. ``decay_all``: weight decay on every parameter
    (else none on BN parameters and biases, OFA's ``no_decay_keys``). ``grad_clip``: clip the
    gradient norm to this after each sub-network's backward (0: off), as the thesis'
    ``SuperNetTrainer.train_one_epoch`` does. ``kd_mean``: the loss with a teacher is
    ``(CE + kd * KD) * 2 / (kd + 1)`` (that trainer) instead of OFA's ``CE + kd * KD``.
    """

    nesterov: bool
    decay_all: bool
    grad_clip: float
    kd_mean: bool


#: OFA's progressive shrinking (``ofa/.../progressive_shrinking.py``), the EPS phases' rule
OFA_STEP = StepRule(nesterov=True, decay_all=False, grad_clip=0.0, kd_mean=False)


def make_teacher(net: nn.Module, space: SearchSpace) -> nn.Module:
    """A frozen static copy of the largest sub-network (all exits for early-exit families),
    without dropout (:func:`frozen_teacher`)."""
    largest = space.largest()
    return frozen_teacher(net.extract(largest, all_exits=True) if space.has_nd
                          else net.extract(largest))


def frozen_teacher(teacher: nn.Module) -> nn.Module:
    """``teacher`` with no trainable parameter and every dropout at 0, in place: the thesis'
    teachers have none (``run_ofa_distributed.py``: the EPS teacher ``dropout_rate=0`` outside
    the ``full`` task; ``NAT_extended/supernets/supernet.py``: the warm-up's and search's
    super-network) and run in train mode (:func:`teacher_logits`), where a dropout would act."""
    for p in teacher.parameters():
        p.requires_grad_(False)
    for m in teacher.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return teacher


def teacher_logits(teacher: nn.Module, x: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    teacher.train()
    with torch.no_grad():
        out = teacher(x)
    if isinstance(out, list | tuple):
        return ensemble_logits(out, weights)
    return out


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def _checkpoint_path(ckpt_dir: Path, index: int, phase: str) -> Path:
    return ckpt_dir / f"phase_{index:02d}_{phase}.pt"


def resume_key(net: nn.Module, space: SearchSpace, train: TrainSettings, plan: Sequence[str],
               index: int, fingerprint: Mapping | None = None) -> str:
    """What the weights after phase ``plan[index]`` depend on, as a canonical JSON string."""
    settings = {k: v for k, v in asdict(train).items() if k != "phases"}
    key = {
        "net": net.config() if hasattr(net, "config") else type(net).__name__,
        "space": {"family": space.family, "resolutions": [int(r) for r in space.resolutions]},
        "train": settings,
        "phases": [[p, asdict(train.phases[p])] for p in plan[: index + 1]],
        "fingerprint": fingerprint,
    }
    return json.dumps(key, sort_keys=True, default=str)


def _history_file(ckpt: Path) -> Path:
    """The phase records with their wall times, beside a phase checkpoint (which holds none)."""
    return ckpt.with_suffix(".json")


def _restored_history(ckpt: Path) -> list[dict]:
    """The records of the phases up to checkpoint ``ckpt``, with their wall times when the
    file beside it still matches."""
    saved = list((read_extra(ckpt) or {}).get("history", []))
    timed = _history_file(ckpt)
    try:
        with_times = read_json(timed) if timed.is_file() else None
    except UserError:  # cut: the records without times will do
        with_times = None
    return with_times if with_times is not None and without_timings(with_times) == saved else saved


def _matching_extra(path: Path, key: str) -> Mapping | None:
    """The ``extra`` of the phase checkpoint ``path`` when it exists and was written with ``key``."""
    if not path.exists():
        return None
    extra = read_extra(path)
    if not isinstance(extra, Mapping) or extra.get("resume_key") != key:
        return None
    return extra


def _resume_point(plan: Sequence[str], ckpt_dir: Path, keys: Sequence[str]) -> int:
    """Index of the phase after the last finished one whose checkpoint matches its resume key
    (0: none). Checkpoints left by runs with other settings are skipped."""
    for index in range(len(plan) - 1, -1, -1):
        if _matching_extra(_checkpoint_path(ckpt_dir, index, plan[index]), keys[index]) is not None:
            return index + 1
    return 0


Sampler = Callable[[np.random.Generator, int], object]


def phase_sampler(space: SearchSpace, phase: str) -> Sampler:
    """``sampler(rng, resolution) -> Arch`` for an EPS phase (its elastic dimensions at random)."""
    elastic = elastic_dims(phase)
    return lambda rng, resolution: sample_phase_arch(space, elastic, resolution, rng)


def train_phase(net: nn.Module, space: SearchSpace, loader: Callable[[int], object], phase: str,
                settings: PhaseSettings, train: TrainSettings, teacher: nn.Module | None,
                device: torch.device, seed: int, show_progress: bool = True,
                sampler: Sampler | None = None,
                resolution_sampler: Callable[[np.random.Generator], int] | None = None,
                world: World = SINGLE, exit_loss_weights: Sequence[float] | None = None,
                rule: StepRule = OFA_STEP, lr_at: Callable[[int, int], float] | None = None,
                carry: OptimizerCarry | None = None) -> dict:
    """Train ``net`` for one phase; returns {name, epochs, seconds, loss, train_top1} of its last
    epoch and ``epoch_loss``, the mean training loss of each epoch.

    ``exit_loss_weights`` (early-exit families, the ``full`` phase and the warm-up's first step):
    every exit ``1..nd`` of each sampled sub-network is trained, on the weighted sum of the
    exits' cross entropies (and of their distillation losses when there is a teacher), and
    ``train_top1`` is that of the exits' ensemble (``ensemble_weights``), as the thesis trains
    its ``full`` task (``EarlyExitRunManager.train_one_epoch``). Without it a sub-network's
    output is its last exit.

    ``sampler(rng, resolution)`` draws the sub-networks of a step; by default those of the EPS
    phase ``phase`` (NAT's per-round adaptation passes its own, fitted to the archive).
    ``resolution_sampler(rng)`` draws each step's resolution (default: uniform over
    :func:`natv2.train.phases.continuous_resolutions` of the space's, as the thesis' crop).
    In a data-parallel ``world`` every rank draws the same sub-networks and batches and trains
    on its slice of each batch (``natv2.distributed``); the record covers all ranks.

    ``rule`` (:class:`StepRule`) is OFA's by default. ``lr_at(epoch, step)`` gives the learning
    rate of a step of the phase (both 0-based); by default a linear warm-up over
    ``settings.warmup_epochs`` then a cosine decay, per step (OFA). ``carry``
    (:class:`natv2.train.optim.OptimizerCarry`): the optimiser starts from its state (momentum)
    and hands its own back at the end; without it the optimiser starts fresh.
    """
    rng = np.random.default_rng(seed)
    sampler = sampler or phase_sampler(space, phase)
    all_exits = exit_loss_weights is not None and space.has_nd
    # channels-last activations and weights: about 2x faster convolutions on CPU (oneDNN) and the
    # layout tensor cores want on GPU; values are unchanged
    net.to(memory_format=torch.channels_last)
    params = ([p for p in net.parameters() if p.requires_grad] if rule.decay_all
              else param_groups(net, train.weight_decay))
    optimizer = torch.optim.SGD(params, lr=settings.lr, momentum=train.momentum,
                                nesterov=rule.nesterov, weight_decay=train.weight_decay)
    if carry is not None:
        carry.restore(optimizer)
    start = time.perf_counter()
    steps_per_epoch = len(loader(0))
    total = settings.epochs * steps_per_epoch
    warmup = settings.warmup_epochs * steps_per_epoch
    if lr_at is None:
        def lr_at(epoch: int, step: int) -> float:
            return cosine_lr(settings.lr, step, total, warmup)
    kd_scale = 2.0 / (train.kd_ratio + 1.0) if rule.kd_mean else 1.0
    clip = rule.grad_clip > 0
    clip_sets: dict[int, list[nn.Parameter]] = {}

    def clipped_for(arch) -> list[nn.Parameter]:
        """What one sub-network's backward clips: its super-network's parameters (with several
        widths the active width's, the thesis' ``GenSupernet.parameters()``)."""
        owner = net.net_for(arch) if isinstance(net, WidthSuperNets) else net
        if id(owner) not in clip_sets:
            clip_sets[id(owner)] = [p for p in owner.parameters() if p.requires_grad]
        return clip_sets[id(owner)]

    step = 0
    loss_sum = correct = seen = 0.0
    sizes = continuous_resolutions(space.resolutions)
    epoch_loss: list[float] = []
    net.train()
    with (progress(total, f"supernet {phase}", show_progress and world.writer) as bar,
          synchronised_batch_norm(net, teacher)):
        for epoch in range(settings.epochs):
            loss_sum = correct = seen = 0.0
            for batch in loader(epoch_seed(seed, epoch)):
                share, (images, labels) = local_slice(world, *batch)
                lr = lr_at(epoch, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                resolution = int(resolution_sampler(rng) if resolution_sampler is not None
                                 else rng.choice(sizes))
                x = _resize(images.to(device), resolution).contiguous(memory_format=torch.channels_last)
                y = labels.to(device)
                soft = teacher_logits(teacher, x, train.ensemble_weights) if teacher is not None else None
                optimizer.zero_grad(set_to_none=True)
                for _ in range(settings.subnets_per_step):
                    arch = sampler(rng, resolution)
                    if all_exits:
                        exits = net(x, arch, all_exits=True)
                        loss = exit_weighted_loss(exits, y, exit_loss_weights, train.label_smoothing)
                        if soft is not None and train.kd_ratio > 0:
                            kd = [w * distillation_loss(lo, soft)
                                  for w, lo in zip(exit_loss_weights, exits, strict=False)]
                            loss = loss + train.kd_ratio * sum(kd[1:], kd[0])
                        logits = ensemble_logits(exits, train.ensemble_weights).detach()
                    else:
                        logits = net(x, arch)
                        loss = F.cross_entropy(logits, y, label_smoothing=train.label_smoothing)
                        if soft is not None and train.kd_ratio > 0:
                            loss = loss + train.kd_ratio * distillation_loss(logits, soft)
                    if kd_scale != 1.0:
                        loss = loss * kd_scale
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise UserError(f"supernet {phase}: training loss is {value} at step {step + 1} "
                                        f"(epoch {epoch + 1}); nothing written for this phase; lower its "
                                        f"learning rate (now {settings.lr})")
                    if not clip:
                        (loss * share).backward()  # summed over ranks: the global batch's mean loss
                    else:
                        _clipped_backward(loss * share, clipped_for(arch), rule.grad_clip)
                    loss_sum += value * len(y)
                    correct += float((logits.argmax(1) == y).sum())
                    seen += len(y)
                if not clip:  # else summed with each sub-network's backward
                    sum_gradients(net.parameters())
                optimizer.step()
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}", top1=f"{100 * correct / seen:.1f}")
            loss_sum, correct, seen = sum_values([loss_sum, correct, seen], device)
            epoch_loss.append(round(loss_sum / max(seen, 1), 6))
    if carry is not None:
        carry.keep(optimizer)
    return {
        "name": phase,
        "epochs": settings.epochs,
        "seconds": round(time.perf_counter() - start, 3),
        "loss": loss_sum / max(seen, 1),
        "train_top1": 100.0 * correct / max(seen, 1),
        "epoch_loss": epoch_loss,
    }


def _clipped_backward(loss: torch.Tensor, params: Sequence[nn.Parameter], max_norm: float) -> None:
    """Add ``loss``'s gradient (summed over data-parallel ranks) to the step's gradient so far,
    then clip the total's norm to ``max_norm``: the thesis' ``backward(); clip_grad_norm_()``
    per sub-network, the same on one process or several."""
    before = [p.grad for p in params]
    for p in params:
        p.grad = None
    loss.backward()
    sum_gradients(params)
    for p, g in zip(params, before, strict=True):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g
    nn.utils.clip_grad_norm_(params, max_norm)


def train_supernet(net: nn.Module, space: SearchSpace, loader: Callable[[int], object],
                   train: TrainSettings, device: torch.device, ckpt_dir: Path,
                   show_progress: bool = True, fingerprint: Mapping | None = None,
                   world: World = SINGLE,
                   after_phase: Callable[[str, nn.Module], Mapping] | None = None) -> list[dict]:
    """Run every EPS phase that applies to the family and has epochs > 0, resuming from ``ckpt_dir``.

    ``loader(seed)`` returns an iterable of (images, labels) batches of the training split,
    shuffled with that seed (one call per epoch). ``fingerprint`` (JSON-able) describes what else
    the weights depend on, e.g. the data settings: a checkpoint is resumed from only when it and
    the training settings match. The ``full`` phase of an early-exit family trains every exit
    (``train.exit_loss_weights``). ``after_phase(phase, net)`` may add JSON-able fields to a
    phase's record (e.g. validation accuracies), saved with its checkpoint. Returns the
    per-phase records.
    """
    plan = [p for p in phases_for(space.family) if p in train.phases and train.phases[p].epochs > 0]
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    net.to(device)
    keys = [resume_key(net, space, train, plan, i, fingerprint) for i in range(len(plan))]
    start = _resume_point(plan, ckpt_dir, keys)
    # without a progressive teacher, the teacher is the network as the first phase left it
    first_teacher = start > 1 and train.kd_ratio > 0 and not train.progressive_teacher
    first = _checkpoint_path(ckpt_dir, 0, plan[0]) if plan else None
    if first_teacher and _matching_extra(first, keys[0]) is None:
        start = 0  # that checkpoint is gone or from another run: the teacher cannot be rebuilt
    history: list[dict] = []
    teacher = None
    if start > 0:
        if first_teacher:
            load_checkpoint(net, first)
            teacher = make_teacher(net, space).to(device)
        last = _checkpoint_path(ckpt_dir, start - 1, plan[start - 1])
        load_checkpoint(net, last)
        history = _restored_history(last)
        if teacher is None and train.kd_ratio > 0:
            teacher = make_teacher(net, space).to(device)
    for index in range(start, len(plan)):
        phase = plan[index]
        record = train_phase(net, space, loader, phase, train.phases[phase], train,
                             teacher if phase != "full" else None, device,
                             seed=phase_seed(train.seed, index), show_progress=show_progress,
                             world=world,
                             exit_loss_weights=train.exit_loss_weights if phase == "full" else None)
        if after_phase is not None:
            record.update(after_phase(phase, net))
        history.append(record)
        if world.writer:  # in a data-parallel run, every rank holds the same weights
            ckpt = save_checkpoint(net, _checkpoint_path(ckpt_dir, index, phase),
                                   extra={"history": history, "resume_key": keys[index],
                                          "settings": {k: asdict(v) for k, v in train.phases.items()}})
            write_json(_history_file(ckpt), history)
        if train.kd_ratio > 0 and (train.progressive_teacher or teacher is None):
            teacher = make_teacher(net, space).to(device)
    return history
