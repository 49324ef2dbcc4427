"""What a stage wrote, recorded, and checked before the next stage uses it.

Every stage writes its files as one *set* closed by a JSON *record* (the stage's own JSON:
``supernet.json``, a round's ``stats.json``, a slot's ``metrics.json``) that lists, per file,
its bytes, sha256 and (tables) rows. The record is written last and removed before the first
file of a new set is written (:func:`open_set`), so a stage stopped part-way leaves a set
without a record: never a mix of old and new files that passes for complete. A reader checks
the file it uses against the record (:func:`check_recorded`) and refuses, in one line naming the
file, the record and the command that remakes it, a file that is missing, cut, changed or
left by a run that stopped. Records written before the ``files`` entry existed are not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from natv2.errors import UserError
from natv2.files import disk_error, file_sha256, read_json

#: the key of a stage's JSON that holds its file records
FILES_KEY = "files"


def record_files(*paths: Path, rows: Mapping[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """The records of ``paths`` (by file name): bytes and sha256, and rows where ``rows``
    gives them (the tables)."""
    rows = rows or {}
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        entry: dict[str, Any] = {"bytes": Path(path).stat().st_size, "sha256": file_sha256(path)}
        if path.name in rows:
            entry["rows"] = int(rows[path.name])
        out[path.name] = entry
    return out


def open_set(record: Path) -> None:
    """Before a stage writes the first file of its set: remove the set's old record, so the set
    counts as incomplete until the new record is written."""
    try:
        Path(record).unlink(missing_ok=True)
    except OSError as exc:
        raise disk_error(exc, record) from None


def _table_rows(path: Path) -> int:
    with open(path, "rb") as fh:
        return max(sum(1 for _ in fh) - 1, 0)


def _size(entry: Mapping[str, Any], path: Path) -> tuple[str, str]:
    """What the record says of the file's size and what the file has (rows for tables)."""
    if "rows" in entry:
        return f"{entry['rows']} rows", f"{_table_rows(path)}"
    if "bytes" in entry:
        return f"{entry['bytes']} bytes", f"{path.stat().st_size}"
    return "", ""


def check_recorded(path: Path, record: Path, maker: str) -> Path:
    """``path`` if it is the file the stage ``maker`` recorded in ``record``; else a
    ``UserError`` naming both and the command that remakes it (records without file entries,
    from before they existed, pass)."""
    path, record = Path(path), Path(record)
    if not record.is_file():
        if path.is_file():
            raise UserError(f"{path} belongs to an incomplete set: {record}, which `{maker}` writes "
                            f"last, is missing (a run stopped part-way); rerun `{maker}`")
        raise UserError(f"{path} does not exist; run `{maker}` first")
    if not path.is_file():
        raise UserError(f"{path} does not exist ({record} records it); rerun `{maker}`")
    entry = (read_json(record, maker).get(FILES_KEY) or {}).get(path.name)
    if entry is not None and file_sha256(path) != entry["sha256"]:
        said, has = _size(entry, path)
        raise UserError(f"{path} is not the file `{maker}` wrote ({record} records {said}, "
                        f"sha256 {entry['sha256'][:12]}; the file has {has}): it was cut or "
                        f"changed since; rerun `{maker}`")
    return path
