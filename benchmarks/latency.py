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
onnxruntime runs in at most half of torch's time (the goal of issue 13).

Per batch and backend (torch, onnxruntime), a per-piece latency lookup table
(:mod:`natv2.measure.latency_table`) over the space at all ``--resolutions`` is built with the
same settings before the architectures are timed; its prediction for each sampled architecture
is compared with that architecture's measured latency on the same backend (``torch``: the
contiguous variant): mean absolute percentage error and Kendall's tau per resolution and batch.
Each architecture is also quantised to INT8 (:func:`natv2.measure.int8.quantize_int8`,
activations calibrated on two random batches: enough for latency, meaningless for accuracy)
and its INT8 onnxruntime latency set against the FP32 one. The networks have random weights,
so there is no accuracy drop to report here: the pipeline's fine-tuning records it
(``top1`` vs ``top1_int8``).

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

from natv2.measure.int8 import quantize_int8  # noqa: E402
from natv2.measure.latency import (  # noqa: E402
    LatencySettings,
    environment,
    measure_latency,
    onnx_latency,
)
from natv2.measure.latency_table import LatencyTable, build_latency_table, table_error  # noqa: E402
from natv2.space import SearchSpace  # noqa: E402
from natv2.supernet import build_supernet  # noqa: E402

SCRIPT = "benchmarks/latency.py"
BLOCK = "latency"
SECTION = "## Latency: onnxruntime vs PyTorch eager"
VARIANTS = ("torch", "torch CL", "onnxruntime")
LUT_BACKENDS = ("torch", "onnxruntime")
CALIBRATION_BATCHES = 2
CALIBRATION_SIZE = 4


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


def measure_arch(sub: nn.Module, resolution: int, settings: LatencySettings,
                 int8: bytes) -> dict[str, float]:
    """Median ms of the three variants of one sub-network and of its INT8 ONNX model."""
    ms = {"torch": measure_latency(sub, resolution, settings).median_ms}
    ms["torch CL"] = measure_latency(ChannelsLast(sub), resolution, settings).median_ms
    sub.to(memory_format=torch.contiguous_format)
    ort = replace(settings, backend="onnxruntime")
    ms["onnxruntime"] = measure_latency(sub, resolution, ort).median_ms
    ms["int8"] = onnx_latency(int8, (3, resolution, resolution), ort).median_ms
    return ms


def int8_onnx(sub: nn.Module, resolution: int, seed: int) -> bytes:
    """``sub`` quantised to INT8 (ONNX bytes), calibrated on random batches."""
    generator = torch.Generator().manual_seed(seed)
    calibration = [torch.randn(CALIBRATION_SIZE, 3, resolution, resolution, generator=generator)
                   for _ in range(CALIBRATION_BATCHES)]
    return quantize_int8(sub, calibration).onnx


def build_tables(args: argparse.Namespace, net: nn.Module
                 ) -> tuple[dict[tuple[str, int], LatencyTable], dict[tuple[str, int], float]]:
    """The lookup table of each (backend, batch) over all resolutions, and its build seconds."""
    space = SearchSpace(family=args.family, resolutions=tuple(sorted(set(args.resolutions))))
    tables, seconds = {}, {}
    for batch in args.batches:
        for backend in LUT_BACKENDS:
            settings = LatencySettings(backend, args.threads, batch, args.warmup, args.runs)
            t0 = time.perf_counter()
            tables[backend, batch] = build_latency_table(space, net, space.resolutions, settings)
            seconds[backend, batch] = time.perf_counter() - t0
            print(f"lookup table {backend} b{batch}: {len(tables[backend, batch].entries)} "
                  f"entries in {seconds[backend, batch]:.1f} s", flush=True)
    return tables, seconds


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    torch.manual_seed(args.seed)
    net = build_supernet(args.family, n_classes=10).eval()
    tables, seconds = build_tables(args, net)
    rows = []
    for resolution in args.resolutions:
        space = SearchSpace(family=args.family, resolutions=(resolution,))
        archs = space.sample(args.archs, seed=args.seed, method="uniform", repair="push")
        int8: list[bytes] = []
        for arch in archs:
            with torch.no_grad():
                int8.append(int8_onnx(net.extract(arch).eval(), resolution, args.seed))
        for batch in args.batches:
            settings = LatencySettings("torch", args.threads, batch, args.warmup, args.runs)
            per_arch = []
            for arch, q in zip(archs, int8, strict=True):
                with torch.no_grad():
                    ms = measure_arch(net.extract(arch).eval(), resolution, settings, q)
                for backend in LUT_BACKENDS:
                    ms[f"lut {backend}"] = tables[backend, batch].predict(arch, net)
                per_arch.append(ms)
            row = summarise(resolution, batch, per_arch)
            rows.append(row)
            print(row_line(row), flush=True)
            print(lut_line(row), flush=True)
    lut = {"entries": {f"{b} b{n}": len(t.entries) for (b, n), t in tables.items()},
           "seconds": {f"{b} b{n}": s for (b, n), s in seconds.items()}}
    return rows, lut


