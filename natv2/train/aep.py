"""Multi-exit fine-tuning of early-exit (``EE_*``) sub-networks with weighted exits.

NATv2's post-processing for EE families (DESIGN section 1, "What NATv2 changes" (6)) fine-tunes
the multi-exit sub-network (exits ``1..nd``) instead of the single exit ``nd``: the loss is a
weighted sum of the exits' cross entropies and the network's prediction is the weighted sum of
the exits' logits. (The brief calls this "AEP"; the thesis' script is ``finetune_natnet_ens.py``.)

Facts from the thesis code (``simonesarti/MSc_Thesis``: ``finetune_natnet_ens.py``,
``get_weights(n_exits, ordering)``, its own ``train`` / ``train_one_epoch``, and
``NAT_extended/evaluation/evaluate.py`` ``validate_ee``): two weight vectors per ordering,
*branch* weights for the loss and *ensemble* weights for the output. With ``m = nd (nd + 1) / 2``
the ramp is ``[1/m, 2/m, ..., nd/m]`` (increasing with depth):

* ``ASC``: loss and ensemble both the ramp (deeper exits count more);
* ``DESC``: both the reversed ramp (earlier exits count more);
* ``UNIF``: both ``1/nd`` each;
* ``MIX``: loss the reversed ramp (DESC), ensemble the ramp (ASC).

The thesis' multi-exit loss is ``sum_i bw_i * CE(out_i, y)`` (plain cross entropy), the output
``sum_i ew_i * out_i``; it logs the ensemble's loss and top-1 (``validate_ee`` also returns
each branch's top-1, which the script drops).

Departures: the thesis rounds each weight to 4 decimals (so UNIF at nd=3 sums to 0.9999); we keep
exact fractions, which sum to 1. The loss uses ``finetune.label_smoothing`` (the thesis: none).
The best epoch count of step 1 is chosen by validation top-1 of the ensemble (as in
:func:`natv2.train.finetune.finetune`; the thesis stops early on validation loss but also keeps
the best-ensemble-top-1 epoch).

```python
from natv2.train.aep import aep_finetune, uses_aep
from natv2.train.finetune import FinetuneSettings
settings = FinetuneSettings.from_config(cfg)
if uses_aep(arch.family, settings):           # EE family and finetune.exit_ordering set
    result = aep_finetune(supernet, arch, splits, settings, "auto")
    result.per_exit_top1, result.ensemble_top1, result.metrics()
```
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from natv2.data import Splits
from natv2.distributed import SINGLE, World
from natv2.errors import UserError
from natv2.measure import resolve_device
from natv2.space.arch import has_nd
from natv2.train.finetune import (
    ExtractFn,
    FinetuneResult,
    FinetuneSettings,
    LogitsFn,
    LossFn,
    check_settings,
    eval_batches,
    finetune,
)
from natv2.train.losses import ensemble_logits, exit_weighted_loss

#: the thesis' exit orderings (``finetune.exit_ordering``)
ORDERINGS = ("ASC", "DESC", "UNIF", "MIX")
ROLES = ("loss", "ensemble")
MAX_EXITS = 5
ORDERING_KEY = "exit_ordering"


def check_ordering(ordering: Any) -> str:
    """``ordering`` upper-cased if it is one of :data:`ORDERINGS`, else ``UserError``."""
    name = ordering.upper() if isinstance(ordering, str) else ordering
    if name not in ORDERINGS:
        raise UserError(f"finetune.{ORDERING_KEY}: unknown value {ordering!r}; valid: "
                        f"{', '.join(ORDERINGS)}")
    return name


def _check_nd(nd: Any) -> int:
    if isinstance(nd, bool) or not isinstance(nd, int) or not 1 <= nd <= MAX_EXITS:
        raise ValueError(f"nd (number of exits) must be an integer in 1..{MAX_EXITS}, got {nd!r}")
    return int(nd)


def _ramp(nd: int) -> list[float]:
    m = nd * (nd + 1) // 2
    return [i / m for i in range(1, nd + 1)]


def aep_weights(ordering: str, nd: int) -> tuple[list[float], list[float]]:
    """``(loss_weights, ensemble_weights)`` of exits ``1..nd`` for ``ordering`` (each sums to
    1); the thesis' ``get_weights`` without its 4-decimal rounding."""
    ordering, nd = check_ordering(ordering), _check_nd(nd)
    if ordering == "UNIF":
        uniform = [1.0 / nd] * nd
        return uniform, list(uniform)
    ramp = _ramp(nd)
    loss = ramp[::-1] if ordering in ("DESC", "MIX") else list(ramp)
    ensemble = ramp[::-1] if ordering == "DESC" else list(ramp)
    return loss, ensemble


