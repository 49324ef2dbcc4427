"""The stage graph, in one place: which files each stage reads and writes, and which config keys
it depends on. The Snakemake rules take their ``params`` from :func:`stage_params`, and
``natv2 dvc-yaml`` writes ``dvc.yaml`` from :func:`stages`, so both tools run the same graph;
``tests/test_workflow.py`` checks that they agree.

Only keys that change a stage's results are listed in :data:`STAGE_KEYS`; every other schema
key is in :data:`NOT_STAGE_KEYS` with the reason (``tests/test_one_home.py`` checks that each
schema key is in exactly one of the two, so a new key cannot be forgotten: a key missing from
its stage's keys would mean Snakemake and DVC silently do not rerun that stage).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natv2.layout import Layout

#: schema keys that change no stage's results, and why
NOT_STAGE_KEYS: dict[str, str] = {
    "device": "execution: where a stage runs",
    "threads": "execution: torch intra-op threads",
    "processes": "execution: data-parallel processes of a training job (the same algorithm)",
    "results_dir": "execution: where the outputs go (the file paths carry it)",
    "finetune.slots": "graph shape: a new slot is a new stage",
    "search.shards": "graph shape: splits a round's evaluations over jobs, same results",
    "supernet.cache_dir": "execution: where downloads are kept",
}

STRUCTURE = ("supernet.family", "supernet.width_mult", "supernet.ks_list", "supernet.expand_list",
             "supernet.depth_list")
_DATA = ("seed", "data", "space")
_INIT_SEARCH = ("search.policy", "search.seed", "search.n_doe", "search.objectives", "search.init", "search.preprocess_factor",
                "search.sampler", "search.repair", "search.measure_latency", "latency",
                # a latency target measures every evaluated architecture's latency; with
                # search.target_constraints the targets constrain the evolution
                "targets", "search.target_constraints", "search.accuracy")
_ROUND_SEARCH = _INIT_SEARCH + (
    "search.candidates", "search.update", "search.predictor", "search.features", "search.pop_size",
    "search.n_gen", "search.crossover_prob", "search.mutation_eta", "search.subset_pop_size",
    "search.subset_n_gen", "search.decoding", "search.duplicates", "search.adaptation",
    # the adaptation's one schedule spans every round's epochs
    "search.rounds")

STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "supernet": _DATA + STRUCTURE + ("supernet.source", "supernet.train", "supernet.warmup"),
    "init_archive": _DATA + STRUCTURE + _INIT_SEARCH,
    "search_round": _DATA + STRUCTURE + _ROUND_SEARCH,
    "finetune": _DATA + STRUCTURE + ("search.objectives", "finetune.n_high_tradeoff", "finetune.tradeoff", "finetune.max_epochs",
                                     "finetune.patience", "finetune.optimizer", "finetune.lr", "finetune.momentum",
                                     "finetune.weight_decay", "finetune.label_smoothing", "finetune.warmup_epochs",
                                     "finetune.stop_on", "finetune.lr_min", "finetune.cosine_epochs",
                                     "finetune.nesterov", "finetune.decay_all", "finetune.dropout",
                                     "finetune.batch_size", "finetune.measure_latency", "finetune.measure_int8", "finetune.exit_ordering",
                                     "latency", "targets"),
    "baselines": _DATA + STRUCTURE,
    "report": ("targets",),
    "latency_table": _DATA + STRUCTURE + ("latency", "search.objectives"),
}


def uses_latency_table(cfg: Mapping[str, Any]) -> bool:
    """Whether the search reads its latency objective from the lookup table (stage
    ``latency_table``): latency among ``search.objectives`` and ``latency.table`` on."""
    return "latency" in cfg["search"]["objectives"] and bool(cfg["latency"]["table"])


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


def stage_params(cfg: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``{dotted key: resolved value}`` of every config key in ``keys`` (a stage's ``keys``)."""
    return {key: _canonical(lookup(cfg, key)) for key in keys}


def named(paths: Sequence[str]) -> dict[str, str]:
    """``{name: path}`` for a rule's named inputs or outputs: ``<folder>_<file>`` with every
    non-word character as ``_`` (``round_01_archive_csv``, ``rank_0_metrics_json``)."""
    out = {re.sub(r"\W", "_", f"{Path(p).parent.name}_{Path(p).name}"): str(p) for p in paths}
    if len(out) != len(paths):
        raise ValueError(f"two files of one rule get the same name: {sorted(paths)}")
    return out


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


def _paths(paths) -> tuple[str, ...]:
    return tuple(str(p) for p in paths)


def round_outputs(layout: Layout, k: int) -> tuple[str, ...]:
    return _paths(layout.round_outputs(k))


def round_inputs(layout: Layout, k: int, table: bool = False) -> tuple[str, ...]:
    """(previous archive.csv, round 0 stats.json, input supernet.pt, stage 1's teacher.pt (the
    adaptation's fixed teacher)[, latency table]) of round ``k >= 1``."""
    extra = (layout.latency_table,) if table else ()
    return _paths((layout.archive(k - 1), layout.stats(0), layout.input_supernet(k),
                   layout.supernet_teacher, *extra))


def rank_outputs(layout: Layout, n: int) -> tuple[str, ...]:
    return _paths(layout.rank_outputs(n))


