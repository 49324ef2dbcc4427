"""Archive table: schema, CSV round trip with exact dtypes, objectives."""

import numpy as np
import pandas as pd
import pytest

from natv2.search.archive import (
    ARCHIVE_COLUMNS,
    ARCHIVE_DTYPES,
    ArchiveError,
    concat_archives,
    empty_archive,
    normalize_archive,
    objectives,
    read_archive,
    records_to_archive,
    write_archive,
)
from natv2.space import SearchSpace


def _frame() -> pd.DataFrame:
    return normalize_archive(
        pd.DataFrame(
            {
                "arch": ["00011001100110011001100", "02099999999999999999999", "0101234"],
                "top1": [61.25, 78.123456789012345, 70.0],
                "params": [1_234_567, 9_876_543_210, 5],
                "macs": [100, 200, 300],
                "latency_ms": [np.nan, 3.25, np.nan],
                "round": [0, 0, 1],
                "origin": ["bound", "bound", "candidate"],
                "predicted_top1": [np.nan, np.nan, 69.5],
                "r": [160, 192, 176],
                "w": [1.0, 1.0, 1.2],
                "d": ["2-2-2-2-2", "4-4-4-4-4", "2-3-3-3-4"],
                "nd": pd.array([pd.NA, 5, 3], dtype="Int64"),
                "note": ["a", "b", "c"],
            }
        )
    )


def test_schema_dtypes_and_order():
    df = _frame()
    assert tuple(df.columns[: len(ARCHIVE_COLUMNS)]) == ARCHIVE_COLUMNS
    assert df.columns[-1] == "note"
    assert str(df["nd"].dtype) == "Int64"
    assert df["params"].dtype == np.int64 and df["top1"].dtype == np.float64
    assert df["arch"].dtype == pd.Series(["x"]).astype(str).dtype
    empty = empty_archive()
    assert len(empty) == 0 and list(empty.columns) == list(ARCHIVE_COLUMNS)
    for col, dtype in ARCHIVE_DTYPES.items():
        if dtype != "str":
            assert str(empty[col].dtype) == dtype


def test_csv_round_trip_exact(tmp_path):
    df = _frame()
    path = write_archive(df, tmp_path / "sub" / "archive.csv")
    back = read_archive(path)
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    assert back["latency_ms"].isna().tolist() == [True, False, True]
    assert back["nd"].isna().tolist() == [True, False, False]
    assert back["d"].tolist() == ["2-2-2-2-2", "4-4-4-4-4", "2-3-3-3-4"]
    assert back["arch"][0] == "00011001100110011001100"  # leading zeros kept
    text = path.read_text().splitlines()
    assert text[0].startswith("arch,top1,params,macs,latency_ms,round,origin,predicted_top1")
    assert not list(path.parent.glob(".*tmp"))  # no temp file left


def test_empty_round_trip(tmp_path):
    back = read_archive(write_archive(empty_archive(), tmp_path / "a.csv"))
    pd.testing.assert_frame_equal(back, empty_archive(), check_exact=True)


def test_bad_tables(tmp_path):
    with pytest.raises(ArchiveError, match="top1"):
        normalize_archive(_frame().drop(columns="top1"))
    bad = _frame()
    bad.loc[0, "origin"] = "oops"
    with pytest.raises(ArchiveError, match="origin"):
        normalize_archive(bad)
    with pytest.raises(ArchiveError, match="does not exist"):
        read_archive(tmp_path / "missing.csv")


def test_objectives_minimised():
    df = _frame()
    F = objectives(df, ["top1", "params", "macs"])
    np.testing.assert_allclose(F[:, 0], 100 - df["top1"].to_numpy())
    np.testing.assert_array_equal(F[:, 1], [1_234_567, 9_876_543_210, 5])
    with pytest.raises(ArchiveError, match="missing"):
        objectives(df, ["latency"])
    np.testing.assert_allclose(objectives(df.iloc[[1]], ["latency"]), [[3.25]])
    with pytest.raises(ArchiveError, match="not in"):
        objectives(df, ["accuracy"])


def test_records_to_archive_decodes_fields():
    space = SearchSpace(family="EE_B", resolutions=[160, 176], widths=[1.0])
    archs = [space.smallest(), space.largest()]
    recs = [{"top1": 50, "params": 10, "macs": 20}, {"top1": 80.5, "params": 30, "macs": 40,
                                                      "latency_ms": 1.5, "extra": 7}]
    df = records_to_archive(space, archs, recs, round_k=0, origin="bound")
    assert df["arch"].tolist() == [space.encode(a) for a in archs]
    assert df["d"].tolist() == ["2-2-2-2-2", "4-4-4-4-4"]
    assert df["nd"].tolist() == [1, 5] and df["r"].tolist() == [160, 176]
    assert np.isnan(df["latency_ms"][0]) and df["latency_ms"][1] == 1.5
    assert df["predicted_top1"].isna().all() and "extra" in df.columns
    both = concat_archives([df, empty_archive(), df])
    assert len(both) == 4 and str(both["nd"].dtype) == "Int64"
    with pytest.raises(ArchiveError, match="lacks 'macs'"):
        records_to_archive(space, archs[:1], [{"top1": 1, "params": 2}], round_k=0,
                           origin="init")


@pytest.mark.parametrize("column, value", [("top1", 101.0), ("top1", np.nan), ("top1", -1.0),
                                            ("params", -5), ("macs", -1), ("latency_ms", np.inf),
                                            ("arch", "")])
def test_reader_refuses_values_out_of_range_naming_file_and_line(tmp_path, column, value):
    df = _frame()
    df.loc[1, column] = value
    path = tmp_path / "archive.csv"
    df.to_csv(path, index=False, na_rep="")  # as a damaged or hand-edited file would be
    message = (rf"{path}: column 'arch' has empty values \(first at line 3\)" if column == "arch"
               else rf"{path}: line 3: {column} = .* is not a valid value")
    with pytest.raises(ArchiveError, match=message):
        read_archive(path)
    read_archive(write_archive(_frame(), tmp_path / "good.csv"))  # the undamaged table reads
