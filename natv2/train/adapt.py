"""NAT's per-round super-network adaptation, as the thesis runs it.

After each search round NAT (Lu et al. 2021) fits a distribution to every variable of the
encoding over the best archive members, samples sub-networks from those distributions and
trains the super-network on them for a few epochs, with knowledge distillation from a teacher;
the archive is then re-evaluated with the adapted super-network (the stage does that).

**Distributions** (``search.adaptation.distribution``). By default the thesis' (``NAT.survival``
and ``_model_distribution`` in ``NAT_extended/search/algorithms/nat.py``,
``distribution_estimation`` in its ``utils.py``): the same ``top_n`` members (rank and
crowding, reference directions beyond two objectives), a scipy continuous distribution fitted
to each integer variable (``r``, ``w``, the 20 block slots, ``nd``) and kept as that function,
as committed, keeps it: the first of scipy's list that fits (``scipy_first_fit``;
:mod:`natv2.train.fitted_distributions`, with ``scipy_best_fit``, the least error as meant).
Our option ``categorical`` is a smoothed categorical estimate over the variable's bounds
``xl..xu``: ``p(v) = (count(v) + 1) / (n + xu - xl + 1)`` (Laplace / add-one smoothing), for
values that are *nominal*: a block code ``1 + ks_idx + 3*e_idx`` puts (k7, e3) = 3 next to (k3,
e4) = 4, and 0 means "skip", so a continuous density invents an ordering and smoothness between
unrelated choices; the categorical estimate reproduces the best members' frequencies exactly,
and the add-one term keeps every value reachable with a weight that vanishes as ``top_n``
grows. On the embedded default it shows no hypervolume benefit over the thesis' first fit
(``docs/DESIGN-NOTES.md``, declared departures), so it is off by default. Variables are sampled
independently, then repaired with the policy's repair (``push``/``fill``), so every sample is a
valid architecture.

**Training** (:class:`AdaptSettings`; the schema's defaults are the thesis' ``run_nat_new.py``
``assign_adaptation_arguments`` and ``SuperNetTrainer`` of ``NAT_extended/train/trainer.py``):
``subnets_per_step`` sub-networks per step (``dynamic_batch_size``), gradients accumulated and
the norm clipped after each one's backward; plain SGD momentum (no Nesterov), weight decay on
every parameter; the loss ``(CE + kd * KD) * 2 / (kd + 1)`` without label smoothing, dropout
off (the thesis builds the super-network with ``dropout_rate=0``); each step's resolution
uniform over the multiples of 4 between the space's smallest and largest
(``MyModRandomResizedCrop`` with ``CONTINUOUS = True``: the sampled ``r`` is dropped); one
cosine schedule with its warm-up across every round's epochs
(:func:`natv2.train.schedule.timm_cosine_epoch_lr`) and one optimiser, its momentum carried
from round to round (``carry``), neither restarted per round (``schedule: per_round``: a fresh
optimiser and a cosine per step over each round's epochs, natv2's former rule). The teacher is
fixed: the largest network (all exits, weighted by ``ensemble_weights`` in the thesis' order
exit 1 first) of stage 1's ``teacher.pt`` (the thesis' ``run_nat_new.py`` ``teacher_weights``,
:mod:`natv2.pipeline.adaptation`), without dropout; ``teacher: current`` takes each round's
input's largest instead.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from natv2.config import ensure_config
from natv2.distributed import SINGLE, World
from natv2.search import archive_vectors, objectives, survive
from natv2.space import Arch, SearchSpace
from natv2.train.eps import PhaseSettings, StepRule, TrainSettings, make_teacher, train_phase
from natv2.train.fitted_distributions import ArchSampler, FittedDistributions
from natv2.train.optim import OptimizerCarry
from natv2.train.phases import continuous_resolutions
from natv2.train.schedule import timm_cosine_epoch_lr


@dataclass(frozen=True)
class VariableDistributions(ArchSampler):
    """Independent smoothed categorical distributions, one per integer variable.

    ``probs[j][v - xl[j]]`` is the probability of value ``v`` of variable ``j``.
    """

    xl: np.ndarray
    xu: np.ndarray
    probs: tuple[np.ndarray, ...]
    n_fitted: int

    @classmethod
    def fit(cls, space: SearchSpace, vectors: np.ndarray, alpha: float = 1.0
            ) -> VariableDistributions:
        """Fit on integer vectors ``(n, n_var)`` with add-``alpha`` smoothing over the bounds."""
        X = np.atleast_2d(np.asarray(vectors, dtype=np.int64))
        xl, xu = space.xl, space.xu
        if X.shape[1] != len(xl):
            raise ValueError(f"vectors have {X.shape[1]} variables, the space {len(xl)}")
        probs = []
        for j in range(len(xl)):
            counts = np.bincount(X[:, j] - xl[j], minlength=int(xu[j] - xl[j] + 1)).astype(float)
            counts += float(alpha)
            probs.append(counts / counts.sum())
        return cls(xl=xl, xu=xu, probs=tuple(probs), n_fitted=len(X))

    def sample_vectors(self, n: int, rng: np.random.Generator, space: SearchSpace,
                       repair: str = "fill") -> np.ndarray:
        """``n`` repaired (valid, canonical) vectors, variables drawn independently."""
        X = np.empty((int(n), len(self.xl)), dtype=np.int64)
        for j, p in enumerate(self.probs):
            X[:, j] = self.xl[j] + rng.choice(len(p), size=int(n), p=p)
        return space.repair(X, method=repair)

    def sample_resolution(self, rng: np.random.Generator, space: SearchSpace) -> int:
        """A resolution (pixels) drawn from the fitted ``r`` distribution."""
        return int(space.resolutions[int(rng.choice(len(self.probs[0]), p=self.probs[0]))])


def best_members(df: pd.DataFrame, names: Sequence[str], top_n: int, seed: int = 0
                 ) -> pd.DataFrame:
    """The ``top_n`` archive rows best by survival (rank + crowding / reference directions)."""
    keep = survive(objectives(df, list(names)), int(top_n), seed=seed)
    return df.iloc[np.sort(keep)].reset_index(drop=True)


def fit_archive_distributions(space: SearchSpace, df: pd.DataFrame, names: Sequence[str],
                              top_n: int, seed: int, kind: str
                              ) -> VariableDistributions | FittedDistributions:
    """Distributions of the best ``top_n`` members of the archive ``df``: ``categorical``
    (:class:`VariableDistributions`) or the thesis' scipy fits (``scipy_first_fit`` /
    ``scipy_best_fit``, :class:`natv2.train.fitted_distributions.FittedDistributions`)."""
    vectors = archive_vectors(space, best_members(df, names, top_n, seed))
    if kind == "categorical":
        return VariableDistributions.fit(space, vectors)
    return FittedDistributions.fit(space, vectors, kind)


@dataclass(frozen=True)
class AdaptSettings:
    """The config's ``search.adaptation`` (the schema holds the defaults)."""

    epochs: int
    lr: float
    lr_min: float
    warmup_epochs: int
    warmup_lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    decay_all: bool
    grad_clip: float
    label_smoothing: float
    dropout: float
    top_n: int
    subnets_per_step: int
    kd_ratio: float
    ensemble_weights: tuple[float, ...]
    teacher: str
    resolution: str
    schedule: str
    distribution: str

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> AdaptSettings:
        a = dict(ensure_config(cfg)["search"]["adaptation"])
        a["ensemble_weights"] = tuple(float(w) for w in a["ensemble_weights"])
        return cls(**a)

    def lr_at(self, epoch: int, total_epochs: int) -> float:
        """The learning rate of epoch ``epoch`` (0-based, counted over every round) of a
        schedule of ``total_epochs``."""
        return timm_cosine_epoch_lr(epoch, self.lr, total_epochs, self.warmup_epochs,
                                    self.warmup_lr, self.lr_min)

    def train_settings(self, seed: int) -> TrainSettings:
        """The training settings :func:`natv2.train.eps.train_phase` takes."""
        return TrainSettings(
            phases={}, kd_ratio=self.kd_ratio, label_smoothing=self.label_smoothing,
            momentum=self.momentum, weight_decay=self.weight_decay, progressive_teacher=False,
            ensemble_weights=self.ensemble_weights, seed=int(seed), exit_loss_weights=())

    @property
    def rule(self) -> StepRule:
        return StepRule(nesterov=self.nesterov, decay_all=self.decay_all,
                        grad_clip=self.grad_clip, kd_mean=True)


