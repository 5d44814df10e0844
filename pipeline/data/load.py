"""Load an OHLCV CSV, accept the usual exchange-export quirks, validate it, and describe it.

``load_dataset`` returns a frame with exactly the columns ``timestamp`` (datetime64[ns, UTC]),
``open, high, low, close, volume`` (float64), sorted ascending with a RangeIndex, plus a
:class:`DatasetInfo` (hash, range, interval, gaps, what was fixed).

Accepted quirks: column names in any case / with spaces, common aliases (``date``, ``open_time``,
``Volume BTC``, ``o/h/l/c/v`` ...), extra columns (ignored), an unnamed index column (used as
the timestamp when it holds date-time text and no column is named like one: pandas
``DataFrame.to_csv()`` of a DatetimeIndex), a UTF-8 BOM,
a one-line URL banner above the header (CryptoDataDownload), ``;`` or tab separators, a header-less
Binance kline file, blank lines, and timestamps as ISO 8601 strings (any offset; no offset = UTC) or
unix seconds / milliseconds / microseconds / nanoseconds, the unit told apart by magnitude.

Fixed with a warning: rows out of time order (sorted) and exact duplicate rows (dropped). Reported,
never filled: gaps in the time grid. Everything else is one :class:`DatasetError` naming the file,
the column and the CSV line numbers (1-based, counted like a text editor: the header of a plain
file is line 1, its first data row line 2).
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.common import Paths, PipelineError, sha256_file
from pipeline.store.artifacts import DATASET_SUFFIX, dataset_file, dataset_name

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
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


@dataclass
class DatasetInfo:
    """What was loaded: identity (name, path, sha256), extent, bar spacing and what was fixed."""

    name: str
    path: Path
    sha256: str
    rows: int
    start: pd.Timestamp
    end: pd.Timestamp
    interval_seconds: float
    n_gaps: int
    largest_gap_seconds: float
    n_sorted_out_of_order: int = 0
    n_duplicates_dropped: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (path as string, timestamps as ISO 8601)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "rows": int(self.rows),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "interval_seconds": float(self.interval_seconds),
            "n_gaps": int(self.n_gaps),
            "largest_gap_seconds": float(self.largest_gap_seconds),
            "n_sorted_out_of_order": int(self.n_sorted_out_of_order),
            "n_duplicates_dropped": int(self.n_duplicates_dropped),
            "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        """One human line: name, rows, range, interval, gaps."""
        gaps = "no gaps"
        if self.n_gaps:
            gaps = f"{self.n_gaps} gaps (largest {_fmt_seconds(self.largest_gap_seconds)})"
        fmt = "%Y-%m-%d %H:%M"
        return (
            f"{self.name}: {self.rows:,} rows, {self.start.strftime(fmt)} .. "
            f"{self.end.strftime(fmt)} UTC, interval {_fmt_seconds(self.interval_seconds)}, {gaps}"
        )


# ---------------------------------------------------------------- small helpers


def _fmt_seconds(seconds: float) -> str:
    """``3600`` -> ``1h``, ``90`` -> ``1m30s``, ``86400 * 2`` -> ``2d``."""
    s = int(round(seconds))
    if s <= 0:
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    return "".join(parts)


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


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


# ---------------------------------------------------------------- path resolution


def available_datasets(datasets_dir: Path) -> list[str]:
    """Names (:func:`pipeline.store.artifacts.dataset_name`) of the ``*.csv`` files in
    ``datasets_dir`` (sorted; empty if it does not exist)."""
    if not datasets_dir.is_dir():
        return []
    found = datasets_dir.glob(f"*{DATASET_SUFFIX}")
    return sorted(dataset_name(p.name) for p in found if p.is_file())


def resolve_dataset_path(name_or_path: str, datasets_dir: Path) -> Path:
    """``NAME`` -> ``datasets_dir/NAME.csv``; an existing file path (with or without ``.csv``)
    also works. Raises :class:`DatasetError` listing the tried paths and the available datasets.
    """
    raw = str(name_or_path).strip()
    if not raw:
        raise DatasetError(
            f"no dataset given; available in {datasets_dir}: "
            f"{', '.join(available_datasets(datasets_dir)) or 'none'}"
        )
    given = Path(raw).expanduser()
    candidates: list[Path] = []
    if not given.is_absolute():
        candidates.append(dataset_file(datasets_dir, raw))
        candidates.append(datasets_dir / raw)
    candidates.append(given)
    if given.suffix.lower() != DATASET_SUFFIX:
        candidates.append(dataset_file(given.parent, given.name))
    for cand in candidates:
        if cand.is_file():
            return cand
    # A folder is there but is not a dataset: say so instead of "not found".
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is not None:
        csvs = sorted(p.name for p in folder.glob(f"*{DATASET_SUFFIX}") if p.is_file())
        inside = f"; CSV files in it: {', '.join(csvs[:MAX_LISTED])}" if csvs else ""
        more = f" and {len(csvs) - MAX_LISTED} more" if len(csvs) > MAX_LISTED else ""
        raise DatasetError(
            f"{folder}: is a directory (expected a CSV file or a dataset name){inside}{more}"
        )
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    available = ", ".join(available_datasets(datasets_dir)) or "none"
    raise DatasetError(
        f"dataset {raw!r} not found (tried {tried}); available in {datasets_dir}: {available}"
        + _download_hint(raw, datasets_dir)
    )


def _download_hint(raw: str, datasets_dir: Path) -> str:
    """``; download it with: python download_data.py ...`` for a missing dataset named like
    exchange candles (``ADA-EUR_1H_20240101-20251231``), else empty."""
    # Imported here: pipeline.data.download imports this module (it validates what it writes).
    from pipeline.data.download import download_command

    if Path(raw).name != raw:
        return ""  # a path names its own file; the downloader writes into datasets/
    default = Paths.from_root().datasets
    root = None if Path(datasets_dir).resolve() == default else Path(datasets_dir).resolve().parent
    cmd = download_command(raw, root)
    return f"; download it with: {cmd}" if cmd else ""


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


# ---------------------------------------------------------------- validation


def _check_values(df: pd.DataFrame, lines: np.ndarray, shown: str) -> None:
    """Positive prices, non-negative volume, high >= low, open and close within [low, high]."""
    o, h, lo, c, v = (df[col].to_numpy() for col in ("open", "high", "low", "close", "volume"))
    for col, arr in (("open", o), ("high", h), ("low", lo), ("close", c)):
        bad = arr <= 0
        if bad.any():
            raise DatasetError(
                f"{shown}: column {col!r} has non-positive prices at "
                f"{_fmt_lines(lines[bad], arr[bad])} (expected > 0)"
            )
    bad = v < 0
    if bad.any():
        raise DatasetError(
            f"{shown}: column 'volume' is negative at {_fmt_lines(lines[bad], v[bad])} "
            "(expected >= 0)"
        )
    bad = h < lo
    if bad.any():
        raise DatasetError(
            f"{shown}: high < low at {_fmt_lines(lines[bad])} "
            f"(first: high {h[bad][0]:g} < low {lo[bad][0]:g})"
        )
    for col, arr in (("open", o), ("close", c)):
        bad = (arr < lo) | (arr > h)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DatasetError(
                f"{shown}: {col} outside [low, high] at {_fmt_lines(lines[bad])} "
                f"(first: {col} {arr[i]:g} not in [{lo[i]:g}, {h[i]:g}])"
            )


def _check_missing_cells(
    table: pd.DataFrame, mapping: dict[str, int], lines: np.ndarray, shown: str
) -> None:
    """Empty / NA cells in any needed column are one error listing each column's lines."""
    parts = []
    for role in COLUMNS:
        isna = table.iloc[:, mapping[role]].isna().to_numpy()
        if isna.any():
            parts.append(f"{role!r} at {_fmt_lines(lines[isna])}")
    if parts:
        raise DatasetError(f"{shown}: empty or NA cells in column {'; '.join(parts)}")