def summarise(resolution: int, batch: int, per_arch: list[dict[str, float]]) -> dict[str, Any]:
    ratios = [m["onnxruntime"] / m["torch"] for m in per_arch]
    return {
        "resolution": resolution, "batch": batch, "n": len(per_arch),
        "ms": {v: statistics.median(m[v] for m in per_arch) for v in (*VARIANTS, "int8")},
        "ratio": statistics.median(ratios),
        "ratio_cl": statistics.median(m["onnxruntime"] / m["torch CL"] for m in per_arch),
        "half": sum(r <= 0.5 for r in ratios),
        "int8_ratio": statistics.median(m["int8"] / m["onnxruntime"] for m in per_arch),
        "lut": {b: table_error([m[f"lut {b}"] for m in per_arch], [m[b] for m in per_arch])
                for b in LUT_BACKENDS},
    }


def row_line(row: dict[str, Any]) -> str:
    ms = ", ".join(f"{v} {row['ms'][v]:.2f} ms" for v in VARIANTS)
    return (f"{row['resolution']}px b{row['batch']}: {ms}; onnxruntime/torch {row['ratio']:.2f}, "
            f"onnxruntime/torch CL {row['ratio_cl']:.2f}; at most half of torch: "
            f"{row['half']}/{row['n']}")


def _tau(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def lut_line(row: dict[str, Any]) -> str:
    lut = "; ".join(f"{b} MAPE {e['mape']:.1f}%, tau {_tau(e['kendall_tau'])}"
                    for b, e in row["lut"].items())
    return (f"{row['resolution']}px b{row['batch']} lookup table: {lut}; onnxruntime INT8 "
            f"{row['ms']['int8']:.2f} ms, INT8/FP32 {row['int8_ratio']:.2f}")


def lut_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| resolution | batch | LUT torch MAPE % | LUT torch tau | LUT onnxruntime MAPE % "
             "| LUT onnxruntime tau | onnxruntime INT8 ms | INT8 / FP32 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, o = r["lut"]["torch"], r["lut"]["onnxruntime"]
        lines.append(f"| {r['resolution']} | {r['batch']} | {t['mape']:.1f} | "
                     f"{_tau(t['kendall_tau'])} | {o['mape']:.1f} | {_tau(o['kendall_tau'])} | "
                     f"{r['ms']['int8']:.2f} | {r['int8_ratio']:.2f} |")
    return "\n".join(lines)


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
                   lut: dict[str, Any], seconds: float, load: str) -> str:
    env = environment("onnxruntime")
    built = ", ".join(f"{k} {lut['entries'][k]} entries in {lut['seconds'][k]:.1f} s"
                      for k in lut["entries"])
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
        "",
        f"Per-piece lookup table (one per backend and batch, over resolutions "
        f"{', '.join(map(str, sorted(set(args.resolutions))))}, same settings; {built}): "
        "prediction against the measured latency of the same architectures (MAPE, Kendall's "
        "tau), and the median INT8 onnxruntime latency (static QDQ, per channel, calibrated on "
        f"{CALIBRATION_BATCHES} random batches) with the median per-architecture INT8 / FP32 "
        "onnxruntime ratio. Random weights: the INT8 accuracy drop is in the pipeline's "
        "fine-tuning metrics (top1 vs top1_int8), not here.",
        "",
        lut_table(rows),
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = _common.command_line(SCRIPT, argv)
    print(f"$ {command}", flush=True)
    load_start = _common.load_average()
    t0 = time.perf_counter()
    rows, lut = run(args)
    seconds = time.perf_counter() - t0
    print(table(rows))
    print(lut_table(rows))
    if args.markdown is not None:
        block = markdown_block(command, args, rows, lut, seconds, _common.load_span(load_start))
        _common.write_block(args.markdown, block, args.block, SECTION, header=_common.header())
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
