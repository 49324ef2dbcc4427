"""Fashion-MNIST (Zalando): 70,000 28x28 grey images of 10 clothing classes, read from its
original IDX files.

Where the files are looked for, in order (:func:`find_files`): ``data.root`` itself,
``data.root/fashion-mnist``, torchvision's download folder ``data.root/FashionMNIST/raw``, and
Debian's package ``dataset-fashion-mnist`` (:data:`DEBIAN_DIR`). Each of the four files may be
gzipped (``.gz``) or not. When none holds them and ``data.download`` is true, torchvision's
``FashionMNIST`` downloads them (its mirror, its md5 checks) into ``data.root``; otherwise the
stage stops with one line naming every place and both ways out.

The files are parsed here (no pickle: an IDX file is a header and raw bytes) and every file's
uncompressed bytes are checked against :data:`SHA256`, so a cut, changed or foreign file is
refused by name wherever it came from. Splits: the official 10,000-image test set is the test
split; validation is a stratified ``val_fraction`` hold-out of the 60,000 training images, then
``train_subset`` caps the training split (:func:`natv2.data.sources._pool_splits`).
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .checks import DataError, check_classes
from .datasets import TensorImageDataset
from .sources import DigitsSource, _pool_splits

if TYPE_CHECKING:
    from .splits import DataSettings

NAME = "fashion-mnist"

#: where Debian's ``dataset-fashion-mnist`` installs Zalando's original files
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

#: file stem -> sha256 of its uncompressed bytes (measured on Debian's dataset-fashion-mnist
#: 0.0~git20200523.55506a9-1, Zalando's files; gzip headers differ between copies, the IDX
#: bytes do not)
SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

#: the class names, in label order (Zalando's README, torchvision's ``FashionMNIST.classes``)
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")


def candidate_dirs(root: str | Path) -> list[Path]:
    """The folders searched for the four files, in order."""
    root = Path(root)
    return [root, root / NAME, root / "FashionMNIST" / "raw", DEBIAN_DIR]


def files_in(folder: Path) -> dict[str, Path] | None:
    """The four files in ``folder`` (each plain or ``.gz``), or None if one is missing."""
    found = {}
    for stem in SHA256:
        path = next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)
        if path is None:
            return None
        found[stem] = path
    return found


def find_files(root: str | Path) -> dict[str, Path] | None:
    """The four files from the first of :func:`candidate_dirs` that holds them all."""
    return next((f for f in map(files_in, candidate_dirs(root)) if f is not None), None)


def download(root: str | Path) -> dict[str, Path]:
    """Download the four files with torchvision into ``root/FashionMNIST/raw``."""
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(root=str(root), train=True, download=True)
    except (OSError, RuntimeError) as err:  # network, disk, or torchvision's md5 check
        raise DataError(f"could not download {NAME} into '{root}': {err}") from err
    found = files_in(Path(root) / "FashionMNIST" / "raw")
    if found is None:
        raise DataError(f"{NAME}: torchvision's download left no IDX files under "
                        f"'{Path(root) / 'FashionMNIST' / 'raw'}'")
    return found


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The array of an IDX file of unsigned bytes with ``ndim`` dimensions (a 4-byte magic
    number, ``ndim`` big-endian sizes, the bytes), checked against :data:`SHA256` first."""
    stem = path.name.removesuffix(".gz")
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{NAME}: cannot read '{path}': {err}; reinstall dataset-fashion-mnist "
                        f"or set data.download: true with an empty data.root") from err
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[stem]:
        raise DataError(f"{NAME}: '{path}' is not Zalando's {stem} (sha256 {digest[:12]} of its "
                        f"{len(data):,} bytes, expected {SHA256[stem][:12]}); replace the file")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def open_files(settings: DataSettings) -> tuple[dict[str, Path], str]:
    """The four files for ``settings`` (found, or downloaded with ``data.download``) and where
    they are; a one-line :class:`DataError` naming every place when neither is possible."""
    found = find_files(settings.root)
    if found is None and settings.download:
        found = download(settings.root)
    if found is None:
        places = ", ".join(f"'{d}'" for d in candidate_dirs(settings.root))
        raise DataError(f"{NAME} not found in {places}; install Debian's dataset-fashion-mnist, "
                        f"point data.root at a folder holding its four IDX files, or set "
                        f"data.download: true")
    return found, str(found["train-images-idx3-ubyte"].parent)

