"""Where the images come from: one *source* per dataset name.

A source holds the loaded data and the index lists of the three splits, and hands out
``view(split, resolution, augment)`` datasets. Opening one runs the checks of
:mod:`natv2.data.checks` (classes, split sizes, ``train_subset``; every image file decodes), so a
bad dataset stops with one line before any training. Views are cached inside the source (so inside
the :class:`~natv2.data.splits.Splits` that owns it), never in module state.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from .checks import (
    DataError,
    check_classes,
    check_decodable,
    check_train_covers,
    check_train_subset,
)

if TYPE_CHECKING:
    from .splits import DataSettings

from .datasets import FileImageDataset, TensorImageDataset, TransformView
from .transforms import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    cifar_eval_transform,
    cifar_train_transform,
    eval_transform,
    imagefolder_train_transform,
)

DATASET_NAMES = ("cifar10", "cifar100", "digits", "fashion-mnist", "imagefolder")
#: the datasets of grey images (served as three equal channels)
GRAYSCALE_DATASETS = ("digits", "fashion-mnist")
SPLIT_NAMES = ("train", "val", "test")


# ----------------------------------------------------------------------------- split helpers


def stratified_split(
    labels: np.ndarray,
    indices: np.ndarray,
    held_fraction: float | None,
    seed: int,
    keep_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (kept, held out), stratified by ``labels[indices]``, seeded.

    Give ``held_fraction`` (share held out) or ``keep_size`` (number kept). When stratifying is
    impossible (a class with one example, or fewer held-out items than classes) it falls back to
    a seeded uniform split. Both parts come back sorted.
    """
    indices = np.asarray(indices, dtype=np.int64)
    kwargs: dict[str, Any] = (
        {"train_size": keep_size} if keep_size is not None else {"test_size": held_fraction}
    )
    try:
        kept, held = train_test_split(
            indices, stratify=labels[indices], random_state=seed, shuffle=True, **kwargs
        )
    except ValueError:
        kept, held = train_test_split(indices, random_state=seed, shuffle=True, **kwargs)
    return np.sort(kept), np.sort(held)


