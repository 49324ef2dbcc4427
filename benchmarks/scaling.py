"""Scaling of the search: time of ``init-archive`` and of one ``search-round`` as the archive size
(``n_doe``) and the candidates per round grow together, on one trained super-network.

For each size ``N:C`` a fresh results directory under ``--work`` gets the super-network and runs
init-archive (NATv2 pre-processing evaluates ``preprocess_factor x N``) and round 1 with ``C``
candidates (re-evaluating the ``N`` archive members after the adaptation). Times are the stages'
own (``stats.json``: total and per step). Growth is the exponent ``a`` of ``t ~ size^a`` fitted on
log-log over the sizes.

    python benchmarks/scaling.py --supernet benchmarks/work/pipeline/project/results/supernet \\
        --work benchmarks/work/scaling --markdown docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from search_quality import install_supernet, run_config, run_one  # noqa: E402

SCRIPT = "benchmarks/scaling.py"
BLOCK = "scaling"
SECTION = "## Scaling"
STEPS = ("load", "evaluate", "predictor", "search", "subset", "adapt", "reevaluate")


def size_pair(text: str) -> tuple[int, int]:
    try:
        n, c = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected N_DOE:CANDIDATES, e.g. 20:8") from None
    if n < 2 or c < 1:
        raise argparse.ArgumentTypeError(f"size {text!r}: need n_doe >= 2 and candidates >= 1")
    return n, c


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--supernet", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("benchmarks/work/scaling"))
    p.add_argument("--sizes", type=size_pair, nargs="+",
                   default=[(10, 4), (20, 8), (40, 16)], help="N_DOE:CANDIDATES pairs")
    p.add_argument("--fresh", action="store_true", help="delete earlier runs under --work first")
    p.add_argument("--markdown", type=Path, default=None)
    return p.parse_args(argv)


def exponent(xs: Sequence[float], ys: Sequence[float]) -> float:
    if len(xs) < 2 or min(ys) <= 0:
        return float("nan")
    return statistics.linear_regression([math.log(x) for x in xs],
                                        [math.log(y) for y in ys]).slope


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = _common.command_line(SCRIPT, argv)
    print(f"$ {command}", flush=True)
    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)
    load_start = _common.load_average()
    t0 = time.perf_counter()
    rows = []
    cfg = None
    for n, c in args.sizes:
        results = (args.work / f"ndoe_{n}_cand_{c}").resolve()
        cfg = run_config(args.config, results, None, 1,
                         {"policy": "natv2", "n_doe": n, "candidates": c,
                          "adaptation": {"top_n": n}})
        install_supernet(args.supernet.resolve(), results, cfg)
        init, round1 = run_one(cfg, 1)
        rows.append({"n": n, "c": c, "init": init, "round": round1})
        print(f"n_doe {n}, candidates {c}: init {init['seconds']:.1f} s "
              f"({init['n_evaluated']} evaluations), round {round1['seconds']:.1f} s", flush=True)
    seconds = time.perf_counter() - t0
    head = ["n_doe", "candidates", "init evaluations", "init (s)", "s per init evaluation",
            "round evaluations", "round (s)", *[f"round: {s} (s)" for s in STEPS[1:]]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        init, rnd = r["init"], r["round"]
        lines.append("| " + " | ".join([
            str(r["n"]), str(r["c"]), str(init["n_evaluated"]), f"{init['seconds']:.1f}",
            f"{init['seconds'] / init['n_evaluated']:.3f}", str(rnd["n_evaluated"]),
            f"{rnd['seconds']:.1f}", *[f"{rnd['steps'].get(s, 0.0):.1f}" for s in STEPS[1:]],
        ]) + " |")
    md = "\n".join(lines)
    sizes = [r["n"] for r in rows]
    growth = [
        f"init time ~ n_doe^{exponent(sizes, [r['init']['seconds'] for r in rows]):.2f}",
        f"round time ~ n_doe^{exponent(sizes, [r['round']['seconds'] for r in rows]):.2f}",
        *[f"round step {s} ~ n_doe^{exponent(sizes, [r['round']['steps'].get(s, 0.0) for r in rows]):.2f}"
          for s in STEPS[1:]],
    ]
    print(md + "\n" + "\n".join(growth))
    if args.markdown is not None:
        load = _common.load_span(load_start)
        s = cfg["search"]
        block = _common.block(
            BLOCK, command,
            f"{_common.machine_line(int(cfg['threads']))}; {seconds:.0f} s for the "
            f"sizes not already on disk; load average {load}. Config `{args.config}` with policy "
            f"natv2 (pre-processing x{s['preprocess_factor']}, evolution {s['pop_size']} x "
            f"{s['n_gen']}, adaptation {s['adaptation']['epochs']} epoch(s) on the top n_doe), "
            f"one trained super-network. Round evaluations = candidates + re-evaluated archive. "
            f"Growth exponents fitted on log-log over n_doe (candidates grow in proportion):",
            "", md, "", *[f"    {line}" for line in growth],
            "",
            "Super-network forward cost against input resolution: the `supernet_speed` blocks "
            "(`growth` lines, time per image ~ r^a).",
        )
        _common.write_block(args.markdown, block, BLOCK, SECTION, header=_common.header())
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