def _round_stages(layout: Layout, k: int, shards: int, table: bool) -> list[Stage]:
    """Round ``k``: one job, or propose + ``shards`` evaluate jobs + finish (scatter/gather)."""
    ins, keys = round_inputs(layout, k, table), STAGE_KEYS["search_round"]
    args = ("search-round", "--round", str(k))
    if shards == 1:
        return [Stage(f"search_round_{k:02d}", "search_round", args, ins, round_outputs(layout, k),
                      keys=keys)]
    proposed = _paths(layout.proposed(k))
    shard_files = _paths(layout.shard(k, i) for i in range(shards))
    out = [Stage(f"propose_{k:02d}", "search_propose", (*args, "--step", "propose"), ins, proposed,
                 keys=keys)]
    out += [Stage(f"evaluate_{k:02d}_{i}", "search_evaluate",
                  (*args, "--step", "evaluate", "--shard", str(i)), (proposed[0], ins[2]),
                  (shard_files[i],), keys=keys) for i in range(shards)]
    out.append(Stage(f"finish_{k:02d}", "search_finish", (*args, "--step", "finish"),
                     ins + proposed + shard_files, round_outputs(layout, k), keys=keys))
    return out


#: the kinds of job that train and so run data-parallel with ``processes`` > 1, and their commands
PARALLEL_KINDS: dict[str, str] = {"supernet": "natv2 supernet", "search_round": "natv2 search-round",
                                  "search_finish": "natv2 search-round --step finish",
                                  "finetune": "natv2 finetune"}


def launcher(stage: Stage, processes: int) -> tuple[str, ...]:
    """What runs ``stage``'s arguments: ``natv2``, or for a training job with ``processes`` > 1,
    ``torchrun --standalone --nproc-per-node N -m natv2``."""
    if processes > 1 and stage.kind in PARALLEL_KINDS:
        return ("torchrun", "--standalone", f"--nproc-per-node={processes}", "-m", "natv2")
    return ("natv2",)


def command(stage: Stage, processes: int) -> tuple[str, ...]:
    """The command that runs ``stage``, without ``--config``."""
    return (*launcher(stage, processes), *stage.args)


def stages(cfg: Mapping[str, Any]) -> list[Stage]:
    """Every job of the pipeline for ``cfg``, in a valid execution order."""
    layout = Layout.from_config(cfg)
    rounds, slots, shards = int(cfg["search"]["rounds"]), int(cfg["finetune"]["slots"]), int(cfg["search"]["shards"])
    out: list[Stage] = [
        Stage("supernet", "supernet", ("supernet",), (),
              _paths((layout.supernet, layout.supernet_teacher, layout.supernet_json)),
              keys=STAGE_KEYS["supernet"]),
        Stage("init_archive", "init_archive", ("init-archive",), (str(layout.supernet),),
              round_outputs(layout, 0), keys=STAGE_KEYS["init_archive"]),
    ]
    table = uses_latency_table(cfg)
    if table:
        out.insert(1, Stage("latency_table", "latency_table", ("latency-table",), (str(layout.supernet),),
                            (str(layout.latency_table),), keys=STAGE_KEYS["latency_table"]))
    for k in range(1, rounds + 1):
        out += _round_stages(layout, k, shards, table)
    final = (str(layout.archive(rounds)), str(layout.round_supernet(rounds)))
    for n in range(slots):
        out.append(Stage(f"finetune_{n}", "finetune", ("finetune", "--rank", str(n)), final,
                         rank_outputs(layout, n), keys=STAGE_KEYS["finetune"]))
    out.append(Stage("baselines", "baselines", ("baselines",), final, (str(layout.baselines),),
                     keys=STAGE_KEYS["baselines"]))
    out.append(Stage("report", "report", ("report",), report_inputs(layout, rounds, slots),
                     _paths(layout.report_outputs()), metrics=(str(layout.report_metrics),),
                     plots=(str(layout.report_plots),), keys=STAGE_KEYS["report"]))
    return out


def report_inputs(layout: Layout, rounds: int, slots: int) -> tuple[str, ...]:
    """Every file the report reads (:func:`natv2.report.load.load_results`)."""
    files = [layout.supernet_json, layout.evaluated, layout.baselines]
    for k in range(rounds + 1):
        files += [layout.archive(k), layout.stats(k)]
        if k:
            files.append(layout.candidates(k))
    for n in range(slots):
        files += [layout.rank_arch(n), layout.rank_metrics(n)]
    return _paths(files)


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
        entry: dict[str, Any] = {"cmd": " ".join((*command(st, int(cfg["processes"])), "--config", config_path))}
        if st.deps:
            entry["deps"] = list(st.deps)
        params = present_keys(raw, st.keys)
        if params:
            entry["params"] = [{config_path: params}]
        entry["outs"] = list(st.outs)
        # metrics and plots are cached like every output: results/ is not in git, so a file
        # marked `cache: false` (DVC's convention for files committed to git) would be in
        # neither store and missing after `dvc pull`
        if st.metrics:
            entry["metrics"] = list(st.metrics)
        if st.plots:
            entry["plots"] = [{p: {"x": "params", "y": "top1", "template": "scatter"}}
                              for p in st.plots]
        doc["stages"][st.name] = entry
    return doc