def _pool_splits(
    labels: np.ndarray, pool: np.ndarray, settings: DataSettings, source: Any, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) from a training pool: stratified val hold-out, then the train_subset cap.

    Refuses (:class:`DataError`) a ``train_subset`` too small for ``source.n_classes`` and a
    split that leaves a class of ``source.class_names`` without training images.
    """
    seed = settings.seed
    cap = settings.train_subset
    check_train_subset(cap, source.n_classes)
    train, val = stratified_split(labels, pool, settings.val_fraction, seed)
    if cap is not None and cap < len(train):
        train, _ = stratified_split(labels, train, None, seed, keep_size=int(cap))
    check_train_covers(source.name, where, source.class_names, labels[train], cap)
    return train, val


# ----------------------------------------------------------------------------- digits


class DigitsSource:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download), kept as tensors.

    Test: a stratified ``test_fraction`` hold-out (digits has no official test split); val: a
    stratified ``val_fraction`` of the rest. Mean/std: one grey value over all 1,797 images at
    8x8 (a constant of the dataset, like ImageNet's, so a saved model's preprocessing does not
    depend on the seed or split fractions), repeated for the three channels.
    """

    name = "digits"

    def __init__(self, settings: DataSettings):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.tensor(bunch.images, dtype=torch.float32) / 16.0  # (N, 8, 8) in [0, 1]
        self.images = images.unsqueeze(1)  # (N, 1, 8, 8)
        self.labels_np = np.asarray(bunch.target, dtype=np.int64)
        self.labels = torch.from_numpy(self.labels_np)
        self.class_names = tuple(str(c) for c in bunch.target_names)
        self.n_classes = len(self.class_names)
        m, s = float(images.mean()), float(images.std())
        self.mean, self.std = (m, m, m), (s, s, s)
        all_idx = np.arange(len(self.labels_np))
        where = "sklearn.datasets.load_digits"
        counts = np.bincount(self.labels_np, minlength=self.n_classes)
        check_classes(self.name, where, self.class_names, counts, settings.val_fraction,
                      settings.test_fraction)
        pool, test = stratified_split(
            self.labels_np, all_idx, settings.test_fraction, settings.seed
        )
        train, val = _pool_splits(self.labels_np, pool, settings, self, where)
        self.indices = {"train": train, "val": val, "test": test}
        self._resized: dict[int, torch.Tensor] = {}
        self._views: dict[tuple, Dataset] = {}

    def resized(self, resolution: int) -> torch.Tensor:
        """All images at ``resolution`` (bilinear, antialias), cached per resolution."""
        if resolution not in self._resized:
            x = F.interpolate(
                self.images,
                size=(resolution, resolution),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
            self._resized[resolution] = x.clamp_(0.0, 1.0)
        return self._resized[resolution]

    @staticmethod
    def pad_for(resolution: int) -> int:
        # Small random translation: pad 2 px at the default 32 px (1/16 of the side); scaled
        # with the resolution above 32 px so the shift stays "small" but not negligible.
        # No flip: digits are not mirror-symmetric.
        return max(2, resolution // 16)

    def pixels(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)`` of ``split``: each image's 64 raw grey values in [0, 1], its label."""
        idx = self.indices[split]
        return self.images[torch.from_numpy(idx)].flatten(1).numpy(), self.labels_np[idx]

    def view(self, split: str, resolution: int, augment: bool) -> Dataset:
        key = (split, resolution, augment)
        if key not in self._views:
            idx = torch.from_numpy(self.indices[split])
            self._views[key] = TensorImageDataset(
                self.resized(resolution)[idx],
                self.labels[idx],
                self.mean[0],
                self.std[0],
                pad=self.pad_for(resolution) if augment else None,
            )
        return self._views[key]


# ----------------------------------------------------------------------------- PIL sources


class _PILSource:
    """A source whose bases return ``(PIL image, label)``; views add the transform."""

    name = ""
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    # set by subclasses: split -> (base dataset, indices into it, targets of the whole base)
    bases: dict[str, tuple[Dataset, np.ndarray, np.ndarray]]

    def __init__(self) -> None:
        self._views: dict[tuple, Dataset] = {}

    def train_transform(self, resolution: int):  # pragma: no cover - overridden
        raise NotImplementedError

    def eval_transform(self, resolution: int):  # pragma: no cover - overridden
        raise NotImplementedError

    def view(self, split: str, resolution: int, augment: bool) -> Dataset:
        key = (split, resolution, augment)
        if key not in self._views:
            base, idx, targets = self.bases[split]
            tf = (
                self.train_transform(resolution)
                if augment
                else self.eval_transform(resolution)
            )
            self._views[key] = TransformView(base, idx, tf, targets)
        return self._views[key]


def _statistics(settings, mean: tuple, std: tuple) -> tuple[tuple, tuple]:
    """``data.mean`` / ``data.std`` where set, else the dataset's defaults."""
    return (mean if settings.mean is None else settings.mean,
            std if settings.std is None else settings.std)


class CifarSource(_PILSource):
    """torchvision CIFAR-10/100: train/val = stratified split of the official train set; test =
    the official test set.

    ``data.root`` may hold the torchvision folder (``cifar-10-batches-py``) directly, or under
    ``root/<name>``; downloads go to ``root/<name>``.
    """

    def __init__(self, name: str, settings: DataSettings):
        super().__init__()
        from torchvision import datasets

        self.name = name
        self.mean, self.std = _statistics(settings, CIFAR_MEAN, CIFAR_STD)
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        root = Path(settings.root)
        where = next(
            (c for c in (root, root / name) if (c / cls.base_folder).is_dir()), root / name
        )
        download = bool(settings.download)
        if not download and not (where / cls.base_folder).is_dir():
            raise DataError(
                f"{name} not found under '{where}'; set data.download: true to download it "
                f"(or point data.root at an existing copy)"
            )
        try:
            train = cls(root=str(where), train=True, download=download)
            test = cls(root=str(where), train=False, download=download)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            raise DataError(
                f"{name} under '{where}' is incomplete or corrupted ({err}); set "
                f"data.download: true to fetch it again (or point data.root at a good copy)"
            ) from err
        except OSError as err:  # network or disk trouble while downloading
            raise DataError(f"could not download {name} into '{where}': {err}") from err
        self.class_names = tuple(train.classes)
        self.n_classes = len(self.class_names)
        train_targets = np.asarray(train.targets, dtype=np.int64)
        test_targets = np.asarray(test.targets, dtype=np.int64)
        folder = str(where / cls.base_folder)
        counts = np.bincount(train_targets, minlength=self.n_classes)
        check_classes(name, folder, self.class_names, counts, settings.val_fraction, None)
        tr, va = _pool_splits(train_targets, np.arange(len(train_targets)), settings, self, folder)
        self.bases = {
            "train": (train, tr, train_targets),
            "val": (train, va, train_targets),
            "test": (test, np.arange(len(test_targets)), test_targets),
        }

    def pixels(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)`` of ``split``: each image's 3,072 raw RGB values in [0, 1], its label."""
        base, idx, targets = self.bases[split]
        data = np.asarray(base.data)[idx]  # (n, 32, 32, 3) uint8, torchvision's CIFAR array
        return data.reshape(len(idx), -1).astype(np.float32) / 255.0, targets[idx]

    def train_transform(self, resolution: int):
        return cifar_train_transform(resolution, self.mean, self.std)

    def eval_transform(self, resolution: int):
        return cifar_eval_transform(resolution, self.mean, self.std)


def _scan_labelled_dir(
    directory: Path, class_to_idx: dict[str, int]
) -> list[tuple[str, int]] | None:
    """Labelled samples of a val/test folder, or None when it carries no usable labels.

    Two layouts: ImageFolder (``<class>/<image>``, classes a subset of train's), and Tiny
    ImageNet's raw validation layout (``images/*.JPEG`` + ``val_annotations.txt`` whose lines are
    ``<file> <wnid> ...`` separated by tabs). Tiny ImageNet's ``test/images`` has no labels and is
    skipped.
    """
    annotations = directory / "val_annotations.txt"
    if annotations.is_file() and (directory / "images").is_dir():
        samples = []
        for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in class_to_idx:
                raise DataError(
                    f"{annotations}:{line_no}: expected '<file>\\t<class>' with a class of "
                    f"train/, got {line.strip()!r}"
                )
            samples.append((str(directory / "images" / fields[0]), class_to_idx[fields[1]]))
        return samples or None
    subdirs = sorted(e.name for e in os.scandir(directory) if e.is_dir())
    if not subdirs or not set(subdirs) <= set(class_to_idx):
        return None
    present = {c: class_to_idx[c] for c in subdirs}
    samples = make_dataset(str(directory), present, extensions=IMG_EXTENSIONS, allow_empty=True)
    return samples or None


def _scan_train(train_dir: Path) -> tuple[list[str], dict[str, int], list[tuple[str, int]]]:
    """(classes, class -> index, samples) of ``train_dir``; a :class:`DataError` if it is
    missing or holds no images at all."""
    if not train_dir.is_dir():
        raise DataError(
            f"imagefolder not found: no folder '{train_dir}'; point data.root at a folder "
            f"laid out as train/<class>/<image> (plus optional val/ or test/)"
        )
    classes, class_to_idx = (
        find_classes(str(train_dir))
        if any(e.is_dir() for e in os.scandir(train_dir))
        else ([], {})
    )
    samples = (
        make_dataset(str(train_dir), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
        if classes
        else []
    )
    if not samples:
        raise DataError(
            f"imagefolder: no images under '{train_dir}'; expected train/<class>/<image> "
            f"with extensions {', '.join(IMG_EXTENSIONS)}"
        )
    return classes, class_to_idx, samples


def _labelled_test(root: Path, class_to_idx: dict[str, int]) -> tuple[list[tuple[str, int]], str]:
    """(samples, ``"test"`` or ``"val"``) of the first labelled folder of the two, else
    ``([], "holdout")``."""
    for name in ("test", "val"):
        if (root / name).is_dir():
            samples = _scan_labelled_dir(root / name, class_to_idx)
            if samples:
                return samples, name
    return [], "holdout"


class ImageFolderSource(_PILSource):
    """``root/train/<class>/<image>`` (torchvision ImageFolder layout, scanned recursively, so
    Tiny ImageNet's ``train/<wnid>/images/*.JPEG`` works as is).

    Test split: ``root/test`` if it is labelled, else ``root/val`` if labelled (ImageFolder
    layout, or Tiny ImageNet's ``val/images`` + ``val/val_annotations.txt``), else a stratified
    ``test_fraction`` hold-out of train. Val: always a stratified ``val_fraction`` hold-out of
    the training pool (as NAT does: the official val set becomes the test set when the real test
    labels are not public). Opening it checks the classes and decodes every image file once
    (remembered under ``settings.check_cache``).
    """

    name = "imagefolder"

    def __init__(self, settings: DataSettings):
        super().__init__()
        self.mean, self.std = _statistics(settings, IMAGENET_MEAN, IMAGENET_STD)
        self.resize_scale, self.eval_crop = settings.resize_scale, settings.eval_crop
        root = Path(settings.root)
        train_dir = root / "train"
        classes, class_to_idx, pool_samples = _scan_train(train_dir)
        self.class_names = tuple(classes)
        self.n_classes = len(classes)
        pool = FileImageDataset(pool_samples)
        pool_targets = np.asarray(pool.targets, dtype=np.int64)
        test_samples, self.test_source = _labelled_test(root, class_to_idx)
        held = None if test_samples else settings.test_fraction
        counts = np.bincount(pool_targets, minlength=self.n_classes)
        check_classes(self.name, str(train_dir), self.class_names, counts,
                      settings.val_fraction, held)
        all_idx = np.arange(len(pool_targets))
        if test_samples:
            test = FileImageDataset(test_samples)
            test_targets = np.asarray(test.targets, dtype=np.int64)
            test_base = (test, np.arange(len(test_targets)), test_targets)
            train_pool = all_idx
        else:
            train_pool, test_idx = stratified_split(pool_targets, all_idx, held, settings.seed)
            test_base = (pool, test_idx, pool_targets)
        tr, va = _pool_splits(pool_targets, train_pool, settings, self, str(train_dir))
        self.bases = {
            "train": (pool, tr, pool_targets),
            "val": (pool, va, pool_targets),
            "test": test_base,
        }
        paths = [p for p, _ in pool.samples] + [str(p) for p, _ in test_samples]
        check_decodable(self.name, str(root), paths, settings.check_cache)

    def train_transform(self, resolution: int):
        return imagefolder_train_transform(resolution, self.mean, self.std, self.resize_scale)

    def eval_transform(self, resolution: int):
        return eval_transform(resolution, self.mean, self.std, self.eval_crop)


def open_source(settings: DataSettings):
    """The source for ``settings.name`` (one of :data:`DATASET_NAMES`)."""
    name = settings.name
    if name == "digits":
        return DigitsSource(settings)
    if name in ("cifar10", "cifar100"):
        return CifarSource(name, settings)
    if name == "fashion-mnist":
        from .fashion_mnist import FashionMnistSource

        return FashionMnistSource(settings)
    if name == "imagefolder":
        return ImageFolderSource(settings)
    raise DataError(f"data.name: unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
