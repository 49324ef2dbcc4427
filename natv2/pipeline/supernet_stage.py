"""Stage ``supernet``: turn ``supernet.source`` into a ready super-network for this dataset.

Writes ``<results>/supernet/supernet.pt`` (our checkpoint format) and ``supernet.json``
(family, width, source, sha256 of the source file, phases with epochs and wall time,
validation top-1 of the largest and smallest sub-networks after BN recalibration).

Sources: ``train`` (Extended Progressive Shrinking from scratch), ``{pretrained: NAME}``,
``{url: URL, sha256: HEX|null}`` (downloaded into the cache directory) and ``{file: PATH}``. A
checkpoint trained on another label set gets NATv2's warm-up: a new classifier head, the largest
network fine-tuned, then the whole super-network trained by uniform sub-network sampling with KD.
An OFA MobileNetV3 checkpoint given to an OFAv2 family warm-starts every shared tensor.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from natv2.data import build_splits, make_loader
from natv2.errors import UserError
from natv2.files import write_json
from natv2.measure import Evaluator
from natv2.pipeline.context import results_path, setup_stage, space_from_config
from natv2.space import SearchSpace
from natv2.supernet import build_supernet, load_checkpoint, save_checkpoint
from natv2.supernet.download import default_cache_dir, download, sha256_of
from natv2.supernet.registry import pretrained
from natv2.train.eps import PhaseSettings, TrainSettings, make_teacher, train_phase, train_supernet

STAGE_DIR = "supernet"


def train_settings(cfg: Mapping[str, Any]) -> TrainSettings:
    t = cfg["supernet"]["train"]
    return TrainSettings(
        phases={name: PhaseSettings(**p) for name, p in t["phases"].items()},
        kd_ratio=t["kd_ratio"],
        label_smoothing=t["label_smoothing"],
        momentum=t["momentum"],
        weight_decay=t["weight_decay"],
        progressive_teacher=t["progressive_teacher"],
        ensemble_weights=tuple(t["ensemble_weights"]),
        seed=int(cfg["seed"]),
    )


def epoch_loader(dataset, batch_size: int, num_workers: int):
    """``loader(seed)``: one shuffled pass over ``dataset``; also seeds torch's global generator,
    which draws the augmentation (and dropout), so every epoch is reproducible on its own."""

    def loader(seed: int):
        torch.manual_seed(seed)
        return make_loader(dataset, batch_size, shuffle=True, seed=seed, num_workers=num_workers,
                           drop_last=len(dataset) > batch_size)

    return loader


def data_fingerprint(cfg: Mapping[str, Any], splits) -> dict:
    """What the training data depends on besides the seed (resuming EPS needs the same data)."""
    d = cfg["data"]
    keys = ("name", "val_fraction", "test_fraction", "batch_size", "train_subset", "num_workers")
    return {**{k: d.get(k) for k in keys}, "n_train": len(splits.train), "n_classes": splits.n_classes}


def fetch_source(source: Any, cache_dir: str | None, show_progress: bool = True) -> tuple[Path, str, dict]:
    """Local path, sha256 and a JSON description of a non-``train`` source.

    The description of a downloaded source has ``"downloaded": True`` when this call wrote the
    file into the cache (it was not there, verified, already).
    """
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if isinstance(source, Mapping) and "pretrained" in source:
        entry = pretrained(source["pretrained"])
        dest = cache / entry.name
        had = dest.exists()
        got = download(entry.url, dest, sha256=entry.sha256, show_progress=show_progress)
        return got.path, got.sha256, {"kind": "pretrained", "name": entry.name, "url": entry.url,
                                      "downloaded": not had}
    if isinstance(source, Mapping) and "url" in source:
        url = source["url"]
        name = hashlib.sha256(url.encode()).hexdigest()[:16] + "-" + url.rstrip("/").rsplit("/", 1)[-1]
        dest = cache / name
        had = dest.exists()
        got = download(url, dest, sha256=source.get("sha256"), show_progress=show_progress)
        return got.path, got.sha256, {"kind": "url", "url": url, "downloaded": not had}
    if isinstance(source, Mapping) and "file" in source:
        path = Path(source["file"]).expanduser()
        if not path.is_file():
            raise UserError(f"supernet.source.file: '{path}' does not exist; point it at a checkpoint file")
        return path, sha256_of(path), {"kind": "file", "file": str(path)}
    raise UserError(f"supernet.source: {source!r} is not train, {{pretrained: NAME}}, {{url: URL}} or {{file: PATH}}")


def _read_payload(path: Path) -> Mapping:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a file torch cannot read safely: say which and why, in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read checkpoint '{path}': {first}") from None
    if not isinstance(payload, Mapping):
        raise UserError(f"checkpoint '{path}' holds a {type(payload).__name__}, not a state dict")
    return payload


def _checkpoint_classes(payload: Mapping) -> int:
    """Number of classes of a checkpoint's classifier (ours: its config; OFA's: the weight shape)."""
    if payload.get("format") == "natv2-supernet":
        return int(payload["config"]["n_classes"])
    state = payload.get("state_dict", payload)
    for key, value in state.items():
        if key.startswith("classifier.") and key.endswith("weight") and hasattr(value, "shape"):
            return int(value.shape[0])
    raise UserError("checkpoint has no classifier weight (expected a 'classifier.*weight' key)")


def load_source_supernet(path: Path, cfg: Mapping[str, Any]) -> tuple[torch.nn.Module, dict]:
    """Build the configured family and load ``path`` into it; returns (net, load report)."""
    sn = cfg["supernet"]
    payload = _read_payload(path)
    net = build_supernet(sn["family"], width_mult=sn["width_mult"], n_classes=_checkpoint_classes(payload),
                         ks_list=sn["ks_list"], expand_list=sn["expand_list"], depth_list=sn["depth_list"])
    is_ours = payload.get("format") == "natv2-supernet"
    source_family = payload.get("config", {}).get("family") if is_ours else "SE_B"  # OFA's layout
    if sn["family"] == "SE_B" or source_family != "SE_B":
        # same layout: every tensor (our checkpoints are checked for family, width and lists)
        load_checkpoint(net, payload)
        return net, {"loaded": "all tensors"}
    from natv2.supernet.warm_start import warm_start_from_ofa  # OFAv2 family from OFA weights

    return net, warm_start_from_ofa(net, payload)


def validation_top1(net, space: SearchSpace, splits, device) -> dict[str, float]:
    evaluator = Evaluator(net, splits, device, space.resolutions, encoder=space)
    return {
        "largest": evaluator(space.largest())["top1"],
        "smallest": evaluator(space.smallest())["top1"],
    }


def warm_up(net, space: SearchSpace, loader, cfg: Mapping[str, Any], device, show_progress: bool) -> list[dict]:
    """NATv2's warm-up of a super-network pretrained on another dataset (new head already in)."""
    w = cfg["supernet"]["warmup"]
    train = train_settings(cfg)
    records = []
    if w["largest_epochs"] > 0:
        rec = train_phase(net, space, loader, "full", PhaseSettings(w["largest_epochs"], w["lr"]), train,
                          None, device, seed=int(cfg["seed"]) * 100 + 90, show_progress=show_progress)
        records.append({**rec, "name": "warmup_largest"})
    if w["supernet_epochs"] > 0:
        teacher = make_teacher(net, space).to(device) if train.kd_ratio > 0 else None
        settings = PhaseSettings(w["supernet_epochs"], w["lr"], 0, w["subnets_per_step"])
        rec = train_phase(net, space, loader, "expand", settings, train, teacher, device,
                          seed=int(cfg["seed"]) * 100 + 91, show_progress=show_progress)
        records.append({**rec, "name": "warmup_supernet"})
    return records


