"""The exchange side of a download: making the ccxt exchange, retrying its transient errors and
checking that it offers the symbol and the timeframe.

ccxt itself is imported only where it is needed, so ``--help`` and the dataset-name helpers stay
fast.
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.data.download_request import DownloadError, DownloadRequest

# The retry warnings keep the downloader's logger name, as the user and the log files know it.
log = logging.getLogger("pipeline.data.download")

DEFAULT_MAX_RETRIES = 6
DEFAULT_BACKOFF_S = 1.0
DEFAULT_BACKOFF_CAP_S = 60.0


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
