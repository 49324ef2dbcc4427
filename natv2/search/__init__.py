"""Search: archive, survival, predictors, pymoo problems and the NAT / NATv2 policies.

Pure numpy / pandas / pymoo / scikit-learn / LightGBM: no torch. Evaluation of architectures is
asked for through callables the caller supplies (``evaluate(list[Arch]) -> list[dict]`` and
``cheap_fn(vectors) -> (n, n_cheap)``).
"""

from natv2.search.archive import (
    ARCHIVE_COLUMNS,
    ARCHIVE_DTYPES,
    ORIGINS,
    ArchiveError,
    concat_archives,
    empty_archive,
    normalize_archive,
    objectives,
    read_archive,
    records_to_archive,
    write_archive,
)
from natv2.search.evolution import run_search
from natv2.search.policies import (
    POLICY_DEFAULTS,
    archive_hypervolume,
    archive_stats,
    archive_vectors,
    hv_reference,
    hypervolume,
    init_archive,
    init_archive_nat,
    init_archive_natv2,
    init_archive_random,
    propose,
    resolve_settings,
    round_seed,
    sample_new,
    search_round_core,
    update_archive,
)
from natv2.search.predictors import PREDICTOR_NAMES, Predictor, make_predictor, rank_metrics
from natv2.search.problem import SpaceRepair, SurrogateProblem
from natv2.search.subset import drop_known, select_subset
from natv2.search.survival import fronts, pareto_front_mask, survive, survive_keeping

__all__ = [
    "ARCHIVE_COLUMNS",
    "ARCHIVE_DTYPES",
    "ORIGINS",
    "POLICY_DEFAULTS",
    "PREDICTOR_NAMES",
    "ArchiveError",
    "Predictor",
    "SpaceRepair",
    "SurrogateProblem",
    "archive_hypervolume",
    "archive_stats",
    "archive_vectors",
    "concat_archives",
    "drop_known",
    "empty_archive",
    "fronts",
    "hv_reference",
    "hypervolume",
    "init_archive",
    "init_archive_nat",
    "init_archive_natv2",
    "init_archive_random",
    "make_predictor",
    "normalize_archive",
    "objectives",
    "pareto_front_mask",
    "rank_metrics",
    "read_archive",
    "records_to_archive",
    "resolve_settings",
    "round_seed",
    "run_search",
    "sample_new",
    "propose",
    "search_round_core",
    "select_subset",
    "survive",
    "survive_keeping",
    "update_archive",
    "write_archive",
]
