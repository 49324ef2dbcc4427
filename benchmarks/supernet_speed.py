"""Super-network speed: natv2's SE_B super-network against OFA's ``OFAMobileNetV3`` on CPU.

Times, in one run and on the same inputs and weights:

* super-network forward: ours ``net(x, arch)`` vs the reference
  ``ref.set_active_subnet(**arch.to_ofa()); ref(x)`` (selecting the arch is part of both);
* extracted sub-network forward: ours ``net.extract(arch)`` vs the reference
  ``ref.get_active_subnet(preserve_weight=True)``;
* ours again with ``memory_format=torch.channels_last`` (weights and input; never applied to the
  reference), as extra columns.

All in eval mode under ``torch.inference_mode``, for the smallest / a random (seed 0) / the
largest SE_B config of ``natv2.space.SearchSpace``, at batch 64 for resolutions <= 64 px and
batch 8 above. Before timing, every variant's output is checked against the reference's
(max abs difference <= 1e-4).

Timing (the machine is shared, so absolute times drift): per cell, every variant is warmed up,
its inner loop count is set so one measurement takes about ``--min-time`` seconds, then
``--repeats`` rounds each time every variant once, interleaved (ours, ref, ours-CL, ...; the
order reversed every other round). Times are medians over rounds; a ratio is the median over
rounds of (reference time / our time) within the same round, > 1 meaning ours is faster.

    python benchmarks/supernet_speed.py --threads 2 --markdown docs/BENCHMARKS.md
    python benchmarks/supernet_speed.py --quick --resolutions 32
    python benchmarks/supernet_speed.py --resolutions 32 64 128 224
    python benchmarks/supernet_speed.py --profile --resolutions 224   # where the time goes
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import cpu_model, load_average, machine_line  # noqa: E402,F401

BLOCK = "supernet_speed"  # default name of the markdown block
SECTION = "## Super-network speed"
SCRIPT = "benchmarks/supernet_speed.py"
TOL = 1e-4
CONFIGS = ("smallest", "random", "largest")
SMALL_RES_MAX = 64  # batch 64 up to this resolution, 8 above
# variant keys, in timing order: (key, label)
VARIANTS = (
    ("ours_super", "ours super"),
    ("ref_super", "OFA super"),
    ("ours_super_cl", "ours super CL"),
    ("ours_ext", "ours extracted"),
    ("ref_ext", "OFA extracted"),
    ("ours_ext_cl", "ours extracted CL"),
)
# ratio columns: (label, reference key, our key)
RATIOS = (
    ("super", "ref_super", "ours_super"),
    ("super CL", "ref_super", "ours_super_cl"),
    ("extracted", "ref_ext", "ours_ext"),
    ("extracted CL", "ref_ext", "ours_ext_cl"),
)


def markers(name: str = BLOCK) -> tuple[str, str]:
    """Start and end markers of the markdown block ``name``."""
    return _common.markers(name)


MARK_START, MARK_END = markers()


def batch_for(resolution: int) -> int:
    return 64 if resolution <= SMALL_RES_MAX else 8


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--repeats", type=int, default=None,
                   help="interleaved rounds per cell (default 7, 3 with --quick)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds one measurement should last (default 0.1, 0.02 with --quick)")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up calls per variant besides the timing-calibration call (default 1)")
    p.add_argument("--quick", action="store_true", help="few, short repeats: a smoke test")
    p.add_argument("--resolutions", type=int, nargs="+", default=[32, 224],
                   help="input sizes in px (batch 64 for <= 64 px, 8 above); default 32 224")
    p.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    p.add_argument("--seed", type=int, default=0, help="seed of the random config and weights")
    p.add_argument("--markdown", type=Path, default=None,
                   help="write/replace this benchmark's block in that markdown file")
    p.add_argument("--block", default=BLOCK,
                   help=f"name of that block (default {BLOCK}); another name adds a block "
                        f"after the default one, e.g. for a run under other settings")
    p.add_argument("--profile", action="store_true",
                   help="also print torch.profiler op tables (ours vs OFA) per cell")
    args = p.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.block):
        p.error("--block: letters, digits, '_', '.', '-' only")
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.min_time = args.min_time if args.min_time is not None else (0.02 if args.quick
                                                                        else 0.1)
    args.warmup = args.warmup if args.warmup is not None else 1
    if args.repeats < 1 or args.threads < 1 or args.warmup < 0:
        p.error("--repeats and --threads must be >= 1, --warmup >= 0")
    return args


# ---------------------------------------------------------------------------- machine
# ---------------------------------------------------------------------------- networks
def build_pair(seed: int) -> tuple[nn.Module, nn.Module]:
    """(reference OFAMobileNetV3, our SE_B super-network holding the same weights), eval mode.

    The reference gets OFA's "he_fout" init, perturbed kernel-transform matrices (so the
    7->5->3 transforms are not identities) and BN statistics of a random batch at the largest
    config: activations stay O(1) through all 20 blocks. (With running stats 0/1 they shrink
    ~30x per stage into float32 denormals, whose arithmetic is orders of magnitude slower and
    would make the timings meaningless.)
    """
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3
    from ofa.utils import init_models

    from natv2.supernet import build_supernet, load_checkpoint

    torch.manual_seed(seed)
    ref = OFAMobileNetV3(n_classes=1000, width_mult=1.0, ks_list=[3, 5, 7],
                         expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    init_models(ref, "he_fout")
    bns = [m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("_matrix"):
                p.add_(0.2 * torch.randn_like(p))
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batch
        ref.set_active_subnet(ks=7, e=6, d=4)
        ref.train()
        ref(torch.randn(16, 3, 224, 224))
        for bn in bns:
            bn.momentum = 0.1
        ref.classifier.linear.weight.normal_(0.0, 0.05)  # logits O(1), not O(0.05)
    ref.eval()
    ours = build_supernet("SE_B", width_mult=1.0, n_classes=1000)
    load_checkpoint(ours, ref.state_dict())
    return ref, ours.eval()


def to_channels_last(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net).to(memory_format=torch.channels_last)


def space_configs(names: Sequence[str], seed: int) -> dict[str, Any]:
    from natv2.space import SearchSpace

    space = SearchSpace("SE_B", resolutions=[32, 224], widths=[1.0])
    pick = {"smallest": space.smallest, "random": lambda: space.sample(1, seed=seed)[0],
            "largest": space.largest}
    return {name: pick[name]() for name in names}


def make_variants(ref: nn.Module, ours: nn.Module, ours_cl: nn.Module, arch: Any,
                  x: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """Zero-argument callables, one per variant, each one forward on ``x``."""
    cfg = arch.to_ofa()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    ref.set_active_subnet(**cfg)
    ref_ext = ref.get_active_subnet(preserve_weight=True).eval()
    ours_ext = ours.extract(arch).eval()
    ours_ext_cl = to_channels_last(ours_ext)

    def ref_super() -> torch.Tensor:
        ref.set_active_subnet(**cfg)
        return ref(x)

    return {
        "ours_super": lambda: ours(x, arch),
        "ref_super": ref_super,
        "ours_super_cl": lambda: ours_cl(x_cl, arch),
        "ours_ext": lambda: ours_ext(x),
        "ref_ext": lambda: ref_ext(x),
        "ours_ext_cl": lambda: ours_ext_cl(x_cl),
    }


def check_outputs(fns: dict[str, Callable[[], torch.Tensor]], where: str) -> float:
    """Every variant against the reference super-network; returns the worst max abs diff."""
    want = fns["ref_super"]()
    worst = 0.0
    for key, fn in fns.items():
        diff = (fn().float() - want).abs().max().item()
        if not diff <= TOL:
            raise AssertionError(f"{where}: {key} differs from OFA's output by {diff:.3g} "
                                 f"(> {TOL})")
        worst = max(worst, diff)
    return worst


# ---------------------------------------------------------------------------- timing
def minor_faults() -> int:
    """Minor page faults of this process so far (0 where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def per_call(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def time_cell(fns: dict[str, Callable[[], torch.Tensor]], repeats: int, warmup: int,
              min_time: float) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per-call seconds, and per-call minor page faults, of every variant: one value per
    interleaved round."""
    loops = {}
    for key, fn in fns.items():
        for _ in range(warmup):
            fn()
        t = per_call(fn, 1)
        loops[key] = max(1, round(min_time / max(t, 1e-9)))
    keys = [k for k, _ in VARIANTS if k in fns]
    times: dict[str, list[float]] = {k: [] for k in keys}
    faults: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(repeats):
        for key in (keys if r % 2 == 0 else reversed(keys)):
            before = minor_faults()
            times[key].append(per_call(fns[key], loops[key]))
            faults[key].append((minor_faults() - before) / loops[key])
    return times, faults


def summarise(times: dict[str, list[float]], faults: dict[str, list[float]]) -> dict[str, Any]:
    """Median ms and page faults per variant; per ratio (median, lower quartile, upper
    quartile) of the per-round ratios and, as a check on a noisy machine, the ratio of the
    best times."""
    out: dict[str, Any] = {"ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
                           "faults": {k: statistics.median(v) for k, v in faults.items()}}
    ratios, best = {}, {}
    for label, ref_key, our_key in RATIOS:
        per_round = sorted(r / o for r, o in zip(times[ref_key], times[our_key], strict=True))
        q = per_round if len(per_round) < 4 else statistics.quantiles(per_round, n=4)
        ratios[label] = (statistics.median(per_round), q[0], q[-1])
        best[label] = min(times[ref_key]) / min(times[our_key])
    out["ratio"], out["best"] = ratios, best
    return out


def profile_cell(fns: dict[str, Callable[[], torch.Tensor]], where: str, rows: int = 12) -> str:
    """torch.profiler tables (self CPU time) of 3 calls of each super/extracted variant, and
    the memory each allocates per forward with the ops that allocate most."""
    from torch.profiler import ProfilerActivity, profile

    calls, parts = 3, []
    for key in ("ours_super", "ref_super", "ours_ext", "ref_ext"):
        fns[key]()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            for _ in range(calls):
                fns[key]()
        events = prof.key_averages()
        allocs = sorted((e for e in events if e.self_cpu_memory_usage > 0),
                        key=lambda e: -e.self_cpu_memory_usage)
        total = sum(e.self_cpu_memory_usage for e in allocs) / calls / 2**20
        top = ", ".join(f"{e.key} {e.self_cpu_memory_usage / calls / 2**20:.1f}"
                        for e in allocs[:5])
        parts.append(f"--- profile {where} {key} ({calls} calls)\n"
                     + events.table(sort_by="self_cpu_time_total", row_limit=rows)
                     + f"\nallocated per forward: {total:.1f} MiB (by op, MiB: {top})")
    return "\n".join(parts)


# ---------------------------------------------------------------------------- report
def fmt_ratio(r: tuple[float, float, float]) -> str:
    return f"{r[0]:.2f} ({r[1]:.2f}-{r[2]:.2f})"


def _row_head(res: dict[str, Any]) -> list[str]:
    return [str(res["resolution"]), str(res["batch"]), res["config"]]


def _markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def times_table(results: list[dict[str, Any]]) -> str:
    """Median ms per forward."""
    head = ["px", "batch", "config"] + [label for _, label in VARIANTS]
    return _markdown_table(head, [_row_head(res) + [f"{res['ms'][k]:.1f}" for k, _ in VARIANTS]
                                  for res in results])


def faults_table(results: list[dict[str, Any]]) -> str:
    """Median minor page faults per forward (fresh memory pages the allocator got from the OS
    and the forward touched: allocator state, not arithmetic)."""
    head = ["px", "batch", "config"] + [label for _, label in VARIANTS]
    return _markdown_table(head, [_row_head(res) + [f"{res['faults'][k]:.0f}" for k, _ in VARIANTS]
                                  for res in results])


def ratios_table(results: list[dict[str, Any]]) -> str:
    """OFA / ours: median per-round ratio (interquartile range), then ratio of best times."""
    head = (["px", "batch", "config"] + [label for label, _, _ in RATIOS]
            + [f"{label} (best)" for label, _, _ in RATIOS])
    rows = [_row_head(res) + [fmt_ratio(res["ratio"][label]) for label, _, _ in RATIOS]
            + [f"{res['best'][label]:.2f}" for label, _, _ in RATIOS] for res in results]
    return _markdown_table(head, rows)


def ratio_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for res in results:
        parts = ", ".join(f"{label} {res['ratio'][label][0]:.2f}x" for label, _, _ in RATIOS)
        lines.append(f"ratio {res['resolution']}px b{res['batch']} {res['config']}: {parts}")
    for label, _, _ in RATIOS:
        vals = [res["ratio"][label][0] for res in results]
        lines.append(f"ratio {label}: min {min(vals):.2f}x, geomean "
                     f"{statistics.geometric_mean(vals):.2f}x, max {max(vals):.2f}x")
    return lines


def growth_lines(results: list[dict[str, Any]]) -> list[str]:
    """How time per image grows with resolution: the exponent ``a`` of ``t ~ r^a`` (least
    squares on log-log) per config, for our super-network and our extracted CL network; empty
    with fewer than three resolutions."""
    resolutions = sorted({res["resolution"] for res in results})
    if len(resolutions) < 3:
        return []
    lines = []
    for config in dict.fromkeys(res["config"] for res in results):
        rows = sorted((res for res in results if res["config"] == config),
                      key=lambda res: res["resolution"])
        parts = []
        for key, label in (("ours_super", "ours super"), ("ours_ext_cl", "ours extracted CL"),
                           ("ref_super", "OFA super")):
            x = [math.log(res["resolution"]) for res in rows]
            y = [math.log(res["ms"][key] / res["batch"]) for res in rows]
            slope = statistics.linear_regression(x, y).slope
            per_image = ", ".join(f"{res['resolution']} px {res['ms'][key] / res['batch']:.2f}"
                                  for res in rows)
            parts.append(f"{label} r^{slope:.2f} ({per_image} ms/image)")
        lines.append(f"growth {config}: " + "; ".join(parts))
    return lines


def markdown_block(command: str, machine: str, args: argparse.Namespace,
                   results: list[dict[str, Any]], worst_diff: float, seconds: float,
                   load: str) -> str:
    return _common.block(
        args.block, command,
        f"{machine}; {seconds:.0f} s; load average {load}. Median over "
        f"{args.repeats} interleaved rounds of about {args.min_time} s per measurement (at "
        f"least one call), after {args.warmup} warm-up call(s). CL = ours with "
        f"`torch.channels_last` weights and input (the OFA reference always runs contiguous). "
        f"Every variant's logits matched OFA's super-network output before timing (worst max "
        f"abs difference {worst_diff:.1e}, tolerance {TOL:g}).",
        "",
        "Median time per forward, ms:",
        "",
        times_table(results),
        "",
        "Ratio = OFA time / our time, > 1 means ours is faster: median over rounds of the "
        "ratio within a round (interquartile range in brackets), then the ratio of the best "
        "times; CL columns are against the same (contiguous) OFA column.",
        "",
        ratios_table(results),
        "",
        *[f"    {line}" for line in ratio_lines(results)],
        "",
        *([f"Time per image against resolution r, fitted as r^a over {len({res['resolution'] for res in results})} "
           "resolutions (arithmetic alone would give a = 2):", "",
           *[f"    {line}" for line in growth_lines(results)], ""]
          if growth_lines(results) else []),
        "Minor page faults per forward (median over rounds): fresh pages from the OS that the "
        "forward touched, i.e. what the allocator (glibc malloc: large blocks are mmap'ed and "
        "returned on free) costs on top of the arithmetic; it changes with the process's "
        "allocation history.",
        "",
        faults_table(results),
    )


def machine_header() -> str:
    return _common.header()


def write_markdown(path: Path, block: str, name: str = BLOCK) -> None:
    """Replace block ``name`` in ``path``; a new block goes after the default block if there
    is one, else at the end under this benchmark's heading (a new file gets the header)."""
    _common.write_block(path, block, name, SECTION, after=None if name == BLOCK else BLOCK,
                        header=machine_header())


# ---------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], float]:
    ref, ours = build_pair(args.seed)
    ours_cl = to_channels_last(ours)
    archs = space_configs(args.configs, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    results, worst = [], 0.0
    for res in args.resolutions:
        batch = batch_for(res)
        x = torch.randn(batch, 3, res, res, generator=gen)
        for name, arch in archs.items():
            where = f"{res}px b{batch} {name}"
            with torch.inference_mode():
                fns = make_variants(ref, ours, ours_cl, arch, x)
                worst = max(worst, check_outputs(fns, where))
                times, faults = time_cell(fns, args.repeats, args.warmup, args.min_time)
                if args.profile:
                    print(profile_cell(fns, where), flush=True)
            summary = summarise(times, faults)
            results.append({"resolution": res, "batch": batch, "config": name, **summary})
            r = summary["ratio"]
            print(f"{where}: " + ", ".join(f"{k} {summary['ms'][k]:.1f} ms" for k, _ in VARIANTS)
                  + " | " + ", ".join(f"{lab} {r[lab][0]:.2f}x" for lab, _, _ in RATIOS),
                  flush=True)
    return results, worst


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = _common.command_line(SCRIPT, argv)
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        machine = machine_line(args.threads)
        print(f"$ {command}\n{machine}", flush=True)
        load_start = load_average()
        t0 = time.perf_counter()
        results, worst = run(args)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)
    load = _common.load_span(load_start)
    print(f"\nmedian ms per forward (load average {load})")
    print(times_table(results))
    print("\nratios: OFA time / our time (> 1: ours faster); median (IQR) | best")
    print(ratios_table(results))
    print("\nminor page faults per forward (median)")
    print(faults_table(results))
    print("\n".join(ratio_lines(results) + growth_lines(results)))
    print(f"outputs checked: worst max abs difference {worst:.1e} (tolerance {TOL:g}); "
          f"{seconds:.0f} s")
    if args.markdown is not None:
        block = markdown_block(command, machine, args, results, worst, seconds, load)
        write_markdown(args.markdown, block, args.block)
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
