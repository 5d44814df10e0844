"""Dataset loading: accepted export quirks, one clear error per defect, sorting, dedupe, gaps."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.common import PipelineError, run_cli, sha256_file
from pipeline.data.csv_layout import COLUMNS, DatasetError
from pipeline.data.load import (
    DatasetInfo,
    available_datasets,
    load_dataset,
    resolve_dataset_path,
)
from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
from pipeline.store.artifacts import dataset_name

pytestmark = pytest.mark.unit

HEADER = "timestamp,open,high,low,close,volume"


def _rows(n: int = 6, start: int = 1704067200) -> list[str]:
    """``n`` valid hourly rows as CSV text (unix seconds from 2024-01-01)."""
    out = []
    for i in range(n):
        ts = pd.Timestamp(start + 3600 * i, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
        p = 100.0 + i
        out.append(f"{ts},{p},{p + 2},{p - 2},{p + 1},{10 + i}")
    return out


def _write(tmp_path: Path, text: str, name: str = "data.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def _csv(tmp_path: Path, lines: list[str], name: str = "data.csv") -> Path:
    return _write(tmp_path, "\n".join(lines) + "\n", name)


def _error(path: Path | str, datasets_dir: Path | None = None) -> str:
    with pytest.raises(DatasetError) as exc:
        load_dataset(str(path), datasets_dir)
    return str(exc.value)


# ---------------------------------------------------------------- the happy path


def test_loads_generated_csv_exact_schema(tmp_path: Path) -> None:
    src = generate_ohlcv(200, signal=0.3, seed=3)
    path = write_ohlcv_csv(src, tmp_path / "SYNTH-X.csv")
    df, info = load_dataset("SYNTH-X", tmp_path)
    assert list(df.columns) == list(COLUMNS)
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert all(df[c].dtype == np.float64 for c in COLUMNS[1:])
    assert isinstance(df.index, pd.RangeIndex) and df.index[0] == 0 and len(df) == 200
    assert df["timestamp"].is_monotonic_increasing
    np.testing.assert_allclose(df["close"], src["close"].round(2))
    assert (df["timestamp"] == src["timestamp"]).all()
    assert info.name == "SYNTH-X" and info.path == path and info.rows == 200
    assert info.start == pd.Timestamp("2024-01-01", tz="UTC")
    assert info.end == pd.Timestamp("2024-01-09 07:00", tz="UTC")
    assert info.interval_seconds == 3600.0 and info.n_gaps == 0 and info.warnings == []
    assert info.sha256 == sha256_file(path)
    d = info.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["start"] == "2024-01-01T00:00:00+00:00" and d["path"] == str(path)
    assert info.summary() == (
        "SYNTH-X: 200 rows, 2024-01-01 00:00 .. 2024-01-09 07:00 UTC, interval 1h, no gaps"
    )


def test_bundled_dataset_loads_clean() -> None:
    root = Path(__file__).resolve().parent.parent
    df, info = load_dataset("SYNTH-BTC-EUR_1H_20240101-20251231", root / "datasets")
    assert info.rows == 17544 and info.n_gaps == 0 and info.warnings == []
    assert info.start == pd.Timestamp("2024-01-01", tz="UTC")
    assert info.end == pd.Timestamp("2025-12-31 23:00", tz="UTC")


def test_sha256_stable_and_content_sensitive(tmp_path: Path) -> None:
    path = _csv(tmp_path, [HEADER, *_rows()])
    _, a = load_dataset(str(path))
    _, b = load_dataset(str(path))
    assert a.sha256 == b.sha256 == sha256_file(path)
    path.write_text(path.read_text().replace(",10\n", ",11\n", 1))
    _, c = load_dataset(str(path))
    assert c.sha256 != a.sha256


# ---------------------------------------------------------------- path resolution


def test_dataset_names_follow_the_artifact_naming_rule(tmp_path: Path) -> None:
    """DatasetInfo.name, the names listed as available and the run lock's name are one rule
    (pipeline.store.artifacts.dataset_name): a .csv file is named by its stem, as before; a file
    without .csv keeps its whole name, as its run lock always did."""
    src = generate_ohlcv(200, seed=3)
    write_ohlcv_csv(src, tmp_path / "my.data.csv")
    upper = write_ohlcv_csv(src, tmp_path / "other" / "SOL.CSV")
    plain = write_ohlcv_csv(src, tmp_path / "prices.txt")
    assert load_dataset("my.data", tmp_path)[1].name == "my.data"
    assert load_dataset(str(upper), tmp_path)[1].name == "SOL"
    assert load_dataset(str(plain), tmp_path)[1].name == dataset_name(str(plain)) == "prices.txt"
    assert available_datasets(tmp_path) == ["my.data"]


def test_resolve_name_path_and_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ddir = tmp_path / "datasets"
    ddir.mkdir()
    target = _csv(ddir, [HEADER, *_rows()], "ABC.csv")
    _csv(ddir, [HEADER, *_rows()], "OTHER.csv")
    assert resolve_dataset_path("ABC", ddir) == target
    assert resolve_dataset_path(str(target), ddir) == target
    assert resolve_dataset_path(str(ddir / "ABC"), ddir) == target  # path without .csv
    monkeypatch.chdir(tmp_path)
    assert resolve_dataset_path("datasets/ABC.csv", ddir) == Path("datasets/ABC.csv")
    with pytest.raises(DatasetError) as exc:
        resolve_dataset_path("NOPE", ddir)
    msg = str(exc.value)
    assert "'NOPE' not found" in msg and str(ddir / "NOPE.csv") in msg
    assert "available in" in msg and "ABC, OTHER" in msg


def test_directory_given_as_dataset_says_is_a_directory(tmp_path: Path) -> None:
    # A folder passed as --dataset used to say "not found".
    ddir = tmp_path / "datasets"
    (ddir / "SUB").mkdir(parents=True)
    folder = tmp_path / "candles"
    folder.mkdir()
    for given in (str(folder), str(ddir / "SUB"), "SUB"):
        with pytest.raises(DatasetError) as exc:
            resolve_dataset_path(given, ddir)
        msg = str(exc.value)
        assert "is a directory" in msg and "expected a CSV file" in msg, msg
        assert "not found" not in msg
    with pytest.raises(DatasetError, match=rf"{folder}: is a directory"):
        load_dataset(str(folder), ddir)


# ---------------------------------------------------------------- timestamp formats


@pytest.mark.parametrize(
    ("cells", "expect_note"),
    [
        (["2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"], False),
        (["2024-01-01T00:00:00+00:00", "2024-01-01T01:00:00+00:00"], False),
        (["2024-01-01T02:00:00+02:00", "2024-01-01T03:00:00+02:00"], False),
        (["2024-01-01T00:00:00", "2024-01-01T01:00:00"], True),
        (["2024-01-01 00:00:00", "2024-01-01 01:00:00"], True),
        (["2024-01-01 00:00", "2024-01-01 01:00"], True),
        (["1704067200", "1704070800"], False),
        (["1704067200.0", "1704070800.0"], False),
        (["1704067200000", "1704070800000"], False),
        (["1704067200000000", "1704070800000000"], False),
        (["1704067200000000000", "1704070800000000000"], False),
    ],
)
def test_timestamp_formats(tmp_path: Path, cells: list[str], expect_note: bool) -> None:
    path = _csv(tmp_path, [HEADER] + [f"{c},100,102,98,101,5" for c in cells])
    df, info = load_dataset(str(path))
    expected = pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00"], utc=True).as_unit("ns")
    assert list(df["timestamp"]) == list(expected)
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert any("no UTC offset" in w for w in info.warnings) == expect_note


def test_unix_units_never_guessed_wrong(tmp_path: Path) -> None:
    # 2024 in milliseconds must not become year ~56000; in seconds must not become 1970.
    ms = _csv(tmp_path, [HEADER, "1717200000000,1,2,0.5,1,1", "1717203600000,1,2,0.5,1,1"], "m.csv")
    s = _csv(tmp_path, [HEADER, "1717200000,1,2,0.5,1,1", "1717203600,1,2,0.5,1,1"], "s.csv")
    for path in (ms, s):
        df, _ = load_dataset(str(path))
        assert df["timestamp"].iloc[0] == pd.Timestamp("2024-06-01", tz="UTC")


def test_mixed_unix_units_is_an_error(tmp_path: Path) -> None:
    path = _csv(tmp_path, [HEADER, "1704067200,1,2,0.5,1,1", "1704070800000,1,2,0.5,1,1"])
    msg = _error(path)
    assert "data.csv" in msg and "mixes unix time units (s, ms)" in msg and "line 3" in msg


def test_stray_text_in_unix_column_names_the_line(tmp_path: Path) -> None:
    msg = _error(_csv(tmp_path, [HEADER, "1704067200,1,2,0.5,1,1", "n/a?,1,2,0.5,1,1"]))
    assert "unparseable timestamps at line 3 ('n/a?')" in msg and "line 2" in msg


def test_small_number_is_not_a_unix_time(tmp_path: Path) -> None:
    msg = _error(_csv(tmp_path, [HEADER, "17,1,2,0.5,1,1", "18,1,2,0.5,1,1"]))
    assert "column 'timestamp'" in msg and "not unix times" in msg and "lines 2 (17), 3 (18)" in msg


# ---------------------------------------------------------------- export quirks


def test_bom_banner_aliases_and_volume_pick(tmp_path: Path) -> None:
    # CryptoDataDownload layout: URL banner, newest first, unix + date, two volume columns.
    text = (
        "https://www.CryptoDataDownload.com\n"
        "unix,date,symbol,open,high,low,close,Volume BTC,Volume EUR,tradecount\n"
        "1704070800,2024-01-01 01:00:00,BTC/EUR,101,103,100,102,2.5,255,10\n"
        "1704067200,2024-01-01 00:00:00,BTC/EUR,100,102,99,101,1.5,151,9\n"
    )
    path = _write(tmp_path, text, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    df, info = load_dataset(str(path))
    assert list(df["close"]) == [101.0, 102.0]
    assert list(df["volume"]) == [1.5, 2.5]
    assert df["timestamp"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")
    joined = " | ".join(info.warnings)
    assert "skipped 1 line(s) above the header" in joined
    assert "several volume columns ('Volume BTC', 'Volume EUR'); used 'Volume BTC'" in joined
    assert "timestamp taken from column 'date'" in joined
    assert info.n_sorted_out_of_order == 1 and "sorted ascending" in joined


@pytest.mark.parametrize(
    "header",
    [
        " Timestamp , OPEN ,High,low,Close,VOLUME",
        "Date,Open,High,Low,Close,Volume",
        "open_time,o,h,l,c,v",
        "datetime,open,high,low,close,vol",
        "Time (UTC),Open,High,Low,Close,Volume_BTC",
    ],
)
def test_header_aliases(tmp_path: Path, header: str) -> None:
    path = _csv(tmp_path, [header, "2024-01-01T00:00:00Z,1,2,0.5,1.5,3"])
    df, _ = load_dataset(str(path))
    assert list(df.columns) == list(COLUMNS)
    assert df.iloc[0, 1:].tolist() == [1.0, 2.0, 0.5, 1.5, 3.0]


def test_unnamed_index_column_and_extra_columns(tmp_path: Path) -> None:
    pandas_export = _csv(
        tmp_path,
        [",timestamp,open,high,low,close,volume,symbol", "0,2024-01-01,1,2,0.5,1,3,X"],
        "a.csv",
    )
    explicit = _csv(
        tmp_path, ["Unnamed: 0,timestamp,open,high,low,close,volume", "0,2024-01-01,1,2,0.5,1,3"]
    )
    for path in (pandas_export, explicit):
        df, _ = load_dataset(str(path))
        assert list(df.columns) == list(COLUMNS) and df["volume"].iloc[0] == 3.0


def test_headerless_binance_klines_semicolons_and_blank_lines(tmp_path: Path) -> None:
    binance = _csv(
        tmp_path,
        [
            "1704067200000,1,2,0.5,1,3,1704070799999,3,10,1,1,0",
            "1704070800000,1,2,0.5,1,4,1704074399999,4,10,1,1,0",
        ],
        "k.csv",
    )
    df, info = load_dataset(str(binance))
    assert list(df["volume"]) == [3.0, 4.0] and "no header line" in info.warnings[0]
    semi = _csv(tmp_path, ["timestamp;open;high;low;close;volume", "2024-01-01;1;2;0.5;1;3", ""])
    assert load_dataset(str(semi))[0]["high"].iloc[0] == 2.0
    blank = _csv(tmp_path, [HEADER, _rows(2)[0], "", _rows(2)[1], "oops,1,2,0.5,1,1"], "b.csv")
    assert "line 5 ('oops')" in _error(blank)  # line numbers still count the blank line


def test_pandas_to_csv_with_datetime_index(tmp_path: Path) -> None:
    # DataFrame.to_csv() writes the unnamed DatetimeIndex under an empty first header cell; before,
    # this failed with "missing column(s) timestamp".
    idx = pd.date_range("2017-04-19 09:00", periods=4, freq="h")
    frame = pd.DataFrame(
        {
            "Open": [1.0716, 1.0720, 1.0718, 1.0722],
            "High": [1.0725, 1.0728, 1.0726, 1.0730],
            "Low": [1.0710, 1.0712, 1.0711, 1.0715],
            "Close": [1.0720, 1.0718, 1.0722, 1.0724],
            "Volume": [100, 120, 90, 110],
        },
        index=idx,
    )
    path = tmp_path / "eurusd.csv"
    frame.to_csv(path)
    assert path.read_text().splitlines()[:2] == [
        ",Open,High,Low,Close,Volume",
        "2017-04-19 09:00:00,1.0716,1.0725,1.071,1.072,100",
    ]
    df, info = load_dataset(str(path))
    assert list(df.columns) == list(COLUMNS)
    assert df["timestamp"].iloc[0] == pd.Timestamp("2017-04-19 09:00", tz="UTC")
    assert df["close"].tolist() == [1.0720, 1.0718, 1.0722, 1.0724]
    assert info.interval_seconds == 3600
    assert any("unnamed first column" in w for w in info.warnings)
    # a tz-aware index (written with its offset) works the same way
    frame.index = idx.tz_localize("UTC")
    frame.to_csv(path)
    assert load_dataset(str(path))[0]["timestamp"].iloc[-1] == pd.Timestamp(
        "2017-04-19 12:00", tz="UTC"
    )


def test_unnamed_row_counter_is_not_a_timestamp(tmp_path: Path) -> None:
    # An unnamed first column holding only a row counter (to_csv of a RangeIndex) stays rejected.
    counter = _csv(tmp_path, [",open,high,low,close,volume", "0,1,2,0.5,1,3", "1,1,2,0.5,1,3"])
    msg = _error(counter)
    assert "missing column(s) timestamp" in msg
    assert "found columns: 'open', 'high', 'low', 'close', 'volume'" in msg
    text = _csv(tmp_path, [",open,high,low,close,volume", "a,1,2,0.5,1,3"], "t.csv")
    assert "missing column(s) timestamp" in _error(text)


# ---------------------------------------------------------------- one error per defect


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    assert "empty.csv: file is empty" in _error(_write(tmp_path, "", "empty.csv"))
    assert "no data rows below the header" in _error(_write(tmp_path, HEADER + "\n", "h.csv"))


def test_missing_column_lists_found_and_expected(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["timestamp,open,high,low,close", "2024-01-01,1,2,0.5,1"])
    msg = _error(path)
    assert msg.startswith(f"{path}: missing column(s) volume")
    assert "found columns: 'timestamp', 'open', 'high', 'low', 'close'" in msg
    assert "volume: volume/vol" in msg


@pytest.mark.parametrize(
    ("row", "column", "fragment"),
    [
        ("not-a-date,1,2,0.5,1,1", "timestamp", "unparseable timestamps at line 3 ('not-a-date')"),
        ("2024-01-01T01:00:00Z,abc,2,0.5,1,1", "open", "non-numeric values at line 3 ('abc')"),
        ("2024-01-01T01:00:00Z,1,2,0.5,1,x", "volume", "non-numeric values at line 3 ('x')"),
        ("2024-01-01T01:00:00Z,1,2,0.5,1,inf", "volume", "non-finite values at line 3"),
        ("2024-01-01T01:00:00Z,0,2,0,1,1", "open", "non-positive prices at line 3 (0)"),
        ("2024-01-01T01:00:00Z,1,2,-0.5,1,1", "low", "non-positive prices at line 3 (-0.5)"),
        ("2024-01-01T01:00:00Z,1,2,0.5,1,-3", "volume", "negative at line 3 (-3)"),
        ("2024-01-01T01:00:00Z,1,,0.5,1,1", "high", "empty or NA cells in column 'high' at line 3"),
        ("2024-01-01T01:00:00Z,1,2,0.5,NaN,1", "close", "'close' at line 3"),
    ],
)
def test_bad_cell_names_file_column_and_line(
    tmp_path: Path, row: str, column: str, fragment: str
) -> None:
    path = _csv(tmp_path, [HEADER, "2024-01-01T00:00:00Z,1,2,0.5,1,1", row], "bad.csv")
    msg = _error(path)
    assert msg.startswith(f"{path}: ") and column in msg and fragment in msg
    assert "\n" not in msg


def test_high_below_low_and_open_close_outside_range(tmp_path: Path) -> None:
    base = "2024-01-01T00:00:00Z,1,2,0.5,1,1"
    msg = _error(_csv(tmp_path, [HEADER, base, "2024-01-01T01:00:00Z,1,0.5,2,1,1"]))
    assert "data.csv: high < low at line 3 (first: high 0.5 < low 2)" in msg
    msg = _error(_csv(tmp_path, [HEADER, base, "2024-01-01T01:00:00Z,3,2,0.5,1,1"]))
    assert "open outside [low, high] at line 3 (first: open 3 not in [0.5, 2])" in msg
    msg = _error(_csv(tmp_path, [HEADER, base, "2024-01-01T01:00:00Z,1,2,0.5,0.4,1"]))
    assert "close outside [low, high] at line 3" in msg


def test_many_bad_rows_listed_up_to_five(tmp_path: Path) -> None:
    rows = [f"2024-01-01T{h:02d}:00:00Z,1,2,0.5,1,-1" for h in range(9)]
    msg = _error(_csv(tmp_path, [HEADER, *rows]))
    assert "at lines 2 (-1), 3 (-1), 4 (-1), 5 (-1), 6 (-1) and 4 more" in msg


def test_conflicting_duplicate_timestamp_is_an_error(tmp_path: Path) -> None:
    rows = _rows(4)
    rows.append(rows[1].replace(",10", ",99"))  # same time as line 3, other volume
    msg = _error(_csv(tmp_path, [HEADER, *rows]))
    assert "duplicate timestamps with different values" in msg
    assert "2024-01-01T01:00:00+00:00 on lines 3, 6" in msg


def test_out_of_order_sorted_and_exact_duplicates_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = _rows(5)
    shuffled = [rows[0], rows[2], rows[1], rows[3], rows[3], rows[4], rows[0]]
    path = _csv(tmp_path, [HEADER, *shuffled])
    with caplog.at_level(logging.WARNING, logger="pipeline.data.load"):
        df, info = load_dataset(str(path))
    assert len(df) == 5 and df["timestamp"].is_monotonic_increasing
    assert list(df["open"]) == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert isinstance(df.index, pd.RangeIndex)
    assert info.n_sorted_out_of_order == 2  # 102 -> 101 and 104 -> 100
    assert info.n_duplicates_dropped == 2
    assert any("dropped 2 exact duplicate row(s) at lines 6, 8" in w for w in info.warnings)
    assert "sorted ascending" in caplog.text and "exact duplicate" in caplog.text


def test_gaps_reported_not_filled(tmp_path: Path) -> None:
    rows = _rows(10)
    kept = rows[:3] + rows[5:8] + rows[9:]  # two holes: 2 bars and 1 bar missing
    df, info = load_dataset(str(_csv(tmp_path, [HEADER, *kept])))
    assert len(df) == 7
    assert info.interval_seconds == 3600.0
    assert info.n_gaps == 2 and info.largest_gap_seconds == 3 * 3600.0
    assert any("2 gap(s) in the 1h time grid, largest 3h" in w for w in info.warnings)
    assert "2 gaps (largest 3h)" in info.summary()


def test_dataset_info_is_a_dataclass_with_defaults() -> None:
    t = pd.Timestamp("2024-01-01", tz="UTC")
    info = DatasetInfo("x", Path("x.csv"), "0" * 64, 1, t, t, 0.0, 0, 0.0)
    assert info.warnings == [] and info.n_duplicates_dropped == 0


def test_cli_prints_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _csv(tmp_path, [HEADER, "2024-01-01T00:00:00Z,1,2,0.5,1,-1"], "neg.csv")

    def body() -> int:
        load_dataset(str(path))
        return 0

    assert issubclass(DatasetError, PipelineError)
    assert run_cli(body) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {path}: column 'volume' is negative at line 2 (-1)")
    assert "Traceback" not in captured.err + captured.out
