"""NAT's per-round super-network adaptation.

After each search round NAT (Lu et al. 2021) fits a distribution to every variable of the
encoding over the best archive members, samples sub-networks from those distributions and
trains the super-network on them for a few epochs, with knowledge distillation from the largest
network; the archive is then re-evaluated with the adapted super-network (the stage does that).

**Distributions.** For each integer variable (``r``, ``w``, the 20 block slots, ``nd``) we use a
smoothed categorical estimate over the variable's bounds ``xl..xu``: ``p(v) = (count(v) + 1) /
(n + xu - xl + 1)`` (Laplace / add-one smoothing). NAT's code fits scipy continuous
distributions to the integer values and rounds samples. We do not, because the values are
*nominal*: a block code ``1 + ks_idx + 3*e_idx`` puts (k7, e3) = 3 next to (k3, e4) = 4, and 0
means "skip", so a continuous density invents an ordering and smoothness between unrelated
choices, and rounding makes the end values of the range half as likely as the fit says. The
categorical estimate reproduces the best members' frequencies exactly, and the add-one term
keeps every value reachable (exploration) with a weight that vanishes as ``top_n`` grows (150
members vs 10 values per slot). Variables are sampled independently, then repaired with the
policy's repair (``push``/``fill``), so every sample is a valid architecture.

**Training.** :func:`natv2.train.eps.train_phase` with a sampler drawing from the
distributions: ``subnets_per_step`` sub-networks per step (gradients accumulated), the step's
resolution drawn from the fitted ``r`` distribution, KD (weight ``kd_ratio``) from the largest
network of the super-network as it was at the start of the adaptation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from natv2.config import ensure_config
from natv2.distributed import SINGLE, World
from natv2.search import archive_vectors, objectives, survive
from natv2.space import Arch, SearchSpace
from natv2.train.eps import PhaseSettings, TrainSettings, make_teacher, train_phase


@dataclass(frozen=True)
class VariableDistributions:
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

    def sample(self, rng: np.random.Generator, space: SearchSpace, repair: str = "fill",
               resolution: int | None = None) -> Arch:
        """One architecture; ``resolution`` (one of the space's) overrides the sampled ``r``."""
        vec = self.sample_vectors(1, rng, space, repair)[0]
        if resolution is not None:
            vec[0] = space.resolutions.index(int(resolution))
        return space.from_vector(vec)

    def sample_resolution(self, rng: np.random.Generator, space: SearchSpace) -> int:
        """A resolution (pixels) drawn from the fitted ``r`` distribution."""
        return int(space.resolutions[int(rng.choice(len(self.probs[0]), p=self.probs[0]))])


def best_members(df: pd.DataFrame, names: Sequence[str], top_n: int, seed: int = 0
                 ) -> pd.DataFrame:
    """The ``top_n`` archive rows best by survival (rank + crowding / reference directions)."""
    keep = survive(objectives(df, list(names)), int(top_n), seed=seed)
    return df.iloc[np.sort(keep)].reset_index(drop=True)


def fit_archive_distributions(space: SearchSpace, df: pd.DataFrame, names: Sequence[str],
                              top_n: int, seed: int = 0) -> VariableDistributions:
    """Distributions of the best ``top_n`` members of the archive ``df``."""
    return VariableDistributions.fit(space, archive_vectors(space, best_members(df, names, top_n,
                                                                                  seed)))


@dataclass(frozen=True)
class AdaptSettings:
    """The config's ``search.adaptation`` (the schema holds the defaults)."""

    epochs: int
    lr: float
    top_n: int
    subnets_per_step: int
    kd_ratio: float

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> AdaptSettings:
        a = ensure_config(cfg)["search"]["adaptation"]
        return cls(epochs=int(a["epochs"]), lr=float(a["lr"]), top_n=int(a["top_n"]),
                   subnets_per_step=int(a["subnets_per_step"]), kd_ratio=float(a["kd_ratio"]))


def adapt_supernet(
    net: torch.nn.Module,
    space: SearchSpace,
    archive_df: pd.DataFrame,
    names: Sequence[str],
    loader: Callable[[int], Any],
    adaptation: AdaptSettings,
    train: TrainSettings,
    device: torch.device,
    seed: int,
    repair: str,
    show_progress: bool = True,
    world: World = SINGLE,
) -> dict[str, Any]:
    """Train ``net`` in place on sub-networks sampled from the archive's best members.

    ``train`` supplies label smoothing, momentum, weight decay and the exit weights (its
    ``kd_ratio`` is replaced by ``adaptation.kd_ratio``); ``repair`` is the policy's.
    ``loader(seed)`` returns one shuffled epoch of training batches. Returns the training
    record (name, epochs, seconds, loss, train_top1) plus ``top_n`` (members fitted).
    """
    start = time.perf_counter()
    epochs = adaptation.epochs
    dist = fit_archive_distributions(space, archive_df, names, adaptation.top_n, seed)
    if epochs <= 0:
        return {"name": "adapt", "epochs": 0, "seconds": 0.0, "top_n": dist.n_fitted}
    net.to(device)
    kd = adaptation.kd_ratio
    teacher = make_teacher(net, space).to(device) if kd > 0 else None
    settings = PhaseSettings(epochs=epochs, lr=adaptation.lr, warmup_epochs=0,
                             subnets_per_step=adaptation.subnets_per_step)
    train = replace(train, phases={"adapt": settings}, kd_ratio=kd, seed=seed)
    torch.manual_seed(seed)
    record = train_phase(
        net, space, loader, "adapt", settings, train, teacher, device, seed=seed,
        show_progress=show_progress,
        sampler=lambda rng, resolution: dist.sample(rng, space, repair, resolution),
        resolution_sampler=lambda rng: dist.sample_resolution(rng, space),
        world=world,
    )
    net.eval()
    record["top_n"] = dist.n_fitted
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record
