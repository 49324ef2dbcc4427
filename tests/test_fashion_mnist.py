"""Fashion-MNIST: Debian's files read and checked, torchvision's download from a 127.0.0.1 mirror,
one-line errors, and a tiny supernet stage on a few hundred of its images.

The files come from Debian's ``dataset-fashion-mnist`` (``.ci/install-fashion-mnist.sh``). Without
them these tests skip, unless ``NATV2_REQUIRE_FASHION_MNIST`` is set (CI), which turns the skip
into a failure."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from loopback import LoopbackServer

from natv2.config import validate
from natv2.data import DataError, DataSettings, build_splits
from natv2.data import fashion_mnist as fm
from natv2.pipeline.supernet_stage import run_supernet

if fm.files_in(fm.DEBIAN_DIR) is None:
    reason = f"no Fashion-MNIST files under {fm.DEBIAN_DIR}: apt-get install dataset-fashion-mnist"
    if os.environ.get("NATV2_REQUIRE_FASHION_MNIST"):
        raise RuntimeError(f"NATV2_REQUIRE_FASHION_MNIST is set but there are {reason}")
    pytest.skip(reason, allow_module_level=True)


def settings(tmp_path, **data) -> DataSettings:
    raw = {"name": "fashion-mnist", "root": str(tmp_path / "data"), "train_subset": 300, **data}
    return DataSettings.from_config(validate({"data": raw}))


def test_reads_debian_files_with_the_official_test_split_and_a_stratified_validation(tmp_path):
    s = build_splits(settings(tmp_path), resolution=28)
    assert s.n_classes == 10 and s.class_names[0] == "T-shirt/top" and s.class_names[9] == "Ankle boot"
    assert (len(s.train), len(s.val), len(s.test)) == (300, 9000, 10000)  # 15% of 60,000 held out
    source = s._source
    assert source.where == str(fm.DEBIAN_DIR)
    labels = source.labels_np
    assert np.bincount(labels[source.indices["test"]]).tolist() == [1000] * 10  # the official test set
    assert np.bincount(labels[source.indices["val"]]).tolist() == [900] * 10  # stratified
    assert np.bincount(labels[source.indices["train"]]).tolist() == [30] * 10
    assert source.indices["val"].max() < 60000 <= source.indices["test"].min()
    assert source.mean[0] == pytest.approx(0.2860, abs=1e-4)  # over the 60,000 training images
    x, y = s.test[0]
    assert x.shape == (3, 28, 28) and y == 9  # the first test image is an ankle boot
    again = build_splits(settings(tmp_path), resolution=28)
    assert all(np.array_equal(source.indices[k], again._source.indices[k]) for k in source.indices)


def test_training_views_translate_and_flip_evaluation_views_do_not(tmp_path):
    source = build_splits(settings(tmp_path), resolution=16)._source
    train, test = source.view("train", 16, augment=True), source.view("test", 16, augment=False)
    torch.manual_seed(0)
    draws = torch.stack([train[0][0] for _ in range(20)])
    assert len({tuple(d.flatten().tolist()) for d in draws}) > 1
    assert torch.equal(test[0][0], test[0][0]) and test[0][0].shape == (3, 16, 16)


def test_a_changed_file_is_refused_naming_it(tmp_path):
    root = tmp_path / "data" / "fashion-mnist"
    root.mkdir(parents=True)
    for path in fm.files_in(fm.DEBIAN_DIR).values():
        shutil.copyfile(path, root / path.name)
    bad = root / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(bad.read_bytes()))
    data[-1] = (data[-1] + 1) % 10  # one label changed
    bad.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DataError, match=r"'.*t10k-labels-idx1-ubyte.gz' is not Zalando's "
                                        r"t10k-labels-idx1-ubyte \(sha256 [0-9a-f]{12} of its 10,008 bytes"):
        build_splits(settings(tmp_path), resolution=28)
    bad.write_bytes(b"\x1f\x8b cut")
    with pytest.raises(DataError, match="cannot read .*t10k-labels-idx1-ubyte.gz"):
        build_splits(settings(tmp_path), resolution=28)


def test_no_files_and_no_download_is_one_line_naming_every_place(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")
    with pytest.raises(DataError) as err:
        build_splits(settings(tmp_path), resolution=28)
    text = str(err.value)
    assert "\n" not in text and str(tmp_path / "no-debian") in text and str(tmp_path / "data") in text
    assert "dataset-fashion-mnist" in text and "data.download: true" in text


def test_download_through_torchvision_from_a_local_mirror(tmp_path, monkeypatch):
    """torchvision's own download code, its mirror list and md5 list pointed at 127.0.0.1."""
    from torchvision.datasets import FashionMNIST

    files = {p.name: p.read_bytes() for p in fm.files_in(fm.DEBIAN_DIR).values()}
    server = LoopbackServer({f"/mirror/{name}": data for name, data in files.items()})
    try:
        monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")
        monkeypatch.setattr(FashionMNIST, "mirrors", [f"{server.url}/mirror/"])
        monkeypatch.setattr(FashionMNIST, "resources", [
            (name, hashlib.md5(data).hexdigest()) for name, data in files.items()])
        s = build_splits(settings(tmp_path, download=True), resolution=28)
        assert s._source.where == str(tmp_path / "data" / "FashionMNIST" / "raw")
        assert len(s.test) == 10000
        assert {r["path"] for r in server.requests} == {f"/mirror/{name}" for name in files}
        # a second open reads the downloaded files, without the network
        n = len(server.requests)
        build_splits(settings(tmp_path, download=True), resolution=28)
        assert len(server.requests) == n
    finally:
        server.close()
    # a mirror that fails: one line naming the folder
    monkeypatch.setattr(FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(DataError, match="could not download fashion-mnist into"):
        build_splits(settings(tmp_path / "elsewhere", download=True), resolution=28)


def test_supernet_stage_on_a_few_hundred_images(tmp_path):
    """The pipeline's first stage trains an EPS super-network on 300 Fashion-MNIST images."""
    cfg = validate({
        "results_dir": str(tmp_path / "results"), "device": "cpu", "threads": 1, "seed": 0,
        "data": {"name": "fashion-mnist", "root": str(tmp_path / "data"), "train_subset": 300,
                 "calib_size": 64, "batch_size": 50, "val_fraction": 0.005},
        "space": {"resolutions": [16]},
        "supernet": {"family": "SE_B", "train": {"phases": {
            p: {"epochs": 1, "subnets_per_step": 1} for p in ("full", "kernel", "depth", "expand")}}},
    })
    info = run_supernet(cfg, show_progress=False)
    assert info["dataset"] == "fashion-mnist" and info["n_classes"] == 10
    assert all(0.0 <= v <= 100.0 for v in info["val_top1"].values())
    on_disk = json.loads((tmp_path / "results" / "supernet" / "supernet.json").read_text())
    assert on_disk["val_top1"] == info["val_top1"]


def test_pixels_and_published_points_for_the_baselines(tmp_path):
    s = build_splits(settings(tmp_path), resolution=20)
    x, y = s.pixels("test")
    assert x.shape == (10000, 784) and x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    assert y[0] == 9 and np.bincount(y).tolist() == [1000] * 10  # the official test set, in order
    assert s.pixels("train")[0].shape == (300, 784)  # at the dataset's size, whatever the resolution
    names = [m for m, _, _ in s.published]
    assert "2 conv layers, < 100k parameters" in names and len(names) == len(fm.PUBLISHED_TOP1)
    assert all(0 < t <= 100 and src.startswith("https://github.com/zalandoresearch/fashion-mnist")
               for _, t, src in s.published)


def test_shipped_config_validates_and_plans_every_stage(tmp_path):
    """config/fashion-mnist.yaml: the whole pipeline's jobs, without running them."""
    root = Path(__file__).resolve().parents[1]
    project = tmp_path / "project"
    for name in ("workflow", "config"):
        shutil.copytree(root / name, project / name)
    snakemake = Path(sys.executable).with_name("snakemake")
    result = subprocess.run([str(snakemake), "-n", "--cores", "2", "--configfile",
                             "config/fashion-mnist.yaml"], cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = result.stdout
    for rule in ("supernet", "init_archive", "search_round_03", "finetune_2", "baselines", "report"):
        assert f"rule {rule}:" in jobs or f"localrule {rule}:" in jobs, rule
    assert "results/fashion-mnist/baselines/baselines.json" in jobs
