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

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.common import Paths, sha256_file
from pipeline.data.csv_layout import (
    COLUMNS,
    MAX_LISTED,
    DatasetError,
    _fmt_lines,
    _map_columns,
    _parse_numbers,
    _parse_timestamps,
    _read_table,
    _sniff_layout,
    _unnamed_timestamp_column,
)
from pipeline.store.artifacts import DATASET_SUFFIX, dataset_file, dataset_name

log = logging.getLogger(__name__)

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")


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
    table, lines, notes = _read_rows(path, shown)
    df = _to_frame(table, lines, shown, notes)
    _check_values(df, lines, shown)
    df, lines, n_sorted, n_dropped = _sort_and_dedupe(df, lines, shown, notes)
    interval, n_gaps, largest, gap_note = _grid_stats(df["timestamp"])
    if gap_note:
        notes.append(gap_note)

    sha = sha256_file(path)
    warnings = _log_notes(path, shown, sha, notes)
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


def _read_rows(path: Path, shown: str) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """The raw table without its blank lines, each row's 1-based file line, and the layout's
    notes."""
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
    return table, lines_all, notes  # lines: (N,) 1-based file line of each row


def _to_frame(table: pd.DataFrame, lines: np.ndarray, shown: str, notes: list[str]) -> pd.DataFrame:
    """The six columns of ``table``, named and parsed: timestamps (UTC) and float64 numbers."""
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
    return df


def _log_notes(path: Path, shown: str, sha: str, notes: list[str]) -> list[str]:
    """Log what was fixed or noticed; returns the warnings (every note but how the timestamps
    were read)."""
    warnings = [n for n in notes if not n.startswith("timestamps read as")]
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
    return warnings
