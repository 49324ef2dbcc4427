"""The archive: one row per evaluated architecture, a pandas table with a fixed schema.

Columns (DESIGN §3): ``arch`` (the encoding string), ``top1`` (%), ``params``, ``macs``,
``latency_ms`` (NaN when not measured), ``round``, ``origin`` (bound | init | preprocess |
candidate), ``predicted_top1`` (NaN for non-candidates) and the decoded fields ``r``, ``w``,
``d`` ("2-3-3-3-4") and ``nd`` (nullable ``Int64``; <NA> for SE families). Extra columns are
kept after these, in their order.

Objectives are always *minimised*: ``top1`` becomes the error ``100 - top1``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from natv2.errors import UserError
from natv2.files import atomic_write

ORIGINS = ("bound", "init", "preprocess", "candidate")

# Column -> pandas dtype. "str" columns are stored as Python strings (``object`` on pandas 2,
# the default string dtype on pandas 3): we let pandas choose via ``astype(str)`` so that a
# frame built in memory and one read from CSV compare equal on either version.
ARCHIVE_DTYPES: dict[str, str] = {
    "arch": "str",
    "top1": "float64",
    "params": "int64",
    "macs": "int64",
    "latency_ms": "float64",
    "round": "int64",
    "origin": "str",
    "predicted_top1": "float64",
    "r": "int64",
    "w": "float64",
    "d": "str",
    "nd": "Int64",
}
ARCHIVE_COLUMNS: tuple[str, ...] = tuple(ARCHIVE_DTYPES)

# objective name -> (column, sign transform). All objectives are minimised.
OBJECTIVE_NAMES = ("top1", "params", "macs", "latency")
_OBJECTIVE_ALIASES = {
    "top1": "top1",
    "error": "top1",
    "params": "params",
    "macs": "macs",
    "flops": "macs",
    "latency": "latency_ms",
    "latency_ms": "latency_ms",
}


class ArchiveError(UserError):
    """A malformed archive table or file (the message names the file, line or column and the
    problem; the CLI prints it as one line)."""


def _str_series(name: str, s: pd.Series) -> pd.Series:
    if s.isna().any():
        raise ArchiveError(f"archive: column {name!r} has empty values ({_row_line(s.isna())})")
    # astype(str): ``object`` on pandas 2, the default string dtype on pandas 3
    return s.astype(object).map(str).astype(str)


def _row_line(bad: pd.Series) -> str:
    """Where the first ``bad`` row is: ``line N`` of the CSV it was read from (header: line 1)."""
    return f"first at line {int(np.flatnonzero(np.asarray(bad))[0]) + 2}"


def empty_archive() -> pd.DataFrame:
    """An archive with no rows and the exact column dtypes."""
    return normalize_archive(pd.DataFrame({c: [] for c in ARCHIVE_COLUMNS}))


def normalize_archive(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``df`` with the archive columns first, coerced to their dtypes.

    Missing optional columns (``latency_ms``, ``predicted_top1``, ``nd``) are added as missing;
    a missing required column raises :class:`ArchiveError`.
    """
    df = df.copy()
    optional = {"latency_ms": np.nan, "predicted_top1": np.nan, "nd": pd.NA}
    for col in ARCHIVE_COLUMNS:
        if col not in df.columns:
            if col in optional:
                df[col] = optional[col]
            else:
                raise ArchiveError(f"archive: column {col!r} is missing")
    for col, dtype in ARCHIVE_DTYPES.items():
        try:
            if dtype == "str":
                df[col] = _str_series(col, df[col])
            elif dtype == "Int64":
                df[col] = pd.to_numeric(df[col], errors="raise").astype("Int64")
            elif dtype == "int64":
                v = pd.to_numeric(df[col], errors="raise")
                if v.isna().any():
                    raise ArchiveError(f"archive: column {col!r} has empty values ({_row_line(v.isna())})")
                df[col] = v.astype("int64")
            else:
                df[col] = pd.to_numeric(df[col], errors="raise").astype(dtype)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ArchiveError):
                raise
            raise ArchiveError(f"archive: column {col!r} cannot be read as {dtype}: {exc}") from exc
    bad = sorted(set(df["origin"].dropna()) - set(ORIGINS))
    if bad:
        raise ArchiveError(f"archive: origin values {bad} not in {list(ORIGINS)}")
    extra = [c for c in df.columns if c not in ARCHIVE_DTYPES]
    return df[list(ARCHIVE_COLUMNS) + extra].reset_index(drop=True)


def read_archive(path: str | os.PathLike, space: Any = None) -> pd.DataFrame:
    """Read an archive CSV written by :func:`write_archive` (exact dtypes restored), every row
    checked (:func:`check_values`, and :func:`check_against_space` given the ``space``); a
    malformed file is an :class:`ArchiveError` naming it and the line."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"archive: file {str(path)!r} does not exist")
    try:
        df = check_values(_parse(path))
        return df if space is None else check_against_space(df, space)
    except ArchiveError as exc:
        raise ArchiveError(f"{path}: {str(exc).removeprefix('archive: ')}") from None


def check_values(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` if every row has a top-1 in [0, 100], non-negative finite params and MACs and an
    encoding; else :class:`ArchiveError` naming the first bad line."""
    checks = {
        "top1": ~np.isfinite(df["top1"]) | (df["top1"] < 0) | (df["top1"] > 100),
        "params": df["params"] < 0,
        "macs": df["macs"] < 0,
        "arch": df["arch"].str.len() == 0,
        "latency_ms": np.isinf(df["latency_ms"]) | (df["latency_ms"] < 0),
    }
    for col, bad in checks.items():
        if bad.any():
            i = int(np.flatnonzero(np.asarray(bad))[0])
            raise ArchiveError(f"archive: line {i + 2}: {col} = {df[col].iloc[i]!r} is not a valid value")
    return df


