"""Latency backends: onnxruntime against PyTorch eager on the sub-networks a search proposes.

For ``--archs`` architectures sampled (seed ``--seed``, uniform) from the ``--family`` search
space at each of ``--resolutions``, the extracted sub-network (random weights: latency does not
depend on them) is timed with :func:`natv2.measure.latency.measure_latency`, the code every
stage uses, at each of ``--batches``:

* ``torch``: PyTorch eager, contiguous tensors (the ``torch`` backend);
* ``torch CL``: the same with ``torch.channels_last`` weights, the input converted inside the
  forward (that conversion is part of the time);
* ``onnxruntime``: the network exported to ONNX and timed in an ``InferenceSession`` on the CPU
  execution provider (the ``onnxruntime`` backend).

Every measurement is the median of ``--runs`` forwards after ``--warmup`` untimed ones, with
``--threads`` intra-op threads; the variants of one architecture are timed one after the other.
The tables give, per resolution and batch, the median over architectures of each variant's
latency and of the per-architecture ratio onnxruntime / torch, and how many architectures
onnxruntime runs in at most half of torch's time (the goal of issue 13). The per-block lookup
table and INT8 columns of that issue are not built yet, so they are not here.

    python benchmarks/latency.py --markdown docs/BENCHMARKS.md
    python benchmarks/latency.py --archs 2 --resolutions 32 --batches 1 --runs 3   # a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from natv2.measure.latency import LatencySettings, environment, measure_latency  # noqa: E402
from natv2.space import SearchSpace  # noqa: E402
from natv2.supernet import build_supernet  # noqa: E402

SCRIPT = "benchmarks/latency.py"
BLOCK = "latency"
SECTION = "## Latency: onnxruntime vs PyTorch eager"
VARIANTS = ("torch", "torch CL", "onnxruntime")


class ChannelsLast(nn.Module):
    """``net`` with channels-last weights; converts its input to channels-last first."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="SE_B", help="super-network family (default SE_B, OFA's)")
    p.add_argument("--archs", type=int, default=30, help="architectures per resolution (30)")
    p.add_argument("--resolutions", type=int, nargs="+", default=[32, 128])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", type=Path, default=None,
                   help="replace this benchmark's block in that markdown file")
    p.add_argument("--block", default=BLOCK)
    return p.parse_args(argv)


def measure_arch(sub: nn.Module, resolution: int, settings: LatencySettings) -> dict[str, float]:
    """Median ms of the three variants of one sub-network."""
    ms = {"torch": measure_latency(sub, resolution, settings).median_ms}
    ms["torch CL"] = measure_latency(ChannelsLast(sub), resolution, settings).median_ms
    sub.to(memory_format=torch.contiguous_format)
    ms["onnxruntime"] = measure_latency(sub, resolution, replace(settings, backend="onnxruntime")
                                        ).median_ms
    return ms


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.manual_seed(args.seed)
    net = build_supernet(args.family, n_classes=10).eval()
    rows = []
    for resolution in args.resolutions:
        space = SearchSpace(family=args.family, resolutions=(resolution,))
        archs = space.sample(args.archs, seed=args.seed, method="uniform", repair="push")
        for batch in args.batches:
            settings = LatencySettings("torch", args.threads, batch, args.warmup, args.runs)
            per_arch = []
            for arch in archs:
                with torch.no_grad():
                    per_arch.append(measure_arch(net.extract(arch).eval(), resolution, settings))
            row = summarise(resolution, batch, per_arch)
            rows.append(row)
            print(row_line(row), flush=True)
    return rows


def summarise(resolution: int, batch: int, per_arch: list[dict[str, float]]) -> dict[str, Any]:
    ratios = [m["onnxruntime"] / m["torch"] for m in per_arch]
    return {
        "resolution": resolution, "batch": batch, "n": len(per_arch),
        "ms": {v: statistics.median(m[v] for m in per_arch) for v in VARIANTS},
        "ratio": statistics.median(ratios),
        "ratio_cl": statistics.median(m["onnxruntime"] / m["torch CL"] for m in per_arch),
        "half": sum(r <= 0.5 for r in ratios),
    }


def row_line(row: dict[str, Any]) -> str:
    ms = ", ".join(f"{v} {row['ms'][v]:.2f} ms" for v in VARIANTS)
    return (f"{row['resolution']}px b{row['batch']}: {ms}; onnxruntime/torch {row['ratio']:.2f}, "
            f"onnxruntime/torch CL {row['ratio_cl']:.2f}; at most half of torch: "
            f"{row['half']}/{row['n']}")


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| resolution | batch | torch ms | torch CL ms | onnxruntime ms | onnxruntime / torch "
             "| onnxruntime / torch CL | onnxruntime <= 0.5 x torch |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['resolution']} | {r['batch']} | {r['ms']['torch']:.2f} | "
                     f"{r['ms']['torch CL']:.2f} | {r['ms']['onnxruntime']:.2f} | "
                     f"{r['ratio']:.2f} | {r['ratio_cl']:.2f} | {r['half']}/{r['n']} |")
    return "\n".join(lines)


def markdown_block(command: str, args: argparse.Namespace, rows: list[dict[str, Any]],
                   seconds: float, load: str) -> str:
    env = environment("onnxruntime")
    return _common.block(
        args.block, command,
        f"{_common.machine_line(args.threads)}, onnxruntime {env['onnxruntime']}; {seconds:.0f} s; "
        f"load average {load}. {args.family} sub-networks (random weights), {rows[0]['n']} per "
        f"resolution sampled uniformly (seed {args.seed}); each latency the median of "
        f"{args.runs} forwards after {args.warmup} warm-up ones.",
        "",
        "Median over architectures (ms), and median of the per-architecture ratios:",
        "",
        table(rows),
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = _common.command_line(SCRIPT, argv)
    print(f"$ {command}", flush=True)
    load_start = _common.load_average()
    t0 = time.perf_counter()
    rows = run(args)
    seconds = time.perf_counter() - t0
    print(table(rows))
    if args.markdown is not None:
        block = markdown_block(command, args, rows, seconds, _common.load_span(load_start))
        _common.write_block(args.markdown, block, args.block, SECTION, header=_common.header())
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
