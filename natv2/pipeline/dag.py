"""The stage graph, in one place: which files each stage reads and writes, and which config keys
it depends on. The Snakemake rules take their ``params`` from :func:`stage_params`, and
``natv2 dvc-yaml`` writes ``dvc.yaml`` from :func:`stages`, so both tools run the same graph;
``tests/test_workflow.py`` checks that they agree.

Only keys that change a stage's results are listed: ``device``, ``threads`` and ``results_dir``
are execution settings, ``search.rounds`` and ``finetune.slots`` shape the graph (a new round is a
new stage, not a changed one), ``search.shards`` only splits work, and ``supernet.cache_dir`` is
where downloads are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

STRUCTURE = ("supernet.family", "supernet.width_mult", "supernet.ks_list", "supernet.expand_list",
             "supernet.depth_list")
_DATA = ("seed", "data", "space")
_ADAPT_TRAIN = ("supernet.train.label_smoothing", "supernet.train.momentum", "supernet.train.weight_decay",
                "supernet.train.progressive_teacher", "supernet.train.ensemble_weights")
_INIT_SEARCH = ("search.policy", "search.seed", "search.n_doe", "search.objectives", "search.init", "search.preprocess_factor",
                "search.sampler", "search.repair", "search.measure_latency", "search.latency_runs")
_ROUND_SEARCH = _INIT_SEARCH + (
    "search.candidates", "search.update", "search.predictor", "search.features", "search.pop_size",
    "search.n_gen", "search.crossover_prob", "search.mutation_eta", "search.subset_pop_size",
    "search.subset_n_gen", "search.adaptation")

STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "supernet": _DATA + STRUCTURE + ("supernet.source", "supernet.train", "supernet.warmup"),
    "init_archive": _DATA + STRUCTURE + _INIT_SEARCH,
    "search_round": _DATA + STRUCTURE + _ROUND_SEARCH + _ADAPT_TRAIN,
    "finetune": _DATA + STRUCTURE + ("search.objectives", "finetune.n_high_tradeoff", "finetune.max_epochs",
                                     "finetune.patience", "finetune.optimizer", "finetune.lr", "finetune.momentum",
                                     "finetune.weight_decay", "finetune.label_smoothing", "finetune.warmup_epochs",
                                     "finetune.batch_size", "finetune.measure_latency", "finetune.exit_ordering"),
    "report": ("report.param_budgets",),
}


def lookup(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _canonical(value: Any) -> Any:
    """Dicts with sorted keys, recursively: Snakemake compares params by their text, so the order
    keys happen to have in a YAML file must not look like a change."""
    if isinstance(value, Mapping):
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def stage_params(cfg: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """``{dotted key: resolved value}`` of every config key ``stage`` depends on (canonical order)."""
    return {key: _canonical(lookup(cfg, key)) for key in STAGE_KEYS[stage]}


@dataclass(frozen=True)
class Stage:
    """One job of the graph: its name, the ``natv2`` arguments that run it, files and keys."""

    name: str
    kind: str
    args: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    keys: tuple[str, ...] = field(default=())


def _round(results: str, k: int) -> str:
    return f"{results}/search/round_{k:02d}"


def round_outputs(results: str, k: int) -> tuple[str, ...]:
    return tuple(f"{_round(results, k)}/{f}" for f in ("archive.csv", "candidates.csv", "stats.json", "supernet.pt"))


def round_inputs(results: str, k: int) -> tuple[str, ...]:
    supernet = f"{results}/supernet/supernet.pt" if k == 1 else f"{_round(results, k - 1)}/supernet.pt"
    return (f"{_round(results, k - 1)}/archive.csv", f"{_round(results, 0)}/stats.json", supernet)


def rank_outputs(results: str, n: int) -> tuple[str, ...]:
    return tuple(f"{results}/finetune/rank_{n}/{f}" for f in ("model.pt", "arch.json", "history.csv", "metrics.json"))


REPORT_FILES = ("index.html", "pareto.png", "hypervolume.png")


def stages(cfg: Mapping[str, Any]) -> list[Stage]:
    """Every job of the pipeline for ``cfg``, in a valid execution order."""
    res = cfg["results_dir"].rstrip("/")
    rounds, slots, shards = int(cfg["search"]["rounds"]), int(cfg["finetune"]["slots"]), int(cfg["search"]["shards"])
    out: list[Stage] = [
        Stage("supernet", "supernet", ("supernet",), (),
              (f"{res}/supernet/supernet.pt", f"{res}/supernet/supernet.json"), keys=STAGE_KEYS["supernet"]),
        Stage("init_archive", "init_archive", ("init-archive",), (f"{res}/supernet/supernet.pt",),
              tuple(f"{_round(res, 0)}/{f}" for f in ("archive.csv", "evaluated.csv", "stats.json")),
              keys=STAGE_KEYS["init_archive"]),
    ]
    for k in range(1, rounds + 1):
        ins = round_inputs(res, k)
        if shards == 1:
            out.append(Stage(f"search_round_{k:02d}", "search_round", ("search-round", "--round", str(k)), ins,
                             round_outputs(res, k), keys=STAGE_KEYS["search_round"]))
            continue
        proposed = (f"{_round(res, k)}/proposed.csv", f"{_round(res, k)}/proposed.json")
        shard_files = tuple(f"{_round(res, k)}/shard_{i}.csv" for i in range(shards))
        out.append(Stage(f"propose_{k:02d}", "search_propose", ("search-round", "--round", str(k), "--step", "propose"),
                         ins, proposed, keys=STAGE_KEYS["search_round"]))
        for i in range(shards):
            out.append(Stage(f"evaluate_{k:02d}_{i}", "search_evaluate",
                             ("search-round", "--round", str(k), "--step", "evaluate", "--shard", str(i)),
                             (proposed[0], ins[2]), (shard_files[i],), keys=STAGE_KEYS["search_round"]))
        out.append(Stage(f"finish_{k:02d}", "search_finish", ("search-round", "--round", str(k), "--step", "finish"),
                         ins + proposed + shard_files, round_outputs(res, k), keys=STAGE_KEYS["search_round"]))
    final = _round(res, rounds)
    for n in range(slots):
        out.append(Stage(f"finetune_{n}", "finetune", ("finetune", "--rank", str(n)),
                         (f"{final}/archive.csv", f"{final}/supernet.pt"), rank_outputs(res, n),
                         keys=STAGE_KEYS["finetune"]))
    out.append(Stage("report", "report", ("report",), report_inputs(res, rounds, slots),
                     tuple(f"{res}/report/{f}" for f in REPORT_FILES),
                     metrics=(f"{res}/report/metrics.json",), plots=(f"{res}/report/pareto.csv",),
                     keys=STAGE_KEYS["report"]))
    return out


def report_inputs(res: str, rounds: int, slots: int) -> tuple[str, ...]:
    files = [f"{res}/supernet/supernet.json", f"{_round(res, 0)}/evaluated.csv"]
    for k in range(rounds + 1):
        files += [f"{_round(res, k)}/archive.csv", f"{_round(res, k)}/stats.json"]
        if k:
            files.append(f"{_round(res, k)}/candidates.csv")
    for n in range(slots):
        files += [f"{res}/finetune/rank_{n}/arch.json", f"{res}/finetune/rank_{n}/metrics.json"]
    return tuple(files)


def present_keys(raw: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """The deepest prefixes of ``keys`` present in the user's config file ``raw``: DVC tracks a
    parameter only if the file states it (absent keys take the schema default)."""
    found = []
    for key in keys:
        parts = key.split(".")
        node: Any = raw
        for i, part in enumerate(parts):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
            if i == len(parts) - 1:
                found.append(key)
    return found


def dvc_yaml(cfg: Mapping[str, Any], raw: Mapping[str, Any], config_path: str) -> dict[str, Any]:
    """The ``dvc.yaml`` document for ``cfg`` (validated) read from ``config_path`` (as ``raw``)."""
    doc: dict[str, Any] = {"stages": {}}
    for st in stages(cfg):
        entry: dict[str, Any] = {"cmd": " ".join(("natv2", *st.args, "--config", config_path))}
        if st.deps:
            entry["deps"] = list(st.deps)
        params = present_keys(raw, st.keys)
        if params:
            entry["params"] = [{config_path: params}]
        entry["outs"] = list(st.outs)
        if st.metrics:
            entry["metrics"] = [{m: {"cache": False}} for m in st.metrics]
        if st.plots:
            entry["plots"] = [{p: {"x": "params", "y": "top1", "template": "scatter", "cache": False}}
                              for p in st.plots]
        doc["stages"][st.name] = entry
    return doc
