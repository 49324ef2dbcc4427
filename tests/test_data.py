"""natv2.data on digits (bundled, fast), a fake CIFAR folder and a tiny ImageFolder tree."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from natv2.data import (
    DataError,
    DataSettings,
    Splits,
    TensorImageDataset,
    build_splits,
    calibration_batches,
    make_loader,
    stratified_split,
)
from natv2.errors import UserError


def cfg(**data):
    return {"seed": 0, "device": "cpu", "data": {"name": "digits", **data}}


@pytest.fixture(scope="module")
def digits() -> Splits:
    return build_splits(DataSettings.from_config(cfg()), 16)


def _indices(splits: Splits) -> dict[str, np.ndarray]:
    return {k: splits._source.indices[k] for k in ("train", "val", "test")}


# ----------------------------------------------------------------------------- digits


def test_digits_sizes_disjoint_and_complete(digits):
    assert digits.sizes() == {"train": 1221, "val": 216, "test": 360}
    idx = _indices(digits)
    union = np.concatenate(list(idx.values()))
    assert len(union) == len(set(union.tolist())) == 1797
    assert len(digits.trainval) == 1221 + 216
    assert digits.n_classes == 10 and digits.class_names == tuple("0123456789")
    assert digits.name == "digits" and digits.resolution == 16 and digits.augment


def test_digits_split_is_stratified(digits):
    labels = digits._source.labels_np
    full = np.bincount(labels, minlength=10) / len(labels)
    for split, ix in _indices(digits).items():
        share = np.bincount(labels[ix], minlength=10) / len(ix)
        assert np.abs(share - full).max() < 0.02, split


def test_digits_split_is_deterministic_and_seeded(digits):
    again = build_splits(DataSettings.from_config(cfg()), 16)
    other = build_splits(DataSettings.from_config({"seed": 1, "data": {"name": "digits"}}), 16)
    for k, v in _indices(digits).items():
        assert np.array_equal(v, _indices(again)[k])
    assert not np.array_equal(_indices(digits)["val"], _indices(other)["val"])


def test_digits_eval_tensors(digits):
    x, y = digits.val[0]
    assert x.shape == (3, 16, 16) and isinstance(y, int)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey replicated
    xs = torch.stack([digits.val[i][0] for i in range(len(digits.val))])
    assert abs(float(xs.mean())) < 0.1 and 0.8 < float(xs.std()) < 1.2  # normalised
    assert digits.mean[0] == digits.mean[2] and 0.25 < digits.mean[0] < 0.35
    # eval views are deterministic
    assert torch.equal(digits.test[3][0], digits.test[3][0])


def test_digits_augmentation_is_a_small_translation(digits):
    plain = digits.dataset("train", 16, augment=False)
    torch.manual_seed(0)
    outs = [digits.train[5][0] for _ in range(20)]
    assert all(o.shape == (3, 16, 16) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # random
    # every augmented image is the eval image shifted by at most pad px (zero background filled)
    src = plain[5][0][0]
    pad = 2
    bg = (0.0 - digits.mean[0]) / digits.std[0]
    padded = torch.nn.functional.pad(src, (pad,) * 4, value=bg)
    for o in outs:
        assert any(
            torch.allclose(o[0], padded[t : t + 16, s : s + 16], atol=1e-6)
            for t in range(2 * pad + 1)
            for s in range(2 * pad + 1)
        )


def test_digits_augment_false_and_resolution_cache(digits):
    still = build_splits(DataSettings.from_config(cfg()), 16, augment=False)
    assert torch.equal(still.train[0][0], still.train[0][0])
    assert torch.equal(still.train[0][0], digits.dataset("train", 16)[0][0])
    at32 = digits.at(32)
    assert at32.val[0][0].shape == (3, 32, 32)
    assert at32._source is digits._source  # shared data, per-Splits cache
    assert digits.dataset("val", 32) is at32.val  # cached view reused
    assert 32 in digits._source._resized


def test_train_subset_is_stratified_cap():
    s = build_splits(DataSettings.from_config(cfg(train_subset=200)), 16)
    assert len(s.train) == 200 and len(s.val) == 216
    counts = np.bincount(s.train.labels.numpy(), minlength=10)
    assert counts.min() >= 18 and counts.max() <= 22


def test_calibration_batches_fixed(digits):
    data = {"name": "digits", "calib_size": 100, "calib_batch_size": 32}
    c = {"seed": 0, "data": data}
    before = torch.random.get_rng_state()
    a = calibration_batches(digits, 16, DataSettings.from_config(c))
    assert torch.equal(torch.random.get_rng_state(), before)  # the global stream is untouched
    b = calibration_batches(digits, 16, DataSettings.from_config(c))
    assert [t.shape[0] for t in a] == [32, 32, 32, 4]  # the last batch short, as the thesis'
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # the thesis' build_sub_train_loader: the same training images through the TRAIN transform
    plain = calibration_batches(digits, 16, DataSettings.from_config(
        {"seed": 0, "data": {**data, "calib_augment": False}}))
    assert [t.shape[0] for t in plain] == [32, 32, 32, 4]
    train = digits.dataset("train", 16)
    assert any(torch.equal(plain[0][0], train[i][0]) for i in range(len(train)))
    moved = [not torch.equal(x, y) for x, y in zip(torch.cat(a), torch.cat(plain), strict=True)]
    assert 50 < sum(moved) < 100  # most images translated by the augmentation, some by (0, 0)
    # each one a translated copy of the same image: a crop of it padded with the background
    pad = digits._source.pad_for(16)
    bg = float(torch.cat(plain).min())
    for x, y in zip(torch.cat(a), torch.cat(plain), strict=True):
        padded = torch.nn.functional.pad(y, (pad,) * 4, value=bg)
        assert any(torch.allclose(x, padded[:, i:i + 16, j:j + 16], atol=1e-5)
                   for i in range(2 * pad + 1) for j in range(2 * pad + 1))
    other = calibration_batches(digits, 16, DataSettings.from_config({"seed": 5, "data": data}))
    assert not torch.equal(a[0], other[0])
    default = calibration_batches(digits, 16)  # the settings the splits were built with
    assert [t.shape[0] for t in default] == [100, 100, 56]  # calib_size 256, batches of 100


def test_make_loader_is_seeded(digits):
    def order(seed):
        return torch.cat([y for _, y in make_loader(digits.val, 50, True, seed)])

    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))
    assert len(order(3)) == len(digits.val)


def test_stratified_split_fallback():
    labels = np.array([0, 0, 0, 1, 2, 2])  # class 1 has a single example: cannot stratify
    kept, held = stratified_split(labels, np.arange(6), 0.5, seed=0)
    assert sorted(kept.tolist() + held.tolist()) == list(range(6))


# ----------------------------------------------------------------------------- errors


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="digits, fashion-mnist, cifar10, cifar100, imagefolder"):
        build_splits(DataSettings.from_config({"data": {"name": "mnist"}}), 16)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_absent_without_download(tmp_path, name):
    with pytest.raises(DataError) as err:
        build_splits(DataSettings.from_config({"data": {"name": name, "root": str(tmp_path), "download": False}}), 32)
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, UserError)
    assert "\n" not in msg and str(tmp_path / name) in msg and "data.download: true" in msg


def test_cifar_corrupted_folder(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"junk")
    with pytest.raises(DataError, match="incomplete or corrupted"):
        build_splits(DataSettings.from_config({"data": {"name": "cifar10", "root": str(tmp_path)}}), 32)


@pytest.mark.parametrize("bad", [0, 1, 1.5, "x"])
def test_bad_fraction(bad):
    with pytest.raises(ValueError, match="val_fraction"):
        build_splits(DataSettings.from_config(cfg(val_fraction=bad)), 16)


def test_bad_resolution():
    with pytest.raises(ValueError, match="resolution"):
        build_splits(DataSettings.from_config(cfg()), 0)


# ----------------------------------------------------------------------------- fake CIFAR


def _write_fake_cifar(folder, n_per_batch=40):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(n_per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def test_cifar_splits_on_fake_folder(tmp_path, monkeypatch):
    from torchvision.datasets import cifar

    # the md5 checks of the real archive cannot pass on fake files
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    _write_fake_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    s = build_splits(DataSettings.from_config({"seed": 0, "data": {"name": "cifar10", "root": str(tmp_path)}}), 24)
    assert s.sizes() == {"train": 170, "val": 30, "test": 40}
    assert s.n_classes == 10 and s.class_names[3] == "c3"
    assert s.mean == (0.49139968, 0.48215827, 0.44653124)  # the thesis' CIFAR statistics
    x, y = s.train[0]
    assert x.shape == (3, 24, 24) and 0 <= y < 10
    assert torch.equal(s.val[1][0], s.val[1][0]) and s.test[0][0].shape == (3, 24, 24)
    calib = calibration_batches(s, 24, DataSettings.from_config(
        {"data": {"calib_size": 20, "calib_batch_size": 8}}))
    assert [t.shape[0] for t in calib] == [8, 8, 4]
    # the thesis' CIFAR transforms (NAT_extended/data_providers/cifar.py)
    train_tf = [type(t).__name__ for t in s.dataset("train", 24, augment=True).transform.transforms]
    assert train_tf == ["RandomResizedCrop", "RandomHorizontalFlip", "AutoAugment", "ToTensor",
                        "Normalize"]
    crop, auto = s.dataset("train", 24, augment=True).transform.transforms[::2][:2]
    assert (crop.scale, crop.ratio, auto.policy.name) == ((1.0, 1.0), (1.0, 1.0), "CIFAR10")
    resize = s.dataset("val", 24).transform.transforms[0]
    assert type(resize).__name__ == "Resize" and resize.interpolation.name == "BICUBIC"
    mine = build_splits(DataSettings.from_config({"seed": 0, "data": {
        "name": "cifar10", "root": str(tmp_path), "mean": [0.5, 0.5, 0.5], "std": [0.2] * 3}}), 24)
    assert mine.mean == (0.5, 0.5, 0.5) and mine.std == (0.2, 0.2, 0.2)


# ----------------------------------------------------------------------------- ImageFolder


def _write_images(folder, n, color, size=(20, 14)):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, (color, (i * 30) % 255, 100)).save(folder / f"img{i}.JPEG")


def _write_train(root, n=10):
    for k, cls in enumerate(["ant", "bee", "cat"]):
        _write_images(root / "train" / cls / "images", n, 60 * k)


def test_imagefolder_holdout(tmp_path):
    _write_train(tmp_path)
    s = build_splits(DataSettings.from_config({"results_dir": str(tmp_path / "results"), "data": {"name": "imagefolder", "root": str(tmp_path)}}), 16)
    assert s.class_names == ("ant", "bee", "cat") and s.n_classes == 3
    assert s._source.test_source == "holdout"
    assert sum(s.sizes().values()) == 30 and s.sizes()["test"] == 6
    x, y = s.train[0]
    assert x.shape == (3, 16, 16) and y in (0, 1, 2)
    assert s.val[0][0].shape == (3, 16, 16)
    assert sorted(set(s.test.targets)) == [0, 1, 2]


def test_imagefolder_transforms_take_the_thesis_settings(tmp_path):
    _write_train(tmp_path)
    base = {"results_dir": str(tmp_path / "results"), "data": {"name": "imagefolder",
                                                                "root": str(tmp_path)}}
    s = build_splits(DataSettings.from_config(base), 16)
    crop = s.dataset("train", 16, augment=True).transform.transforms[0]
    assert crop.scale == (0.08, 1.0) and s.mean == (0.485, 0.456, 0.406)  # OFA's ImageNet
    resize, centre = s.dataset("val", 16).transform.transforms[:2]
    assert resize.size == 19 and centre.size == (16, 16)  # ceil(16 / 0.875), then the crop
    # the thesis' Tiny ImageNet (OFA_mbv3_extended/data_providers/tiny_imagenet.py)
    tiny = {**base["data"], "resize_scale": 0.85, "mean": [0.4802, 0.4481, 0.3975],
            "std": [0.2770, 0.2691, 0.2821]}
    t = build_splits(DataSettings.from_config({**base, "data": tiny}), 16)
    assert t.dataset("train", 16, augment=True).transform.transforms[0].scale == (0.85, 1.0)
    assert t.mean == (0.4802, 0.4481, 0.3975) and t.std == (0.2770, 0.2691, 0.2821)
    whole = build_splits(DataSettings.from_config({**base, "data": {**base["data"],
                                                                    "eval_crop": 1}}), 16)
    assert whole.dataset("val", 16).transform.transforms[0].size == 16
    x, _ = t.val[0]
    assert x.shape == (3, 16, 16)


def test_imagefolder_val_folder_as_test(tmp_path):
    _write_train(tmp_path)
    _write_images(tmp_path / "val" / "bee", 4, 90)
    s = build_splits(DataSettings.from_config({"results_dir": str(tmp_path / "results"), "data": {"name": "imagefolder", "root": str(tmp_path)}}), 16)
    assert s._source.test_source == "val"
    assert len(s.test) == 4 and s.test.targets == [1] * 4
    assert len(s.train) + len(s.val) == 30


def test_imagefolder_tiny_imagenet_layout(tmp_path):
    _write_train(tmp_path)
    _write_images(tmp_path / "val" / "images", 6, 10)
    ann = "".join(f"img{i}.JPEG\t{['ant', 'cat'][i % 2]}\t0\t0\t8\t8\n" for i in range(6))
    (tmp_path / "val" / "val_annotations.txt").write_text(ann)
    _write_images(tmp_path / "test" / "images", 3, 10)  # unlabelled: must be skipped
    s = build_splits(DataSettings.from_config({"results_dir": str(tmp_path / "results"), "data": {"name": "imagefolder", "root": str(tmp_path)}}), 16)
    assert s._source.test_source == "val"
    assert s.test.targets == [0, 2, 0, 2, 0, 2]
    assert s.test[0][0].shape == (3, 16, 16)


def test_imagefolder_missing(tmp_path):
    with pytest.raises(DataError, match="train/<class>/<image>"):
        build_splits(DataSettings.from_config({"results_dir": str(tmp_path / "results"), "data": {"name": "imagefolder", "root": str(tmp_path)}}), 16)
    (tmp_path / "train" / "ant").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        build_splits(DataSettings.from_config({"results_dir": str(tmp_path / "results"), "data": {"name": "imagefolder", "root": str(tmp_path)}}), 16)


def test_tensor_dataset_rejects_bad_shape():
    with pytest.raises(ValueError):
        TensorImageDataset(torch.zeros(2, 3, 4, 4), torch.zeros(2), 0.0, 1.0)
