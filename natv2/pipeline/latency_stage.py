"""Stage ``latency_table``: the per-piece latency lookup table of the search space.

Where the search minimises ``latency`` and ``latency.table`` is on (:func:`uses_latency_table`),
this stage measures every distinct piece of the space's sub-networks once, at every configured
resolution, with the ``latency:`` settings (:mod:`natv2.measure.latency_table`), and writes
``latency/table.json``. The evolution then reads the latency objective from the table instead
of timing each individual; each round still measures its candidates for real and records the
table's error on them (``stats.json`` ``latency_table``). The table depends on the space, the
super-network's structure and the latency settings, not on weights: a cached, shareable file
(DVC-tracked like every stage output).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from natv2.errors import UserError
from natv2.layout import Layout
from natv2.measure.latency import LatencySettings
from natv2.measure.latency_table import LatencyTable, build_latency_table, read_table, write_table
from natv2.pipeline.context import setup_stage, space_from_config
from natv2.pipeline.dag import uses_latency_table
from natv2.records import check_recorded
from natv2.supernet import load_supernet

#: the command that writes the table (quoted by every "rerun ..." message)
LATENCY_TABLE_COMMAND = "natv2 latency-table"


def run_latency_table(cfg: Mapping[str, Any], show_progress: bool = True) -> LatencyTable:
    """Build and write ``latency/table.json`` for ``cfg`` (see the module docstring)."""
    if not uses_latency_table(cfg):
        raise UserError("natv2 latency-table: the search does not use a latency table; it needs "
                        "latency in search.objectives and latency.table: true")
    start = time.perf_counter()
    layout = Layout.from_config(cfg)
    device = setup_stage(cfg)
    supernet_file = check_recorded(layout.supernet, layout.supernet_json, "natv2 supernet")
    net = load_supernet(supernet_file).eval()
    space = space_from_config(cfg)
    settings = LatencySettings.from_config(cfg)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if show_progress and (now - last[0] > 10 or done == total):
            print(f"[latency-table] {done}/{total} pieces timed", flush=True)
            last[0] = now

    table = build_latency_table(space, net, space.resolutions, settings, device, progress)
    write_table(layout.latency_table, table)
    if show_progress:
        print(f"[latency-table] {len(table.entries)} entries in {time.perf_counter() - start:.1f} s",
              flush=True)
    return table


def load_latency_table(cfg: Mapping[str, Any], device: Any) -> LatencyTable:
    """The table the search reads, checked against the config: the same space resolutions and
    latency settings, else a one-line error saying to rebuild it."""
    path = Layout.from_config(cfg).latency_table
    if not Path(path).is_file():
        raise UserError(f"{path} does not exist; run `{LATENCY_TABLE_COMMAND}` first")
    table = read_table(path)
    settings = {**LatencySettings.from_config(cfg).as_dict(), "device": str(device)}
    space = space_from_config(cfg)
    if table.settings != settings or tuple(table.resolutions) != tuple(space.resolutions) \
            or table.family != space.family:
        raise UserError(f"{path} was built for {table.family} at {list(table.resolutions)} px with "
                        f"{table.settings}, not this config's {space.family} at "
                        f"{list(space.resolutions)} px with {settings}; rerun `{LATENCY_TABLE_COMMAND}`")
    return table
