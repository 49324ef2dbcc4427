"""Pipeline cost of a config (default: the embedded default): the whole Snakemake pipeline in a
fresh copy of the project, wall time and peak memory per stage, the no-op rerun time of
``snakemake`` and of ``dvc repro``, and where the time of one architecture evaluation goes.

1. Copies the project's workflow files (``workflow/``, ``config/``) to
   ``--work/project`` (a new, empty copy unless ``--reuse``) and runs
   ``snakemake --cores all --configfile CONFIG`` there; per stage, wall time (``s``) and peak RSS
   (``max_rss``) come from Snakemake's ``benchmark:`` files (``logs/benchmarks/*.tsv``).
2. Reruns ``snakemake`` (must print "Nothing to be done") and times it.
3. Makes the copy a git + DVC repository, writes ``dvc.yaml`` (``natv2 dvc-yaml``), records the
   Snakemake outputs with ``dvc commit -f`` (nothing is recomputed) and times ``dvc repro``, which
   must find every stage up to date.
4. Evaluation split: for ``--archs`` architectures sampled uniformly from the space, times each
   step of :class:`natv2.measure.Evaluator` (extract, BN recalibration, validation, counting
   params and MACs) and the whole call, against a bare forward pass of the same extracted
   sub-network (eval mode, ``no_grad``) over the same batches the evaluation forwards
   (calibration + validation). Overhead = (evaluation - bare forwards) / bare forwards; the target
   is at most 25%.

The trained super-network stays in ``--work/project/results/supernet`` for
``benchmarks/search_quality.py`` and ``benchmarks/scaling.py``.

    python benchmarks/pipeline_cost.py --work benchmarks/work/pipeline --markdown docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

SCRIPT = "benchmarks/pipeline_cost.py"
BLOCK = "pipeline_cost"
SECTION = "## Pipeline cost"
PROJECT_FILES = ("workflow", "config")
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
       "PYTHONUNBUFFERED": "1"}
OVERHEAD_TARGET = 0.25


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--work", type=Path, default=Path("benchmarks/work/pipeline"))
    p.add_argument("--reuse", action="store_true",
                   help="keep an existing project copy and its results (times only what reruns)")
    p.add_argument("--archs", type=int, default=24, help="architectures for the evaluation split")
    p.add_argument("--repeats", type=int, default=3, help="timings per architecture (median)")
    p.add_argument("--extra-resolutions", type=int, nargs="*", default=[32, 64],
                   help="also time the same architectures at these resolutions (cost only)")
    p.add_argument("--markdown", type=Path, default=None)
    p.add_argument("--block", default=BLOCK, help="name of the markdown block to (re)write")
    p.add_argument("--section", default=SECTION, help="heading a new block goes under")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- project


def project_copy(dest: Path, reuse: bool) -> Path:
    if dest.exists() and not reuse:
        shutil.rmtree(dest)
    if dest.exists():
        return dest
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = _common.ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True)
        else:
            shutil.copy2(src, dest / name)
    link = dest / "workflow/schemas/config.schema.yaml"  # a link into the package: a plain copy
    link.unlink()
    shutil.copy2(_common.ROOT / "natv2/schemas/config.schema.yaml", link)
    return dest


def run(args: Sequence[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    res = subprocess.run(list(args), cwd=cwd, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"pipeline_cost: {' '.join(args)} failed ({res.returncode}):\n"
                         f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res, seconds


def stage_table(project: Path) -> pd.DataFrame:
    """One row per Snakemake benchmark file: stage, wall s, peak RSS MB, CPU s."""
    rows = []
    for f in sorted((project / "logs" / "benchmarks").glob("*.tsv"), key=_stage_order):
        t = pd.read_csv(f, sep="\t")
        rows.append({"stage": f.stem, "s": float(t["s"].iloc[0]),
                     "max_rss": float(t["max_rss"].iloc[0]),
                     "cpu_time": float(t["cpu_time"].iloc[0]) if "cpu_time" in t else float("nan")})
    if not rows:
        raise SystemExit(f"pipeline_cost: no benchmark files under {project}/logs/benchmarks")
    return pd.DataFrame(rows)


def _stage_order(path: Path) -> tuple[int, str]:
    order = ("supernet", "init_archive", "search", "finetune", "baselines", "report")
    name = path.stem
    return next((i for i, o in enumerate(order) if name.startswith(o)), len(order)), name


def dvc_noop(project: Path, config: str) -> tuple[float, str]:
    """Record the Snakemake outputs in DVC and time a ``dvc repro`` that has nothing to do."""
    if not (project / ".git").exists():
        run(["git", "init", "-q"], project)
        run(["git", "config", "user.email", "bench@example.com"], project)
        run(["git", "config", "user.name", "bench"], project)
    if not (project / ".dvc").exists():
        run([str(BIN / "dvc"), "init", "-q"], project)
        run([str(BIN / "dvc"), "config", "core.analytics", "false"], project)
    run([str(BIN / "natv2"), "dvc-yaml", "--config", config], project)
    (project / ".gitignore").write_text("/results/cache/\n/results/supernet/work/\n/logs/\n"
                                        "/.snakemake/\n")
    run([str(BIN / "dvc"), "commit", "-f", "-q"], project)
    res, seconds = run([str(BIN / "dvc"), "repro"], project)
    out = (res.stdout + res.stderr).strip()
    if "up to date" not in out and "didn't change" not in out:
        raise SystemExit(f"pipeline_cost: `dvc repro` after `dvc commit` reran something:\n{out}")
    return seconds, out.splitlines()[-1] if out else ""


# ------------------------------------------------------------- throughput, results


def _run_config(project: Path, config: str):
    """The run's validated config (its results under ``project/results``) and its Layout."""
    from natv2.config import load_config
    from natv2.layout import Layout

    cfg = load_config(project / config, overrides={"results_dir": str(project / "results")})
    return cfg, Layout.from_config(cfg)


