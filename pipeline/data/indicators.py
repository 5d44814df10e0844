"""The five ``ta`` indicators the features use, re-implemented with pandas/numpy only.

Each function performs exactly the pandas operations of the ``ta`` class it names (ta 0.11,
``fillna=False``): the same ``ewm``/``rolling`` arguments and ``min_periods``, the same order of
arithmetic and the same ``np.where`` handling, so its output is bit-identical to ta's
(tests/test_features_without_ta.py compares them). This keeps :mod:`pipeline.data.features`
importable where only numpy and pandas are installed (the torch-free inference runtime).

Inputs are float64 Series on one index; outputs are Series on that index.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd


class MacdLines(NamedTuple):
    """``ta.trend.MACD``'s ``macd()``, ``macd_signal()`` and ``macd_diff()``."""

    line: pd.Series
    signal: pd.Series
    diff: pd.Series


class BollingerLines(NamedTuple):
    """``ta.volatility.BollingerBands``'s ``bollinger_pband()`` and ``bollinger_wband()``."""

    pband: pd.Series
    wband: pd.Series


class StochLines(NamedTuple):
    """``ta.momentum.StochasticOscillator``'s ``stoch()`` (%K) and ``stoch_signal()`` (%D)."""

    k: pd.Series
    d: pd.Series


def _ema(series: pd.Series, periods: int) -> pd.Series:
    """``ta.utils._ema``: recursive EMA of span ``periods``, NaN for the first ``periods - 1``."""
    return series.ewm(span=periods, min_periods=periods, adjust=False).mean()


def rsi(close: pd.Series, window: int = 14) -> pd.Series:
    """``ta.momentum.RSIIndicator(close, window).rsi()``: Wilder-smoothed RSI, 0..100."""
    diff = close.diff(1)
    up_direction = diff.where(diff > 0, 0.0)
    down_direction = -diff.where(diff < 0, 0.0)
    emaup = up_direction.ewm(alpha=1 / window, min_periods=window, adjust=False).mean()
    emadn = down_direction.ewm(alpha=1 / window, min_periods=window, adjust=False).mean()
    relative_strength = emaup / emadn
    return pd.Series(
        np.where(emadn == 0, 100, 100 - (100 / (1 + relative_strength))), index=close.index
    )


def macd(close: pd.Series, slow: int = 26, fast: int = 12, sign: int = 9) -> MacdLines:
    """``ta.trend.MACD(close, window_slow, window_fast, window_sign)``."""
    line = _ema(close, fast) - _ema(close, slow)
    signal = _ema(line, sign)
    return MacdLines(line, signal, line - signal)


def bollinger(close: pd.Series, window: int = 20, window_dev: int = 2) -> BollingerLines:
    """``ta.volatility.BollingerBands(close, window, window_dev)``: %b and bandwidth."""
    mavg = close.rolling(window, min_periods=window).mean()
    mstd = close.rolling(window, min_periods=window).std(ddof=0)
    hband = mavg + window_dev * mstd
    lband = mavg - window_dev * mstd
    wband = ((hband - lband) / mavg) * 100
    pband = (close - lband) / (hband - lband).where(hband != lband, np.nan)
    return BollingerLines(pband, wband)


def stoch(
    high: pd.Series, low: pd.Series, close: pd.Series, window: int = 14, smooth_window: int = 3
) -> StochLines:
    """``ta.momentum.StochasticOscillator(high, low, close, window, smooth_window)``."""
    smin = low.rolling(window, min_periods=window).min()
    smax = high.rolling(window, min_periods=window).max()
    k = 100 * (close - smin) / (smax - smin)
    d = k.rolling(smooth_window, min_periods=smooth_window).mean()
    return StochLines(k, d)


def williams_r(high: pd.Series, low: pd.Series, close: pd.Series, lbp: int = 14) -> pd.Series:
    """``ta.momentum.WilliamsRIndicator(high, low, close, lbp).williams_r()``, -100..0."""
    highest_high = high.rolling(lbp, min_periods=lbp).max()
    lowest_low = low.rolling(lbp, min_periods=lbp).min()
    return -100 * (highest_high - close) / (highest_high - lowest_low)