def exit_weights(ordering: str, nd: int, role: str = "loss") -> list[float]:
    """Weights of exits ``1..nd`` (normalised) for ``ordering``: ``role="loss"`` the weights of
    the exits' cross entropies, ``role="ensemble"`` those of their logits. They differ only for
    MIX (loss DESC, ensemble ASC)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    loss, ensemble = aep_weights(ordering, nd)
    return loss if role == "loss" else ensemble


def uses_aep(family: str, settings: FinetuneSettings) -> bool:
    """Whether the fine-tune stage should use :func:`aep_finetune`: an early-exit family and a
    non-null ``settings.exit_ordering`` (``finetune.exit_ordering``). SE families ignore the
    setting."""
    return check_settings(settings).exit_ordering is not None and has_nd(family)


def _exits(outputs: Any) -> list[torch.Tensor]:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def aep_hooks(ordering: str, nd: int, label_smoothing: float = 0.0
              ) -> tuple[ExtractFn, LossFn, LogitsFn]:
    """``(extract_fn, loss_fn, logits_fn)`` for :func:`natv2.train.finetune.finetune`.

    ``extract_fn`` extracts the multi-exit net (exits ``1..nd``) and sets its
    ``exit_weights`` to the ordering's ensemble weights (saved with it, used by
    ``StaticNet.ensemble`` and ``natv2.load_model``); ``loss_fn`` is the loss-weighted sum of
    the exits' label-smoothed cross entropies; ``logits_fn`` the ensemble-weighted sum of their
    logits (what accuracy is measured on).
    """
    loss_w, ens_w = aep_weights(ordering, nd)

    def extract_fn(supernet: Any, arch: Any) -> nn.Module:
        if getattr(arch, "nd", nd) != nd:
            raise ValueError(f"aep_hooks built for nd={nd}, the architecture has nd={arch.nd}")
        net = supernet.extract(arch, all_exits=True)
        if not getattr(net, "multi_exit", False) or net.n_exits != nd:
            raise ValueError(f"expected a multi-exit net with {nd} exits from an EE "
                             f"super-network, got {type(net).__name__}")
        net.set_exit_weights(ens_w)
        return net

    def loss_fn(outputs: Any, y: torch.Tensor) -> torch.Tensor:
        exits = _exits(outputs)
        if len(exits) != nd:
            raise ValueError(f"{len(exits)} exit outputs, expected {nd}")
        return exit_weighted_loss(exits, y, loss_w, label_smoothing)

    def logits_fn(outputs: Any) -> torch.Tensor:
        return ensemble_logits(_exits(outputs), ens_w)

    return extract_fn, loss_fn, logits_fn


def exit_accuracies(model: nn.Module, batches: Iterable, device: torch.device,
                    ensemble_weights: Sequence[float]) -> tuple[list[float], float]:
    """``(per-exit top-1 list, ensemble top-1)`` (%) of a multi-exit ``model`` in one pass over
    ``(x, y)`` batches; the model is left in eval mode."""
    model.eval()
    correct: list[int] = []
    ens_correct = total = 0
    with torch.inference_mode():
        for x, y in batches:
            exits = _exits(model(x.to(device, non_blocking=True)))
            y = y.view(-1).cpu()
            if not correct:
                correct = [0] * len(exits)
            for i, lo in enumerate(exits):
                correct[i] += int((lo.argmax(1).cpu() == y).sum())
            ens = ensemble_logits(exits, ensemble_weights)
            ens_correct += int((ens.argmax(1).cpu() == y).sum())
            total += int(y.numel())
    if total == 0:
        raise ValueError("exit_accuracies: no examples to evaluate (empty split)")
    return [100.0 * c / total for c in correct], 100.0 * ens_correct / total


@dataclass
class AEPResult(FinetuneResult):
    """:class:`FinetuneResult` of a multi-exit fine-tuning plus the exit details (test split,
    after step 2); ``model`` is the multi-exit ``StaticNet`` (its ``exit_weights`` are the
    ensemble weights), ``top1_after == ensemble_top1``."""

    exit_ordering: str = "ASC"
    loss_weights: list[float] = field(default_factory=list)
    ensemble_weights: list[float] = field(default_factory=list)
    per_exit_top1: list[float] = field(default_factory=list)
    ensemble_top1: float = float("nan")

    def metrics(self) -> dict[str, Any]:
        """:meth:`FinetuneResult.metrics` plus ``exit_ordering``, ``loss_weights``,
        ``ensemble_weights``, ``per_exit_top1`` and ``ensemble_top1``."""
        return {
            **super().metrics(),
            "exit_ordering": self.exit_ordering,
            "loss_weights": list(self.loss_weights),
            "ensemble_weights": list(self.ensemble_weights),
            "per_exit_top1": list(self.per_exit_top1),
            "ensemble_top1": self.ensemble_top1,
        }


def aep_finetune(
    supernet: Any,
    arch: Any,
    splits: Splits,
    settings: FinetuneSettings,
    device: torch.device | str = "auto",
    show_progress: bool = False,
    *,
    encoding: str | None = None,
    world: World = SINGLE,
) -> AEPResult:
    """NATv2's two-step fine-tuning (:func:`~natv2.train.finetune.finetune`) of the multi-exit
    sub-network ``arch`` (an EE family) with the exit weights of ``settings.exit_ordering``
    (``finetune.exit_ordering``, which must not be null); then the test top-1 of every exit and
    of the ensemble. The history rows are :func:`finetune`'s (train/val top-1 of the ensemble).
    """
    s = check_settings(settings)
    if not has_nd(getattr(arch, "family", "SE_B")):
        raise UserError(f"multi-exit fine-tuning needs an early-exit family (EE_*), got "
                        f"{getattr(arch, 'family', None)!r}")
    if s.exit_ordering is None:
        raise UserError(f"multi-exit fine-tuning needs finetune.{ORDERING_KEY} "
                        f"({', '.join(ORDERINGS)}); it is null")
    ordering = check_ordering(s.exit_ordering)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    nd = int(arch.nd)
    extract_fn, loss_fn, logits_fn = aep_hooks(ordering, nd, s.label_smoothing)
    result = finetune(supernet, arch, splits, s, device, show_progress,
                      encoding=encoding, extract_fn=extract_fn, loss_fn=loss_fn,
                      logits_fn=logits_fn, world=world)
    loss_w, ens_w = aep_weights(ordering, nd)
    r = int(arch.resolution)
    test_splits = splits if splits.resolution == r else splits.at(r)
    test = eval_batches(test_splits.test, s.eval_batch_size, s.num_workers, s.seed)
    model = result.model.to(device)
    per_exit, ens = exit_accuracies(model, test, device, ens_w)
    model.to("cpu")
    base = {f.name: getattr(result, f.name) for f in fields(FinetuneResult)}
    return AEPResult(**base, exit_ordering=ordering, loss_weights=loss_w,
                     ensemble_weights=ens_w, per_exit_top1=[float(a) for a in per_exit],
                     ensemble_top1=float(ens))