def run_supernet(cfg: Mapping[str, Any], show_progress: bool = True) -> dict:
    """Run the stage; returns what it wrote to ``supernet.json``."""
    start = time.perf_counter()
    device = setup_stage(cfg)
    sn = cfg["supernet"]
    out_dir = results_path(cfg, STAGE_DIR)
    space = space_from_config(cfg)
    source = sn["source"]
    # fetch, verify and load the source before any data or training work
    net = load_report = None
    source_info, source_sha = {"kind": "train"}, None
    if source != "train":
        path, source_sha, source_info = fetch_source(source, sn["cache_dir"], show_progress)
        try:
            net, load_report = load_source_supernet(path, cfg)
        except UserError:
            if source_info.pop("downloaded", False):  # a file this run fetched and cannot use
                path.unlink(missing_ok=True)
            raise
        source_info.pop("downloaded", None)
    splits = build_splits(cfg, resolution=max(space.resolutions))
    loader = epoch_loader(splits.train, cfg["data"]["batch_size"], cfg["data"]["num_workers"])
    if net is None:
        net = build_supernet(sn["family"], width_mult=sn["width_mult"], n_classes=splits.n_classes,
                             ks_list=sn["ks_list"], expand_list=sn["expand_list"], depth_list=sn["depth_list"])
        phases = train_supernet(net, space, loader, train_settings(cfg), device, out_dir / "work",
                                show_progress=show_progress, fingerprint=data_fingerprint(cfg, splits))
    else:
        net.to(device)
        phases = []
        if net.n_classes != splits.n_classes:
            net.replace_classifier(splits.n_classes)
            net.to(device)
            phases = warm_up(net, space, loader, cfg, device, show_progress)
    net.eval()
    info = {
        "family": sn["family"],
        "width_mult": float(sn["width_mult"]),
        "n_classes": splits.n_classes,
        "source": source_info,
        "sha256": source_sha,
        "load": load_report,
        "phases": phases,
        "val_top1": validation_top1(net, space, splits, device),
        "dataset": cfg["data"]["name"],
        "resolutions": list(space.resolutions),
    }
    save_checkpoint(net, out_dir / "supernet.pt", extra={"info": info})
    info["seconds"] = round(time.perf_counter() - start, 3)
    write_json(out_dir / "supernet.json", info)
    return info
