"""What a download is asked for and what it found: the request, the result and its report.

:class:`DownloadRequest` names the dataset
(:func:`pipeline.store.download_names.exchange_dataset_name`), :class:`DownloadResult` carries the
counters of the checks and the report printed after the download; :func:`timeframe_ms` reads
ccxt's timeframe notation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from pipeline.common import PipelineError
from pipeline.store.download_names import exchange_dataset_name

_UNITS_MS = {
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
    "M": 2_592_000_000,  # 30 days, as ccxt counts a month
    "y": 31_536_000_000,
}


class DownloadError(PipelineError):
    """A download that cannot go on; the message is the one line the user sees."""


# ---------------------------------------------------------------- request and result


@dataclass(frozen=True)
class DownloadRequest:
    """What to download: exchange id, ccxt symbol and timeframe, first and last day (UTC)."""

    exchange: str
    symbol: str
    timeframe: str
    start: datetime
    end: datetime  # the last day included (midnight UTC of that day)

    @property
    def name(self) -> str:
        """The dataset name (:func:`pipeline.store.download_names.exchange_dataset_name`)."""
        return exchange_dataset_name(self.symbol, self.timeframe, self.start, self.end)

    @property
    def start_ms(self) -> int:
        """The first candle's open time, epoch milliseconds."""
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        """Just after the last day: candles open before this (exclusive), epoch milliseconds."""
        return int((self.end + timedelta(days=1)).timestamp() * 1000)

    def identity(self) -> dict[str, str]:
        """The fields a partial download must match to be continued."""
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "start": f"{self.start:%Y-%m-%d}",
            "end": f"{self.end:%Y-%m-%d}",
        }


@dataclass
class Gap:
    """Missing candles between two candles received: ``after`` and ``before`` are open times."""

    after: pd.Timestamp
    before: pd.Timestamp
    missing: int

    def describe(self) -> str:
        """``12 candles after 2024-03-01 10:00 (next 2024-03-01 23:00)``."""
        fmt = "%Y-%m-%d %H:%M"
        return (
            f"{self.missing} candle{'s' if self.missing != 1 else ''} after "
            f"{self.after.strftime(fmt)} (next {self.before.strftime(fmt)})"
        )


@dataclass
class DownloadResult:
    """What a download wrote and what its checks found."""

    path: Path
    name: str
    rows: int
    first: pd.Timestamp
    last: pd.Timestamp
    requests: int = 0
    retries: int = 0
    resumed_from: pd.Timestamp | None = None
    duplicates_dropped: int = 0
    out_of_order: int = 0
    open_candle_excluded: bool = False
    outside_range_dropped: int = 0
    missing: int = 0
    missing_at_start: int = 0
    missing_at_end: int = 0
    gaps: list[Gap] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def report_lines(self) -> list[str]:
        """The check report: one line each, printed after the download."""
        fmt = "%Y-%m-%d %H:%M"
        lines = [
            f"wrote {self.path}: {self.rows:,} candles, {self.first.strftime(fmt)} .. "
            f"{self.last.strftime(fmt)} UTC ({self.requests} requests, {self.retries} retries"
            + (f", resumed after {self.resumed_from.strftime(fmt)}" if self.resumed_from else "")
            + ")",
            f"duplicates dropped: {self.duplicates_dropped}; candles out of order sorted: "
            f"{self.out_of_order}; still-open last candle excluded: "
            f"{'yes' if self.open_candle_excluded else 'no'}",
        ]
        if self.missing:
            gaps = "; ".join(g.describe() for g in self.gaps)
            lines.append(
                f"missing candles (not filled): {self.missing:,} inside the range"
                + (f", largest gaps: {gaps}" if gaps else "")
            )
        else:
            lines.append("missing candles: none inside the range")
        if self.missing_at_start:
            lines.append(
                f"no candles before {self.first.strftime(fmt)}: {self.missing_at_start:,} "
                "candles missing at the start (the pair may be younger than --start, or the "
                "exchange serves no older candles: kraken's OHLC endpoint, e.g., only the most "
                "recent 720)"
            )
        if self.missing_at_end:
            lines.append(
                f"no candles after {self.last.strftime(fmt)}: {self.missing_at_end:,} candles "
                "missing at the end"
            )
        lines += self.notes
        return lines


def timeframe_ms(timeframe: str) -> int:
    """``1h`` -> 3,600,000 (ccxt's notation: ``s m h d w M y``; ``M`` is a month of 30 days)."""
    m = re.fullmatch(r"([1-9][0-9]*)([smhdwMy])", timeframe.strip())
    if m is None:
        raise DownloadError(
            f"--timeframe {timeframe!r}: expected ccxt's notation, a number and a unit (s, m, h, "
            "d, w, M for month, y), e.g. 1m, 15m, 1h, 4h, 1d"
        )
    return int(m.group(1)) * _UNITS_MS[m.group(2)]