def throughput_table(project: Path, config: str) -> str:
    """Super-network training in images per second per phase (sub-network forward + backward
    passes: epochs x training images x sub-networks per step, over the phase's seconds; the KD
    teacher's forwards are not counted), the adaptation's of each round alike, and the search's
    evaluations per second (new candidates and re-evaluated archive, over those steps' seconds;
    round 0: the initial archive, its batches' first caching included)."""
    import json

    from natv2.data import DataSettings, build_splits

    cfg, layout = _run_config(project, config)
    n_train = build_splits(DataSettings.from_config(cfg), resolution=cfg["space"]["resolutions"][0],
                           augment=False).sizes()["train"]
    info = json.loads(layout.supernet_json.read_text())
    phases = cfg["supernet"]["train"]["phases"]
    rows = []
    for ph in info.get("phases", []):
        per_step = int(phases.get(ph["name"], {}).get("subnets_per_step", 1))
        images = int(ph["epochs"]) * n_train * per_step
        rows.append((f"super-network phase `{ph['name']}`", f"{ph['epochs']} epochs x {n_train:,} "
                     f"images x {per_step}", f"{ph['seconds']:.1f}", f"{images / ph['seconds']:.0f} images/s"))
    adapt = cfg["search"]["adaptation"]
    for k in range(int(cfg["search"]["rounds"]) + 1):
        stats = json.loads(layout.stats(k).read_text())
        steps = stats.get("steps", {})
        if k and "adapt" in steps:
            images = int(adapt["epochs"]) * n_train * int(adapt["subnets_per_step"])
            rows.append((f"round {k} adaptation", f"{adapt['epochs']} epochs x {n_train:,} images x "
                         f"{adapt['subnets_per_step']}", f"{steps['adapt']:.1f}",
                         f"{images / steps['adapt']:.0f} images/s"))
        seconds = steps.get("evaluate", 0.0) + steps.get("reevaluate", 0.0)
        if seconds:
            rows.append((f"round {k} evaluations", f"{stats['n_evaluated']} architectures",
                         f"{seconds:.1f}", f"{stats['n_evaluated'] / seconds:.2f} evaluations/s"))
    return "\n".join(["| step | work | seconds | rate |", "|---|---|---|---|",
                      *["| " + " | ".join(r) + " |" for r in rows]])


def results_lines(project: Path, config: str) -> list[str]:
    """What the run found (``report/metrics.json``, ``supernet.json``): the super-network's
    validation top-1, the best fine-tuned test top-1 against every baseline, each target."""
    import json

    _cfg, layout = _run_config(project, config)
    metrics = json.loads(layout.report_metrics.read_text())
    val = json.loads(layout.supernet_json.read_text())["val_top1"]
    out = [f"Super-network validation top-1: largest {val['largest']:.2f} %, smallest "
           f"{val['smallest']:.2f} %. Best fine-tuned test top-1: {metrics['best_top1']:.2f} %.",
           "", "| baseline (same test split) | test top-1 (%) | best fine-tuned minus baseline |",
           "|---|---|---|"]
    for name, top1 in metrics.get("baselines", {}).items():
        out.append(f"| {name} | {top1:.2f} | {metrics['best_top1'] - top1:+.2f} |")
    for row in metrics.get("targets", []):
        if row.get("measured") is None:
            out += ["", f"Target {row['name']}: no network in the archive meets it."]
            continue
        top1 = row.get("top1_fp32")
        out += ["", f"Target {row['name']}: {'met' if row['met'] else 'NOT met'} ({row['metric']} "
                    f"{row['measured']:,.6g}, limit {row['limit']:,.6g}), test top-1 "
                    + (f"{top1:.2f} %." if top1 is not None else "not measured.")]
    return out


