"""Download exchange candles with ccxt into a dataset the pipeline reads.

``download_data.py`` is the command line; :func:`download` does the work:

* **Name**: ``datasets/{BASE}-{QUOTE}_{TF}_{YYYYMMDD}-{YYYYMMDD}.csv``
  (:func:`pipeline.store.artifacts.exchange_dataset_name`), e.g. ``ADA-EUR_1H_20240101-20251231``;
  the end date is the last day included. Layout: ``timestamp`` (ISO 8601 UTC, the candle's open
  time), ``open, high, low, close, volume``; the file is validated by
  :func:`pipeline.data.load.load_dataset` before it appears.
* **Fetching**: ccxt's ``fetch_ohlcv(symbol, timeframe, since, limit)``, page after page from
  ``since`` = the candle after the last one received. The exchange's rate limit is kept: ccxt
  throttles itself when ``enableRateLimit`` is on (the default here); an exchange object without
  it gets a pause of ``rateLimit`` milliseconds between requests from us. Transient errors
  (``ccxt.NetworkError``: rate limit exceeded, DDoS protection, timeouts, exchange not available)
  are retried with exponential backoff up to a cap; permanent ones (unknown exchange, unknown
  symbol, a timeframe the exchange does not offer, any other exchange error) stop with one line,
  close matches suggested.
* **Resumable**: every page is appended to ``datasets/.{name}.partial.csv`` (raw candles, epoch
  milliseconds) beside a small JSON state ``.{name}.partial.json`` saying what was asked for; a
  rerun of the same command continues after the last candle in it. The final file is written
  atomically, then the partial files are removed.
* **Checks**: duplicate candles dropped (the last one received kept), candles out of order sorted,
  the still-open last candle excluded, candles outside the range dropped, missing candles
  reported as a count and the largest gaps (never filled).
* **Progress**: a tqdm bar (candles fetched, ETA) on a terminal, else a progress log line with
  ETA (:class:`pipeline.common.ProgressLog`).

The exchange is made by a factory (default :func:`make_exchange`), so tests hand in a fake object
with ccxt's attributes (``id``, ``timeframes``, ``rateLimit``, ``enableRateLimit``, ``has``,
``load_markets``, ``markets``/``symbols``, ``fetch_ohlcv``, ``milliseconds``) and no network.
ccxt itself is imported only where it is needed, so ``--help`` and the dataset-name helpers stay
fast.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.common import (
    EXIT_INTERRUPTED,
    Paths,
    PipelineError,
    ProgressLog,
    atomic_path,
    atomic_write_json,
    progress_bars_wanted,
)
from pipeline.store.artifacts import (
    dataset_file,
    download_partial,
    download_state,
    exchange_dataset_name,
    parse_exchange_dataset_name,
)

log = logging.getLogger(__name__)

DOWNLOAD_SCRIPT = "download_data.py"
EXCHANGE_PLACEHOLDER = "<EXCHANGE>"
"""What the "dataset not found" hint puts after ``--exchange``: a dataset name does not say which
exchange its candles came from, so the user fills it in."""

STATE_FORMAT = 1
MAX_GAPS_LISTED = 3
"""How many of the largest gaps the report lists."""

DEFAULT_MAX_RETRIES = 6
DEFAULT_BACKOFF_S = 1.0
DEFAULT_BACKOFF_CAP_S = 60.0

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
        """The dataset name (:func:`pipeline.store.artifacts.exchange_dataset_name`)."""
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


# ---------------------------------------------------------------- parsing the command line


def timeframe_ms(timeframe: str) -> int:
    """``1h`` -> 3,600,000 (ccxt's notation: ``s m h d w M y``; ``M`` is a month of 30 days)."""
    m = re.fullmatch(r"([1-9][0-9]*)([smhdwMy])", timeframe.strip())
    if m is None:
        raise DownloadError(
            f"--timeframe {timeframe!r}: expected ccxt's notation, a number and a unit (s, m, h, "
            "d, w, M for month, y), e.g. 1m, 15m, 1h, 4h, 1d"
        )
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_day(text: str, flag: str) -> datetime:
    """``2024-01-01`` -> midnight UTC of that day; anything else is one error line."""
    try:
        day = datetime.strptime(text.strip(), "%Y-%m-%d")
    except ValueError:
        raise DownloadError(f"{flag} {text!r}: expected a date YYYY-MM-DD (UTC)") from None
    return day.replace(tzinfo=timezone.utc)


def make_request(
    exchange: str,
    symbol: str,
    timeframe: str,
    start: str,
    end: str,
    today: datetime | None = None,
) -> DownloadRequest:
    """Check the dates and the timeframe's notation (not yet what the exchange offers)."""
    first, last = parse_day(start, "--start"), parse_day(end, "--end")
    if last < first:
        raise DownloadError(f"--end {end} is before --start {start}; expected start <= end")
    now = today or datetime.now(timezone.utc)
    if first > now:
        raise DownloadError(f"--start {start} is in the future (today is {now:%Y-%m-%d} UTC)")
    if last.date() > now.date():
        raise DownloadError(
            f"--end {end} is in the future (today is {now:%Y-%m-%d} UTC); the file name promises "
            "candles up to the end day: pass a day up to today"
        )
    timeframe_ms(timeframe)
    if "/" not in symbol:
        raise DownloadError(f"--symbol {symbol!r}: expected a ccxt symbol BASE/QUOTE, e.g. ADA/EUR")
    return DownloadRequest(exchange.strip().lower(), symbol.strip(), timeframe.strip(), first, last)


def download_command(name: str, root: Path | None = None) -> str | None:
    """The command that downloads dataset ``name``, or ``None`` when the name does not have the
    ``{BASE}-{QUOTE}_{TF}_{YYYYMMDD}-{YYYYMMDD}`` form.

    ``--exchange`` is the placeholder :data:`EXCHANGE_PLACEHOLDER`: the name does not say which
    exchange the candles came from. ``root`` (an artifact root other than the default) is passed
    on as ``--root``.
    """
    parsed = parse_exchange_dataset_name(name)
    if parsed is None:
        return None
    cmd = (
        f"python {DOWNLOAD_SCRIPT} --exchange {EXCHANGE_PLACEHOLDER} --symbol {parsed['symbol']} "
        f"--timeframe {parsed['timeframe']} --start {parsed['start']} --end {parsed['end']}"
    )
    if root is not None:
        cmd += f" --root {root}"
    return cmd


# ---------------------------------------------------------------- the exchange


def _suggest(wanted: str, choices: Sequence[str], n: int = 3) -> str:
    """`` (did you mean: a, b?)`` from close matches, case-insensitive; empty when none."""
    by_lower: dict[str, str] = {}
    for c in choices:
        by_lower.setdefault(c.lower(), c)
    found = difflib.get_close_matches(wanted.lower(), list(by_lower), n=n, cutoff=0.6)
    return f" (did you mean: {', '.join(by_lower[f] for f in found)}?)" if found else ""


def make_exchange(exchange_id: str) -> Any:
    """``ccxt.<exchange_id>({"enableRateLimit": True})``; an unknown id is one error line listing
    close matches from ``ccxt.exchanges``."""
    import ccxt

    if exchange_id not in ccxt.exchanges:
        raise DownloadError(
            f"--exchange {exchange_id!r}: not an exchange ccxt knows"
            f"{_suggest(exchange_id, ccxt.exchanges)}; "
            f"expected one of the {len(ccxt.exchanges)} ids in ccxt.exchanges, e.g. binance, "
            "bitvavo, kraken"
        )
    return getattr(ccxt, exchange_id)({"enableRateLimit": True})


def _transient_errors() -> tuple[type[BaseException], ...]:
    """ccxt's retryable errors: ``NetworkError`` and its subclasses (``RateLimitExceeded``,
    ``DDoSProtection``, ``RequestTimeout``, ``ExchangeNotAvailable``, ...)."""
    import ccxt

    return (ccxt.NetworkError,)


def _permanent_errors() -> tuple[type[BaseException], ...]:
    """Every other ccxt error (``ExchangeError``: bad symbol, authentication, ...)."""
    import ccxt

    return (ccxt.BaseError,)


def _rate_limit_errors() -> tuple[type[BaseException], ...]:
    import ccxt

    return (ccxt.RateLimitExceeded, ccxt.DDoSProtection)


_NAME_RESOLUTION = (
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname provided",
    "no address associated with hostname",
    "getaddrinfo failed",
    "failed to resolve",
)
"""How a failed DNS look-up reads in ccxt's (and urllib3's, aiohttp's) error text."""


def is_name_resolution_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it wraps) is a failed host-name look-up: no network or no
    DNS. Retrying that does not help, so it is final (a DNS failure once backed off for
    68 s)."""
    import socket

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, socket.gaierror):
            return True
        text = str(cur).lower()
        if any(marker in text for marker in _NAME_RESOLUTION):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


@dataclass
class Retry:
    """Exponential backoff for transient exchange errors: ``base * 2**k`` seconds, at most
    ``cap``, ``max_retries`` times in a row; a rate-limit error waits at least the exchange's
    ``rateLimit``."""

    max_retries: int = DEFAULT_MAX_RETRIES
    base_s: float = DEFAULT_BACKOFF_S
    cap_s: float = DEFAULT_BACKOFF_CAP_S
    sleep: Callable[[float], None] = time.sleep
    retries: int = 0  # the total over the download

    def call(
        self,
        what: str,
        fn: Callable[[], Any],
        rate_limit_s: float = 0.0,
        hint: str = "check the network and rerun the same command",
    ) -> Any:
        """``fn()``; transient errors retried, permanent ones raised as :class:`DownloadError`
        (``hint``: what the give-up line tells the user to do)."""
        transient, permanent = _transient_errors(), _permanent_errors()
        attempt = 0
        while True:
            try:
                return fn()
            except transient as exc:
                if is_name_resolution_failure(exc):
                    raise DownloadError(
                        f"{what}: cannot resolve the exchange's host name (no network or no DNS), "
                        f"not retried: {_one_line(exc)}; {hint}"
                    ) from None
                if attempt >= self.max_retries:
                    raise DownloadError(
                        f"{what}: still failing after {attempt} retries: {_one_line(exc)}; {hint}"
                    ) from None
                delay = min(self.base_s * 2**attempt, self.cap_s)
                if isinstance(exc, _rate_limit_errors()):
                    delay = max(delay, rate_limit_s)
                attempt += 1
                self.retries += 1
                log.warning(
                    "%s: %s; retry %d/%d in %.1f s",
                    what,
                    _one_line(exc),
                    attempt,
                    self.max_retries,
                    delay,
                )
                self.sleep(delay)
            except permanent as exc:
                raise DownloadError(f"{what}: {_one_line(exc)}") from None


def check_exchange(ex: Any, request: DownloadRequest, retry: Retry) -> None:
    """The exchange offers OHLCV candles, the symbol and the timeframe; one error line if not."""
    name = getattr(ex, "id", request.exchange)
    has = getattr(ex, "has", {}) or {}
    if not has.get("fetchOHLCV"):
        raise DownloadError(f"--exchange {name}: ccxt cannot fetch candles (OHLCV) from it")
    timeframes = dict(getattr(ex, "timeframes", None) or {})
    if request.timeframe not in timeframes:
        offered = ", ".join(timeframes) or "none listed"
        raise DownloadError(
            f"--timeframe {request.timeframe}: {name} does not offer it; expected one of: {offered}"
        )
    markets = retry.call(f"{name}: loading markets", ex.load_markets) or {}
    symbols = list(getattr(ex, "symbols", None) or list(markets))
    if request.symbol not in markets and request.symbol not in symbols:
        raise DownloadError(
            f"--symbol {request.symbol}: {name} has no such market"
            f"{_suggest(request.symbol, symbols)}; expected a ccxt symbol BASE/QUOTE listed by "
            f"{name} ({len(symbols)} markets)"
        )


# ---------------------------------------------------------------- partial state


def _read_partial(path: Path) -> list[list[float]]:
    """The candles of a partial file; a line cut short by a crash (and anything after it) is
    left out, so the download continues from the last whole candle."""
    rows: list[list[float]] = []
    if not path.is_file():
        return rows
    with open(path, encoding="utf-8", newline="") as f:
        for raw in f:
            if not raw.endswith("\n"):
                break
            cells = raw.strip().split(",")
            try:
                values = [float(c) for c in cells]
            except ValueError:
                break
            if len(values) != 6:
                break
            rows.append(values)
    return rows


def _append_rows(path: Path, rows: Sequence[Sequence[Any]]) -> None:
    """Append candles to the partial file and flush them to disk."""
    with open(path, "a", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        for r in rows:
            w.writerow([int(r[0]), *(repr(float(v)) for v in r[1:6])])
        f.flush()
        os.fsync(f.fileno())


def _load_state(state_path: Path, partial: Path, request: DownloadRequest) -> list[list[float]]:
    """The candles of a partial download of this same request (empty when there is none)."""
    if not state_path.is_file():
        if partial.is_file():
            partial.unlink()  # no state: not ours to continue
        return []
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise DownloadError(
            f"{state_path}: cannot read the partial download's state; rerun with --restart to "
            "discard the partial download and start over"
        )
    mine = request.identity()
    theirs = {k: state.get(k) for k in mine}
    if theirs != mine:
        diff = ", ".join(f"{k} {theirs[k]} (now {mine[k]})" for k in mine if theirs[k] != mine[k])
        raise DownloadError(
            f"{partial}: a partial download of {request.name} with other settings is there "
            f"({diff}); rerun with those settings to continue it, or with --restart to discard "
            "it"
        )
    return _read_partial(partial)


def _save_state(
    state_path: Path, request: DownloadRequest, rows: int, requests: int, retries: int
) -> None:
    atomic_write_json(
        state_path,
        {
            "format": STATE_FORMAT,
            **request.identity(),
            "rows": rows,
            "requests": requests,
            "retries": retries,
            "updated_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


# ---------------------------------------------------------------- checks


def _missing_between(a: int, b: int, step: int) -> int:
    """Candles missing between open times ``a`` < ``b`` on a grid of ``step`` milliseconds."""
    return max(0, (b - a) // step - 1)


def check_candles(
    raw: Sequence[Sequence[float]],
    request: DownloadRequest,
    now_ms: int,
    result: DownloadResult,
) -> pd.DataFrame:
    """Sort, drop duplicates and out-of-range candles, exclude the still-open one and count what
    is missing (never filled); fills the counters of ``result``. Returns the clean candles."""
    step = timeframe_ms(request.timeframe)
    df = pd.DataFrame([list(r[:6]) for r in raw], columns=list(_COLUMNS_MS))
    df["ts"] = df["ts"].astype("int64")
    ts = df["ts"].to_numpy()
    # A candle counts as out of order when it is older than one received before it.
    if len(ts):
        running_max = pd.Series(ts).cummax().shift(1).fillna(ts[0]).to_numpy()
        result.out_of_order = int((ts < running_max).sum())
    before = len(df)
    # The last one received wins: a candle fetched again later is the more complete one.
    df = df.drop_duplicates(subset="ts", keep="last")
    result.duplicates_dropped = before - len(df)
    df = df.sort_values("ts", kind="stable")
    inside = (df["ts"] >= request.start_ms) & (df["ts"] < request.end_ms)
    result.outside_range_dropped = int((~inside).sum())
    df = df[inside]
    still_open = df["ts"] + step > now_ms
    result.open_candle_excluded = bool(still_open.any())
    df = df[~still_open].reset_index(drop=True)
    if df.empty:
        raise DownloadError(
            f"{request.exchange} returned no finished candles of {request.symbol} "
            f"{request.timeframe} between {request.start:%Y-%m-%d} and {request.end:%Y-%m-%d}; "
            "check the dates (the pair may have been listed later) and the symbol"
        )
    ts = df["ts"].to_numpy()
    if request.timeframe[-1] in "My":
        result.notes.append(
            f"timeframe {request.timeframe}: months and years have no fixed length, missing "
            "candles not counted"
        )
    else:
        gaps = [
            Gap(_ts(int(a)), _ts(int(b)), _missing_between(int(a), int(b), step))
            for a, b in zip(ts[:-1], ts[1:], strict=True)
            if b - a > step
        ]
        result.missing = sum(g.missing for g in gaps)
        result.gaps = sorted(gaps, key=lambda g: -g.missing)[:MAX_GAPS_LISTED]
        result.missing_at_start = max(0, (int(ts[0]) - request.start_ms) // step)
        last_possible = min(request.end_ms, now_ms - step + 1)  # the last finished candle
        result.missing_at_end = max(0, (last_possible - int(ts[-1]) - 1) // step)
    result.rows = len(df)
    result.first, result.last = _ts(int(ts[0])), _ts(int(ts[-1]))
    return df


_COLUMNS_MS = ("ts", "open", "high", "low", "close", "volume")


def _ts(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


def _write_dataset(df: pd.DataFrame, path: Path, datasets_dir: Path) -> None:
    """The canonical CSV, validated by :func:`pipeline.data.load.load_dataset` before it appears."""
    from pipeline.data.load import load_dataset

    out = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(df["ts"], unit="ms", utc=True).dt.strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            **{c: df[c].astype("float64") for c in ("open", "high", "low", "close", "volume")},
        }
    )
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False, lineterminator="\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a dataset is meant to be shared
        # Raises DatasetError (one line naming the row) before the file appears.
        load_dataset(str(tmp), datasets_dir)


# ---------------------------------------------------------------- progress


class _Progress:
    """Candles fetched of those expected, with ETA: tqdm on a terminal, else a log line."""

    def __init__(self, name: str, total: int, done: int) -> None:
        self.bar: Any = None
        self.log: ProgressLog | None = None
        if progress_bars_wanted():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=done, unit="candles", desc=name, dynamic_ncols=True
            )
        else:
            self.log = ProgressLog(f"download {name}", total, "candles", logger=log)
            self.log.update(done)

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
        elif self.log is not None:
            self.log.update(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------- the download


@dataclass
class _Pager:
    """Fetches the pages of one download and records each in the partial files."""

    ex: Any
    request: DownloadRequest
    partial: Path
    state_path: Path
    retry: Retry
    limit: int | None
    sleep: Callable[[float], None]


def _fetch_pages(
    pager: _Pager,
    since: int,
    stop_ms: int,
    rows: list[list[float]],
    result: DownloadResult,
    on_progress: Callable[[int], None],
) -> None:
    """Page through ``fetch_ohlcv`` from ``since`` until ``stop_ms`` (or no newer candle),
    appending each page to the partial file and to ``rows``; ``on_progress`` gets the candles in
    range fetched so far by this call."""
    ex, request = pager.ex, pager.request
    step = timeframe_ms(request.timeframe)
    # ccxt throttles itself when enableRateLimit is on; otherwise we keep the exchange's limit.
    pause_s = 0.0 if getattr(ex, "enableRateLimit", False) else float(ex.rateLimit) / 1000.0
    what = f"{ex.id} fetch_ohlcv {request.symbol} {request.timeframe}"
    got = 0
    while since < stop_ms:
        if result.requests and pause_s > 0:
            pager.sleep(pause_s)
        fetch_since = since

        def fetch(since_ms: int = fetch_since) -> Any:
            return ex.fetch_ohlcv(request.symbol, request.timeframe, since_ms, pager.limit)

        page = pager.retry.call(
            f"{what} since {_ts(fetch_since).isoformat()}",
            fetch,
            rate_limit_s=float(getattr(ex, "rateLimit", 0)) / 1000.0,
            hint=f"the {len(rows):,} candles received so far are kept: rerun the same command "
            "to continue",
        )
        result.requests += 1
        page = [list(c[:6]) for c in (page or []) if c and c[0] is not None]
        if not page:
            break  # nothing after `since`: the exchange has no newer candles
        _append_rows(pager.partial, page)
        rows.extend(page)
        newest = int(max(c[0] for c in page))
        got += sum(1 for c in page if fetch_since <= c[0] < request.end_ms)
        _save_state(pager.state_path, request, len(rows), result.requests, pager.retry.retries)
        on_progress(got)
        if newest + step <= since:
            # Nothing newer came (the exchange ignores `since`): stop instead of asking for the
            # same page forever; what is missing is reported by the checks.
            result.notes.append(
                f"the exchange sent no candle newer than {_ts(newest).isoformat()} for "
                f"since={_ts(since).isoformat()}; stopped there"
            )
            break
        since = newest + step


def download(
    request: DownloadRequest,
    datasets_dir: Path,
    exchange_factory: Callable[[str], Any] | None = None,
    limit: int | None = None,
    retry: Retry | None = None,
    force: bool = False,
    restart: bool = False,
    now_ms: Callable[[], int] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> DownloadResult:
    """Download ``request`` into ``datasets_dir/{name}.csv``; see the module docstring.

    ``exchange_factory`` makes the exchange object from its id (default :func:`make_exchange`,
    looked up when called so tests can replace it); ``limit`` is the candles per request
    (default: the exchange's); ``force`` replaces an existing file; ``restart`` discards a
    partial download instead of continuing it; ``now_ms`` is the
    clock that decides which candle is still open (default: the exchange's ``milliseconds()``);
    ``sleep`` is what waits between requests and retries.

    Raises:
        DownloadError: a permanent exchange error, retries exhausted, no candles, an existing file
            without ``force``, or an interrupt (exit code 130; the partial download is kept).
    """
    datasets_dir = Path(datasets_dir)
    name = request.name
    final = dataset_file(datasets_dir, name)
    if final.exists() and not force:
        raise DownloadError(
            f"{final} exists already; pass --force to download it again (it is replaced only "
            "once the new download is complete)"
        )
    datasets_dir.mkdir(parents=True, exist_ok=True)
    partial, state_path = download_partial(datasets_dir, name), download_state(datasets_dir, name)
    if restart:
        for p in (partial, state_path):
            p.unlink(missing_ok=True)
    retry = retry or Retry(sleep=sleep)
    ex = (exchange_factory or make_exchange)(request.exchange)
    check_exchange(ex, request, retry)
    clock = now_ms or (lambda: int(ex.milliseconds()))
    step = timeframe_ms(request.timeframe)

    rows = _load_state(state_path, partial, request)
    result = DownloadResult(final, name, 0, _ts(request.start_ms), _ts(request.start_ms))
    since = request.start_ms
    in_range = sum(1 for r in rows if request.start_ms <= r[0] < request.end_ms)
    if rows:
        last = int(max(r[0] for r in rows))
        since = last + step
        result.resumed_from = _ts(last)
        log.info(
            "continuing the partial download %s: %d candles up to %s",
            partial.name,
            len(rows),
            _ts(last).strftime("%Y-%m-%d %H:%M"),
        )
    else:
        partial.unlink(missing_ok=True)
        _save_state(state_path, request, 0, 0, 0)
    stop_ms = min(request.end_ms, clock())
    total = max(in_range, in_range + max(0, (stop_ms - since) // step))
    progress = _Progress(name, total, in_range)
    try:
        _fetch_pages(
            _Pager(ex, request, partial, state_path, retry, limit, sleep),
            since,
            stop_ms,
            rows,
            result,
            lambda got: progress.update(min(in_range + got, total)),
        )
    except KeyboardInterrupt:
        raise DownloadError(
            f"interrupted after {len(rows):,} candles; they are kept in {partial}: rerun the same "
            "command to continue",
            EXIT_INTERRUPTED,
        ) from None
    finally:
        progress.close()
    result.retries = retry.retries
    df = check_candles(rows, request, clock(), result)
    _write_dataset(df, final, datasets_dir)
    for p in (partial, state_path):
        p.unlink(missing_ok=True)
    return result


def default_datasets_dir(root: Path | None) -> Path:
    """``{root}/datasets`` (root: ``--root``, ``$PIPELINE_HOME`` or the project folder)."""
    return Paths.from_root(root).datasets
