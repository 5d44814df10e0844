"""Bars per year of a dataset, for annualised returns and Sharpe ratios.

``P`` is inferred from the bars the dataset actually has per calendar year
(:func:`infer_periods_per_year`: ~8,760 for 24/7 crypto hours, ~252 for daily equity candles,
~6,240 for FX hours); :func:`periods_per_year` (``365 * 24 * 3600 / interval_seconds``, a 24/7
market) remains for spans too short to infer from, and the caller says which rule gave ``P``.
Step 5 computes it over the whole dataset and writes it beside each prediction table, so the agent
side annualises with the dataset's number without reading the CSV again.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.common import PipelineError

SECONDS_PER_YEAR = 365 * 24 * 3600
"""Calendar seconds per year; crypto trades 24/7, so every bar of the year counts."""


class AnnualisationError(PipelineError):
    """Bars without a usable spacing (fewer than 2, or a non-positive interval)."""


def periods_per_year(interval_seconds: float) -> float:
    """Bars per calendar year for bars of ``interval_seconds`` (24/7 market)."""
    if not (interval_seconds > 0 and math.isfinite(interval_seconds)):
        raise AnnualisationError(f"bar interval {interval_seconds!r} s; expected a positive number")
    return SECONDS_PER_YEAR / float(interval_seconds)


def bar_interval_seconds(timestamps: np.ndarray) -> float:
    """Median spacing of ``timestamps`` (N,) datetime64 in seconds (robust to a few gaps)."""
    ts = np.asarray(timestamps).astype("datetime64[ns]").astype(np.int64)  # (N,)
    if ts.size < 2:
        raise AnnualisationError(
            f"need at least 2 timestamps to infer the bar interval, got {ts.size}"
        )
    return float(np.median(np.diff(ts))) / 1e9


MIN_INFER_SPAN_DAYS = 28
"""Shortest span over which :func:`infer_periods_per_year` counts bars per elapsed year; below it
a week of weekday bars would read as 365 per year, so the 24/7 interval rule is used instead."""

_FULL_YEAR_SLACK_DAYS = 7
"""An edge year counts as full when the data starts within this many days of 1 January and ends
within this many days of 31 December (markets are closed on 1 January and around Christmas)."""


def infer_periods_per_year(timestamps: np.ndarray) -> tuple[float, str]:
    """Bars per year as the market actually trades, inferred from the bars present; ``(P, why)``.

    Fixed ``365 * 24 h`` annualisation is right for crypto only: daily equity candles trade ~252
    days a year and FX hours ~5 x 24 per week. So, from the sorted ``timestamps`` (N,)
    datetime64:

    * with at least one full calendar year: the median over full years of the bar count, scaled
      to a 365-day year (a leap year's extra day would otherwise make 24/7 hours 8,784);
    * else, over a span of at least :data:`MIN_INFER_SPAN_DAYS` days: bars per elapsed 365-day
      year, ``N * 365 d / (t_N - t_1 + median spacing)``;
    * else: :func:`periods_per_year` of the median bar spacing (24/7 assumption).

    ``why`` is one line for reports, e.g. ``"252.0 bars/year: median bar count of 3 full calendar
    years (2021-2023)"``.
    """
    ts = np.sort(np.asarray(timestamps, dtype="datetime64[ns]"))  # (N,)
    interval = bar_interval_seconds(ts)  # raises on fewer than 2 bars
    years = ts.astype("datetime64[Y]")  # (N,) calendar year of each bar
    first_year, last_year = years[0], years[-1]
    slack = np.timedelta64(_FULL_YEAR_SLACK_DAYS, "D")
    full: list[tuple[int, float]] = []  # (year, bars scaled to a 365-day year)
    for year in np.unique(years):
        start = year.astype("datetime64[D]")
        end = (year + 1).astype("datetime64[D]")
        if year == first_year and ts[0] > start + slack:
            continue  # the data starts too late in this year
        if year == last_year and ts[-1] < end - slack:
            continue  # ... or ends too early
        days = float((end - start) / np.timedelta64(1, "D"))
        full.append((int(str(year)), float(np.sum(years == year)) * 365.0 / days))
    if full:
        bars_per_year = float(np.median([n for _, n in full]))
        span = f"{full[0][0]}" if len(full) == 1 else f"{full[0][0]}-{full[-1][0]}"
        plural = "year" if len(full) == 1 else "years"
        return bars_per_year, (
            f"{bars_per_year:.1f} bars/year: median bar count of {len(full)} full calendar "
            f"{plural} ({span})"
        )
    elapsed = float((ts[-1] - ts[0]) / np.timedelta64(1, "s")) + interval
    if elapsed >= MIN_INFER_SPAN_DAYS * 86400:
        bars_per_year = ts.size * SECONDS_PER_YEAR / elapsed
        return bars_per_year, (
            f"{bars_per_year:.1f} bars/year: bars per elapsed year over "
            f"{ts[0].astype('datetime64[D]')}"
            f" .. {ts[-1].astype('datetime64[D]')} (no full calendar year)"
        )
    bars_per_year = periods_per_year(interval)
    return bars_per_year, (
        f"{bars_per_year:.1f} bars/year: 24/7 calendar at the median bar spacing of {interval:g} s"
        f" (span under {MIN_INFER_SPAN_DAYS} days, too short to infer)"
    )
