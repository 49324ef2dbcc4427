"""Search: archive, survival, predictors, pymoo problems, the NAT / NATv2 / random policies
(:mod:`~natv2.search.policy`), the one round (:mod:`~natv2.search.round`) and the hypervolume
(:mod:`~natv2.search.hypervolume`).

Pure numpy / pandas / pymoo / scikit-learn / LightGBM: no torch. Evaluation of architectures is
asked for through callables the caller supplies (``evaluate(list[Arch]) -> list[dict]`` and
``cheap_fn(vectors) -> (n, n_cheap)``).
"""

from natv2.search.archive import (
    ARCHIVE_COLUMNS,
    ARCHIVE_DTYPES,
    ORIGINS,
    ArchiveError,
    archive_from_csv,
    concat_archives,
    empty_archive,
    normalize_archive,
    objectives,
    read_archive,
    records_to_archive,
    write_archive,
)
from natv2.search.evolution import run_search
from natv2.search.hypervolume import Reference, archive_hypervolume, hypervolume_stats
from natv2.search.policy import PRESETS, Policy, sample_new
from natv2.search.predictors import PREDICTOR_NAMES, Predictor, make_predictor, rank_metrics
from natv2.search.problem import SurrogateProblem
from natv2.search.round import Proposal, RoundResult, archive_vectors, propose, run_round
from natv2.search.subset import drop_known, select_subset
from natv2.search.survival import fronts, pareto_front_mask, survive

__all__ = [
    "ARCHIVE_COLUMNS",
    "ARCHIVE_DTYPES",
    "ArchiveError",
    "ORIGINS",
    "PREDICTOR_NAMES",
    "PRESETS",
    "Policy",
    "Predictor",
    "Proposal",
    "Reference",
    "RoundResult",
    "SurrogateProblem",
    "archive_hypervolume",
    "archive_vectors",
    "concat_archives",
    "drop_known",
    "empty_archive",
    "fronts",
    "hypervolume_stats",
    "make_predictor",
    "normalize_archive",
    "objectives",
    "pareto_front_mask",
    "propose",
    "rank_metrics",
    "archive_from_csv",
    "read_archive",
    "records_to_archive",
    "run_round",
    "run_search",
    "sample_new",
    "select_subset",
    "survive",
    "write_archive",
]
