"""Download exchange candles with ccxt into a dataset the pipeline reads.

``download_data.py`` is the command line; :func:`download` does the work:

* **Name**: ``datasets/{BASE}-{QUOTE}_{TF}_{YYYYMMDD}-{YYYYMMDD}.csv``
  (:func:`pipeline.store.download_names.exchange_dataset_name`), e.g.
  ``ADA-EUR_1H_20240101-20251231``; the end date is the last day included. Layout:
  ``timestamp`` (ISO 8601 UTC, the candle's open time), ``open, high, low, close, volume``; the
  file is validated by :func:`pipeline.data.load.load_dataset` before it appears.
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

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.common import (
    EXIT_INTERRUPTED,
    Paths,
    ProgressLog,
    progress_bars_wanted,
)
from pipeline.data.candle_checks import _ts, check_candles
from pipeline.data.download_files import _append_rows, _load_state, _save_state, _write_dataset
from pipeline.data.download_request import (
    DownloadError,
    DownloadRequest,
    DownloadResult,
    timeframe_ms,
)
from pipeline.data.exchange import Retry, check_exchange, make_exchange
from pipeline.store.artifacts import dataset_file
from pipeline.store.download_names import (
    download_partial,
    download_state,
    parse_exchange_dataset_name,
)

log = logging.getLogger(__name__)

DOWNLOAD_SCRIPT = "download_data.py"
EXCHANGE_PLACEHOLDER = "<EXCHANGE>"
"""What the "dataset not found" hint puts after ``--exchange``: a dataset name does not say which
exchange its candles came from, so the user fills it in."""


# ---------------------------------------------------------------- parsing the command line


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
    final, partial, state_path = _target_files(datasets_dir, name, force, restart)
    retry = retry or Retry(sleep=sleep)
    ex = (exchange_factory or make_exchange)(request.exchange)
    check_exchange(ex, request, retry)
    clock = now_ms or (lambda: int(ex.milliseconds()))
    step = timeframe_ms(request.timeframe)

    rows = _load_state(state_path, partial, request)
    result = DownloadResult(final, name, 0, _ts(request.start_ms), _ts(request.start_ms))
    in_range = sum(1 for r in rows if request.start_ms <= r[0] < request.end_ms)
    since = _resume_from(rows, request, partial, state_path, result)
    stop_ms = min(request.end_ms, clock())
    total = max(in_range, in_range + max(0, (stop_ms - since) // step))
    pager = _Pager(ex, request, partial, state_path, retry, limit, sleep)
    _fetch_with_progress(pager, since, stop_ms, rows, result, (name, in_range, total))
    result.retries = retry.retries
    df = check_candles(rows, request, clock(), result)
    _write_dataset(df, final, datasets_dir)
    for p in (partial, state_path):
        p.unlink(missing_ok=True)
    return result


def _target_files(
    datasets_dir: Path, name: str, force: bool, restart: bool
) -> tuple[Path, Path, Path]:
    """The final file (refused when it exists without ``force``) and the partial download's
    candles and state, both removed first with ``restart``; creates ``datasets_dir``."""
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
    return final, partial, state_path


def _resume_from(
    rows: list[list[float]],
    request: DownloadRequest,
    partial: Path,
    state_path: Path,
    result: DownloadResult,
) -> int:
    """Where fetching starts: after the last candle of a partial download (``rows``, noted in
    ``result``), else at the request's start with a fresh state."""
    step = timeframe_ms(request.timeframe)
    since = request.start_ms
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
    return since


def _fetch_with_progress(
    pager: _Pager,
    since: int,
    stop_ms: int,
    rows: list[list[float]],
    result: DownloadResult,
    bar: tuple[str, int, int],
) -> None:
    """:func:`_fetch_pages` under a progress bar (``bar``: the name, the candles in range
    already there and the total expected); an interrupt keeps the partial download."""
    name, in_range, total = bar
    progress = _Progress(name, total, in_range)
    try:
        _fetch_pages(
            pager,
            since,
            stop_ms,
            rows,
            result,
            lambda got: progress.update(min(in_range + got, total)),
        )
    except KeyboardInterrupt:
        raise DownloadError(
            f"interrupted after {len(rows):,} candles; they are kept in {pager.partial}: rerun "
            "the same command to continue",
            EXIT_INTERRUPTED,
        ) from None
    finally:
        progress.close()


def default_datasets_dir(root: Path | None) -> Path:
    """``{root}/datasets`` (root: ``--root``, ``$PIPELINE_HOME`` or the project folder)."""
    return Paths.from_root(root).datasets
