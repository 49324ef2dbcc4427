"""Deterministic train/val/test splits, calibration batches and seeded loaders."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from natv2.config import ensure_config
from natv2.seeds import calibration_augment_seed

from .datasets import TensorImageDataset
from .sources import SPLIT_NAMES, DataError, open_source


@dataclass(frozen=True)
class DataSettings:
    """The ``data:`` section and the top-level ``seed`` (which draws the split). Values come
    from the validated config; the schema (``natv2/schemas/config.schema.yaml``) holds the
    defaults and the checks.

    ``check_cache`` is the folder remembering which image files decoded (``from_config``:
    ``<results_dir>/cache/data_checks``; None: decode them at every open). Where a cache lives
    does not change the data, so :meth:`as_dict` leaves it out.
    """

    name: str
    root: str
    download: bool
    val_fraction: float
    test_fraction: float
    calib_size: int
    calib_batch_size: int
    calib_augment: bool
    batch_size: int
    eval_batch_size: int
    num_workers: int
    train_subset: int | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    resize_scale: float
    eval_crop: float
    seed: int
    check_cache: str | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DataSettings:
        """From a config (a plain mapping is validated first, so defaults come from the schema)."""
        cfg = ensure_config(cfg)
        d = cfg["data"]
        return cls(**{f.name: tuple(d[f.name]) if isinstance(d[f.name], list) else d[f.name]
                      for f in fields(cls) if f.name not in _NOT_IN_DATA},
                   seed=int(cfg["seed"]),
                   check_cache=str(Path(cfg["results_dir"]) / "cache" / "data_checks"))

    def as_dict(self) -> dict[str, Any]:
        """The settings the data depends on (all but ``check_cache``)."""
        d = asdict(self)
        d.pop("check_cache")
        return d


#: DataSettings fields that are not keys of the ``data:`` section
_NOT_IN_DATA = ("seed", "check_cache")


def _check_resolution(resolution: Any) -> int:
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, numbers.Integral)
        or resolution < 1
    ):
        raise DataError(f"resolution: value {resolution!r} must be a positive integer (pixels)")
    return int(resolution)


@dataclass(frozen=True)
class Splits:
    """The three splits of a dataset at one resolution.

    ``train`` is augmented unless built with ``augment=False``; ``val`` and ``test`` always use
    the eval transform; ``trainval`` is train + val with the train transform (NATv2's step-2
    fine-tuning). ``at(r)`` gives the same splits at another resolution and ``dataset(split, r)``
    one split, sharing the loaded data and its per-resolution cache (held here, not globally).
    """

    train: Dataset
    val: Dataset
    test: Dataset
    trainval: Dataset
    n_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...]
    resolution: int
    augment: bool
    name: str
    settings: DataSettings = field(repr=False, compare=False)
    _source: Any = field(repr=False, compare=False)

    def dataset(self, split: str, resolution: int | None = None, augment: bool = False) -> Dataset:
        """One split (``train``, ``val`` or ``test``) at ``resolution`` (default: this one)."""
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLIT_NAMES)}")
        r = self.resolution if resolution is None else _check_resolution(resolution)
        return self._source.view(split, r, augment)

    def at(self, resolution: int, augment: bool | None = None) -> Splits:
        """These splits at another resolution (and optionally another ``augment``)."""
        return _make_splits(
            self._source,
            self.settings,
            _check_resolution(resolution),
            self.augment if augment is None else augment,
        )

    def pixels(self, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(X, y)``: ``split``'s images as rows of raw pixel values in [0, 1] at the dataset's
        own size (no resizing, no normalisation, grey images one channel) and their labels,
        for classical baselines; ``None`` for a dataset of images of varying sizes
        (``imagefolder``)."""
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLIT_NAMES)}")
        pixels = getattr(self._source, "pixels", None)
        return None if pixels is None else pixels(split)

    @property
    def published(self) -> tuple[tuple[str, float, str], ...]:
        """Published test top-1 of this dataset's official test split, ``(model, top-1 %,
        source)`` (e.g. :data:`natv2.data.fashion_mnist.PUBLISHED_TOP1`); empty when none."""
        return tuple(getattr(self._source, "published", ()))

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _make_splits(source, settings: DataSettings, resolution: int, augment: bool) -> Splits:
    train = source.view("train", resolution, augment)
    trainval = ConcatDataset([train, source.view("val", resolution, augment)])
    return Splits(
        train=train,
        val=source.view("val", resolution, False),
        test=source.view("test", resolution, False),
        trainval=trainval,
        n_classes=source.n_classes,
        mean=tuple(source.mean),
        std=tuple(source.std),
        class_names=tuple(source.class_names),
        resolution=resolution,
        augment=augment,
        name=source.name,
        settings=settings,
        _source=source,
    )


