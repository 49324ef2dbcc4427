"""The ``natv2`` command line: a thin shell over ``natv2.pipeline`` stages and user helpers.

Every command takes ``--config PATH`` (default ``config/config.yaml``; repeat it to merge several
files in order, as Snakemake's ``--configfile``). A user error (bad config, missing file, ...) is
printed as one line on stderr and the exit code is 2. Stage modules are imported by the command
that needs them, so ``natv2 check-config`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from natv2.config import DEFAULT_CONFIG_PATH, load_config, read_yaml
from natv2.errors import UserError, one_line
from natv2.files import DISK_ERRNOS, disk_error
from natv2.lifeline import Lifeline

EXIT_USER_ERROR = 2
#: a stage stopped because the Snakemake that started it died (natv2.lifeline)
EXIT_ORPHANED = 3


def _cfg(args: argparse.Namespace):
    return load_config(args.config or [DEFAULT_CONFIG_PATH])


def _check_config(args: argparse.Namespace) -> None:
    from natv2.pipeline.context import check_search_fits

    cfg = _cfg(args)
    check_search_fits(cfg)
    names = ", ".join(str(p) for p in (args.config or [DEFAULT_CONFIG_PATH]))
    print(f"{names}: valid (dataset {cfg['data']['name']}, family {cfg['supernet']['family']}, "
          f"policy {cfg['search']['policy']}, {cfg['search']['rounds']} rounds)")


def _supernet(args: argparse.Namespace) -> None:
    from natv2.pipeline.supernet_stage import run_supernet

    info = run_supernet(_cfg(args))
    if not info:  # a data-parallel rank other than 0: rank 0 reports
        return
    top1 = info["val_top1"]
    print(f"supernet: {info['family']} w{info['width_mult']} ready in {info['seconds']:.0f} s; "
          f"val top-1 largest {top1['largest']:.2f}%, smallest {top1['smallest']:.2f}%")


def _latency_table(args: argparse.Namespace) -> None:
    from natv2.pipeline.latency_stage import run_latency_table

    table = run_latency_table(_cfg(args))
    print(f"latency-table: {len(table.entries)} pieces timed ({table.settings['backend']}, "
          f"resolutions {', '.join(map(str, table.resolutions))})")


def _init_archive(args: argparse.Namespace) -> None:
    from natv2.pipeline.search_stage import run_init_archive

    stats = run_init_archive(_cfg(args))
    print(f"init-archive: {stats['n_evaluated']} evaluations, hypervolume {stats['hypervolume']:.4f}, "
          f"{stats['seconds']:.0f} s")


def _search_round(args: argparse.Namespace) -> None:
    from natv2.pipeline import search_stage

    cfg = _cfg(args)
    if args.step in ("propose", "evaluate"):
        _check_world(f"search-round --step {args.step}")
    if args.step == "all":
        stats = search_stage.run_search_round(cfg, args.round)
    elif args.step == "propose":
        proposed = search_stage.propose_candidates(cfg, args.round)
        print(f"search-round {args.round}: {len(proposed)} candidates proposed")
        return
    elif args.step == "evaluate":
        if args.shard is None:
            raise UserError("--step evaluate needs --shard I (0..search.shards-1)")
        rows = search_stage.evaluate_shard(cfg, args.round, args.shard)
        print(f"search-round {args.round}: shard {args.shard} evaluated {len(rows)} candidates")
        return
    else:
        stats = search_stage.finish_round(cfg, args.round)
    if not stats:  # a data-parallel process other than 0: process 0 reports
        return
    pred = stats.get("predictor") or {}
    print(f"search-round {args.round}: hypervolume {stats['hypervolume']:.4f}, predictor {pred.get('name')} "
          f"kendall {pred.get('kendall', float('nan')):.3f}, {stats['seconds']:.0f} s")


def _finetune(args: argparse.Namespace) -> None:
    from natv2.pipeline.finetune_stage import run_finetune

    m = run_finetune(_cfg(args), args.rank)
    if not m:  # a data-parallel process other than 0: process 0 reports
        return
    if not m.get("used", True):
        print(f"finetune rank {args.rank}: unused slot ({m['reason']})")
        return
    print(f"finetune rank {args.rank}: {m['encoding']} test top-1 {m['top1_before']:.2f}% -> "
          f"{m['top1_after']:.2f}%, {m['params']:,} params, {m['macs']:,} MACs")


def _baselines(args: argparse.Namespace) -> None:
    from natv2.pipeline.baselines_stage import run_baselines

    b = run_baselines(_cfg(args))
    parts = [f"{c['name']} {c['top1']:.2f}%" for c in b["classical"]]
    largest = b["largest"]
    parts.append(f"largest sub-network before fine-tuning {largest['top1']:.2f}% "
                 f"({largest['params']:,} params)")
    print(f"baselines (test top-1): {', '.join(parts)}")


def _report(args: argparse.Namespace) -> None:
    from natv2.pipeline.report_stage import run_report

    cfg = _cfg(args)
    metrics = run_report(cfg)
    best = metrics.get("best_top1")
    print(f"report: {Path(cfg['results_dir']) / 'report' / 'index.html'} (hypervolume "
          f"{metrics.get('hypervolume')}, best fine-tuned top-1 {best})")


def _dvc_yaml(args: argparse.Namespace) -> None:
    from natv2.files import atomic_write
    from natv2.pipeline.dag import dvc_yaml

    paths = args.config or [DEFAULT_CONFIG_PATH]
    if len(paths) != 1:
        raise UserError("dvc-yaml takes exactly one --config file (DVC reads parameters from one file)")
    cfg = load_config(paths)
    doc = dvc_yaml(cfg, read_yaml(paths[0]), str(paths[0]))
    header = f"# Generated by `natv2 dvc-yaml --config {paths[0]}` from the stage graph in natv2/pipeline/dag.py.\n# Do not edit: regenerate after changing the config.\n"
    text = header + yaml.safe_dump(doc, sort_keys=False, width=120)
    if args.check:
        output = Path(args.output)
        if not output.is_file() or output.read_text() != text:
            raise UserError(f"{output} is not the one `natv2 dvc-yaml --config {paths[0]}` writes; "
                            "regenerate it with that command")
        print(f"dvc-yaml: {output} is current for {paths[0]}")
        return
    atomic_write(args.output, lambda tmp: tmp.write_text(text))
    print(f"dvc-yaml: wrote {args.output} ({len(doc['stages'])} stages)")


def _export(args: argparse.Namespace) -> None:
    from natv2.model import export_model

    # default: ./<folder>.onnx (the folder keeps the stage's own recorded model.onnx)
    suffix = ".int8.onnx" if args.int8 else (".onnx" if args.format == "onnx" else ".torchscript.pt")
    out = args.output or f"{Path(args.model_dir).resolve().name}{suffix}"
    path = export_model(args.model_dir, out, format=args.format, int8=args.int8)
    print(f"export: wrote {path}")


def _predict(args: argparse.Namespace) -> None:
    from natv2.model import predict

    for image, top in zip(args.images, predict(args.model_dir, args.images, top_k=args.top_k), strict=True):
        print(f"{image}: " + ", ".join(f"{name} {prob:.3f}" for name, prob in top))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="natv2", description="NATv2 neural architecture transfer.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], None], help_: str,
                config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if config:
            p.add_argument("--config", action="append", metavar="PATH",
                           help=f"YAML config (default: {DEFAULT_CONFIG_PATH}); repeat to merge files in order")
        p.set_defaults(func=func)
        return p

    command("check-config", _check_config, "validate a config and print a one-line summary")
    command("supernet", _supernet, "stage 1: train, download or load the super-network")
    command("latency-table", _latency_table, "the latency lookup table the search reads (latency objective)")
    command("init-archive", _init_archive, "stage 2: evaluate the initial archive (round 0)")
    p = command("search-round", _search_round, "stage 3: one search round (predictor, search, evaluation, adaptation)")
    p.add_argument("--round", type=int, required=True, metavar="K", help="round number, 1..search.rounds")
    p.add_argument("--step", choices=["all", "propose", "evaluate", "finish"], default="all",
                   help="run one scatter/gather step (for search.shards > 1); default: the whole round")
    p.add_argument("--shard", type=int, metavar="I", help="with --step evaluate: shard 0..search.shards-1")
    p = command("finetune", _finetune, "stage 4: fine-tune the sub-network of one rank slot")
    p.add_argument("--rank", type=int, required=True, metavar="N", help="rank slot, 0..finetune.slots-1")
    command("baselines", _baselines, "classical models and the largest sub-network on the test split")
    command("report", _report, "stage 5: HTML report, DVC metrics and plots")
    p = command("dvc-yaml", _dvc_yaml, "write dvc.yaml for a config (the same stages as the Snakefile)")
    p.add_argument("--output", default="dvc.yaml", help="where to write (default: %(default)s)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 unless OUTPUT is what this command would write")
    p = command("export", _export, "export a fine-tuned model to ONNX or TorchScript", config=False)
    p.add_argument("model_dir", help="a fine-tuned model directory, e.g. results/finetune/rank_0")
    p.add_argument("--format", default="onnx", help="onnx or torchscript (default: %(default)s)")
    p.add_argument("--output", help="output file (default: ./<MODEL_DIR name>.onnx, .int8.onnx or .torchscript.pt)")
    p.add_argument("--int8", action="store_true",
                   help="the INT8 ONNX model the finetune stage quantised and measured "
                        "(finetune.measure_int8: true)")
    p = command("predict", _predict, "print the top classes of images for a fine-tuned model", config=False)
    p.add_argument("model_dir", help="a fine-tuned model directory, e.g. results/finetune/rank_0")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=int, default=5, help="classes to print per image (default: %(default)s)")
    return parser


def _check_world(command: str) -> None:
    """Only the training stages run data-parallel under torchrun (natv2.distributed); any other
    command would run once per process, each writing the same outputs."""
    from natv2.distributed import World
    from natv2.pipeline.dag import PARALLEL_KINDS

    world = World.from_env()
    if world.parallel and command.replace("-", "_") not in PARALLEL_KINDS:
        valid = ", ".join(PARALLEL_KINDS.values())
        raise UserError(f"`natv2 {command}` does not run data-parallel (WORLD_SIZE={world.size}); "
                        f"start it without torchrun (data-parallel: {valid})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    lifeline = Lifeline.from_env().start()
    try:
        _check_world(args.command)
        args.func(args)
    except UserError as exc:
        message = one_line(str(exc))  # one line, whatever the message held
        # one write: under torchrun every process reports, and their lines must not interleave
        sys.stderr.write(f"natv2 {args.command}: error: {message}\n")
        sys.stderr.flush()
        return EXIT_USER_ERROR
    except OSError as exc:  # a file system that cannot take a write, wherever it surfaced
        if exc.errno not in DISK_ERRNOS:
            raise
        sys.stderr.write(f"natv2 {args.command}: error: {one_line(str(disk_error(exc, exc.filename or '.')))}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if lifeline.lost:
            sys.stderr.write(f"natv2 {args.command}: stopped: the Snakemake process that started "
                             f"it (pid {lifeline.pid}) is gone; nothing of this stage was "
                             f"committed; rerun the workflow\n")
            return EXIT_ORPHANED
        print(f"natv2 {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        lifeline.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