# ------------------------------------------------------------------- evaluation split


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def time_evaluation(net, ev, arch, device, repeats: int) -> dict[str, float]:
    """Median seconds of each step of ``ev(arch)`` (as :class:`natv2.measure.Evaluator` runs
    them), of the whole call, and of bare forwards of the extracted sub-network over the same
    calibration + validation batches."""
    import torch

    from natv2.measure.accuracy import top1

    r = int(arch.resolution)
    calib, val = ev.calibration(r), ev.validation(r)

    def bare(sub):
        with torch.no_grad():
            for x in calib:
                sub(x)
            for x, _y in val:
                sub(x)

    samples: dict[str, list[float]] = {k: [] for k in ("extract", "recal", "validate", "call",
                                                       "bare")}
    for _ in range(repeats):
        t, sub = _timed(lambda: net.extract(arch).to(device, memory_format=torch.channels_last))
        samples["extract"].append(t)
        samples["recal"].append(_timed(lambda sub=sub: ev.recalibrate_and_count(sub, r))[0])
        samples["validate"].append(_timed(lambda sub=sub: top1(sub, val, device))[0])
        samples["bare"].append(_timed(lambda sub=sub: bare(sub))[0])
        samples["call"].append(_timed(lambda: ev(arch))[0])
    return {k: statistics.median(v) for k, v in samples.items()}


def evaluation_split(project: Path, config: str, n_archs: int, repeats: int,
                     extra_resolutions: Sequence[int] = ()) -> dict:
    """Time ``n_archs`` uniformly sampled architectures at their own resolution and the same
    architectures at each of ``extra_resolutions`` (outside the search space: cost only, to
    show how the overhead shrinks as forwards get heavier)."""
    import dataclasses

    from natv2.config import load_config
    from natv2.data import DataSettings, build_splits
    from natv2.layout import Layout
    from natv2.measure import Evaluator
    from natv2.pipeline.context import setup_stage, space_from_config
    from natv2.search import sample_new
    from natv2.supernet import load_supernet

    cfg = load_config(project / config, overrides={"results_dir": str(project / "results")})
    device = setup_stage(cfg)
    space = space_from_config(cfg)
    net = load_supernet(Layout.from_config(cfg).supernet).to(device).eval()
    splits = build_splits(DataSettings.from_config(cfg), resolution=space.resolutions[0], augment=False)
    resolutions = [*space.resolutions, *[int(r) for r in extra_resolutions
                                         if int(r) not in space.resolutions]]
    ev = Evaluator(net, splits, device, resolutions, encoder=lambda a: str(a.resolution))
    archs = sample_new(space, n_archs, 0, "uniform", "push")
    jobs = [(arch, True) for arch in archs] + [
        (dataclasses.replace(arch, resolution=r), False)
        for r in resolutions[len(space.resolutions):] for arch in archs]
    for r in resolutions:  # build the cached batches outside the timings
        ev.calibration(r)
        ev.validation(r)
    ev(archs[0])  # warm-up
    rows = [{"r": int(arch.resolution), "in_space": in_space,
             **time_evaluation(net, ev, arch, device, repeats)} for arch, in_space in jobs]
    df = pd.DataFrame(rows)
    n_calib = sum(len(b) for b in ev.calibration(space.resolutions[0]))
    n_val = sum(len(y) for _x, y in ev.validation(space.resolutions[0]))
    return {"per_arch": df, "n_calib": n_calib, "n_val": n_val, "device": str(device),
            "threads": int(cfg["threads"])}


