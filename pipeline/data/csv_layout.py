"""The CSV layer of :mod:`pipeline.data.load`: find the table in the file (separator, banner,
header), map the header names to the six columns and parse the timestamps and numbers.

Every problem is one :class:`DatasetError` naming the file, the column and the CSV line numbers
(1-based, counted like a text editor: the header of a plain file is line 1, its first data row
line 2).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.common import PipelineError

COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
MAX_LISTED = 5
"""How many offending lines / values an error message lists before "and N more"."""

MAX_BANNER_LINES = 3
"""Lines above the header that may be a banner (e.g. ``https://www.CryptoDataDownload.com``)."""

# Normalised header name (lower case, runs of space/_/-/./parentheses -> "_") -> role.
# Order matters within a role: the first alias present wins (e.g. Binance ``open_time`` over
# ``close_time``, which is deliberately absent: a bar is stamped with its open time).
_ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": (
        "timestamp",
        "datetime",
        "date_time",
        "date",
        "time",
        "open_time",
        "opentime",
        "timestamp_ms",
        "timestamp_s",
        "time_utc",
        "date_utc",
        "datetime_utc",
        "unix",
        "unix_timestamp",
        "unix_time",
        "ts",
    ),
    "open": ("open", "o", "open_price", "opening_price"),
    "high": ("high", "h", "high_price", "max"),
    "low": ("low", "l", "low_price", "min"),
    "close": ("close", "c", "close_price", "closing_price", "last"),
    "volume": ("volume", "vol", "v", "base_volume", "volume_base"),
}
_VOLUME_PREFIXES = ("volume", "vol_")
_UNNAMED = re.compile(r"^(unnamed_\d+|index|)$")

# Unix-time magnitude bands: a value in [lo, hi) is read in that unit. Seconds cover 1973..5138,
# so a 2024 millisecond stamp (1.7e12) can never be read as seconds (year 56000) and a 2024
# second stamp (1.7e9) never as milliseconds (1970).
_UNIX_UNITS: tuple[tuple[str, float, float], ...] = (
    ("s", 1e8, 1e11),
    ("ms", 1e11, 1e14),
    ("us", 1e14, 1e17),
    ("ns", 1e17, 1e20),
)

# Binance kline files (data.binance.vision) have no header; their first six fields are these.
_BINANCE_KLINE_COLUMNS = COLUMNS


class DatasetError(PipelineError):
    """A dataset file is missing or malformed; the message names file, column and CSV lines."""


def _fmt_lines(lines: np.ndarray, values: np.ndarray | None = None) -> str:
    """``lines 4, 9 ('abc'), ... and 12 more`` for the first :data:`MAX_LISTED` entries."""
    lines = np.asarray(lines)
    shown = []
    for i in range(min(len(lines), MAX_LISTED)):
        item = str(int(lines[i]))
        if values is not None:
            v = values[i]
            item += f" ({str(v)[:30]!r})" if isinstance(v, str) else f" ({float(v):g})"
        shown.append(item)
    text = ("line " if len(lines) == 1 else "lines ") + ", ".join(shown)
    if len(lines) > MAX_LISTED:
        text += f" and {len(lines) - MAX_LISTED} more"
    return text


def _normalise(name: str) -> str:
    """Header cell -> lookup key: ``' Volume BTC '`` -> ``volume_btc``, ``'Date (UTC)'`` ->
    ``date_utc``, ``'Unnamed: 0'`` -> ``unnamed_0``."""
    key = name.replace("\ufeff", "").strip().lower()
    key = re.sub(r"[\s_\-.:()\[\]/]+", "_", key)
    return key.strip("_")


# ---------------------------------------------------------------- reading


@dataclass
class _Layout:
    """Where the table starts in the file and how to split it."""

    sep: str
    skiprows: int  # banner lines above the header (or above the first row if headerless)
    has_header: bool
    first_data_line: int  # 1-based file line of the first data row
    notes: list[str]