def build_splits(settings: DataSettings, resolution: int, augment: bool = True) -> Splits:
    """Load dataset ``settings.name`` and split it deterministically (seed ``settings.seed``).

    Raises :class:`DataError` (a ``ValueError``) with one line when the dataset is absent and
    ``data.download`` is false, or fails a check of :mod:`natv2.data.checks` (undecodable image
    files, fewer than 2 classes, an empty or too small class, a too small ``train_subset``).
    """
    if not isinstance(settings, DataSettings):
        raise TypeError(f"build_splits takes DataSettings (DataSettings.from_config(cfg)), "
                        f"not {type(settings).__name__}")
    resolution = _check_resolution(resolution)
    return _make_splits(open_source(settings), settings, resolution, augment)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose shuffling (and worker seeds) come from a generator seeded by ``seed``."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        drop_last=drop_last,
    )


def materialize(
    dataset: Dataset, batch_size: int, num_workers: int = 0, indices: torch.Tensor | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``dataset`` (or its ``indices``, in that order) as a list of CPU ``(x, y)`` batches.

    In-memory eval views (digits) are sliced directly; anything else goes through a
    ``DataLoader``, whose random transforms draw from torch's global RNG (seed it, or fork it,
    around the call for a reproducible list).
    """
    if indices is None:
        indices = torch.arange(len(dataset))
    indices = torch.as_tensor(indices, dtype=torch.long)
    chunks = torch.split(indices, batch_size)
    if isinstance(dataset, TensorImageDataset) and dataset.pad is None:
        return [dataset.batch(chunk) for chunk in chunks]
    subset = torch.utils.data.Subset(dataset, indices.tolist())
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return [(x, y) for x, y in loader]


def calibration_batches(
    splits: Splits, resolution: int, settings: DataSettings | None = None
) -> list[torch.Tensor]:
    """The BN-recalibration subset at ``resolution``: ``calib_size`` training images (a fixed
    permutation of the top-level seed, the same images at every resolution), in
    ``calib_batch_size`` batches (the last one short when it does not divide).

    As the thesis' ``build_sub_train_loader`` (``NAT_extended/data_providers/cifar.py`` and the
    other providers; OFA's providers do the same): with ``calib_augment`` (the default) the
    images go through the *train* transform, its random draws made once per resolution
    (:func:`natv2.seeds.calibration_augment_seed`) and the batches reused by every evaluation
    at that resolution (the thesis caches them as ``sub_train_<r>``); without it, the eval
    transform. The same list for the same settings (default: those the splits were built with).
    """
    settings = splits.settings if settings is None else settings
    train = splits.dataset("train", resolution, augment=settings.calib_augment)
    n = min(settings.calib_size, len(train))
    generator = torch.Generator()
    generator.manual_seed(settings.seed)
    pick = torch.randperm(len(train), generator=generator)[:n]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(calibration_augment_seed(settings.seed, resolution))
        batches = materialize(train, settings.calib_batch_size, settings.num_workers, pick)
    return [x for x, _ in batches]
