"""natv2.data.checks: bad datasets refused with one line when opened, before any training.

Tiny image folders built with PIL in tmp_path; each case asserts the exact message.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from natv2.data import DataError, DataSettings, build_splits, checks
from natv2.data.checks import MAX_LINE, min_images_per_class, undecodable_message
from natv2.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from natv2.errors import UserError


def settings(root: Path, **data) -> DataSettings:
    """ImageFolder settings whose check cache lies under ``root/../results``."""
    cfg = {"seed": 0, "results_dir": str(root.parent / "results"),
           "data": {"name": "imagefolder", "root": str(root), **data}}
    return DataSettings.from_config(cfg)


def open_splits(root: Path, **data):
    return build_splits(settings(root, **data), 8)


def noise_png(path: Path, seed: int = 0, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def make_folder(root: Path, classes: dict[str, int], split: str = "train") -> None:
    for k, (name, n) in enumerate(classes.items()):
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            noise_png(root / split / name / f"img{i}.png", seed=100 * k + i, size=12)


def refused(root: Path, **data) -> str:
    with pytest.raises(DataError) as err:
        open_splits(root, **data)
    msg = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in msg
    return msg


def corrupt(path: Path) -> None:
    path.write_bytes(b"this is not a PNG")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ----------------------------------------------------------------------------- decoding


def test_undecodable_files_in_train_and_test_listed_in_one_error(tmp_path):
    root = tmp_path / "ds"
    make_folder(root, {"ant": 6, "bee": 6})
    make_folder(root, {"ant": 2, "bee": 2}, split="test")
    corrupt(root / "train" / "ant" / "img3.png")
    truncate(noise_png(root / "train" / "bee" / "cut.png"))
    corrupt(root / "test" / "bee" / "img1.png")
    assert refused(root) == (
        f"imagefolder: 3 of 17 images under '{root}' cannot be decoded: "
        f"train/ant/img3.png (cannot identify image file), "
        f"train/bee/cut.png (image file is truncated), "
        f"test/bee/img1.png (cannot identify image file); delete or replace them"
    )


def test_many_undecodable_files_make_one_capped_line(tmp_path):
    root = tmp_path / "ds"
    make_folder(root, {"ant": 10, "bee": 10})
    for i in range(8):
        corrupt(root / "train" / "ant" / f"img{i}.png")
    msg = refused(root)
    listed = msg.count("(cannot identify image file)")
    assert msg.startswith(f"imagefolder: 8 of 20 images under '{root}' cannot be decoded: ")
    assert msg.endswith(f" and {8 - listed} more; delete or replace them") and len(msg) < MAX_LINE
    assert 1 <= listed <= 5  # as many as fit in one line (the tmp_path root is long)
    failures = [(f"a/{i}.png", "cannot identify image file") for i in range(8)]
    assert undecodable_message("imagefolder", "/d", 9, failures) == (
        "imagefolder: 8 of 9 images under '/d' cannot be decoded: "
        + ", ".join(f"a/{i}.png (cannot identify image file)" for i in range(5))
        + " and 3 more; delete or replace them"
    )


def test_undecodable_message_abbreviates_long_paths():
    long = "/very/" + "deep/" * 60 + "root"
    failures = [(f"train/{'c' * 90}/{i}.png", "x" * 120) for i in range(40)]
    msg = undecodable_message("imagefolder", long, 100, failures)
    assert len(msg) < MAX_LINE and "..." in msg and msg.endswith("more; delete or replace them")


def test_truncated_images_are_caught_even_if_pil_is_told_to_load_them(tmp_path, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    root = tmp_path / "ds"
    make_folder(root, {"ant": 6, "bee": 6})
    truncate(noise_png(root / "train" / "ant" / "cut.png"))
    assert "train/ant/cut.png (image file is truncated)" in refused(root)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_file_broken_after_the_check_is_named_when_read(tmp_path):
    root = tmp_path / "ds"
    make_folder(root, {"ant": 6, "bee": 6})
    s = open_splits(root)
    path = s.train.base.samples[int(s.train.indices[0])][0]
    truncate(Path(path))
    with pytest.raises(DataError) as err:
        s.train[0]
    assert str(err.value) == (f"cannot read image '{path}' (image file is truncated); delete or "
                              f"replace it, then rerun")


# ----------------------------------------------------------------------------- cache


def test_decode_check_is_cached_until_a_file_changes(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    make_folder(root, {"ant": 6, "bee": 6})
    calls = []
    real = checks.decode_failure
    monkeypatch.setattr(checks, "decode_failure", lambda p: calls.append(p) or real(p))
    open_splits(root)
    assert len(calls) == 12
    records = list((tmp_path / "results" / "cache" / "data_checks").glob("*.json"))
    assert len(records) == 1 and len(records[0].stem) == 64
    open_splits(root)
    assert len(calls) == 12  # nothing decoded the second time
    touched = root / "train" / "bee" / "img2.png"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    open_splits(root)
    assert len(calls) == 24  # a changed file reruns the whole check
    corrupt(touched)
    for _ in range(2):  # a failed check is not remembered
        with pytest.raises(DataError, match="img2.png"):
            open_splits(root)
    assert len(calls) == 48


def test_no_cache_without_check_cache(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    make_folder(root, {"ant": 6, "bee": 6})
    calls = []
    monkeypatch.setattr(checks, "decode_failure", lambda p: calls.append(p))
    plain = DataSettings(**{**settings(root).as_dict(), "check_cache": None})
    build_splits(plain, 8)
    build_splits(plain, 8)
    assert len(calls) == 24 and not (tmp_path / "results").exists()
    assert "check_cache" not in settings(root).as_dict()  # the eval-cache key does not see it


# ----------------------------------------------------------------------------- classes


def test_one_class_is_refused(tmp_path):
    make_folder(tmp_path / "ds", {"cat": 8})
    assert refused(tmp_path / "ds") == (
        f"imagefolder: '{tmp_path / 'ds' / 'train'}' has 1 class ('cat'); a classifier needs "
        f"at least 2"
    )


def test_empty_class_folder_is_named(tmp_path):
    root = tmp_path / "ds"
    make_folder(root, {"ant": 6, "bee": 6})
    (root / "train" / "dog").mkdir()
    (root / "train" / "dog" / "notes.txt").write_text("no images here")
    assert refused(root) == (
        f"imagefolder: class 'dog' under '{root / 'train'}' has no images; add images to it or "
        f"remove it"
    )


def test_minimum_images_per_class_follows_the_split_code():
    # test hold-out 0.2 of 5 keeps >= 3, val hold-out 0.15 of 3 keeps >= 1; 4 could keep 2 then 0
    assert min_images_per_class(0.15, 0.2) == 5
    assert min_images_per_class(0.15, None) == 3
    assert min_images_per_class(0.5, 0.5) == 10  # 10 keeps >= 4, then 4 keeps >= 1


def test_class_too_small_for_the_holdouts(tmp_path):
    root = tmp_path / "ds"
    make_folder(root, {"ant": 6, "bee": 4, "cat": 6})
    assert refused(root) == (
        f"imagefolder: class 'bee' under '{root / 'train'}' has 4 images, fewer than the 5 per "
        f"class the splits need (data.test_fraction 0.2 then data.val_fraction 0.15 held out, "
        f">= 1 left to train); add images to it or lower those fractions"
    )


def test_class_too_small_with_a_labelled_test_folder(tmp_path):
    root = tmp_path / "ds"
    make_folder(root, {"ant": 1, "bee": 2, "cat": 3})
    make_folder(root, {"ant": 1}, split="test")
    assert refused(root) == (
        f"imagefolder: 2 classes under '{root / 'train'}' have fewer images than the 3 per class "
        f"the splits need (data.val_fraction 0.15 held out, >= 1 left to train): 'ant' has 1, "
        f"'bee' has 2; add images to them or lower those fractions"
    )
    make_folder(root, {"ant": 3, "bee": 3})  # now 3 each: every class keeps a training image
    s = open_splits(root)
    assert s._source.test_source == "test" and sorted(set(s.train.targets)) == [0, 1, 2]


def test_digits_too_small_for_huge_holdouts():
    cfg = {"seed": 0, "data": {"name": "digits", "val_fraction": 0.9, "test_fraction": 0.9}}
    with pytest.raises(DataError) as err:
        build_splits(DataSettings.from_config(cfg), 8)
    assert str(err.value) == (
        "digits: 10 classes under 'sklearn.datasets.load_digits' have fewer images than the 210 "
        "per class the splits need (data.test_fraction 0.9 then data.val_fraction 0.9 held out, "
        ">= 1 left to train): '0' has 178, '1' has 182, '2' has 177, '3' has 183, '4' has 181 "
        "and 5 more; add images to them or lower those fractions"
    )


def test_cifar_class_too_small(tmp_path, monkeypatch):
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [i % 9 for i in range(20)] + ([9] if name == "data_batch_1" else [])
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    with pytest.raises(DataError) as err:
        build_splits(DataSettings.from_config({"data": {"name": "cifar10", "root": str(tmp_path)}}), 8)
    assert str(err.value) == (
        f"cifar10: class 'c9' under '{folder}' has 1 image, fewer than the 3 per class the splits "
        f"need (data.val_fraction 0.15 held out, >= 1 left to train); add images to it or lower "
        f"those fractions"
    )


# ----------------------------------------------------------------------------- train_subset


@pytest.mark.parametrize("subset", [1, 2])
def test_train_subset_below_the_number_of_classes(tmp_path, subset):
    make_folder(tmp_path / "ds", {"ant": 6, "bee": 6, "cat": 6})
    assert refused(tmp_path / "ds", train_subset=subset) == (
        f"data.train_subset: {subset} is below the minimum 3 (a training batch of 1 breaks "
        f"BatchNorm, and each of the 3 classes needs a training image); set it to at least 3 "
        f"or null"
    )


def test_train_subset_below_the_digits_classes():
    cfg = {"seed": 0, "data": {"name": "digits", "train_subset": 9}}
    with pytest.raises(DataError, match=r"^data\.train_subset: 9 is below the minimum 10 "):
        build_splits(DataSettings.from_config(cfg), 8)


def test_train_subset_that_drops_a_class(tmp_path):
    root = tmp_path / "ds"
    make_folder(root, {"ant": 60, "bee": 5})
    assert refused(root, train_subset=2) == (
        f"imagefolder: no training image is left for 1 class under '{root / 'train'}' after the "
        f"val/test hold-outs and the data.train_subset cap of 2: 'bee'; raise data.train_subset "
        f"or add images"
    )
    kept = open_splits(root, train_subset=20).train
    assert len(kept) == 20 and sorted(set(kept.targets)) == [0, 1]


# ----------------------------------------------------------------------------- image modes


def _mode_image(mode: str) -> tuple[Image.Image, tuple[int, int, int]]:
    """A constant 10x14 image in ``mode`` and the RGB it must load as."""
    if mode == "L":
        return Image.new("L", (10, 14), 128), (128, 128, 128)
    if mode == "RGBA":
        return Image.new("RGBA", (10, 14), (10, 20, 30, 128)), (10, 20, 30)
    if mode == "I;16":
        return Image.fromarray(np.full((14, 10), 40000, dtype=np.uint16)), (156, 156, 156)
    img = Image.new("P", (10, 14), 3)
    img.putpalette([0, 0, 0] * 3 + [200, 50, 25] + [0, 0, 0] * 252)
    if mode == "P+transparency":
        img.info["transparency"] = bytes([0, 128, 255, 200])  # per-index alpha: PIL warns
    return img, (200, 50, 25)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "P+transparency", "I;16"])
def test_image_modes_load_as_rgb_through_a_view(tmp_path, mode, recwarn):
    root = tmp_path / "ds"
    img, rgb = _mode_image(mode)
    for cls in ("ant", "bee"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(6):
            img.save(root / "train" / cls / f"img{i}.png")
    with Image.open(root / "train" / "ant" / "img0.png") as saved:
        assert saved.mode == mode.split("+")[0]
    s = open_splits(root)
    stats = zip(rgb, IMAGENET_MEAN, IMAGENET_STD, strict=True)
    expected = torch.tensor([(v / 255 - m) / sd for v, m, sd in stats])
    for split in (s.train, s.val, s.test, s.dataset("train", 8, augment=False)):
        for i in range(len(split)):
            x, y = split[i]
            assert x.shape == (3, 8, 8) and y in (0, 1)
    x = s.test[0][0]
    assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=1e-3), (x.mean(dim=(1, 2)), expected)
    assert not [w for w in recwarn if "Palette images with Transparency" in str(w.message)]
