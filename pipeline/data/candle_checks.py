"""The checks of downloaded candles: sorted, duplicates and out-of-range candles dropped, the
still-open one excluded, missing candles counted (never filled)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from pipeline.data.download_request import (
    DownloadError,
    DownloadRequest,
    DownloadResult,
    Gap,
    timeframe_ms,
)

MAX_GAPS_LISTED = 3
"""How many of the largest gaps the report lists."""


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
