"""Every path and file name under ``results/``, in one place.

The stages write these files, :mod:`natv2.pipeline.dag` declares them to Snakemake and DVC, the
report reads them and the benchmarks look into them: all of them ask a :class:`Layout`, none
builds a path of its own. A ``Layout`` is a value (the results root); ``Layout.from_config(cfg)``
takes ``results_dir`` from a config.

::

    <results>/supernet/supernet.pt, teacher.pt, supernet.json
                                                        stage supernet (work/: EPS phase checkpoints)
    <results>/latency/table.json                        stage latency_table (latency objective)
    <results>/search/round_00/archive.csv, evaluated.csv, stats.json          stage init_archive
    <results>/search/round_KK/archive.csv, candidates.csv, stats.json, supernet.pt
                                                        stage search_round (K = 1..search.rounds)
    <results>/search/round_KK/proposed.csv, proposed.json, shard_I.csv
                                                        scatter/gather steps (search.shards > 1)
    <results>/finetune/rank_N/model.pt, arch.json, history.csv, card.md, card.json, metrics.json
                                                        stage finetune (N = 0..finetune.slots-1);
                                                        also model.onnx (+ model_int8.onnx with
                                                        finetune.measure_int8), recorded in
                                                        metrics.json, no named output (an unused
                                                        slot has none)
    <results>/baselines/baselines.json                  stage baselines (after the last round)
    <results>/report/index.html, pareto.png, hypervolume.png, metrics.json, pareto.csv
    <results>/cache/evaluations/*.jsonl, cache/adapted/*.pt   resumable work, no stage's output
    <results>/locks/<set>.lock      held (flock) by the process writing a stage's set, its pid inside

Round folders are ``round_KK`` with at least two digits (``round_07``, ``round_123``), so any
number of rounds is allowed and the folders of up to 99 rounds sort by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: a fine-tuned model directory (``finetune/rank_N``, or any folder ``natv2.load_model`` reads)
MODEL_FILE = "model.pt"
ARCH_FILE = "arch.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
#: the model card of a fine-tune slot (natv2.cards), Markdown and JSON
CARD_MD_FILE = "card.md"
CARD_JSON_FILE = "card.json"
#: the fine-tuned network exported to ONNX by the finetune stage, FP32 and INT8
ONNX_FILE = "model.onnx"
INT8_ONNX_FILE = "model_int8.onnx"

ROUND0_FILES = ("archive.csv", "evaluated.csv", "stats.json")
ROUND_FILES = ("archive.csv", "candidates.csv", "stats.json", "supernet.pt")
PROPOSED_FILES = ("proposed.csv", "proposed.json")
RANK_FILES = (MODEL_FILE, ARCH_FILE, HISTORY_FILE, CARD_MD_FILE, CARD_JSON_FILE, METRICS_FILE)
#: the report's page and figures; its DVC metrics and plot files are REPORT_METRICS / REPORT_PLOTS
REPORT_FILES = ("index.html", "pareto.png", "hypervolume.png")
REPORT_METRICS = "metrics.json"
REPORT_PLOTS = "pareto.csv"


def round_name(k: int) -> str:
    """``round_KK`` (two digits at least)."""
    return f"round_{int(k):02d}"


#: the command that writes the stage-1 super-network (``supernet/``)
SUPERNET_COMMAND = "natv2 supernet"


def round_command(k: int) -> str:
    """The command that writes round ``k``'s files (round 0: ``natv2 init-archive``)."""
    return "natv2 init-archive" if int(k) == 0 else f"natv2 search-round --round {int(k)}"