def check_against_space(df: pd.DataFrame, space: Any) -> pd.DataFrame:
    """``df`` if every encoding decodes in ``space`` and the decoded resolution, width, depths
    and exit count agree with the row's ``r``, ``w``, ``d``, ``nd``; else :class:`ArchiveError`
    naming the first bad line (a cut or edited file)."""
    for i, row in enumerate(df.itertuples(index=False)):
        where = f"line {i + 2}"
        try:
            arch = space.decode(row.arch)
        except (ValueError, TypeError, IndexError) as exc:
            raise ArchiveError(f"archive: {where}: encoding {row.arch!r} does not decode: {exc}") from None
        nd = getattr(arch, "nd", None)
        decoded = {"r": int(arch.resolution), "w": float(arch.width),
                   "d": "-".join(str(int(x)) for x in arch.d), "nd": None if nd is None else int(nd)}
        stored = {"r": int(row.r), "w": float(row.w), "d": str(row.d),
                  "nd": None if pd.isna(row.nd) else int(row.nd)}
        for key, value in decoded.items():
            if stored[key] != value:
                raise ArchiveError(f"archive: {where}: {key} = {stored[key]!r} but encoding {row.arch} "
                                   f"decodes to {key} = {value!r}")
    return df


def archive_from_csv(text: str) -> pd.DataFrame:
    """:func:`read_archive` of the CSV text ``text`` (what ``write_archive`` writes)."""
    return _parse(io.StringIO(text))


def _parse(source) -> pd.DataFrame:
    dtype = {c: str for c, t in ARCHIVE_DTYPES.items() if t == "str"}
    # pandas 2 needs "round_trip" for exact floats; pandas 3 is exact by default and deprecates it
    extra = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
    df = pd.read_csv(source, dtype=dtype, keep_default_na=False, na_values=[""], **extra)
    return normalize_archive(df)


def write_archive(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` as CSV atomically (temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    out = normalize_archive(df)
    atomic_write(path, lambda tmp: out.to_csv(tmp, index=False, na_rep=""))
    return path


def objective_column(name: str) -> str:
    """The archive column behind objective ``name`` (``top1``/``error``, ``params``, ...)."""
    try:
        return _OBJECTIVE_ALIASES[name]
    except KeyError:
        raise ArchiveError(
            f"objective {name!r} not in {', '.join(OBJECTIVE_NAMES)}"
        ) from None


def objectives(df: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """Objective matrix (n_rows, len(names)) to MINIMISE.

    ``top1`` -> ``100 - top1`` (error, %), ``params``, ``macs``, ``latency`` (``latency_ms``).
    Raises :class:`ArchiveError` for unknown names or missing latency values.
    """
    cols = []
    for name in names:
        col = objective_column(name)
        if col not in df.columns:
            raise ArchiveError(f"objective {name!r}: archive has no column {col!r}")
        v = pd.to_numeric(df[col]).to_numpy(dtype=float)
        if np.isnan(v).any():
            raise ArchiveError(f"objective {name!r}: column {col!r} has missing values")
        cols.append(100.0 - v if col == "top1" else v)
    if not cols:
        return np.empty((len(df), 0))
    return np.column_stack(cols)


def _record_value(rec: dict[str, Any], key: str, default: Any = None) -> Any:
    v = rec.get(key, default)
    return default if v is None else v


def records_to_archive(
    space: Any,
    archs: Sequence[Any],
    records: Sequence[dict[str, Any]],
    *,
    round_k: int,
    origin: str | Sequence[str],
    predicted_top1: Iterable[float] | None = None,
) -> pd.DataFrame:
    """Build archive rows from architectures and their evaluation records.

    ``records[i]`` (from an ``evaluate`` callable) must carry ``top1`` (%), ``params`` and
    ``macs``; ``latency_ms`` is optional. ``arch``, ``r``, ``w``, ``d``, ``nd`` are derived
    from ``archs[i]`` with ``space.encode``; other record keys become extra columns.
    """
    if len(archs) != len(records):
        raise ArchiveError(f"evaluate returned {len(records)} records for {len(archs)} archs")
    origins = [origin] * len(archs) if isinstance(origin, str) else list(origin)
    preds = (
        [np.nan] * len(archs) if predicted_top1 is None else [float(p) for p in predicted_top1]
    )
    rows = []
    for arch, rec, org, pred in zip(archs, records, origins, preds, strict=True):
        for key in ("top1", "params", "macs"):
            if rec.get(key) is None:
                raise ArchiveError(f"evaluation record for {space.encode(arch)} lacks {key!r}")
        nd = getattr(arch, "nd", None)
        row = {
            "arch": space.encode(arch),
            "top1": float(rec["top1"]),
            "params": int(rec["params"]),
            "macs": int(rec["macs"]),
            "latency_ms": float(_record_value(rec, "latency_ms", np.nan)),
            "round": int(round_k),
            "origin": org,
            "predicted_top1": pred,
            "r": int(arch.resolution),
            "w": float(arch.width),
            "d": "-".join(str(int(x)) for x in arch.d),
            "nd": pd.NA if nd is None else int(nd),
        }
        for key, val in rec.items():
            if key not in row and key not in ("arch",):
                row[key] = val
        rows.append(row)
    if not rows:
        return empty_archive()
    return normalize_archive(pd.DataFrame(rows))


def concat_archives(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate archive frames (empty ones allowed), keeping the schema dtypes."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_archive()
    return normalize_archive(pd.concat(frames, ignore_index=True))
