"""Fingerprint a results directory, timing fields left out: one sha256 per result file.

Two runs of the same config and seed on the same machine must print the same lines (the
determinism promise); a refactoring that must not change results is checked by diffing the
output before and after it:

    python benchmarks/fingerprint.py results > before.txt   # ... change, rerun ...
    python benchmarks/fingerprint.py results | diff before.txt -

Timing fields (``seconds``, ``steps``, ``shard_seconds``, measured ``latency_ms``, the
``seconds`` column of ``history.csv``, the sha256 of checkpoint files, whose metadata holds wall
times) differ between any two runs and are dropped; checkpoints are compared by their
tensors and their non-timing metadata (``torch.load(weights_only=True)``), not by their bytes.
The HTML page and the PNG figures show wall times, so they are not fingerprinted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

# wall times; measured latencies; the sha256 of checkpoint files, whose metadata holds wall times
TIMING_KEYS = frozenset({"seconds", "steps", "shard_seconds", "seconds_before", "latency_ms",
                         "supernet_sha256", "input_supernet_sha256"})
SKIPPED_SUFFIXES = (".html", ".png", ".tsv", ".log")
SKIPPED_DIRS = ("cache",)


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list | tuple):
        return [_strip(v) for v in value]
    return value


def _json_bytes(value: Any) -> bytes:
    return json.dumps(_strip(value), sort_keys=True, default=str).encode()


def _csv_bytes(path: Path) -> bytes:
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = df.drop(columns=[c for c in df.columns if c in TIMING_KEYS])
    return df.to_csv(index=False).encode()


def _checkpoint_bytes(path: Path) -> bytes:
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    state = payload.get("state_dict", {}) if isinstance(payload, dict) else {}
    for name in sorted(state):
        tensor = state[name].contiguous()
        digest.update(name.encode())
        digest.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    meta = {k: v for k, v in payload.items() if k != "state_dict"} if isinstance(payload, dict) else {}
    digest.update(_json_bytes(meta))
    return digest.hexdigest().encode()


def fingerprint(results: Path) -> list[tuple[str, str]]:
    """``(relative path, sha256)`` of every fingerprinted file under ``results``, sorted."""
    rows = []
    for path in sorted(results.rglob("*")):
        rel = path.relative_to(results)
        if not path.is_file() or rel.parts[0] in SKIPPED_DIRS or path.suffix in SKIPPED_SUFFIXES:
            continue
        if path.name.startswith("."):
            continue
        if path.suffix == ".json":
            data = _json_bytes(json.loads(path.read_text()))
        elif path.suffix == ".csv":
            data = _csv_bytes(path)
        elif path.suffix == ".pt":
            data = _checkpoint_bytes(path)
        else:
            data = path.read_bytes()
        rows.append((str(rel), hashlib.sha256(data).hexdigest()))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results directory")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        print(f"fingerprint: {args.results} is not a directory", file=sys.stderr)
        return 2
    for rel, digest in fingerprint(args.results):
        print(f"{digest}  {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
