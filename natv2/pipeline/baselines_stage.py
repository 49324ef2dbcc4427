"""Stage ``baselines``: the context of the fine-tuned networks, on their test split.

Writes ``baselines/baselines.json`` (:attr:`natv2.layout.Layout.baselines`):

* ``classical``: logistic regression and an RBF SVM on raw pixels (:mod:`natv2.baselines`), fit
  on train + val, scored on the test split; empty, with ``classical_reason``, for a dataset
  without fixed-size pixels (``imagefolder``);
* ``largest``: the search space's largest sub-network of the last round's super-network (the
  one every fine-tuned network is extracted from) *before* any fine-tuning: BN recalibrated as
  every evaluation, test top-1 at the largest resolution, parameters and MACs; for early-exit
  families also the test top-1 of its exits' weighted ensemble (the static network's
  ``exit_weights``, as a fine-tuned early-exit network deploys: ``natv2.model.MultiExitModel``);
* ``published``: published test top-1 of the dataset's official test split with their sources
  (Fashion-MNIST), for the report.

It runs after the last search round, beside the fine-tune slots, and reruns when that round's
super-network or the data settings change.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from natv2.baselines import classical_baselines
from natv2.data import DataSettings, build_splits
from natv2.files import check_writable, write_json
from natv2.layout import Layout, round_command
from natv2.measure import Evaluator
from natv2.pipeline.context import setup_stage, space_from_config
from natv2.pipeline.lock import stage_lock
from natv2.records import check_recorded
from natv2.supernet import load_supernet
from natv2.train.aep import exit_accuracies


def largest_before_finetune(net, space, splits, device) -> dict[str, Any]:
    """Test top-1 (%), params and MACs of ``space``'s largest sub-network of ``net`` (BN
    recalibrated), and of its exits' ensemble for early-exit spaces."""
    arch = space.largest()
    evaluator = Evaluator(net, splits, device, space.resolutions, encoder=space, split="test")
    row = evaluator(arch)
    out = {"arch": row["arch"], "resolution": int(arch.resolution), "top1": row["top1"],
           "params": int(row["params"]), "macs": int(row["macs"])}
    if space.has_nd:
        multi = net.extract(arch, all_exits=True)
        multi.to(device, memory_format=torch.channels_last)
        evaluator.recalibrate_and_count(multi, int(arch.resolution))
        _, ensemble = exit_accuracies(multi, evaluator.validation(int(arch.resolution)), device,
                                      multi.exit_weights)
        out["top1_exits_ensemble"] = float(ensemble)
    return out


def run_baselines(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Measure the baselines and write ``baselines.json``; returns what it wrote."""
    layout = Layout.from_config(cfg)
    rounds = int(cfg["search"]["rounds"])
    supernet_file = check_recorded(layout.round_supernet(rounds), layout.stats(rounds),
                                   round_command(rounds))
    check_writable(layout.baselines_dir)
    with stage_lock(layout.lock("baselines"), str(layout.baselines_dir)):
        device = setup_stage(cfg)
        start = time.perf_counter()
        space = space_from_config(cfg)
        splits = build_splits(DataSettings.from_config(cfg), resolution=max(space.resolutions),
                              augment=False)
        seed = int(cfg["seed"])
        train, val, test = (splits.pixels(s) for s in ("train", "val", "test"))
        record: dict[str, Any] = {"dataset": splits.name, "split_sizes": splits.sizes()}
        if test is None:
            record["classical"] = []
            record["classical_reason"] = (f"{splits.name}: images of varying sizes have no raw "
                                          f"pixel rows")
        else:
            trainval = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
            record["classical"] = [s.as_dict() for s in classical_baselines(trainval, test, seed)]
        record["largest"] = largest_before_finetune(load_supernet(supernet_file), space, splits,
                                                    device)
        record["published"] = [{"model": m, "top1": t, "source": src}
                               for m, t, src in splits.published]
        record["seconds"] = round(time.perf_counter() - start, 3)
        write_json(layout.baselines, record)
    return record
