"""Search quality: NATv2 against NAT and random search on one super-network, at the same number of
real evaluations, several search seeds each; and NATv2 with each of its archive policies
switched off one at a time (ablation).

Every run starts from the same trained super-network (``--supernet``: a ``results/supernet``
directory, e.g. the one ``benchmarks/pipeline_cost.py`` trains) and the same data split (the
config's top-level ``seed``); only ``search.seed`` changes between seeds. Each run is the
pipeline's own stages, ``init-archive`` then ``search-round`` 1..R, in a results directory of its
own under ``--work`` (a finished round is not rerun, so an interrupted benchmark resumes).

Equal budget. A run's budget is the number of architectures it evaluates for the first time: the
initial archive (NATv2 evaluates ``preprocess_factor x n_doe`` there, NAT and random ``n_doe``)
plus ``candidates`` per round. NATv2 keeps the config's ``candidates``; every other variant gets
``candidates + (its initial deficit) / R`` per round, so all variants spend the same budget over
the same number of rounds (and the same number of super-network adaptations). Re-evaluations of
the archive after each adaptation are counted separately (NAT's growing archive costs more of
them; it shows in wall time).

Hypervolume: the thesis' ``calc_hv`` (:mod:`natv2.search.hypervolume`) of top-1 error against
params, with one reference point for all runs: 1.01 x the maximum over every run's round-0
evaluations (all made by the same, not yet adapted, super-network), the volume divided by that
point's product. A run's hypervolume after round k is that of its archive then (accuracies as
re-evaluated by its adapted super-network).

Statistics (:mod:`_search_stats`): mean ± sd over seeds per variant, and natv2 against every
other variant paired by search seed (same super-network, split and seeds): the per-seed
differences of the final hypervolume and of the best top-1 under each target's params limit, and
the two-sided Wilcoxon signed-rank test; the verdict lines are computed from them. With n seeds
the smallest two-sided p is 2/2^n: 6 seeds at least for a 5% level.

    python benchmarks/search_quality.py --supernet benchmarks/work/pipeline/project/results/supernet \\
        --work benchmarks/work/search --markdown docs/BENCHMARKS.md

Fashion-MNIST (``make bench-fashion``; ``--block``/``--section`` keep its block beside the
embedded default's):

    python benchmarks/search_quality.py --config config/fashion-mnist.yaml \\
        --supernet benchmarks/work/fashion/project/results/fashion-mnist/supernet \\
        --work benchmarks/work/search-fashion --rounds 4 --seeds 0 1 2 3 4 5 \\
        --variants natv2 nat random --block search_quality_fashion \\
        --section "## Search quality on Fashion-MNIST: NATv2 vs NAT vs random" \\
        --markdown docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import _search_stats as stats_  # noqa: E402

from natv2.config import load_config  # noqa: E402
from natv2.data import DataSettings, build_splits  # noqa: E402
from natv2.errors import UserError  # noqa: E402
from natv2.files import file_sha256, write_json  # noqa: E402
from natv2.layout import Layout  # noqa: E402
from natv2.pipeline.context import space_from_config  # noqa: E402
from natv2.pipeline.eval_cache import settings_hash  # noqa: E402
from natv2.pipeline.search_stage import run_init_archive, run_search_round  # noqa: E402
from natv2.pipeline.supernet_stage import save_teacher  # noqa: E402
from natv2.records import record_files  # noqa: E402
from natv2.search import Policy, Reference, archive_hypervolume, read_archive  # noqa: E402
from natv2.supernet import load_supernet  # noqa: E402
from natv2.targets import param_limits  # noqa: E402
from natv2.train.eps import make_teacher  # noqa: E402

SCRIPT = "benchmarks/search_quality.py"
BLOCK = "search_quality"
SECTION = "## Search quality: NATv2 vs NAT vs random"
OBJECTIVES = ["top1", "params"]

#: the preset's own predictor and features (the thesis'), whatever the base config sets
_THESIS = {"predictor": None, "features": None}
#: variant name -> search settings over the config's; "main" variants first, then ablations
#: and options
VARIANTS: dict[str, dict[str, Any]] = {
    "natv2": {"policy": "natv2", **_THESIS},
    "nat": {"policy": "nat", **_THESIS},
    "random": {"policy": "random", **_THESIS},
    "natv2 without balanced init": {"policy": "natv2", **_THESIS, "sampler": "uniform",
                                    "repair": "push"},
    "natv2 without pre-processing": {"policy": "natv2", **_THESIS, "preprocess_factor": 1},
    "natv2 without bounded update": {"policy": "natv2", **_THESIS, "update": "grow"},
    "natv2 with lgbm-small": {"policy": "natv2", **_THESIS, "predictor": "lgbm-small"},
    # the adaptation natv2 ran before it took the thesis' (search.adaptation options)
    "natv2 with natv2's former adaptation": {"policy": "natv2", **_THESIS, "adaptation": {
        "schedule": "per_round", "teacher": "current", "resolution": "fitted", "nesterov": True,
        "decay_all": False, "grad_clip": 0.0, "label_smoothing": 0.1, "weight_decay": 3.0e-5,
        "ensemble_weights": [0.06, 0.13, 0.20, 0.27, 0.34], "dropout": 0.1}},
    # the adaptation distributions (search.adaptation.distribution; natv2 = the thesis' first fit)
    "natv2 with the scipy best fit": {"policy": "natv2", **_THESIS, "adaptation": {
        "distribution": "scipy_best_fit"}},
    "natv2 with categorical adaptation": {"policy": "natv2", **_THESIS, "adaptation": {
        "distribution": "categorical"}},
    # natv2's decoding of inner zeros and its duplicate test (search.decoding, .duplicates;
    # the thesis' rules are the default)
    "natv2 with canonical decoding": {"policy": "natv2", **_THESIS, "decoding": "canonical"},
    "natv2 with canonical duplicates": {"policy": "natv2", **_THESIS,
                                        "duplicates": "canonical"},
    "nat with adaptive switching (NAT paper)": {"policy": "nat", **_THESIS, "predictor": "as",
                                                "features": "integer"},
}
MAIN = ("natv2", "nat", "random")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="config/config.yaml", help="base config (default: the "
                   "embedded default)")
    p.add_argument("--supernet", type=Path, required=True,
                   help="directory holding the trained supernet.pt (and supernet.json)")
    p.add_argument("--work", type=Path, default=Path("benchmarks/work/search"),
                   help="where the runs' results directories go")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds")
    p.add_argument("--rounds", type=int, default=4, help="search rounds per run (default 4)")
    p.add_argument("--n-doe", type=int, default=None,
                   help="search.n_doe over the config's: the initial archive (and NATv2's bounded "
                   "archive); the thesis' LightGBM (at least 20 rows per leaf) needs 40 rows to "
                   "split at all")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--markdown", type=Path, default=None,
                   help="write/replace this benchmark's block in that markdown file")
    p.add_argument("--plot", type=Path, default=None,
                   help="the hypervolume plot (PNG), linked from the markdown block (default: "
                   "docs/benchmarks/<block>.png)")
    p.add_argument("--block", default=BLOCK, help=f"the markdown block's name (default {BLOCK}; "
                   "another name keeps a second configuration's results beside the first)")
    p.add_argument("--section", default=SECTION,
                   help="the heading a new block goes under (default: %(default)r)")
    return p.parse_args(argv)


def slug(variant: str) -> str:
    return variant.replace(" ", "_").replace("-", "_")


# ---------------------------------------------------------------------------- budget


def initial_evaluations(cfg: Mapping[str, Any], search: Mapping[str, Any]) -> int:
    """Architectures a variant's init-archive evaluates."""
    n_doe = int(cfg["search"]["n_doe"])
    if search.get("policy") != "natv2":
        return n_doe
    factor = search.get("preprocess_factor", cfg["search"]["preprocess_factor"])
    return max(int(factor or 10) * n_doe, n_doe)


