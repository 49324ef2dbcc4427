"""``index.html``: one self-contained page (inline CSS, PNGs as data URIs, no fetches)."""

from __future__ import annotations

import base64
import math
from html import escape
from pathlib import Path
from typing import Any

import yaml

from natv2.report.load import ResultsData, as_float
from natv2.targets import format_value

NA = "not available"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1250px;padding:1rem 2rem;color:#222;line-height:1.4}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.85rem}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:.6rem;overflow:auto}
img{max-width:100%;height:auto;border:1px solid #eee;box-sizing:border-box}
.row{display:flex;flex-wrap:wrap;gap:1rem}.row img{width:calc(50% - .6rem);max-width:600px}
.na{color:#888;font-style:italic}td.sub{padding-left:1.6rem;color:#555}
"""

# Marks <body data-loaded="N" data-images="M"> once the page has loaded, N = images decoded.
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, n = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { n++; }
  }
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-loaded", String(n));
});
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _na() -> str:
    return f'<span class="na">{NA}</span>'


def _num(value: Any, fmt: str = "{:,.2f}") -> str:
    v = as_float(value)
    return _na() if v is None else _e(fmt.format(v))


def _int(value: Any) -> str:
    v = as_float(value)
    return _na() if v is None else _e(f"{int(round(v)):,}")


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _table(head: list[str], rows: list[list[str]], table_id: str = "",
           left: tuple[int, ...] = ()) -> str:
    tid = f' id="{_e(table_id)}"' if table_id else ""
    ths = "".join(f'<th{" class=l" if i in left else ""}>{_e(h)}</th>'
                  for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f'<td{" class=l" if i in left else ""}>{c}</td>'
                         for i, c in enumerate(r)) + "</tr>\n"
        for r in rows)
    return f"<table{tid}><thead><tr>{ths}</tr></thead>\n<tbody>\n{body}</tbody></table>"


def _plain(obj: Any) -> Any:
    """Config values as plain YAML types (paths, tuples, numpy scalars ...)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if hasattr(obj, "item"):
        return _plain(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def config_yaml(config: dict) -> str:
    return yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False,
                          allow_unicode=True)


def _summary(data: ResultsData, metrics: dict[str, Any], front_size: int) -> str:
    fam = (data.supernet or {}).get("family")
    best = metrics["best_top1"]
    items = [
        ("results directory", _e(data.results_dir)),
        ("super-network family", _e(fam) if fam else _na()),
        ("search rounds", _e(metrics["rounds"])),
        ("architectures evaluated", _e(f"{metrics['n_evaluated']:,}")),
        ("final archive", _e(f"{len(data.final_archive)} architectures, "
                             f"{front_size} non-dominated (top-1 vs params)")),
        ("hypervolume (last round)", _num(metrics["hypervolume"], "{:.6g}")),
        ("fine-tuned networks", _e(len(data.used_finetune)) if data.finetune else _na()),
        ("best fine-tuned test top-1", _na() if best is None else _e(f"{best:.2f} %")),
        ("versus classical baselines", _versus_line(metrics)),
    ]
    for row in metrics["targets"]:
        items.append((f"target {row['name']}", _verdict(row)))
    return "<table id=\"summary\"><tbody>\n" + "".join(
        f"<tr><th class=l>{_e(k)}</th><td class=l>{v}</td></tr>\n" for k, v in items
    ) + "</tbody></table>"


def _verdict(row: dict[str, Any]) -> str:
    """The summary line of one target: met / not met with the measured value, and test top-1."""
    if not row["finetuned"]:
        return _na() + " (its slot is not fine-tuned)"
    metric = row["metric"]
    limit, value = format_value(metric, row["limit"]), format_value(metric, row["measured"])
    if row["met"] is None:
        text = f"{metric} not measured"
    elif row["met"]:
        text = f"met: {metric} {value} <= {limit}"
    else:
        text = f"not met: {metric} {value} > {limit}"
    if row["met_in_archive"] is False:
        text += " (no architecture of the final archive met it: the closest one)"
    if row["top1_fp32"] is not None:
        text += f"; test top-1 {row['top1_fp32']:.2f} %"
    return _e(text)


def _latency_table(data: ResultsData, png: bytes | None) -> str:
    """The lookup table's error on each round's measured candidates, and the scatter plot."""
    from natv2.report.figures import latency_table_points

    rounds = latency_table_points(data)
    if not rounds:
        return ""
    rows = [[_e(k), _int(e.get("n")), _num(e.get("mape")), _num(e.get("kendall_tau"), "{:.3f}")]
            for k, e in sorted(rounds.items())]
    return ("<h3>Latency lookup table</h3><p>The evolution read latency from the per-piece "
            "lookup table; each round then measured its candidates. The table's error on them:</p>"
            + _table(["round", "candidates", "MAPE (%)", "Kendall tau"], rows, "latency_table")
            + (_img(png, "measured vs predicted latency per round") if png else ""))


def _targets(metrics: dict[str, Any]) -> str:
    rows = metrics["targets"]
    if not rows:
        return "<p>No deployment targets configured (<code>targets:</code> in the config).</p>"
    body = []
    for r in rows:
        card = f'<a href="{_e(r["card"])}">card</a>' if r["card"] and r["finetuned"] else _na()
        met = _na() if r["met"] is None else ("met" if r["met"] else "<b>not met</b>")
        body.append([_e(r["name"]), _e(r["rank"]), met,
                     _e(format_value(r["metric"], r["measured"])) if r["measured"] is not None else _na(),
                     _e(format_value(r["metric"], r["limit"])),
                     "yes" if r["met_in_archive"] else ("no" if r["met_in_archive"] is False else _na()),
                     _num(r["top1_fp32"]), _num(r["top1_int8"]), _int(r["params"]), _int(r["macs"]),
                     _num(r["latency_ms"], "{:,.3f}"), card])
    return _table(["target", "rank", "verdict", "measured", "limit", "met in archive",
                   "test top-1 FP32 (%)", "test top-1 INT8 (%)", "params", "MACs",
                   "latency (ms)", "model card"], body, "targets", left=(0,))


def _finetune(data: ResultsData) -> str:
    rows = []
    for s in data.used_finetune:
        m = s.metrics
        rows.append([_e(s.rank), f"<code>{_e(s.encoding)}</code>", _int(m.get("params")),
                     _int(m.get("macs")), _num(m.get("latency_ms")),
                     _num(m.get("top1_before")), _num(m.get("top1_after"))])
    out = _table(["rank", "encoding", "params", "MACs", "latency (ms)",
                  "top-1 before (%)", "top-1 after (%)"], rows, "finetuned", left=(1,))
    if not data.finetune:
        out += f"<p>Fine-tuned networks: {_na()} (no <code>finetune/rank_N/metrics.json</code>" \
               " yet).</p>"
    unused = [s for s in data.finetune if not s.used]
    if unused:
        out += "<p>Unused rank slots:</p><ul>" + "".join(
            f"<li>rank {_e(s.rank)}: {_e(s.reason or 'no reason given')}</li>" for s in unused
        ) + "</ul>"
    return out


def _versus_line(metrics: dict[str, Any]) -> str:
    """"best fine-tuned X % is N points above/below the best classical baseline (name, Y %)"."""
    vs = (metrics.get("versus_baselines") or {}).get("classical")
    best = metrics["best_top1"]
    if not vs or best is None:
        return _na()
    side = "above" if vs["margin"] > 0 else ("equal to" if vs["margin"] == 0 else "below")
    gap = "" if vs["margin"] == 0 else f"{abs(vs['margin']):.2f} points "
    return _e(f"{best:.2f} %, {gap}{side} the best classical baseline "
              f"({vs['baseline']}, {vs['top1']:.2f} %)")


def _baselines(data: ResultsData, metrics: dict[str, Any]) -> str:
    """The baselines stage's models beside the fine-tuned networks, all on the test split."""
    from natv2.report.summary import baseline_rows

    b = data.baselines
    if b is None:
        return f"<p>Baselines: {_na()} (no <code>baselines/baselines.json</code> yet: " \
               "<code>natv2 baselines</code>).</p>"
    rows = [[_e(r["label"]), _int(r["params"]), _num(r["top1"])] for r in baseline_rows(data)]
    rows += [[_e(f"fine-tuned rank {s.rank}"), _int(s.metrics.get("params")),
              _num(s.metrics.get("top1_after"))] for s in data.used_finetune]
    out = ("<p>Every row on the same test split "
           f"({_int((b.get('split_sizes') or {}).get('test'))} images). Classical models: "
           "scikit-learn's defaults on the raw pixels, fit on train + val.</p>"
           + _table(["model", "params", "test top-1 (%)"], rows, "baselines", left=(0,))
           + f"<p>Best fine-tuned network: {_versus_line(metrics)}.</p>")
    if b.get("classical_reason"):
        out += f"<p>No classical baseline: {_e(b['classical_reason'])}.</p>"
    published = b.get("published") or []
    if published:
        out += ("<h3>Published results on the official test set</h3>"
                + _table(["model", "test top-1 (%)", "source"],
                         [[_e(p["model"]), _num(p["top1"]), f"<code>{_e(p['source'])}</code>"]
                          for p in published],
                         "published", left=(0, 2)))
    return out


def _front(data: ResultsData, pareto: Any) -> str:
    fr = pareto[pareto["front"]]
    lat = data.final_archive.set_index("arch")["latency_ms"].to_dict()
    rows = [[f"<code>{_e(r.arch)}</code>", _int(r.params), _int(r.macs), _num(r.top1),
             _num(lat.get(r.arch)), _e(r.round)] for r in fr.itertuples()]
    return _table(["encoding", "params", "MACs", "val top-1 (%)", "latency (ms)", "round"],
                  rows, "front", left=(0,))


def _supernet(data: ResultsData) -> str:
    sn = data.supernet
    if sn is None:
        return f"<p>Super-network summary: {_na()} (no <code>supernet/supernet.json</code>).</p>"
    val = sn.get("val_top1") if isinstance(sn.get("val_top1"), dict) else {}
    src = sn.get("source")
    items = [
        ("family", _e(sn.get("family", NA))),
        ("width multiplier", _e(sn.get("width_mult", NA))),
        ("source", _e(src if isinstance(src, str) else yaml.safe_dump(_plain(src),
                      default_flow_style=True).strip()) if src is not None else _na()),
        ("sha256", f"<code>{_e(sn['sha256'])}</code>" if sn.get("sha256") else _na()),
        ("val top-1 largest (%)", _num(val.get("largest"))),
        ("val top-1 smallest (%)", _num(val.get("smallest"))),
        ("training time (s)", _num(sn.get("seconds"), "{:,.1f}")),
    ]
    out = "<table id=\"supernet\"><tbody>\n" + "".join(
        f"<tr><th class=l>{_e(k)}</th><td class=l>{v}</td></tr>\n" for k, v in items
    ) + "</tbody></table>"
    phases = sn.get("phases") or []
    if phases:
        out += "<p>Training phases:</p>" + _table(
            ["phase", "epochs", "seconds"],
            [[_e(p.get("name", "")), _int(p.get("epochs")), _num(p.get("seconds"), "{:,.1f}")]
             for p in phases if isinstance(p, dict)], "phases", left=(0,))
    return out


def _walltime(rows: list[tuple[str, float | None, bool]]) -> str:
    if not rows:
        return f"<p>{_na()}</p>"
    total = sum(v for _, v, sub in rows if v is not None and not sub)
    body = "".join(
        f'<tr><td class="{"l sub" if sub else "l"}">{_e(n)}</td><td>{_num(v, "{:,.1f}")}</td></tr>\n'
        for n, v, sub in rows)
    body += f"<tr><th class=l>total</th><th>{_e(f'{total:,.1f}')}</th></tr>\n"
    return ('<table id="walltime"><thead><tr><th class=l>stage</th><th>seconds</th></tr></thead>'
            f"\n<tbody>\n{body}</tbody></table>")


def render_html(data: ResultsData, *, config: dict, metrics: dict,
                pareto: Any, walltimes: list, figures: dict[str, bytes | None]) -> str:
    """The whole page as a string (deterministic for the same inputs)."""
    title = "natv2 report"
    fam = (data.supernet or {}).get("family")
    if fam:
        title += f": {fam}"
    pred = figures.get("predictor")
    hv = metrics["hypervolume"]
    hv_text = "" if hv is None or math.isnan(hv) else f" Last hypervolume: {hv:.6g}."
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style>",
        f"<script>{_SCRIPT}</script></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>Multi-objective architecture search results after {_e(metrics['rounds'])} "
        f"search round(s).{_e(hv_text)}</p>",
        "<h2>Summary</h2>", _summary(data, metrics, int(pareto["front"].sum())),
        "<h2>Pareto front</h2>",
        "<p>Every evaluated architecture (validation top-1), coloured by the round that first "
        "evaluated it; the red step line is the final archive's non-dominated front.</p>",
        _img(figures["pareto"], "top-1 vs params and vs MACs"),
        "<h3>Non-dominated architectures (final archive, top-1 vs params)</h3>",
        _front(data, pareto),
        "<h2>Search progress</h2>",
        '<div class="row">',
        _img(figures["hypervolume"], "hypervolume per round"),
        _img(pred, "predictor correlation per round") if pred else
        f"<p>Predictor correlation: {_na()} (no round >= 1 with predictor statistics).</p>",
        "</div>",
        _latency_table(data, figures.get("latency")),
        "<h2>Deployment targets</h2>",
        "<p>Each target's slot fine-tunes the most accurate architecture of the final archive "
        "that meets it (the closest one when none does); the verdict uses the fine-tuned "
        "network's measured value.</p>", _targets(metrics),
        "<h2>Fine-tuned networks</h2>", _finetune(data),
        "<h2>Baselines</h2>", _baselines(data, metrics),
        "<h2>Super-network</h2>", _supernet(data),
        "<h2>Wall time per stage</h2>", _walltime(walltimes),
        "<h2>Configuration</h2>",
        f"<pre id=\"config\">{_e(config_yaml(config))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
