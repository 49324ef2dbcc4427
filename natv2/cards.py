"""Model cards: what a fine-tuned network is, what it measures and whether it meets its target.

The finetune stage writes ``card.json`` (:func:`build_card`) and ``card.md``
(:func:`card_markdown`) into every slot's folder, before ``metrics.json`` (which records them).
A card holds, from the stage's own measurements: the slot's target (name, metric, limit, the
measured value and whether it meets it; ``None`` for a front slot), the architecture, params,
MACs, FP32 and INT8 test top-1, the latency with the ``latency:`` settings (the backend the
search and the target use), the latency of the exported files themselves in onnxruntime, and
their size and sha256 (``model.onnx``, ``model_int8.onnx``). An unused slot's card says why it
is unused.

Pure functions of their arguments: the same measurements give byte-identical cards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from natv2.targets import Target, format_value

CARD_FORMAT = "natv2-card-1"


def target_verdict(target: Target | None, metrics: Mapping[str, Any],
                   archive_record: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The card's ``target`` block: the target, its metric measured on the fine-tuned network
    (``metrics[target.metric]``; ``None`` when not measured), ``met`` (``None`` when not
    measured) and what the final archive said (``met_in_archive``, ``archive_value``)."""
    if target is None:
        return None
    value = metrics.get(target.metric)
    measured = None if value is None else float(value)
    verdict = {**target.as_dict(), "measured": measured,
               "met": None if measured is None else target.meets(measured)}
    if archive_record:
        verdict["met_in_archive"] = archive_record.get("met_in_archive")
        verdict["archive_value"] = archive_record.get("archive_value")
    return verdict


def build_card(rank: int, metrics: Mapping[str, Any], info: Mapping[str, Any] | None,
               target: Mapping[str, Any] | None, files: Mapping[str, Mapping[str, Any]],
               onnx_latency: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """``card.json`` of slot ``rank``: ``metrics`` (the stage's ``metrics.json`` content before
    the file record), ``info`` (``arch.json``; ``None`` for an unused slot), ``target`` (from
    :func:`target_verdict`), ``files`` (exported file name -> ``{"bytes", "sha256"}``) and each
    exported file's onnxruntime latency (file name -> ``{"median_ms", "iqr_ms"}``)."""
    card: dict[str, Any] = {"format": CARD_FORMAT, "rank": int(rank),
                            "used": bool(metrics.get("used", False)), "target": target}
    if not card["used"]:
        card["reason"] = metrics.get("reason")
        return card
    info = info or {}
    card["architecture"] = {
        "encoding": metrics.get("encoding"),
        "family": info.get("family"),
        "width_mult": info.get("width_mult"),
        "resolution": info.get("resolution"),
        "config": info.get("config"),
        "exit_ordering": info.get("exit_ordering"),
    }
    card["dataset"] = {"name": info.get("dataset"), "n_classes": info.get("n_classes")}
    card["cost"] = {"params": metrics.get("params"), "macs": metrics.get("macs"),
                    "int8_bytes": metrics.get("int8_bytes")}
    card["accuracy"] = {"top1_fp32": metrics.get("top1_after"),
                        "top1_int8": metrics.get("top1_int8"),
                        "top1_before_finetune": metrics.get("top1_before"),
                        "split": "test"}
    card["latency"] = {"ms": metrics.get("latency_ms"), "iqr_ms": metrics.get("latency_iqr_ms"),
                       "settings": metrics.get("latency")}
    timed = onnx_latency or {}
    card["files"] = {name: {**rec, "onnxruntime_ms": (timed.get(name) or {}).get("median_ms"),
                            "onnxruntime_iqr_ms": (timed.get(name) or {}).get("iqr_ms")}
                     for name, rec in sorted(files.items())}
    return card


def _num(value: Any, fmt: str = "{:,.0f}", unit: str = "") -> str:
    return "not measured" if value is None else fmt.format(value) + unit


def _verdict_line(target: Mapping[str, Any] | None) -> str:
    if target is None:
        return "none (a slot of the front: the non-dominated set and high trade-off points)"
    met = target.get("met")
    word = "not measured" if met is None else ("**met**" if met else "**not met**")
    metric = target["metric"]
    line = (f"{target['name']} ({metric} <= {format_value(metric, target['limit'])}): measured "
            f"{format_value(metric, target.get('measured'))} -> {word}")
    if target.get("met_in_archive") is False:
        line += "; no architecture of the final archive met it, this is the closest one"
    return line


def _file_row(name: str, rec: Mapping[str, Any]) -> str:
    ms, iqr = rec.get("onnxruntime_ms"), rec.get("onnxruntime_iqr_ms")
    timed = "not measured" if ms is None else f"{ms:.3f} (IQR {iqr:.3f})"
    return f"| {name} | {rec['bytes']:,} | {timed} | `{rec['sha256']}` |"


def card_markdown(card: Mapping[str, Any]) -> str:
    """``card.md``: the card as a short Markdown page."""
    lines = [f"# Model card: fine-tune slot rank_{card['rank']}", ""]
    lines.append(f"- Target: {_verdict_line(card.get('target'))}")
    if not card.get("used"):
        lines += [f"- Unused slot: {card.get('reason')}", ""]
        return "\n".join(lines)
    arch, cost = card["architecture"], card["cost"]
    acc, lat = card["accuracy"], card["latency"]
    settings = lat.get("settings") or {}
    how = ", ".join(f"{k} {settings[k]}" for k in ("backend", "threads", "batch", "warmup", "runs")
                    if k in settings)
    machine = settings.get("machine") if isinstance(settings.get("machine"), dict) else {}
    lines += [
        f"- Architecture: `{arch['encoding']}` ({arch['family']}, width {arch['width_mult']}, "
        f"{arch['resolution']} px)",
        f"- Dataset: {card['dataset']['name']} ({card['dataset']['n_classes']} classes)",
        f"- Parameters: {_num(cost['params'])}; MACs: {_num(cost['macs'])}",
        f"- Test top-1: FP32 {_num(acc['top1_fp32'], '{:.2f}', ' %')}, INT8 "
        f"{_num(acc['top1_int8'], '{:.2f}', ' %')} (before fine-tuning: "
        f"{_num(acc['top1_before_finetune'], '{:.2f}', ' %')})",
        f"- Latency: {_num(lat['ms'], '{:.3f}', ' ms')} median, IQR "
        f"{_num(lat['iqr_ms'], '{:.3f}', ' ms')} ({how or 'not measured'}"
        + (f", on {machine['cpu']}" if machine.get("cpu") else "") + ")",
        "",
        "Exported files (latency: the file itself in an onnxruntime session, CPU, the same "
        "threads, batch, warm-up and runs):",
        "",
        "| file | bytes | onnxruntime latency (ms) | sha256 |",
        "|---|---|---|---|",
    ]
    lines += [_file_row(name, rec) for name, rec in card["files"].items()]
    lines.append("")
    return "\n".join(lines)