#: where :data:`PUBLISHED_TOP1` comes from: Zalando's README, its "Benchmark" table (submitted,
#: not re-run by Zalando), read at commit 02cf0676df9403f820db28474248ba7d7d1060bb
PUBLISHED_SOURCE = "https://github.com/zalandoresearch/fashion-mnist#benchmark"

#: published test top-1 (%) on the official 10,000 test images: (model, top-1, source)
PUBLISHED_TOP1: tuple[tuple[str, float, str], ...] = tuple(
    (model, top1, PUBLISHED_SOURCE) for model, top1 in (
        ("WRN40-4, 8.9M parameters (crops, flips)", 96.7),
        ("MobileNet (horizontal flips)", 95.0),
        ("HOG + SVM", 92.6),
        ("2 conv layers, < 100k parameters", 92.5),
        ("MLP 256-128-64", 90.0),
        ("XGBoost (standardised pixels)", 89.8),
        ("human, no fashion expertise (1,000 test images)", 83.5),
    ))


class FashionMnistSource:
    """The loaded images (``(N, 1, 28, 28)`` in [0, 1], train then test) and the splits.

    Mean/std: one grey value over the 60,000 training images at 28x28 (a constant of the
    dataset), repeated for the three channels. Training views translate at random (zero
    padding, 2 px at 32 px, scaled above, as digits) and flip horizontally (clothes are
    left-right symmetric, digits are not).
    """

    name = NAME
    published = PUBLISHED_TOP1

    def __init__(self, settings: DataSettings):
        files, self.where = open_files(settings)
        train = read_idx(files["train-images-idx3-ubyte"], 3)
        test = read_idx(files["t10k-images-idx3-ubyte"], 3)
        labels = np.concatenate([read_idx(files["train-labels-idx1-ubyte"], 1),
                                 read_idx(files["t10k-labels-idx1-ubyte"], 1)]).astype(np.int64)
        images = torch.from_numpy(np.concatenate([train, test])).unsqueeze(1)
        self.images = images  # uint8: 55 MB; views convert their own indices
        self.labels_np = labels
        self.labels = torch.from_numpy(labels)
        self.class_names = CLASSES
        self.n_classes = len(CLASSES)
        pixels = torch.from_numpy(train).float() / 255.0
        m, s = float(pixels.mean()), float(pixels.std())
        self.mean, self.std = (m, m, m), (s, s, s)
        n_train = len(train)
        counts = np.bincount(labels[:n_train], minlength=self.n_classes)
        check_classes(NAME, self.where, CLASSES, counts, settings.val_fraction, None)
        tr, va = _pool_splits(labels, np.arange(n_train), settings, self, self.where)
        self.indices = {"train": tr, "val": va, "test": np.arange(n_train, len(labels))}
        self._views: dict[tuple, Dataset] = {}

    pad_for = staticmethod(DigitsSource.pad_for)  # the same small translation as digits

    def resized(self, indices: np.ndarray, resolution: int) -> torch.Tensor:
        """The images ``indices`` at ``resolution`` (bilinear, antialias), in [0, 1]."""
        x = self.images[torch.from_numpy(indices)].float() / 255.0
        if resolution != x.shape[-1]:
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                              align_corners=False, antialias=True).clamp_(0.0, 1.0)
        return x

    def pixels(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)`` of ``split``: each image's 784 raw grey values in [0, 1], its label."""
        idx = self.indices[split]
        x = self.images[torch.from_numpy(idx)].flatten(1).numpy().astype(np.float32) / 255.0
        return x, self.labels_np[idx]

    def view(self, split: str, resolution: int, augment: bool) -> Dataset:
        key = (split, resolution, augment)
        if key not in self._views:
            idx = self.indices[split]
            self._views[key] = TensorImageDataset(
                self.resized(idx, resolution), self.labels[torch.from_numpy(idx)], self.mean[0],
                self.std[0], pad=self.pad_for(resolution) if augment else None, flip=augment)
        return self._views[key]

