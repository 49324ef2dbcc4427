"""Dataset classes: in-memory digits tensors, and transformed views of PIL-image datasets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from .checks import DataError, decode_failure


class TensorImageDataset(Dataset):
    """Single-channel images kept in memory, returned as 3-channel normalised tensors.

    ``images`` is ``(N, 1, R, R)`` float in [0, 1] (not yet normalised). The three channels are
    identical (digits is grey), so they are an ``expand`` view: no memory is spent on them.
    With ``flip``, each item is mirrored left-right with probability 1/2 (torch's global RNG).
    With ``pad`` set, each item is randomly translated: zero-pad (the digits background) by
    ``pad`` pixels and crop back at a random offset drawn from torch's global RNG (with
    ``num_workers > 0`` each worker's RNG is seeded by the loader's generator; with 0 workers
    seed torch globally for a reproducible augmentation stream). Without either the normalised
    images are precomputed once, so evaluation is plain tensor indexing.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: float,
        std: float,
        pad: int | None = None,
        flip: bool = False,
    ):
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be (N, 1, R, R), got {tuple(images.shape)}")
        self.labels = labels.long()
        self.mean = float(mean)
        self.std = float(std)
        self.pad = pad
        self.flip = bool(flip)
        self.resolution = int(images.shape[-1])
        if pad or flip:
            self._raw = images
            self._norm = None
        else:
            self._raw = None
            self._norm = (images - self.mean) / self.std

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def __getitem__(self, i: int):
        y = int(self.labels[i])
        if self._norm is not None:
            return self._norm[i].expand(3, -1, -1), y
        x = self._raw[i]
        if self.pad:
            p, r = self.pad, self.resolution
            x = F.pad(x, (p, p, p, p))
            top, left = torch.randint(0, 2 * p + 1, (2,)).tolist()
            x = x[:, top : top + r, left : left + r]
        if self.flip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return ((x - self.mean) / self.std).expand(3, -1, -1), y

    def batch(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast path for eval views: ``(x (B,3,R,R) contiguous, y (B,))`` by tensor indexing."""
        if self._norm is None:
            raise RuntimeError("batch() is for eval views (no augmentation)")
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self._norm[idx].expand(-1, 3, -1, -1).contiguous(), self.labels[idx]


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB: 16-bit grey (``I;16*``) scaled to 8 bits (PIL's own conversion
    clips everything above 255 to white), a palette with transparency through RGBA (as PIL
    advises), any other mode (L, LA, RGBA, P, CMYK, ...) by ``convert``; alpha is dropped."""
    if img.mode.startswith("I;16"):
        grey = np.asarray(img.convert("I"), dtype=np.int64) >> 8
        return Image.fromarray(grey.clip(0, 255).astype(np.uint8), mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")  # a copy even when already RGB: the caller may close ``img``


def load_rgb(path: str) -> Image.Image:
    """The image file ``path`` as an RGB PIL image; a :class:`DataError` naming the file when it
    cannot be read (opening a dataset decodes every file, so that one changed since)."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except (OSError, SyntaxError, ValueError) as exc:
        why = decode_failure(path) or str(exc)
        raise DataError(f"cannot read image '{path}' ({why}); delete or replace it, then "
                        f"rerun") from None


class FileImageDataset(Dataset):
    """``(path, label)`` samples loaded as RGB PIL images (ImageFolder without the directory
    scan); :func:`load_rgb` by default."""

    def __init__(
        self, samples: Sequence[tuple[str | Path, int]], loader: Callable = load_rgb
    ):
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.targets = [y for _, y in self.samples]
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, y = self.samples[i]
        return self.loader(path), y


class TransformView(Dataset):
    """The items ``indices`` of a dataset returning ``(PIL image, label)``, with a transform."""

    def __init__(
        self, base: Dataset, indices: Sequence[int], transform: Callable, targets: Sequence[int]
    ):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        all_targets = np.asarray(targets, dtype=np.int64)
        self.targets = all_targets[self.indices].tolist()

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int):
        img, y = self.base[int(self.indices[i])]
        return self.transform(img), int(y)
