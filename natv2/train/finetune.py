"""NATv2 post-processing: fine-tune one chosen sub-network in two steps.

Step 1 extracts the sub-network with the super-network's weights, recalibrates batch-norm on
training images and trains it on the train split, measuring validation loss and top-1 after every
epoch; training stops after ``patience`` epochs without a lower validation loss (``stop_on:
val_top1``: without a higher top-1) or at ``max_epochs``, and the epoch of the best validation
top-1 is remembered. Step 2 extracts the sub-network again (fresh inherited weights),
recalibrates BN and trains it on train + val for exactly that many epochs; its test top-1 is the
reported accuracy. The defaults are the thesis' (``finetune_natnet.py``,
``assign_training_arguments`` and ``train``; ``LossEarlyStoppingMeter``) with its command-line
choices ``--opt sgd --lre 4`` (both required there; ``--lre 5`` is lr 1e-5, ``adamw`` and
``ranger`` the other optimisers): up to 150 epochs at batch 64, SGD momentum 0.9 without
Nesterov at lr 1e-4, weight decay 5e-4 on every parameter,
plain cross entropy, dropout 0, one cosine of ``max_epochs`` epochs down to 1e-8 per step, which
step 2 follows too for its fewer epochs (``cosine_epochs: run`` spans each step's own epochs),
each step at the rate of the step before it (:func:`natv2.train.schedule.scheduled_step`, the thesis' loop).
Unlike the thesis, step 2 never looks at the test set (the thesis early-stops it on the test loss,
its validation set being merged into training).

```python
from natv2.train.finetune import FinetuneSettings, finetune
settings = FinetuneSettings.from_config(cfg)  # or a partial config: {"finetune": {"max_epochs": 20}}
result = finetune(supernet, arch, splits, settings, "auto")
result.top1_before, result.top1_after, result.best_epochs, result.history
```

Hooks for multi-exit (EE) sub-networks: ``extract_fn(supernet, arch) -> nn.Module`` (e.g. all
exits), ``loss_fn(outputs, y) -> loss`` (e.g. a weighted sum of the exits' cross entropies) and
``logits_fn(outputs) -> logits`` (what accuracy is measured on, e.g. an exit ensemble). The
defaults are ``supernet.extract(arch)``, label-smoothed cross entropy on ``logits_fn(outputs)``
and :func:`natv2.measure.logits_of` (the output itself, or the last exit of a list).

Reproducibility: each step seeds torch's global RNG (dropout, the digits augmentation) and the
loader's shuffling generator from ``natv2.seeds.step_seed(settings.seed, step)``, so the same
inputs on the same device give the same weights. (On CUDA, cuDNN may pick non-deterministic
kernels; set ``torch.backends.cudnn.deterministic`` yourself if you need bitwise equality there.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from natv2.config import ensure_config
from natv2.data import Splits, TensorImageDataset, calibration_batches, make_loader, materialize
from natv2.distributed import (
    SINGLE,
    World,
    local_slice,
    sum_gradients,
    sum_values,
    synchronised_batch_norm,
)
from natv2.errors import UserError
from natv2.measure import (
    count_macs,
    count_params,
    logits_of,
    recalibrate_bn,
    resolve_device,
)
from natv2.measure.latency import Latency, LatencySettings, measure_latency
from natv2.progress import progress
from natv2.seeds import step_seed
from natv2.train.early_stopping import EarlyStopping
from natv2.train.optim import make_optimizer
from natv2.train.schedule import cosine_lr, scheduled_step

HISTORY_COLUMNS = ("step", "epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "seconds")

LossFn = Callable[[Any, torch.Tensor], torch.Tensor]
LogitsFn = Callable[[Any], torch.Tensor]
ExtractFn = Callable[[Any, Any], nn.Module]


@dataclass(frozen=True)
class FinetuneSettings:
    """What :func:`finetune` and :func:`natv2.train.aep.aep_finetune` use: the ``finetune:``
    section (less ``slots``, ``n_high_tradeoff`` and ``tradeoff``, which the stage uses), the top-level ``seed``
    and the data section's evaluation batch size and loader workers. Values come from the
    validated config; the schema (``natv2/schemas/config.schema.yaml``) holds the defaults and
    the checks."""

    seed: int
    max_epochs: int
    patience: int
    optimizer: str
    stop_on: str
    lr: float
    lr_min: float
    cosine_epochs: str
    momentum: float
    nesterov: bool
    weight_decay: float
    decay_all: bool
    label_smoothing: float
    dropout: float | None
    warmup_epochs: int
    batch_size: int
    eval_batch_size: int
    num_workers: int
    measure_latency: bool
    exit_ordering: str | None
    latency: LatencySettings

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> FinetuneSettings:
        """From a config (a plain mapping is validated first, so defaults come from the schema);
        ``finetune.batch_size: null`` means ``data.batch_size``."""
        cfg = ensure_config(cfg)
        ft, data = cfg["finetune"], cfg["data"]
        return cls(
            seed=int(cfg["seed"]),
            max_epochs=int(ft["max_epochs"]),
            patience=int(ft["patience"]),
            optimizer=ft["optimizer"],
            stop_on=ft["stop_on"],
            lr=float(ft["lr"]),
            lr_min=float(ft["lr_min"]),
            cosine_epochs=ft["cosine_epochs"],
            momentum=float(ft["momentum"]),
            nesterov=bool(ft["nesterov"]),
            weight_decay=float(ft["weight_decay"]),
            decay_all=bool(ft["decay_all"]),
            label_smoothing=float(ft["label_smoothing"]),
            dropout=None if ft["dropout"] is None else float(ft["dropout"]),
            warmup_epochs=int(ft["warmup_epochs"]),
            batch_size=int(data["batch_size"] if ft["batch_size"] is None else ft["batch_size"]),
            eval_batch_size=int(data["eval_batch_size"]),
            num_workers=int(data["num_workers"]),
            measure_latency=bool(ft["measure_latency"]),
            exit_ordering=ft["exit_ordering"],
            latency=LatencySettings.from_config(cfg),
        )


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns; ``model`` is the step-2 network (CPU, eval mode)."""

    model: nn.Module
    top1_before: float
    top1_after: float
    best_epochs: int
    val_top1_best: float
    epochs_run: int
    params: int
    macs: int
    latency_ms: float | None
    seconds: float
    history: list[dict[str, Any]]
    settings: FinetuneSettings
    encoding: str | None = None
    latency_iqr_ms: float | None = None
    latency_measured: dict[str, Any] | None = None  # backend settings and machine (``latency:``)

    def metrics(self) -> dict[str, Any]:
        """The ``metrics.json`` content (DESIGN §3) plus step-1 details."""
        return {
            "encoding": self.encoding,
            "top1_before": self.top1_before,
            "top1_after": self.top1_after,
            "params": self.params,
            "macs": self.macs,
            "latency_ms": self.latency_ms,
            "latency_iqr_ms": self.latency_iqr_ms,
            "latency": self.latency_measured,
            "best_epochs": self.best_epochs,
            "val_top1_best": self.val_top1_best,
            "epochs_step1": self.epochs_run,
            "seconds": self.seconds,
        }