def budgeted_variants(cfg: Mapping[str, Any], names: Sequence[str], rounds: int
                      ) -> tuple[int, dict[str, dict[str, Any]]]:
    """(budget, variant -> search overrides with the candidates per round of an equal budget)."""
    base_cand = int(cfg["search"]["candidates"] or 25)
    budget = initial_evaluations(cfg, VARIANTS["natv2"]) + rounds * base_cand
    out = {}
    for name in names:
        search = dict(VARIANTS[name])
        deficit = budget - initial_evaluations(cfg, search) - rounds * base_cand
        if deficit % rounds:
            raise UserError(f"--rounds {rounds}: variant {name!r} would need {deficit}/{rounds} "
                            f"extra candidates per round for an equal budget of {budget}; choose "
                            f"rounds dividing {deficit}")
        search["candidates"] = base_cand + deficit // rounds
        out[name] = search
    return budget, out


# ------------------------------------------------------------------------------ runs


def common_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config overrides every run shares (``--n-doe``)."""
    return {} if args.n_doe is None else {"search": {"n_doe": int(args.n_doe)}}


def run_config(base: str, results: Path, seed: int | None, rounds: int,
               search: Mapping[str, Any], common: Mapping[str, Any] | None = None):
    """The base config with ``results_dir``, the ``common`` overrides, ``search.rounds``, the
    ``search`` overrides and ``search.seed`` (None: the config's own)."""
    seeded = {} if seed is None else {"seed": int(seed)}
    common_search = dict((common or {}).get("search", {}))
    return load_config(base, overrides={
        **(common or {}), "results_dir": str(results),
        "search": {**common_search, **search, **seeded, "rounds": int(rounds)}})


def install_supernet(source: Path, results: Path, cfg) -> None:
    """The supernet stage's files from ``source`` under ``results`` (each copied when missing or
    different); for a bare ``supernet.pt`` its record and teacher made as the stage would."""
    layout = Layout(results)
    layout.supernet_dir.mkdir(parents=True, exist_ok=True)
    for dest in (layout.supernet, layout.supernet_teacher, layout.supernet_json):
        src = source / dest.name
        if src.is_file() and (not dest.is_file() or file_sha256(src) != file_sha256(dest)):
            shutil.copyfile(src, dest)
    if not layout.supernet.is_file():
        raise UserError(f"--supernet {source}: no supernet.pt there; run the pipeline's "
                        f"supernet stage (or benchmarks/pipeline_cost.py) first")
    if not (source / "supernet.json").is_file():  # a bare checkpoint: record it as the stage would
        save_teacher(make_teacher(load_supernet(layout.supernet), space_from_config(cfg)), layout,
                     "the super-network's largest")
        write_json(layout.supernet_json, {"installed_from": str(source), "files": record_files(
            layout.supernet, layout.supernet_teacher)})


def run_settings(cfg) -> dict[str, Any]:
    """What a run's results depend on, besides the code: the resolved config, the policy's
    settings (the presets' defaults) and the super-network's sha256."""
    layout = Layout.from_config(cfg)
    return {"config": settings_hash(cfg), "policy": Policy.from_config(cfg).as_dict(),
            "supernet": file_sha256(layout.supernet)}


def run_one(cfg, rounds: int) -> list[dict[str, Any]]:
    """init-archive and rounds 1..R (each skipped when its stats.json exists and the run's
    settings, ``benchmark-run.json``, are the same; else the run's search starts over); their
    stats."""
    layout = Layout.from_config(cfg)
    record = layout.root / "benchmark-run.json"
    settings = json.loads(json.dumps(run_settings(cfg), default=str))
    if not record.is_file() or json.loads(record.read_text()) != settings:
        shutil.rmtree(layout.round_dir(0).parent, ignore_errors=True)  # the eval cache stays valid
        write_json(record, settings)
    stats = []
    for k in range(rounds + 1):
        path = Layout.from_config(cfg).stats(k)
        if not path.is_file():
            if k == 0:
                run_init_archive(cfg, show_progress=False)
            else:
                run_search_round(cfg, k, show_progress=False)
        stats.append(json.loads(path.read_text()))
    return stats


# -------------------------------------------------------------------------- analysis


def fixed_reference(results_dirs: Sequence[Path]) -> Reference:
    """The hypervolume rule (:mod:`natv2.search.hypervolume`) over every run's round-0
    evaluations: one reference for all compared runs."""
    frames = [read_archive(Layout(r).evaluated) for r in results_dirs]
    return Reference.of_archive(pd.concat(frames, ignore_index=True), OBJECTIVES)


def run_curve(results: Path, stats: list[dict[str, Any]], ref: Reference
              ) -> dict[str, Any]:
    """Per round: new evaluations so far, evaluator calls so far, hypervolume of the archive;
    over the rounds: candidates that were already in the archive (``known``) and candidates
    with a zero before a non-zero code in a stage (``inner_zero``)."""
    new, calls, hv = [], [], []
    n_new = n_calls = n_known = 0
    layout = Layout(results)
    before: set[str] = set()
    for k, st in enumerate(stats):
        n_new += int(st["n_evaluated"] if k == 0 else st["n_candidates"])
        n_calls += int(st["n_evaluated"])
        if k > 0:
            rows = pd.read_csv(layout.candidates(k), usecols=["arch", "step"], dtype=str)
            cand = rows.loc[rows["step"] == "evaluate", "arch"]  # not the re-evaluations
            n_known += int(cand.isin(before).sum())
        archive = read_archive(layout.archive(k))
        before = set(archive["arch"])
        new.append(n_new)
        calls.append(n_calls)
        hv.append(archive_hypervolume(archive, OBJECTIVES, ref))
    inner = sum(int(st.get("inner_zero_candidates", 0)) for st in stats[1:])
    return {"new": new, "calls": calls, "hv": hv, "known": n_known, "inner_zero": inner}


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(r["variant"] for r in runs))
    panels = [("NATv2 vs NAT vs random", [v for v in variants if v in MAIN]),
              ("NATv2 ablations", [v for v in variants if v == "natv2" or v not in MAIN])]
    panels = [(t, vs) for t, vs in panels if vs]
    axes_x = (("new", "architectures evaluated (initial archive + candidates)"),
              ("calls", "evaluator calls (incl. re-evaluations after adaptation)"))
    fig, axes = plt.subplots(len(axes_x), len(panels), figsize=(6.5 * len(panels), 8.4),
                             squeeze=False)
    for row, (key, xlabel) in enumerate(axes_x):
        for ax, (title, vs) in zip(axes[row], panels, strict=True):
            for v in vs:
                rs = [r for r in runs if r["variant"] == v]
                x = np.mean([r["curve"][key] for r in rs], axis=0)
                hv = np.array([r["curve"]["hv"] for r in rs])
                line, = ax.plot(x, hv.mean(axis=0), marker="o", ms=3,
                                label=f"{v} ({len(rs)} seeds)")
                ax.fill_between(x, hv.min(axis=0), hv.max(axis=0), color=line.get_color(),
                                alpha=0.15)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("hypervolume (top-1 error, params)")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def split_sizes(cfg) -> dict[str, int]:
    """The config's data split sizes (train, val, test): the images each search evaluation's
    top-1 is measured on is ``val``."""
    return build_splits(DataSettings.from_config(cfg), int(cfg["space"]["resolutions"][-1]),
                        augment=False).sizes()


