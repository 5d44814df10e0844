"""Where paper trading's candles come from: a CSV played as if live (:class:`ReplaySource`) or
an exchange's public candles polled through ccxt's ``fetch_ohlcv`` (:class:`ExchangeSource`: no
API keys, no orders; the still-open candle dropped). Each yields every new closed candle with the
last ``history_bars`` candles before it, in time order, from the first one after a given time.

The exchange object, the clock and the sleep function are injectable (a test passes a fake
exchange and a fake clock). Imports numpy and pandas only; ccxt only when an exchange is made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import pandas as pd

from pipeline.common import PipelineError
from ppo_approach.runtime import CANDLE_COLUMNS, Decider

log = logging.getLogger(__name__)

FETCH_PAGE = 500
"""Candles asked per ``fetch_ohlcv`` call: within every major exchange's cap (500 to 1,000)."""
HISTORY_MARGIN = 5
"""Candles fetched beyond ``history_bars``, so that a gap at the start still leaves enough."""


class PaperError(PipelineError):
    """Paper trading cannot start or go on (the message is the one line the user sees)."""


def iso(stamp: Any) -> str:
    """A UTC timestamp as ``2024-05-13T17:00:00Z`` (as backtest.csv writes them)."""
    return pd.Timestamp(stamp).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, flag: str) -> pd.Timestamp:
    """An ISO date or time in UTC (naive means UTC); one error line naming ``flag``."""
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        raise PaperError(f"{flag} {text!r}: expected an ISO time, e.g. 2024-05-13T17:00") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@dataclass(frozen=True)
class Candle:
    """A newly closed candle: the last ``history_bars`` candles ending at it, and how late it
    came (seconds after its close when over one interval, else 0; None in a replay)."""

    window: pd.DataFrame
    late_seconds: float | None = None


class Source(Protocol):
    """Where candles come from: ``source`` (JSON, recorded in the state) and the candles."""

    source: dict[str, Any]

    def candles(self, after: pd.Timestamp | None) -> Iterator[Candle]:
        """Each closed candle after ``after`` (None: where a fresh run starts), in time order."""
        ...


# ---------------------------------------------------------------- sources