def _sniff_layout(path: Path, shown: str) -> _Layout:
    """Find the separator, banner lines and header from the first lines of the file."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            head = [f.readline() for _ in range(MAX_BANNER_LINES + 1)]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{shown}: not a UTF-8 text file ({exc.reason})") from None
    except OSError as exc:
        raise DatasetError(f"{shown}: cannot read ({exc.strerror})") from None
    if not any(line.strip() for line in head):
        raise DatasetError(f"{shown}: file is empty (expected a CSV header {','.join(COLUMNS)})")
    notes: list[str] = []
    for i, line in enumerate(head):
        text = line.strip()
        if not text:
            continue
        counts = {sep: text.count(sep) for sep in (",", ";", "\t")}
        sep = max(counts, key=lambda s: counts[s])
        looks_like_banner = counts[sep] == 0 or text.lower().startswith(("http://", "https://"))
        if looks_like_banner:
            continue
        if i:
            notes.append(f"skipped {i} line(s) above the header: {head[0].strip()[:60]!r}")
        cells = next(csv.reader([text], delimiter=sep))
        numeric = sum(_is_number(c) for c in cells)
        has_header = numeric < len(cells) - 1 or len(cells) < len(COLUMNS)
        if not has_header:
            notes.append(
                "no header line; assumed Binance kline column order "
                "(open_time, open, high, low, close, volume, ...)"
            )
        return _Layout(
            sep=sep,
            skiprows=i,
            has_header=has_header,
            first_data_line=i + (2 if has_header else 1),
            notes=notes,
        )
    raise DatasetError(
        f"{shown}: no CSV header found in the first {len(head)} lines "
        f"(expected a line like {','.join(COLUMNS)})"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_table(path: Path, shown: str, layout: _Layout) -> pd.DataFrame:
    """Read the table with the C parser; blank lines are kept (then dropped) so that frame
    position ``i`` is file line ``layout.first_data_line + i`` exactly."""
    try:
        df = pd.read_csv(
            path,
            sep=layout.sep,
            skiprows=layout.skiprows,
            header=0 if layout.has_header else None,
            encoding="utf-8-sig",
            skip_blank_lines=False,
            engine="c",
            low_memory=False,
        )
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{shown}: file is empty") from None
    except pd.errors.ParserError as exc:
        detail = str(exc).strip()
        raise DatasetError(f"{shown}: not a well-formed CSV table ({detail})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{shown}: not a UTF-8 text file ({exc.reason})") from None
    if not layout.has_header:
        if df.shape[1] < len(COLUMNS):
            raise DatasetError(
                f"{shown}: no header and only {df.shape[1]} columns "
                f"(expected a header {','.join(COLUMNS)})"
            )
        df = df.iloc[:, : len(COLUMNS)]
        df.columns = list(_BINANCE_KLINE_COLUMNS)
    # With an unnamed index column pandas may move the first field into the index; positional
    # bookkeeping only needs the row order, so drop it.
    return df.reset_index(drop=True)


def _map_columns(columns: list[str], shown: str) -> tuple[dict[str, int], list[str]]:
    """Header names -> column position of each role, plus warnings for ambiguous picks."""
    keys = [_normalise(str(c)) for c in columns]
    mapping: dict[str, int] = {}
    notes: list[str] = []
    for role, aliases in _ALIASES.items():
        for alias in aliases:
            hits = [i for i, k in enumerate(keys) if k == alias]
            if hits:
                mapping[role] = hits[0]
                if len(hits) > 1:
                    notes.append(
                        f"several columns named like {role!r} "
                        f"({', '.join(repr(columns[i]) for i in hits)}); used the first"
                    )
                if role == "timestamp":
                    others = [columns[i] for i, k in enumerate(keys) if k in aliases and k != alias]
                    if others:
                        notes.append(
                            f"timestamp taken from column {columns[hits[0]]!r} "
                            f"(also present: {', '.join(repr(o) for o in others)})"
                        )
                break
        if role == "volume" and role not in mapping:
            # Exchange exports name volume by currency: "Volume BTC", "Volume USDT",
            # "volumefrom"/"volumeto". The first one is the base currency in every export seen.
            hits = [i for i, k in enumerate(keys) if k.startswith(_VOLUME_PREFIXES)]
            if hits:
                mapping[role] = hits[0]
                if len(hits) > 1:
                    notes.append(
                        f"several volume columns ({', '.join(repr(columns[i]) for i in hits)}); "
                        f"used {columns[hits[0]]!r}"
                    )
    missing = [r for r in COLUMNS if r not in mapping]
    if missing:
        found = ", ".join(repr(str(c)) for c in columns if not _UNNAMED.match(_normalise(str(c))))
        expected = "; ".join(f"{r}: {'/'.join(_ALIASES[r][:4])}" for r in missing)
        raise DatasetError(
            f"{shown}: missing column(s) {', '.join(missing)} (accepted names {expected} ..., "
            f"any case); found columns: {found or 'none'}"
        )
    return mapping, notes


# ---------------------------------------------------------------- parsing


def _parse_numbers(raw: pd.Series, column: str, lines: np.ndarray, shown: str) -> np.ndarray:
    """A price / volume column as float64; non-numeric or infinite cells are an error."""
    if raw.dtype.kind in "iuf":
        values = raw.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise DatasetError(
                f"{shown}: column {column!r} has non-finite values at {_fmt_lines(lines[bad])}"
            )
        return values
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        shown_vals = raw.to_numpy()[bad].astype(str)
        raise DatasetError(
            f"{shown}: column {column!r} has non-numeric values at "
            f"{_fmt_lines(lines[bad], shown_vals)} (expected numbers like 42000.5)"
        )
    return values


def _unix_unit(values: np.ndarray, lines: np.ndarray, column: str, shown: str) -> str:
    """The one unix-time unit that all ``values`` fall into, decided by magnitude."""
    mags = np.abs(values)
    units = np.full(len(values), -1)
    for idx, (_, lo, hi) in enumerate(_UNIX_UNITS):
        units[(mags >= lo) & (mags < hi)] = idx
    out_of_range = units < 0
    if out_of_range.any():
        raise DatasetError(
            f"{shown}: column {column!r} has numbers that are not unix times at "
            f"{_fmt_lines(lines[out_of_range], values[out_of_range])} (expected seconds, "
            "milliseconds, microseconds or nanoseconds since 1970 after 1973, or ISO 8601 text)"
        )
    present = np.unique(units)
    if len(present) > 1:
        names = [_UNIX_UNITS[i][0] for i in present]
        first_other = np.flatnonzero(units != units[0])
        raise DatasetError(
            f"{shown}: column {column!r} mixes unix time units ({', '.join(names)}); line "
            f"{int(lines[0])} reads as {_UNIX_UNITS[units[0]][0]} but "
            f"{_fmt_lines(lines[first_other], values[first_other])} do not"
        )
    return _UNIX_UNITS[int(present[0])][0]


def _parse_timestamps(
    raw: pd.Series, column: str, lines: np.ndarray, shown: str, notes: list[str]
) -> pd.Series:
    """ISO 8601 text or unix numbers -> datetime64[ns, UTC]; unparseable cells are an error."""
    numeric: np.ndarray | None = None
    if raw.dtype.kind in "iuf":
        numeric = raw.to_numpy(dtype=np.float64)
    elif _is_number(str(raw.iloc[0])):
        # The first row decides: a column of unix numbers as text (a stray cell made pandas keep
        # it as strings). Trying to_numeric on ISO text would cost a full pass for nothing.
        as_num = pd.to_numeric(raw.astype(str).str.strip(), errors="coerce")
        bad = as_num.isna().to_numpy()
        if bad.any():
            raise DatasetError(
                f"{shown}: column {column!r} has unparseable timestamps at "
                f"{_fmt_lines(lines[bad], raw.astype(str).to_numpy()[bad])} (expected unix "
                f"numbers like the {raw.iloc[0]} on line {int(lines[0])})"
            )
        numeric = as_num.to_numpy(dtype=np.float64)
    if numeric is not None:
        unit = _unix_unit(numeric, lines, column, shown)
        if raw.dtype.kind in "iu":
            ts = pd.to_datetime(raw.to_numpy(dtype=np.int64), unit=unit, utc=True)
        else:
            ts = pd.to_datetime(numeric, unit=unit, utc=True)
        notes.append(f"timestamps read as unix {unit} from column {column!r}")
        return pd.Series(ts).dt.as_unit("ns")
    text = raw.astype(str)
    ts = _iso_to_utc(text)
    bad = ts.isna().to_numpy()
    if bad.any():
        # Stray spaces around a cell are harmless; strip only when something failed (a full
        # .str.strip() pass costs as much as the parse itself).
        text = text.str.strip()
        ts = _iso_to_utc(text)
        bad = ts.isna().to_numpy()
    if bad.any():
        raise DatasetError(
            f"{shown}: column {column!r} has unparseable timestamps at "
            f"{_fmt_lines(lines[bad], text.to_numpy()[bad])} (expected ISO 8601 like "
            "2024-01-01T00:00:00Z or unix seconds / milliseconds)"
        )
    sample = text.iloc[0].strip()
    if not re.search(r"(Z|[+-]\d\d:?\d\d)$", sample, flags=re.IGNORECASE):
        notes.append(f"timestamps in column {column!r} have no UTC offset; read as UTC")
    return ts.dt.as_unit("ns")


def _iso_to_utc(text: pd.Series) -> pd.Series:
    """ISO 8601 strings -> UTC timestamps, NaT where a cell does not parse."""
    try:
        return pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    except (ValueError, OverflowError):
        return pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")


def _unnamed_timestamp_column(
    table: pd.DataFrame, lines: np.ndarray, shown: str
) -> tuple[pd.Series, list[str]] | None:
    """The parsed timestamps of an unnamed first column holding date-time text, or ``None``.

    ``DataFrame.to_csv()`` of a frame with an unnamed DatetimeIndex writes the timestamps under an
    empty first header cell (``,Open,High,Low,Close,Volume``), the most common way candles are
    saved from Python. Only text that parses as ISO 8601 date-times in every row is taken; numbers
    are not, so an unnamed row counter (``to_csv`` of a RangeIndex) stays an unnamed column and the
    file still fails with "missing column(s) timestamp".
    """
    keys = [_normalise(str(c)) for c in table.columns]
    if not keys or not _UNNAMED.match(keys[0]) or any(k in _ALIASES["timestamp"] for k in keys):
        return None
    raw = table.iloc[:, 0]
    if raw.dtype.kind in "iufb" or raw.isna().any() or _is_number(str(raw.iloc[0])):
        return None
    notes: list[str] = []
    try:
        ts = _parse_timestamps(raw, "timestamp", lines, shown, notes)
    except DatasetError:
        return None
    notes.insert(
        0,
        "timestamps taken from the unnamed first column (the index of a pandas "
        "DataFrame.to_csv() export)",
    )
    return ts, notes