# ----------------------------------------------------------------------------- helpers
def default_extract(supernet: Any, arch: Any) -> nn.Module:
    return supernet.extract(arch)


def make_loss_fn(label_smoothing: float, logits_fn: LogitsFn = logits_of) -> LossFn:
    """Label-smoothed cross entropy on ``logits_fn(outputs)`` (the single-exit loss)."""

    def loss_fn(outputs: Any, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits_fn(outputs), y, label_smoothing=label_smoothing)

    return loss_fn


def eval_batches(dataset, batch_size: int, num_workers: int, seed: int) -> Iterable:
    """In-memory digits views are sliced into a list once; other datasets are streamed."""
    if isinstance(dataset, TensorImageDataset) and dataset.pad is None:
        return materialize(dataset, batch_size, num_workers)
    return make_loader(dataset, batch_size, shuffle=False, seed=seed, num_workers=num_workers)


def accuracy(model: nn.Module, batches: Iterable, device: torch.device,
             logits_fn: LogitsFn = logits_of) -> float:
    """Top-1 (%) of ``logits_fn(model(x))`` over ``(x, y)`` batches; model left in eval mode."""
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in batches:
            pred = logits_fn(model(_channels_last(x.to(device, non_blocking=True)))).argmax(dim=1)
            correct += int((pred.cpu() == y.view(-1).cpu()).sum())
            total += int(y.numel())
    if total == 0:
        raise ValueError("accuracy: no examples to evaluate (empty split)")
    return 100.0 * correct / total