def markdown_block(command: str, args: argparse.Namespace, cfg, budget: int,
                   rows: list[dict[str, Any]], runs: list[dict[str, Any]],
                   ref: Reference, seconds: float, load: str, plot_link: str) -> str:
    s = cfg["search"]
    budgets = param_limits(cfg)
    comps = stats_.comparisons(rows, budgets)
    sizes = split_sizes(cfg)
    return _common.block(
        args.block, command,
        f"{_common.machine_line(int(cfg['threads']))}; {seconds:.0f} s for the runs "
        f"not already on disk; load average {load}. Config `{args.config}` (dataset "
        f"{cfg['data']['name']}, {sizes['val']:,} validation images (each evaluation's top-1), "
        f"{sizes['train']:,} training images (the adaptation's); n_doe {s['n_doe']}, "
        f"NATv2 pre-processing x{s['preprocess_factor']}, {args.rounds} rounds, adaptation "
        f"{s['adaptation']['epochs']} epoch(s) per round, evolution {s['pop_size']} x "
        f"{s['n_gen']}), one trained super-network for every run, search seeds "
        f"{', '.join(map(str, args.seeds))}. Equal budget: {budget} architectures evaluated per "
        f"run (initial archive + candidates). Hypervolume reference (raw units, fixed for all "
        f"runs): ideal top-1 error {ref.ideal[0]:.2f}% / {ref.ideal[1]:,.0f} params, "
        f"nadir {ref.nadir[0]:.2f}% / {ref.nadir[1]:,.0f} params, reference point 1.01 x nadir, "
        f"volume over its product (the thesis' calc_hv). Values are mean ± "
        f"standard deviation over seeds; evaluator calls include the re-evaluations after each "
        f"adaptation.",
        "",
        stats_.table(rows, budgets),
        "",
        f"![hypervolume against architectures evaluated]({plot_link})",
        "",
        "Hypervolume (mean line, min-max band over seeds) against architectures evaluated (top) "
        "and against evaluator calls, re-evaluations included (bottom; mean over seeds).",
        "",
        f"Paired by search seed ({stats_.REFERENCE} minus the variant; runs with the same seed "
        f"share the super-network, the split and the seed of every draw): per-seed differences, "
        f"their mean ± sd and the two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon, tied "
        f"seeds dropped). With n untied seeds the smallest two-sided p is 2/2^n (5 seeds: 0.0625, "
        f"6: 0.031).",
        "",
        stats_.paired_table(comps),
        "",
        "Verdicts (computed from the table above):",
        "",
        *[f"    {line}" for line in stats_.verdicts(comps)],
        "",
        "<details><summary>Every run</summary>",
        "",
        stats_.per_run_table(runs),
        "",
        "</details>",
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = _common.command_line(SCRIPT, argv)
    try:
        base = load_config(args.config, overrides=common_overrides(args))
        budget, variants = budgeted_variants(base, args.variants, args.rounds)
    except UserError as exc:
        print(f"search_quality: {exc}", file=sys.stderr)
        return 2
    print(f"$ {command}\nbudget {budget} architectures per run; variants: "
          + ", ".join(f"{n} ({v['candidates']}/round)" for n, v in variants.items()), flush=True)
    load_start = _common.load_average()
    t0 = time.perf_counter()
    done = []
    for name, search in variants.items():
        for seed in args.seeds:
            results = (args.work / slug(name) / f"seed_{seed}").resolve()
            cfg = run_config(args.config, results, seed, args.rounds, search,
                             common_overrides(args))
            try:
                install_supernet(args.supernet.resolve(), results, cfg)
            except UserError as exc:
                print(f"search_quality: {exc}", file=sys.stderr)
                return 2
            t_run = time.perf_counter()
            stats = run_one(cfg, args.rounds)
            done.append({"variant": name, "seed": seed, "results": results, "stats": stats,
                         "candidates": search["candidates"]})
            print(f"{name} seed {seed}: {sum(st['seconds'] for st in stats):.0f} s of stages "
                  f"({time.perf_counter() - t_run:.0f} s now)", flush=True)
    seconds = time.perf_counter() - t0
    ref = fixed_reference([d["results"] for d in done])
    runs = []
    for d in done:
        curve = run_curve(d["results"], d["stats"], ref)
        final = read_archive(Layout(d["results"]).archive(args.rounds))
        kendall = [st["predictor"]["kendall"] for st in d["stats"][1:] if st.get("predictor")]
        runs.append({**d, "curve": curve, "final": final, "kendall": kendall,
                     "seconds": float(sum(st["seconds"] for st in d["stats"]))})
    budgets = param_limits(base)
    rows = stats_.summarise(runs, budgets)
    comps = stats_.comparisons(rows, budgets)
    print(stats_.table(rows, budgets))
    print(stats_.paired_table(comps))
    print("\n".join(stats_.verdicts(comps)))
    summary = {"budget": budget, "reference": ref.as_dict(), "comparisons": comps, "runs": [
        {"variant": r["variant"], "seed": r["seed"], "results": str(r["results"]),
         "curve": r["curve"], "seconds": r["seconds"], "kendall": r["kendall"]} for r in runs]}
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "summary.json").write_text(json.dumps(summary, indent=1))
    if args.markdown is not None:
        if args.plot is None:
            args.plot = Path("docs/benchmarks") / f"{args.block}.png"
        plot(runs, args.plot)
        try:
            link = str(args.plot.resolve().relative_to(args.markdown.resolve().parent))
        except ValueError:
            link = str(args.plot.resolve())
        load = _common.load_span(load_start)
        block = markdown_block(command, args, base, budget, rows, runs, ref, seconds, load, link)
        _common.write_block(args.markdown, block, args.block, args.section,
                            header=_common.header())
        print(f"wrote {args.markdown} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