class ReplaySource:
    """A CSV played as if live: one candle at a time from ``start`` to ``end``."""

    def __init__(
        self,
        csv: str,
        decider: Decider,
        start: str | None = None,
        end: str | None = None,
        delay: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from pipeline.data.load import load_dataset

        self.frame, info = load_dataset(csv, None)
        self.history, self.delay, self.sleep = decider.history_bars, float(delay), sleep
        self.source: dict[str, Any] = {"kind": "replay", "csv": str(info.path.resolve())}
        want = float(decider.manifest["dataset"]["interval_seconds"])
        if abs(info.interval_seconds - want) > 1e-6:
            raise PaperError(
                f"--replay {csv}: {info.interval_seconds:g} s candles; the agent was trained on "
                f"{want:g} s candles"
            )
        if info.sha256 != decider.manifest["dataset"].get("dataset_sha256"):
            log.info("%s is not the file the agent was trained on (another SHA-256)", info.path)
        stamps = self.frame["timestamp"]
        backtest_start = pd.Timestamp(decider.manifest["backtest"]["start"])
        if start is not None:
            self.first = int(stamps.searchsorted(parse_time(start, "--start")))
        elif (stamps == backtest_start).any():
            self.first = int(stamps.searchsorted(backtest_start))
        else:
            self.first = self.history - 1  # the first candle with a whole history
        self.last = len(stamps) - 1
        if end is not None:
            self.last = int(stamps.searchsorted(parse_time(end, "--end"), side="right")) - 1
        if self.first > self.last:
            raise PaperError(f"--replay {csv}: no candle between --start and --end")
        if self.first < self.history - 1:
            raise PaperError(
                f"--start {iso(stamps.iloc[self.first])}: only {self.first + 1} candles up to it; "
                f"the agent needs {self.history}: start at {iso(stamps.iloc[self.history - 1])} "
                "or later"
            )

    def candles(self, after: pd.Timestamp | None) -> Iterator[Candle]:
        stamps = self.frame["timestamp"]
        first = self.first if after is None else int(stamps.searchsorted(after, side="right"))
        for i in range(first, self.last + 1):
            if i > first and self.delay > 0:
                self.sleep(self.delay)
            yield Candle(self.frame.iloc[i + 1 - self.history : i + 1])


class ExchangeSource:
    """An exchange's public candles (ccxt ``fetch_ohlcv`` only: no keys, no orders), polled
    every ``poll`` seconds once the next candle should have closed."""

    def __init__(
        self,
        exchange: Any,
        exchange_id: str,
        symbol: str,
        timeframe: str,
        decider: Decider,
        poll: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from pipeline.data.download_request import timeframe_ms
        from pipeline.data.exchange import Retry

        self.exchange, self.symbol, self.timeframe = exchange, symbol, timeframe
        self.interval_ms = timeframe_ms(timeframe)
        want = float(decider.manifest["dataset"]["interval_seconds"])
        if abs(self.interval_ms / 1000 - want) > 1e-6:
            raise PaperError(
                f"--timeframe {timeframe}: {self.interval_ms / 1000:g} s candles; the agent was "
                f"trained on {want:g} s candles"
            )
        self.history, self.poll, self.clock, self.sleep = decider.history_bars, poll, clock, sleep
        self.retry = Retry(sleep=sleep)
        self.what = f"{exchange_id} {symbol} {timeframe}"
        self.source: dict[str, Any] = {
            "kind": "exchange",
            "exchange": exchange_id,
            "symbol": symbol,
            "timeframe": timeframe,
        }

    @classmethod
    def open(
        cls, exchange_id: str, symbol: str, timeframe: str, decider: Decider, poll: float
    ) -> ExchangeSource:
        """The source over ``ccxt.<exchange_id>`` without credentials (public data only)."""
        from pipeline.data.exchange import make_exchange

        return cls(make_exchange(exchange_id), exchange_id, symbol, timeframe, decider, poll)

    def _page(self, since: int) -> Any:
        """One ``fetch_ohlcv`` call: the exchange's only use (public candles)."""
        return self.exchange.fetch_ohlcv(self.symbol, self.timeframe, since=since, limit=FETCH_PAGE)

    def _fetch(self, since: int) -> list[list[float]]:
        """The closed candles from ``since`` (ms) on, page by page, without duplicates."""
        out: dict[int, list[float]] = {}
        while True:
            now_ms = self.clock() * 1000.0
            page = self.retry.call(f"{self.what}: fetching candles", partial(self._page, since))
            rows = [
                [float(v) for v in r]
                for r in page or []
                if int(r[0]) >= since and int(r[0]) + self.interval_ms <= now_ms  # closed only
            ]
            if not rows:
                return [out[k] for k in sorted(out)]
            out.update({int(r[0]): r for r in rows})
            since = max(out) + 1
            if since - 1 + 2 * self.interval_ms > now_ms:  # the last closed candle is in
                return [out[k] for k in sorted(out)]

    def _candle(self, rows: list[list[float]], received: float) -> Candle:
        if len(rows) < self.history:
            raise PaperError(
                f"{self.what}: only {len(rows)} candles up to "
                f"{iso(pd.Timestamp(int(rows[-1][0]), unit='ms'))}; the agent needs {self.history}"
            )
        frame = pd.DataFrame(rows[-self.history :], columns=list(CANDLE_COLUMNS))
        frame["timestamp"] = pd.to_datetime(frame["timestamp"].astype("int64"), unit="ms", utc=True)
        late = received - (rows[-1][0] + self.interval_ms) / 1000.0
        return Candle(frame, late if late > self.interval_ms / 1000.0 else 0.0)

    def _next_rows(self, after_ms: int) -> list[list[float]]:
        """Wait until the next candle should have closed, then poll until one comes."""
        due = (after_ms + 2 * self.interval_ms) / 1000.0
        while True:
            now = self.clock()
            if now < due:
                self.sleep(min(self.poll, due - now))
                continue
            rows = [r for r in self._fetch(after_ms + 1) if r[0] > after_ms]
            if rows:
                return rows
            self.sleep(self.poll)

    def candles(self, after: pd.Timestamp | None) -> Iterator[Candle]:
        after_ms = None if after is None else int(pd.Timestamp(after).value // 1_000_000)
        anchor = int(self.clock() * 1000) if after_ms is None else after_ms
        rows = self._fetch(anchor - (self.history + HISTORY_MARGIN) * self.interval_ms)
        if not rows:
            raise PaperError(f"{self.what}: the exchange returned no closed candles")
        if after_ms is None:  # a fresh start decides at the last closed candle only
            after_ms = int(rows[-2][0]) if len(rows) > 1 else int(rows[-1][0]) - 1
        received = self.clock()
        while True:
            for i, row in enumerate(rows):
                if row[0] > after_ms:
                    yield self._candle(rows[: i + 1], received)
                    after_ms = int(row[0])
            rows = rows[-(self.history + HISTORY_MARGIN) :]
            rows += self._next_rows(after_ms)
            received = self.clock()