def loss_and_accuracy(model: nn.Module, batches: Iterable, device: torch.device, loss_fn: LossFn,
                      logits_fn: LogitsFn = logits_of) -> tuple[float, float]:
    """(mean ``loss_fn`` per example, top-1 %) over ``(x, y)`` batches; model left in eval mode."""
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    with torch.inference_mode():
        for x, y in batches:
            y = y.view(-1).to(device)
            outputs = model(_channels_last(x.to(device, non_blocking=True)))
            loss_sum += float(loss_fn(outputs, y)) * int(y.numel())
            correct += int((logits_fn(outputs).argmax(dim=1) == y).sum())
            total += int(y.numel())
    if total == 0:
        raise ValueError("loss_and_accuracy: no examples to evaluate (empty split)")
    return loss_sum / total, 100.0 * correct / total


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """Channels-last images: oneDNN's fast convolution layout on CPU, the one GPUs prefer."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _train_loader(dataset, s: FinetuneSettings, seed: int):
    # drop the last partial batch (a batch of 1 breaks BN at 1x1 spatial size) unless the split
    # is smaller than a batch
    drop_last = len(dataset) > s.batch_size
    return make_loader(dataset, s.batch_size, shuffle=True, seed=seed,
                       num_workers=s.num_workers, drop_last=drop_last)


@dataclass
class _Run:
    """One training run of ``epochs`` epochs; its cosine spans ``epochs`` or, with
    ``cosine_epochs: max_epochs``, ``max_epochs`` (of which it may run fewer)."""

    net: nn.Module
    loader: Any
    epochs: int
    s: FinetuneSettings
    device: torch.device
    loss_fn: LossFn
    logits_fn: LogitsFn
    world: World = SINGLE
    step: int = 0

    def __post_init__(self) -> None:
        self.optimizer = make_optimizer(self.net, self.s)
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise UserError("finetune: the training split is empty")
        self.total = self.epochs * self.steps_per_epoch  # the steps this run takes
        span = self.s.max_epochs if self.s.cosine_epochs == "max_epochs" else self.epochs
        self.schedule_steps = max(span, self.epochs) * self.steps_per_epoch  # the cosine's length
        self.warmup = min(self.s.warmup_epochs * self.steps_per_epoch, self.schedule_steps)

    def epoch(self, bar: Any) -> dict[str, float]:
        net, opt = self.net, self.optimizer
        net.train()
        start = time.perf_counter()
        first_lr = None
        loss_sum = correct = seen = 0.0
        with synchronised_batch_norm(net):
            for batch in self.loader:
                share, (x, y) = local_slice(self.world, *batch)
                lr = cosine_lr(self.s.lr, scheduled_step(self.step), self.schedule_steps,
                               self.warmup, self.s.lr_min)
                first_lr = lr if first_lr is None else first_lr
                for group in opt.param_groups:
                    group["lr"] = lr
                x, y = _channels_last(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)
                outputs = net(x)
                loss = self.loss_fn(outputs, y)
                opt.zero_grad(set_to_none=True)
                (loss * share).backward()  # summed over ranks: the global batch's mean loss
                sum_gradients(net.parameters())
                opt.step()
                self.step += 1
                loss_value = float(loss.detach())
                if self.world.parallel:  # every rank takes the same decision below
                    total, count = sum_values([loss_value * len(y), len(y)], self.device)
                    loss_value = total / count
                if not math.isfinite(loss_value):
                    raise UserError(
                        f"finetune: training loss is {loss_value} at step {self.step}; nothing written; "
                        f"lower finetune.lr (now {self.s.lr})")
                n = int(y.numel())
                loss_sum += loss_value * n
                correct += float((self.logits_fn(outputs).detach().argmax(1) == y).sum())
                seen += n
                bar.update(1)
        loss_sum, correct, seen = sum_values([loss_sum, correct, seen], self.device)
        return {"lr": float(first_lr if first_lr is not None else 0.0),
                "train_loss": loss_sum / max(seen, 1.0),
                "train_top1": 100.0 * correct / max(seen, 1.0),
                "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------- finetune
def check_settings(settings: Any) -> FinetuneSettings:
    """``settings`` if it is a :class:`FinetuneSettings`, else ``TypeError``."""
    if not isinstance(settings, FinetuneSettings):
        raise TypeError(f"fine-tuning takes FinetuneSettings (FinetuneSettings.from_config(cfg)), "
                        f"not {type(settings).__name__}")
    return settings


def _train_early_stopping(run: _Run, val: Iterable, show_progress: bool
                          ) -> tuple[list[dict[str, Any]], float, int]:
    """Step 1: train ``run`` epoch by epoch, measuring validation loss and top-1 after each,
    until :class:`EarlyStopping` stops it (or ``run.epochs`` ran). Returns the history rows, the
    best validation top-1 and its epoch."""
    history: list[dict[str, Any]] = []
    stopper = EarlyStopping(run.s.stop_on, run.s.patience)
    with progress(run.total, "finetune step 1", show_progress) as bar:
        for epoch in range(1, run.epochs + 1):
            row = run.epoch(bar)
            t = time.perf_counter()
            val_loss, val_top1 = loss_and_accuracy(run.net, val, run.device, run.loss_fn, run.logits_fn)
            row["seconds"] += time.perf_counter() - t
            history.append({"step": 1, "epoch": epoch, **row, "val_loss": val_loss, "val_top1": val_top1})
            stop = stopper.update(epoch, val_loss, val_top1)
            bar.set_postfix(val=f"{val_top1:.1f}", best=f"{stopper.best_top1:.1f}@{stopper.best_epoch}")
            if stop:
                break
    return history, stopper.best_top1, stopper.best_epoch


def _measure_final(net: nn.Module, test: Iterable, r: int, device: torch.device,
                   s: FinetuneSettings, logits_fn: LogitsFn
                   ) -> tuple[float, Latency | None, int, int]:
    """Test top-1, latency (if measured), params and MACs of the step-2 network, which is left
    on the CPU in the layout ``load_model`` gives."""
    top1_after = accuracy(net, test, device, logits_fn)
    lat = measure_latency(net, r, s.latency, device) if s.measure_latency else None
    net.eval()
    params, macs = count_params(net), count_macs(net, r)
    net.to("cpu", memory_format=torch.contiguous_format)
    return top1_after, lat, params, macs


def finetune(
    supernet: Any,
    arch: Any,
    splits: Splits,
    settings: FinetuneSettings,
    device: torch.device | str = "auto",
    show_progress: bool = False,
    *,
    encoding: str | None = None,
    extract_fn: ExtractFn | None = None,
    loss_fn: LossFn | None = None,
    logits_fn: LogitsFn | None = None,
    world: World = SINGLE,
) -> FinetuneResult:
    """Fine-tune ``arch`` (an :class:`~natv2.space.Arch`) of ``supernet`` in NATv2's two steps.

    ``splits`` may be at any resolution: they are re-viewed at ``arch.resolution`` (keeping
    their ``augment``). ``settings``: :meth:`FinetuneSettings.from_config`. The super-network
    is only read. Returns a :class:`FinetuneResult` whose ``model`` is the step-2 network.
    In a data-parallel ``world`` each rank trains on its slice of every batch
    (``natv2.distributed``); all ranks evaluate the same network and return the same result.
    """
    s = check_settings(settings)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    extract_fn = extract_fn or default_extract
    logits_fn = logits_fn or logits_of
    loss_fn = loss_fn or make_loss_fn(s.label_smoothing, logits_fn)
    r = int(arch.resolution)
    if splits.resolution != r:
        splits = splits.at(r)
    seed = s.seed
    start = time.perf_counter()
    calib = [_channels_last(x.to(device)) for x in calibration_batches(splits, r)]
    val = eval_batches(splits.val, s.eval_batch_size, s.num_workers, seed)
    test = eval_batches(splits.test, s.eval_batch_size, s.num_workers, seed)

    def fresh() -> nn.Module:
        net = extract_fn(supernet, arch)
        if net is supernet:
            raise RuntimeError("extract_fn returned the super-network itself")
        if s.dropout is not None:  # the thesis extracts with dropout_rate 0
            for m in net.modules():
                if isinstance(m, nn.Dropout):
                    m.p = s.dropout
        net.to(device, memory_format=torch.channels_last)  # faster convolutions, same values
        recalibrate_bn(net, calib, device)
        return net

    # ---- step 1: train on train, early stopping on val top-1
    net = fresh()
    top1_before = accuracy(net, test, device, logits_fn)
    torch.manual_seed(step_seed(seed, 1))
    show_progress = show_progress and world.writer
    run = _Run(net, _train_loader(splits.train, s, step_seed(seed, 1)), s.max_epochs, s, device, loss_fn,
               logits_fn, world)
    history, best_val, best_epoch = _train_early_stopping(run, val, show_progress)
    epochs_run = len(history)
    best_epochs = max(1, best_epoch)
    del net, run

    # ---- step 2: fresh inherited weights, train on train+val for best_epochs
    net = fresh()
    torch.manual_seed(step_seed(seed, 2))
    run = _Run(net, _train_loader(splits.trainval, s, step_seed(seed, 2)), best_epochs, s, device,
               loss_fn, logits_fn, world)
    with progress(run.total, "finetune step 2", show_progress) as bar:
        history += [{"step": 2, "epoch": epoch, **run.epoch(bar), "val_loss": None, "val_top1": None}
                    for epoch in range(1, best_epochs + 1)]
    top1_after, lat, params, macs = _measure_final(net, test, r, device, s, logits_fn)
    for row in history:
        row["seconds"] = round(row["seconds"], 4)
    return FinetuneResult(
        model=net,
        top1_before=float(top1_before),
        top1_after=float(top1_after),
        best_epochs=int(best_epochs),
        val_top1_best=float(best_val),
        epochs_run=int(epochs_run),
        params=int(params),
        macs=int(macs),
        latency_ms=None if lat is None else lat.median_ms,
        latency_iqr_ms=None if lat is None else lat.iqr_ms,
        latency_measured=None if lat is None else s.latency.cache_key(device),
        seconds=round(time.perf_counter() - start, 3),
        history=[{k: row[k] for k in HISTORY_COLUMNS} for row in history],
        settings=s,
        encoding=encoding,
    )