@dataclass(frozen=True)
class Layout:
    """The files of one results directory (``root``)."""

    root: Path

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Layout:
        return cls(Path(cfg["results_dir"]))

    # ------------------------------------------------------------------ super-network
    @property
    def supernet_dir(self) -> Path:
        return self.root / "supernet"

    @property
    def supernet(self) -> Path:
        """The stage-1 super-network checkpoint."""
        return self.supernet_dir / "supernet.pt"

    @property
    def supernet_teacher(self) -> Path:
        """The search's fixed distillation teacher (a static network), written by stage 1."""
        return self.supernet_dir / "teacher.pt"

    @property
    def supernet_json(self) -> Path:
        return self.supernet_dir / "supernet.json"

    @property
    def latency_table(self) -> Path:
        """The per-piece latency lookup table (stage latency_table)."""
        return self.root / "latency" / "table.json"

    @property
    def supernet_work(self) -> Path:
        """EPS phase checkpoints (resuming a killed training)."""
        return self.supernet_dir / "work"

    # ------------------------------------------------------------------------ search
    def round_dir(self, k: int) -> Path:
        return self.root / "search" / round_name(k)

    def archive(self, k: int) -> Path:
        return self.round_dir(k) / "archive.csv"

    def stats(self, k: int) -> Path:
        return self.round_dir(k) / "stats.json"

    def candidates(self, k: int) -> Path:
        return self.round_dir(k) / "candidates.csv"

    @property
    def evaluated(self) -> Path:
        """Every evaluation of the initial archive (round 0)."""
        return self.round_dir(0) / "evaluated.csv"

    def round_supernet(self, k: int) -> Path:
        """The (adapted) super-network a round hands on."""
        return self.round_dir(k) / "supernet.pt"

    def input_supernet(self, k: int) -> Path:
        """The super-network round ``k >= 1`` starts from: stage 1's for round 1, else round
        ``k - 1``'s."""
        return self.supernet if int(k) == 1 else self.round_supernet(int(k) - 1)

    def round_outputs(self, k: int) -> tuple[Path, ...]:
        names = ROUND0_FILES if int(k) == 0 else ROUND_FILES
        return tuple(self.round_dir(k) / name for name in names)

    def proposed(self, k: int) -> tuple[Path, Path]:
        """``proposed.csv`` and ``proposed.json`` of round ``k`` (scatter step 1)."""
        d = self.round_dir(k)
        return d / PROPOSED_FILES[0], d / PROPOSED_FILES[1]

    def shard(self, k: int, i: int) -> Path:
        return self.round_dir(k) / f"shard_{int(i)}.csv"

    # ---------------------------------------------------------------------- finetune
    def rank_dir(self, n: int) -> Path:
        return self.root / "finetune" / f"rank_{int(n)}"

    def rank_outputs(self, n: int) -> tuple[Path, ...]:
        return tuple(self.rank_dir(n) / name for name in RANK_FILES)

    def rank_arch(self, n: int) -> Path:
        return self.rank_dir(n) / ARCH_FILE

    def rank_metrics(self, n: int) -> Path:
        return self.rank_dir(n) / METRICS_FILE

    # --------------------------------------------------------------------- baselines
    @property
    def baselines_dir(self) -> Path:
        return self.root / "baselines"

    @property
    def baselines(self) -> Path:
        """``baselines/baselines.json``: classical models and the largest network, on test."""
        return self.baselines_dir / "baselines.json"

    # ------------------------------------------------------------------------ report
    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def report_outputs(self) -> tuple[Path, ...]:
        return tuple(self.report_dir / name for name in REPORT_FILES)

    @property
    def report_metrics(self) -> Path:
        return self.report_dir / REPORT_METRICS

    @property
    def report_plots(self) -> Path:
        return self.report_dir / REPORT_PLOTS

    # ------------------------------------------------------------------------- cache
    def eval_cache(self, network_sha256: str, settings_sha256: str) -> Path:
        """``cache/evaluations/<net sha[:16]>-<settings sha[:16]>.jsonl``."""
        name = f"{network_sha256[:16]}-{settings_sha256[:16]}.jsonl"
        return self.root / "cache" / "evaluations" / name

    def lock(self, name: str) -> Path:
        """The lock file of the output set ``name`` (``supernet``, ``round_KK``, ``rank_N``...)."""
        return self.root / "locks" / f"{name}.lock"

    def adapted(self, k: int, key: str) -> Path:
        """Where round ``k``'s adapted super-network waits until the round's outputs are written."""
        return self.root / "cache" / "adapted" / f"{round_name(k)}-{key[:24]}.pt"