def _sort_and_dedupe(
    df: pd.DataFrame, lines: np.ndarray, shown: str, notes: list[str]
) -> tuple[pd.DataFrame, np.ndarray, int, int]:
    """Sort by time (stable), drop exact duplicate rows, refuse conflicting duplicates."""
    ts = df["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    n_out_of_order = int(np.count_nonzero(ts[1:] < ts[:-1]))
    if n_out_of_order:
        order = np.argsort(ts, kind="stable")
        df = df.iloc[order].reset_index(drop=True)
        lines = lines[order]
        ts = ts[order]
        notes.append(
            f"rows were not in time order ({n_out_of_order} place(s) where a row is earlier "
            "than the row above it); sorted ascending"
        )
    n_dropped = 0
    same_ts = np.flatnonzero(ts[1:] == ts[:-1]) + 1  # rows equal in time to the row before
    if len(same_ts):
        values = df[list(PRICE_COLUMNS) + ["volume"]].to_numpy()
        # Compare every member of a run of equal timestamps with the first row of the run.
        run_start = np.flatnonzero(np.concatenate(([True], ts[1:] != ts[:-1])))
        first_of_run = run_start[np.searchsorted(run_start, np.arange(len(ts)), side="right") - 1]
        conflict = same_ts[(values[same_ts] != values[first_of_run[same_ts]]).any(axis=1)]
        if len(conflict):
            # One item per distinct timestamp, each listing at most MAX_LISTED lines: a file whose
            # rows all share one timestamp is one short line, not every line.
            stamps = list(dict.fromkeys(int(ts[i]) for i in conflict))
            items = []
            for t in stamps[:MAX_LISTED]:
                members = np.flatnonzero(ts == t)
                stamp = pd.Timestamp(t, tz="UTC").isoformat()
                items.append(f"{stamp} on {_fmt_lines(lines[members])}")
            extra = len(stamps) - MAX_LISTED
            more = f" and {extra} more timestamp(s)" if extra > 0 else ""
            raise DatasetError(
                f"{shown}: duplicate timestamps with different values: {'; '.join(items)}{more} "
                "(expected one row per timestamp)"
            )
        n_dropped = len(same_ts)
        notes.append(
            f"dropped {n_dropped} exact duplicate row(s) at {_fmt_lines(np.sort(lines[same_ts]))}"
        )
        keep = np.ones(len(ts), dtype=bool)
        keep[same_ts] = False
        df = df.iloc[keep].reset_index(drop=True)
        lines = lines[keep]
    return df, lines, n_out_of_order, n_dropped


def _grid_stats(ts: pd.Series) -> tuple[float, int, float, str | None]:
    """Median spacing (s), number of spacings above it, the largest, and a gap warning."""
    if len(ts) < 2:
        return 0.0, 0, 0.0, None
    ns = ts.to_numpy(dtype="datetime64[ns]").view(np.int64)
    diffs = np.diff(ns) / 1e9  # (N-1,) seconds
    interval = float(np.median(diffs))
    is_gap = diffs > interval
    n_gaps = int(np.count_nonzero(is_gap))
    largest = float(diffs.max()) if n_gaps else 0.0
    note = None
    if n_gaps:
        at = int(np.argmax(diffs))
        note = (
            f"{n_gaps} gap(s) in the {_fmt_seconds(interval)} time grid, largest "
            f"{_fmt_seconds(largest)} after {ts.iloc[at].isoformat()}; not filled"
        )
    return interval, n_gaps, largest, note


# ---------------------------------------------------------------- public entry point


_WARNED: set[tuple[str, str, str]] = set()
"""(file, its SHA-256, note) already logged as a warning in this process."""


def load_dataset(
    name_or_path: str, datasets_dir: Path | None = None
) -> tuple[pd.DataFrame, DatasetInfo]:
    """Load, normalise and validate an OHLCV CSV.

    Args:
        name_or_path: a dataset name (``datasets_dir/NAME.csv``) or a path to a CSV file.
        datasets_dir: where names are looked up; defaults to ``Paths.from_root().datasets``.

    Returns:
        ``(df, info)``: ``df`` has exactly the columns timestamp (datetime64[ns, UTC]), open, high,
        low, close, volume (float64), sorted ascending, RangeIndex 0..N-1.

    Raises:
        DatasetError: the file is missing or a check fails (one message per problem, naming the
            file, the column and the 1-based CSV line numbers).
    """
    ddir = datasets_dir if datasets_dir is not None else Paths.from_root().datasets
    path = resolve_dataset_path(name_or_path, Path(ddir))
    shown = _display(path)
    layout = _sniff_layout(path, shown)
    notes = list(layout.notes)
    table = _read_table(path, shown, layout)

    # Blank lines came through as all-NaN rows; drop them but keep each row's file line number.
    lines_all = layout.first_data_line + np.arange(len(table))  # (N_raw,)
    blank = table.isna().all(axis=1).to_numpy()
    if blank.any():
        table = table.iloc[~blank].reset_index(drop=True)
        lines_all = lines_all[~blank]
    if len(table) == 0:
        raise DatasetError(f"{shown}: no data rows below the header")
    lines = lines_all  # (N,) 1-based file line of each row

    adopted = _unnamed_timestamp_column(table, lines, shown)
    if adopted is not None:
        table = table.set_axis(["timestamp", *list(table.columns)[1:]], axis=1)
        notes.extend(adopted[1])
    mapping, map_notes = _map_columns([str(c) for c in table.columns], shown)
    notes.extend(map_notes)
    _check_missing_cells(table, mapping, lines, shown)

    ts_col = table.iloc[:, mapping["timestamp"]]
    if adopted is not None and mapping["timestamp"] == 0:
        timestamps = adopted[0]  # parsed once already, by the check above
    else:
        timestamps = _parse_timestamps(ts_col, str(ts_col.name), lines, shown, notes)
    df = pd.DataFrame({"timestamp": timestamps})
    for role in COLUMNS[1:]:
        src = table.iloc[:, mapping[role]]
        df[role] = _parse_numbers(src, role, lines, shown)
    _check_values(df, lines, shown)
    df, lines, n_sorted, n_dropped = _sort_and_dedupe(df, lines, shown, notes)
    interval, n_gaps, largest, gap_note = _grid_stats(df["timestamp"])
    if gap_note:
        notes.append(gap_note)

    warnings = [n for n in notes if not n.startswith("timestamps read as")]
    sha = sha256_file(path)
    for w in warnings:
        # Every step loads the dataset: a note about the file is a warning once per process
        # and file content, then DEBUG (it used to repeat 5x per run).
        key = (str(path), sha, w)
        level = logging.DEBUG if key in _WARNED else logging.WARNING
        _WARNED.add(key)
        log.log(level, "%s: %s", shown, w)
    for n in notes:
        if n.startswith("timestamps read as"):
            log.debug("%s: %s", shown, n)
    info = DatasetInfo(
        name=dataset_name(str(path)),  # the one naming rule
        path=path,
        sha256=sha,
        rows=len(df),
        start=df["timestamp"].iloc[0],
        end=df["timestamp"].iloc[-1],
        interval_seconds=interval,
        n_gaps=n_gaps,
        largest_gap_seconds=largest,
        n_sorted_out_of_order=n_sorted,
        n_duplicates_dropped=n_dropped,
        warnings=warnings,
    )
    log.info("%s", info.summary())
    return df, info
