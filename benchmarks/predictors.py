"""Accuracy predictors on held-out architectures evaluated by the search-quality runs.

The data: every architecture evaluated in round 0 by the runs under ``--work`` (as
``benchmarks/search_quality.py`` leaves them): all were evaluated by the same, not yet adapted,
super-network on the same validation split, so their top-1 values are one consistent target
(an architecture evaluated by several runs must have the same top-1, which is checked). Per
training size n (the archive sizes the search fits its predictor on) and repeat, n architectures
are drawn at random for training and every other one is held out; each predictor is fit on the
training rows and scored on the held-out ones: Kendall tau, RMSE (top-1 points), fit time.

    python benchmarks/predictors.py --work benchmarks/work/search --markdown docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from natv2.config import load_config  # noqa: E402
from natv2.layout import Layout  # noqa: E402
from natv2.pipeline.context import space_from_config  # noqa: E402
from natv2.search import archive_vectors, make_predictor, rank_metrics, read_archive  # noqa: E402

SCRIPT = "benchmarks/predictors.py"
BLOCK = "predictors"
SECTION = "## Accuracy predictors"
#: (label, predictor name, feature kind)
PREDICTORS = (
    ("LightGBM as the thesis, integer (natv2)", "lgbm", "integer"),
    ("LightGBM as the thesis, one-hot (nat)", "lgbm", "onehot"),
    ("LightGBM small-archive recipe, integer", "lgbm-small", "integer"),
    ("LightGBM small-archive recipe, one-hot", "lgbm-small", "onehot"),
    ("RBF", "rbf", "integer"),
    ("GP", "gp", "integer"),
    ("CART (random forest)", "cart", "integer"),
    ("MLP", "mlp", "integer"),
    ("adaptive switching (NAT paper)", "as", "integer"),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="config/config.yaml",
                   help="the config the runs used (for the search space)")
    p.add_argument("--work", type=Path, default=Path("benchmarks/work/search"),
                   help="search_quality.py's work directory")
    p.add_argument("--train-sizes", type=int, nargs="+", default=[20, 60])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="torch/LightGBM threads (default 2)")
    p.add_argument("--markdown", type=Path, default=None)
    return p.parse_args(argv)


def pooled_round0(work: Path) -> tuple[pd.DataFrame, int]:
    """Every round-0 evaluation under ``work``, one row per architecture; number of runs."""
    files = [f for f in (Layout(d).evaluated for d in sorted(work.glob("*/seed_*"))) if f.is_file()]
    if not files:
        raise SystemExit(f"predictors: no */seed_*/{Layout(Path()).evaluated} under {work}; "
                         f"run benchmarks/search_quality.py first")
    df = pd.concat([read_archive(f) for f in files], ignore_index=True)
    spread = df.groupby("arch")["top1"].agg(lambda s: s.max() - s.min())
    if (spread > 1e-9).any():
        bad = spread[spread > 1e-9].index[0]
        raise SystemExit(f"predictors: architecture {bad} has different round-0 top-1 in "
                         f"different runs; the runs did not share one super-network and split")
    return df.drop_duplicates("arch").reset_index(drop=True), len(files)


def evaluate(space, df: pd.DataFrame, sizes: Sequence[int], repeats: int) -> list[dict]:
    X = archive_vectors(space, df)
    y = df["top1"].to_numpy(dtype=float)
    feats = {kind: np.asarray(space.features(X, kind=kind), dtype=float)
             for kind in ("integer", "onehot")}
    rows = []
    for n in sizes:
        if n >= len(y):
            print(f"train size {n} skipped: only {len(y)} architectures", flush=True)
            continue
        for rep in range(repeats):
            rng = np.random.default_rng([n, rep])
            train = np.sort(rng.choice(len(y), n, replace=False))
            test = np.setdiff1d(np.arange(len(y)), train)
            for label, name, kind in PREDICTORS:
                F = feats[kind]
                model = make_predictor(name, seed=rep)
                t0 = time.perf_counter()
                model.fit(F[train], y[train])
                fit = time.perf_counter() - t0
                m = rank_metrics(y[test], model.predict(F[test]))
                rows.append({"label": label, "n": n, "repeat": rep, "kendall": m["kendall"],
                             "rmse": m["rmse"], "fit_s": fit, "n_test": len(test),
                             "chosen": getattr(model, "chosen", None)})
    return rows


def _ms(values: Sequence[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(rows: list[dict]) -> str:
    sizes = list(dict.fromkeys(r["n"] for r in rows))
    head = ["predictor"]
    for n in sizes:
        head += [f"Kendall τ (n={n})", f"RMSE (n={n})", f"fit s (n={n})"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, _, _ in PREDICTORS:
        cells = [label]
        for n in sizes:
            rs = [r for r in rows if r["label"] == label and r["n"] == n]
            cells += [_ms([r["kendall"] for r in rs], 3), _ms([r["rmse"] for r in rs], 2),
                      _ms([r["fit_s"] for r in rs], 3)]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def ranking_lines(rows: list[dict]) -> list[str]:
    lines = []
    for n in dict.fromkeys(r["n"] for r in rows):
        means = {label: statistics.fmean(r["kendall"] for r in rows
                                         if r["label"] == label and r["n"] == n)
                 for label, _, _ in PREDICTORS}
        order = sorted(means, key=means.get, reverse=True)
        chosen = [r["chosen"] for r in rows if r["n"] == n and r["chosen"]]
        picks = ", ".join(f"{c} {chosen.count(c)}" for c in dict.fromkeys(chosen))
        lines.append(f"n={n}: by mean Kendall tau " + " > ".join(
            f"{label} {means[label]:.3f}" for label in order)
            + (f"; adaptive switching picked {picks}" if picks else ""))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    command = _common.command_line(SCRIPT, argv)
    space = space_from_config(load_config(args.config))
    df, n_runs = pooled_round0(args.work)
    print(f"$ {command}\n{len(df)} distinct architectures from {n_runs} runs", flush=True)
    load_start = _common.load_average()
    t0 = time.perf_counter()
    rows = evaluate(space, df, args.train_sizes, args.repeats)
    seconds = time.perf_counter() - t0
    print(table(rows))
    lines = ranking_lines(rows)
    print("\n".join(lines))
    if args.markdown is not None:
        load = _common.load_span(load_start)
        block = _common.block(
            BLOCK, command,
            f"{_common.machine_line(args.threads)}; {seconds:.0f} s; load average "
            f"{load}. Data: {len(df)} distinct architectures evaluated in round 0 of {n_runs} "
            f"search-quality runs (one super-network, one validation split; top-1 "
            f"{df['top1'].min():.2f}-{df['top1'].max():.2f}%). For each training size n, "
            f"{args.repeats} random draws of n training architectures; all the others are held "
            f"out. Mean ± standard deviation over draws; fit time includes adaptive switching's "
            f"10-fold selection and LightGBM's 10-fold ensemble.",
            "", table(rows), "", *[f"    {line}" for line in lines],
        )
        _common.write_block(args.markdown, block, BLOCK, SECTION, after="search_quality",
                            header=_common.header())
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
