"""Checks run when a dataset is opened, before any training: every image file decodes, there are
at least two classes, none is empty or too small for the splits, and ``train_subset`` can feed a
training batch. Each failure is one :class:`DataError` line naming the paths or the setting.

The decode check is cached: ``<check_cache>/<key>.json`` records that the files with this key
(sha256 of the sorted relative path, size and mtime of each file) all decoded, so opening the
same unchanged dataset again decodes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from natv2.errors import UserError
from natv2.files import read_json, write_json

#: longest message line, and most items named in one before "and N more"
MAX_LINE = 300
MAX_LISTED = 5


class DataError(UserError):
    """A dataset that cannot be loaded as configured; the message is one line naming the path
    and the setting that fixes it."""


# ----------------------------------------------------------------------------- wording


def shorten(text: str, width: int) -> str:
    """``text``, or its start and end around ``...`` so that it is ``width`` characters."""
    if len(text) <= width:
        return text
    head = (width - 3) // 2
    return f"{text[:head]}...{text[len(text) - (width - 3 - head):]}"


def listing(items: Sequence[str], room: int | None = None, limit: int = MAX_LISTED) -> str:
    """``a, b, c and N more``: at most ``limit`` items, and as many as fit in ``room`` chars."""
    for k in range(min(limit, len(items)), 0, -1):
        text = ", ".join(items[:k]) + (f" and {len(items) - k} more" if k < len(items) else "")
        if room is None or len(text) <= room or k == 1:
            return text
    return ""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


# ----------------------------------------------------------------------------- classes


def kept_at_least(n: int, held_fraction: float) -> int:
    """The fewest items a class of ``n`` keeps in a stratified ``held_fraction`` hold-out.

    scikit-learn keeps ``floor(n * n_kept / N)`` or one more of a class of ``n`` out of ``N``,
    with ``n_kept = N - ceil(held_fraction * N)``; since ``n < N`` that is more than
    ``n * (1 - held_fraction) - 1``, so at least ``floor(n * (1 - held_fraction)) - 1``.
    """
    return max(0, math.floor(round(n * (1.0 - held_fraction), 9)) - 1)


def min_images_per_class(val_fraction: float, test_fraction: float | None = None) -> int:
    """The fewest images a class needs so that the splits (a stratified ``test_fraction``
    hold-out when given, then a stratified ``val_fraction`` one) leave it >= 1 training image
    whatever the other classes, with >= 2 at each hold-out (scikit-learn cannot stratify a
    class of 1 and falls back to a uniform split)."""
    n = 2
    while True:
        pool = n if test_fraction is None else kept_at_least(n, test_fraction)
        if pool >= 2 and kept_at_least(pool, val_fraction) >= 1:
            return n
        n += 1


def _held_out(val_fraction: float, test_fraction: float | None) -> str:
    val = f"data.val_fraction {val_fraction:g}"
    return val if test_fraction is None else f"data.test_fraction {test_fraction:g} then {val}"


def check_classes(dataset: str, where: str, names: Sequence[str], counts: Sequence[int],
                  val_fraction: float, test_fraction: float | None) -> None:
    """Refuse empty classes, fewer than 2 classes, and classes too small for the splits
    (``counts[i]`` images of class ``names[i]`` under ``where``; ``test_fraction`` None when
    the test split is not held out of them)."""
    empty = [repr(c) for c, n in zip(names, counts, strict=True) if n == 0]
    if len(empty) == 1:
        raise DataError(f"{dataset}: class {empty[0]} under '{where}' has no images; add images "
                        f"to it or remove it")
    if empty:
        raise DataError(f"{dataset}: {len(empty)} classes under '{where}' have no images: "
                        f"{listing(empty)}; add images to them or remove them")
    if len(names) < 2:
        raise DataError(f"{dataset}: '{where}' has {_plural(len(names), 'class')} "
                        f"({listing([repr(c) for c in names])}); a classifier needs at least 2")
    need = min_images_per_class(val_fraction, test_fraction)
    small = [(repr(c), n) for c, n in zip(names, counts, strict=True) if n < need]
    if small:
        why = (f"the {need} per class the splits need ({_held_out(val_fraction, test_fraction)} "
               f"held out, >= 1 left to train)")
        if len(small) == 1:
            (name, n), = small
            raise DataError(f"{dataset}: class {name} under '{where}' has {_plural(n, 'image')}, "
                            f"fewer than {why}; add images to it or lower those fractions")
        each = listing([f"{c} has {n}" for c, n in small])
        raise DataError(f"{dataset}: {len(small)} classes under '{where}' have fewer images than "
                        f"{why}: {each}; add images to them or lower those fractions")


def check_train_subset(train_subset: int | None, n_classes: int) -> None:
    """Refuse a ``train_subset`` below 2 (a training batch of 1 breaks BatchNorm) or below the
    number of classes (each class needs a training image)."""
    need = max(2, n_classes)
    if train_subset is not None and train_subset < need:
        raise DataError(f"data.train_subset: {train_subset} is below the minimum {need} (a "
                        f"training batch of 1 breaks BatchNorm, and each of the {n_classes} "
                        f"classes needs a training image); set it to at least {need} or null")


def check_train_covers(dataset: str, where: str, names: Sequence[str],
                       train_labels: np.ndarray, train_subset: int | None) -> None:
    """Refuse a split whose training part misses a class (a class too small for a stratified
    split of this dataset, or cut by ``train_subset``)."""
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=len(names))
    missing = [repr(c) for c, n in zip(names, counts, strict=True) if n == 0]
    if missing:
        cut = "" if train_subset is None else f" and the data.train_subset cap of {train_subset}"
        fix = "add images" if train_subset is None else "raise data.train_subset or add images"
        raise DataError(f"{dataset}: no training image is left for {_plural(len(missing), 'class')}"
                        f" under '{where}' after the val/test hold-outs{cut}: {listing(missing)}; "
                        f"{fix}")


# ----------------------------------------------------------------------------- decoding


def decode_failure(path: str) -> str | None:
    """Why the image file ``path`` cannot be fully decoded (PIL open + load), or None."""
    try:
        with Image.open(path) as img:
            img.load()
    except Exception as exc:  # noqa: BLE001 - any failure here is a file training cannot read
        text = str(exc).splitlines()[0] if str(exc) else ""
        reason = getattr(exc, "strerror", None) or text or type(exc).__name__
        reason = reason.replace(repr(path), "").replace(path, "")
        return re.sub(r" \(\d+ bytes not processed\)", "", reason).strip(" :")
    return None


@contextlib.contextmanager
def _truncated_images_fail() -> Iterator[None]:
    """``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = False`` for the block (a truncated file raises)."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def files_key(root: str | Path, paths: Sequence[str]) -> str:
    """sha256 of the sorted ``(path relative to root, size, mtime_ns)`` of ``paths``."""
    entries = []
    for path in paths:
        try:
            st = os.stat(path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        entries.append((os.path.relpath(path, root), size, mtime))
    return hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()


def _passed_before(record: Path, key: str) -> bool:
    try:
        return record.is_file() and read_json(record).get("key") == key
    except (OSError, UserError, AttributeError):
        return False


def undecodable_message(dataset: str, root: str, total: int,
                        failures: Sequence[tuple[str, str]]) -> str:
    """The one line (under :data:`MAX_LINE` characters) naming the ``(relative path, reason)``
    of files that do not decode."""
    head = (f"{dataset}: {len(failures)} of {total} images under '{shorten(root, 80)}' cannot be "
            f"decoded: ")
    tail = "; delete or replace them"
    items = [f"{shorten(rel, 60)} ({shorten(why, 40)})" for rel, why in failures]
    return head + listing(items, room=MAX_LINE - 1 - len(head) - len(tail)) + tail


def check_decodable(dataset: str, root: str | Path, paths: Sequence[str],
                    cache_dir: str | Path | None = None) -> None:
    """Decode every file of ``paths`` once (threads) and raise one :class:`DataError` listing
    all that fail; remembered under ``cache_dir`` (None: no cache) until a file changes."""
    key = files_key(root, paths)
    record = Path(cache_dir) / f"{key}.json" if cache_dir is not None else None
    if record is not None and _passed_before(record, key):
        return
    with _truncated_images_fail(), ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        reasons = list(pool.map(decode_failure, paths))
    failures = [(os.path.relpath(p, root), why) for p, why in zip(paths, reasons, strict=True)
                if why is not None]
    if failures:
        raise DataError(undecodable_message(dataset, str(root), len(paths), failures))
    if record is not None:
        write_json(record, {"key": key, "root": str(root), "images": len(paths)})