@contextlib.contextmanager
def dropout_rate(net: torch.nn.Module, p: float) -> Iterator[None]:
    """Every dropout layer of ``net`` at rate ``p`` inside the block, as it was after."""
    layers = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    before = [m.p for m in layers]
    for m in layers:
        m.p = float(p)
    try:
        yield
    finally:
        for m, q in zip(layers, before, strict=True):
            m.p = q


def adapt_supernet(
    net: torch.nn.Module,
    space: SearchSpace,
    archive_df: pd.DataFrame,
    names: Sequence[str],
    loader: Callable[[int], Any],
    adaptation: AdaptSettings,
    device: torch.device,
    seed: int,
    repair: str,
    first_epoch: int = 0,
    total_epochs: int | None = None,
    teacher: torch.nn.Module | None = None,
    show_progress: bool = True,
    world: World = SINGLE,
    carry: OptimizerCarry | None = None,
) -> dict[str, Any]:
    """Train ``net`` in place on sub-networks sampled from the archive's best members.

    The round's epochs are epochs ``first_epoch ..`` of a schedule of ``total_epochs`` (default:
    this round's alone). ``teacher`` (a static network; with ``kd_ratio > 0``) defaults to the
    largest sub-network of ``net`` as it is now. ``repair`` is the policy's. ``loader(seed)``
    returns one shuffled epoch of training batches. ``carry`` hands the optimiser's momentum
    from the previous round in and this round's out (``schedule: across_rounds``: the thesis'
    one optimiser; :class:`natv2.train.optim.OptimizerCarry`). Returns the training record
    (name, epochs, seconds, loss, train_top1, epoch_loss, the epochs' learning rates
    ``epoch_lr``) plus ``top_n`` (members fitted).
    """
    start = time.perf_counter()
    epochs = adaptation.epochs
    dist = fit_archive_distributions(space, archive_df, names, adaptation.top_n, seed,
                                     adaptation.distribution)
    if epochs <= 0:
        return {"name": "adapt", "epochs": 0, "seconds": 0.0, "top_n": dist.n_fitted}
    total = int(first_epoch) + epochs if total_epochs is None else int(total_epochs)
    net.to(device)
    kd = adaptation.kd_ratio
    if kd > 0 and teacher is None:
        teacher = make_teacher(net, space)
    teacher = teacher.to(device) if kd > 0 else None
    settings = PhaseSettings(epochs=epochs, lr=adaptation.lr, warmup_epochs=0,
                             subnets_per_step=adaptation.subnets_per_step)
    across = adaptation.schedule == "across_rounds"
    # per_round (natv2's former rule): a cosine per step over this round's epochs, no warm-up
    epoch_lr = [adaptation.lr_at(int(first_epoch) + e, total) for e in range(epochs)] if across else None
    if adaptation.resolution == "continuous":
        sizes = continuous_resolutions(space.resolutions)

        def resolution_sampler(rng: np.random.Generator) -> int:
            return int(sizes[int(rng.integers(len(sizes)))])

        def sampler(rng: np.random.Generator, resolution: int) -> Arch:
            return replace(dist.sample(rng, space, repair), resolution=int(resolution))
    else:  # "fitted": the resolution drawn from the archive's r distribution
        def resolution_sampler(rng: np.random.Generator) -> int:
            return dist.sample_resolution(rng, space)

        def sampler(rng: np.random.Generator, resolution: int) -> Arch:
            return dist.sample(rng, space, repair, resolution)
    torch.manual_seed(seed)
    with dropout_rate(net, adaptation.dropout):
        record = train_phase(
            net, space, loader, "adapt", settings, adaptation.train_settings(seed), teacher,
            device, seed=seed, show_progress=show_progress, sampler=sampler,
            resolution_sampler=resolution_sampler, world=world, rule=adaptation.rule,
            lr_at=(lambda epoch, step: epoch_lr[epoch]) if across else None, carry=carry)
    net.eval()
    record["epoch_lr"] = epoch_lr
    record["top_n"] = dist.n_fitted
    if isinstance(dist, FittedDistributions):
        record["distributions"] = dist.describe()
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record