def split_table(split: dict) -> tuple[str, float]:
    """The markdown table and the overhead over the search space's resolutions."""
    df = split["per_arch"]
    space = df[df["in_space"]]
    groups = [(f"{r} px", g) for r, g in space.groupby("r")]
    groups.append(("**search space (all of the above)**", space))
    groups += [(f"{r} px (outside the space: cost only)", g)
               for r, g in df[~df["in_space"]].groupby("r")]
    head = ["resolution", "archs", "extract (ms)", "BN recalibration + params/MACs (ms)",
            "validation (ms)", "evaluation call (ms)", "bare forwards (ms)", "overhead"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    overall = float("nan")
    for label, g in groups:
        m = g[["extract", "recal", "validate", "call", "bare"]].mean() * 1000
        overhead = (m["call"] - m["bare"]) / m["bare"]
        if label.startswith("**search space"):
            overall = overhead
        out.append("| " + " | ".join([
            label, str(len(g)), f"{m['extract']:.1f}", f"{m['recal']:.1f}",
            f"{m['validate']:.1f}", f"{m['call']:.1f}", f"{m['bare']:.1f}",
            f"{overhead:+.0%}"]) + " |")
    return "\n".join(out), overall


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = _common.command_line(SCRIPT, argv)
    print(f"$ {command}", flush=True)
    load_start = _common.load_average()
    project = project_copy(args.work.resolve() / "project", args.reuse)
    smk = [str(BIN / "snakemake"), "--cores", "all", "--configfile", args.config]
    res, total = run(smk, project)
    elapsed = [ln.strip() for ln in res.stderr.splitlines() if "Elapsed time" in ln]
    print(f"snakemake: {total:.1f} s", flush=True)
    res2, noop = run(smk, project)
    if "Nothing to be done" not in res2.stdout + res2.stderr:
        raise SystemExit("pipeline_cost: the second snakemake run was not a no-op")
    dvc_seconds, dvc_line = dvc_noop(project, args.config)
    print(f"no-op: snakemake {noop:.1f} s, dvc repro {dvc_seconds:.1f} s ({dvc_line})", flush=True)
    stages = stage_table(project)
    split = evaluation_split(project, args.config, args.archs, args.repeats,
                             args.extra_resolutions)
    split_md, overhead = split_table(split)
    stage_md = "\n".join(
        ["| stage | wall time (s) | CPU time (s) | peak RSS (MB) |", "|---|---|---|---|",
         *[f"| {r.stage} | {r.s:.1f} | {r.cpu_time:.1f} | {r.max_rss:.0f} |"
           for r in stages.itertuples()],
         f"| **sum of stages** | {stages['s'].sum():.1f} | {stages['cpu_time'].sum():.1f} | "
         f"{stages['max_rss'].max():.0f} (max) |"])
    verdict = (f"evaluation overhead over its bare forward passes, search-space resolutions: "
               f"{overhead:+.1%} (target at most "
               f"+{OVERHEAD_TARGET:.0%}: {'met' if overhead <= OVERHEAD_TARGET else 'NOT met'})")
    rates_md, found = throughput_table(project, args.config), results_lines(project, args.config)
    print(stage_md + "\n\n" + rates_md + "\n\n" + "\n".join(found) + "\n\n" + split_md + "\n"
          + verdict)
    if args.markdown is not None:
        load = _common.load_span(load_start)
        block = _common.block(
            args.block, command,
            f"{_common.machine_line(split['threads'])}; config `{args.config}`, device {split['device']}; load average {load}. Whole pipeline "
            f"`snakemake --cores all --configfile {args.config}` "
            + (f"in an existing copy of the project (`--reuse`): this call's run {total:.1f} s "
               f"wall (only what was not yet done); the stages below are those of the run that "
               f"made the results. " if args.reuse else
               f"in a fresh copy of the project: {total:.1f} s wall "
               f"({'; '.join(elapsed) or 'no elapsed line'} by Snakemake). ")
            + "Per stage, from Snakemake's `benchmark:` files:",
            "", stage_md, "",
            "Throughput (from `supernet.json` and each round's `stats.json`):", "", rates_md, "",
            *found, "",
            f"No-op reruns: `snakemake` {noop:.1f} s (\"Nothing to be done\"); `dvc repro` "
            f"{dvc_seconds:.1f} s after `dvc commit -f` recorded the outputs (\"{dvc_line}\").",
            "",
            f"One evaluation, split (mean over {args.archs} uniformly sampled architectures of "
            f"the median of {args.repeats} timings each): the evaluator extracts the "
            f"sub-network, recalibrates BN on {split['n_calib']} images (counting MACs with "
            f"hooks on the way), validates on {split['n_val']} images; \"bare forwards\" "
            f"forwards the same extracted sub-network over the same {split['n_calib']} + "
            f"{split['n_val']} images in eval mode. The same architectures at larger inputs "
            f"show how the fixed per-evaluation costs weigh as forwards get heavier.",
            "", split_md, "", f"    {verdict}",
        )
        _common.write_block(args.markdown, block, args.block, args.section,
                            header=_common.header())
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
