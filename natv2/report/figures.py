"""The report's figures as PNG bytes (matplotlib Agg, no pyplot state, deterministic output)."""

from __future__ import annotations

import io

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure

from natv2.report.load import ResultsData, as_float
from natv2.report.summary import front_mask

DPI = 100
_RC = {
    "font.family": "DejaVu Sans",  # bundled with matplotlib: the same glyphs everywhere
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "natv2",
    "path.simplify": False,
}


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def pareto_png(data: ResultsData) -> bytes:
    """Top-1 vs params and vs MACs: every evaluated arch by round, final front as a step line."""
    ev = data.evaluated
    final = data.final_archive
    rounds = data.rounds
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(12, 5), layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        cmap = mpl.colormaps["viridis"]
        bounds = np.arange(min(rounds) - 0.5, max(rounds) + 1.5)
        norm = BoundaryNorm(bounds, cmap.N)
        sc = None
        for ax, cost, label in ((axes[0], "params", "parameters (M)"),
                                (axes[1], "macs", "MACs (M)")):
            if len(ev):
                sc = ax.scatter(ev[cost].to_numpy(float) / 1e6, ev["top1"].to_numpy(float),
                                c=ev["round"].to_numpy(float), cmap=cmap, norm=norm, s=18,
                                alpha=0.75, linewidths=0, label="evaluated")
            mask = front_mask(final, cost)
            if mask.any():
                fr = final[mask].sort_values([cost, "top1"], kind="mergesort")
                x = fr[cost].to_numpy(float) / 1e6
                y = fr["top1"].to_numpy(float)
                ax.step(x, y, where="post", color="crimson", lw=1.6,
                        label=f"final front (round {data.last_round})")
                ax.scatter(x, y, s=40, facecolors="none", edgecolors="crimson", linewidths=1.3)
            ax.set_xlabel(label)
            ax.set_title(f"top-1 vs {'params' if cost == 'params' else 'MACs'}")
            ax.legend(loc="lower right", fontsize=9)
        axes[0].set_ylabel("validation top-1 (%)")
        if sc is not None:
            cb = fig.colorbar(sc, ax=list(axes), shrink=0.9, pad=0.01)
            cb.set_label("round")
            step = max(1, int(np.ceil(len(rounds) / 10)))
            cb.set_ticks(list(range(min(rounds), max(rounds) + 1, step)))
        return _png(fig)


def hypervolume_png(data: ResultsData) -> bytes:
    """Hypervolume after each round (rounds whose stats.json carries it)."""
    pts = [(k, as_float(data.stats.get(k, {}).get("hypervolume"))) for k in data.rounds]
    pts = [(k, v) for k, v in pts if v is not None]
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.subplots()
        if pts:
            ax.plot([k for k, _ in pts], [v for _, v in pts], marker="o", color="tab:blue")
        else:
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("round")
        ax.set_ylabel("hypervolume")
        ax.set_title("hypervolume per round (calc_hv: reference 1.01 x round-0 max)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        return _png(fig)


def predictor_points(data: ResultsData) -> list[tuple[int, float | None, float | None]]:
    """(round, kendall, spearman) for rounds >= 1 whose stats.json has a predictor entry."""
    out = []
    for k in data.rounds:
        pred = data.stats.get(k, {}).get("predictor")
        if k >= 1 and isinstance(pred, dict):
            out.append((k, as_float(pred.get("kendall")), as_float(pred.get("spearman"))))
    return out


def predictor_png(data: ResultsData) -> bytes | None:
    """Kendall tau and Spearman rho of the accuracy predictor per round; None without data."""
    pts = predictor_points(data)
    if not pts:
        return None
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.subplots()
        for idx, (name, color) in ((1, ("Kendall tau", "tab:orange")),
                                   (2, ("Spearman rho", "tab:green"))):
            xy = [(p[0], p[idx]) for p in pts if p[idx] is not None]
            if xy:
                ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", color=color,
                        label=name)
        ax.set_xlabel("round")
        ax.set_ylabel("rank correlation")
        ax.set_ylim(-1.05, 1.05)
        ax.set_title("predictor correlation per round")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.lines:
            ax.legend(loc="lower right")
        return _png(fig)


def latency_table_points(data: ResultsData) -> dict[int, dict]:
    """round -> the ``latency_table`` entry of its stats.json (MAPE, Kendall tau, points), for
    the rounds whose search read latency from the lookup table."""
    out = {}
    for k in data.rounds:
        entry = data.stats.get(k, {}).get("latency_table")
        if k >= 1 and isinstance(entry, dict) and entry.get("points"):
            out[k] = entry
    return out


def latency_png(data: ResultsData) -> bytes | None:
    """Measured vs table-predicted latency of each round's candidates (one colour per round,
    the diagonal is a perfect table); None when no round used a latency table."""
    rounds = latency_table_points(data)
    if not rounds:
        return None
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(6, 4.5), layout="constrained")
        ax = fig.subplots()
        cmap = mpl.colormaps["viridis"]
        lo, hi = np.inf, 0.0
        for i, (k, entry) in enumerate(sorted(rounds.items())):
            pts = np.asarray(entry["points"], dtype=float)
            lo, hi = min(lo, pts.min()), max(hi, pts.max())
            mape = as_float(entry.get("mape"))
            label = f"round {k}" + ("" if mape is None else f" (MAPE {mape:.1f} %)")
            ax.scatter(pts[:, 0], pts[:, 1], s=22, color=cmap(i / max(1, len(rounds) - 1)),
                       label=label, alpha=0.85, linewidths=0)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="measured = predicted")
        ax.set_xlabel("predicted by the lookup table (ms)")
        ax.set_ylabel("measured (ms)")
        ax.set_title("latency: measured vs predicted, per round")
        ax.legend(loc="upper left", fontsize=8)
        return _png(fig)
