"""Per-bar features of an OHLCV frame (the classifiers' inputs and the agent's price features).

Everything here is a pure function of arrays: no files, no config. The labels live in
:mod:`pipeline.data.labels`, the chronological splits in :mod:`pipeline.data.splits`, the
train-only scaler and ``build_classifier_arrays`` (the one entry point the classifier trainer and
the benchmark call) in :mod:`pipeline.classifiers.prepare`, the sample windows in
:class:`pipeline.classifiers.windows.WindowData`. RSI, MACD, Bollinger, stochastic and Williams %R
come from :mod:`pipeline.data.indicators` (numpy/pandas only, bit-identical to the ``ta``
package's), so this module imports neither ``ta`` nor torch.

Causality
    Every feature at bar ``t`` uses bars ``<= t`` only: rolling windows end at ``t``, EMAs are
    recursive (``adjust=False``) from bar 0, nothing is centred, back-filled or normalised over the
    whole series. Computing the features on the first ``n`` rows gives exactly the first ``n`` rows
    of the features of the full series (tested for every feature).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.common import PipelineError
from pipeline.data import indicators
from pipeline.data.indicators import BollingerLines, MacdLines, StochLines

REQUIRED_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")

VOLUME_RATIO_FLOOR = 1e-3
"""Lower clip of volume / mean volume before the log, so a zero-volume bar gives a finite value."""


class FeatureError(PipelineError):
    """Unknown feature name, missing column or malformed input to the feature code."""


# ---------------------------------------------------------------- feature registry


@dataclass(frozen=True)
class _Feature:
    """One registered feature: how to compute it, its leading-NaN count and its doc line."""

    fn: Callable[[_Bars], pd.Series]
    warmup: int
    doc: str
    neutral: float | None = None
    """Value used after warm-up where the indicator is undefined (e.g. zero high-low range)."""


class _Bars:
    """The input bars as float64 columns plus a cache, so shared intermediates (EMAs, MACD) are
    computed once; every feature function takes one."""

    def __init__(self, df: pd.DataFrame) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            raise FeatureError(
                f"input frame lacks column(s) {', '.join(missing)}; "
                f"expected {', '.join(REQUIRED_COLUMNS)}"
            )
        index = pd.RangeIndex(len(df))
        self.ts = df["timestamp"]
        self.open = pd.Series(np.asarray(df["open"], dtype=np.float64), index=index)
        self.high = pd.Series(np.asarray(df["high"], dtype=np.float64), index=index)
        self.low = pd.Series(np.asarray(df["low"], dtype=np.float64), index=index)
        self.close = pd.Series(np.asarray(df["close"], dtype=np.float64), index=index)
        self.volume = pd.Series(np.asarray(df["volume"], dtype=np.float64), index=index)
        self._cache: dict[str, Any] = {}

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """Return ``make()`` once per key."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def log_close(self) -> pd.Series:
        return self.cached("log_close", lambda: pd.Series(np.log(self.close.to_numpy())))

    @property
    def ret1(self) -> pd.Series:
        return self.cached("ret1", lambda: self.log_close.diff(1))

    @property
    def true_range(self) -> pd.Series:
        # ta's convention: bar 0 has no previous close, so its true range is high - low.
        def make() -> pd.Series:
            prev = self.close.shift(1).to_numpy()
            h, lo = self.high.to_numpy(), self.low.to_numpy()
            tr = np.fmax(h - lo, np.fmax(np.abs(h - prev), np.abs(lo - prev)))
            return pd.Series(tr)

        return self.cached("true_range", make)

    def macd(self) -> MacdLines:
        return self.cached("macd", lambda: indicators.macd(self.close, slow=26, fast=12, sign=9))

    def bollinger(self) -> BollingerLines:
        return self.cached("bb", lambda: indicators.bollinger(self.close, window=20, window_dev=2))

    def stoch(self) -> StochLines:
        return self.cached(
            "stoch",
            lambda: indicators.stoch(self.high, self.low, self.close, window=14, smooth_window=3),
        )

    def vol_mean(self, n: int) -> pd.Series:
        return self.cached(f"vol_mean{n}", lambda: self.volume.rolling(n, min_periods=n).mean())


def _safe_div(num: pd.Series | np.ndarray, den: pd.Series | np.ndarray) -> pd.Series:
    """num / den with NaN (not inf) where den == 0; NaN propagates."""
    n = np.asarray(num, dtype=np.float64)
    d = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(d != 0, n / np.where(d != 0, d, 1.0), np.nan)
    out[np.isnan(d) | np.isnan(n)] = np.nan
    return pd.Series(out)


def _wilder(x: pd.Series, n: int, first: int) -> pd.Series:
    """Wilder's smoothing seeded with the mean of ``x[first : first+n]`` (as ta's ATR).

    ``y[first+n-1] = mean(x[first..first+n-1])``, then ``y[i] = y[i-1] + (x[i] - y[i-1]) / n``.
    Built as an ``ewm(alpha=1/n, adjust=False)`` that starts at the seed, so it is recursive
    (causal) and vectorised.
    """
    seeded = x.copy()
    seeded.iloc[: first + n - 1] = np.nan
    if len(x) >= first + n:
        seeded.iloc[first + n - 1] = x.iloc[first : first + n].mean()
    return seeded.ewm(alpha=1.0 / n, adjust=False, min_periods=1).mean()


def _log_return(n: int) -> Callable[[_Bars], pd.Series]:
    def fn(c: _Bars) -> pd.Series:
        return c.log_close.diff(n)

    return fn


def _upper_wick(c: _Bars) -> pd.Series:
    return (c.high - np.maximum(c.open, c.close)) / c.close


def _lower_wick(c: _Bars) -> pd.Series:
    return (np.minimum(c.open, c.close) - c.low) / c.close


def _close_ema(n: int) -> Callable[[_Bars], pd.Series]:
    def fn(c: _Bars) -> pd.Series:
        ema = c.close.ewm(span=n, adjust=False, min_periods=n).mean()
        return c.close / ema - 1.0

    return fn


def _volume_ratio(c: _Bars) -> pd.Series:
    ratio = _safe_div(c.volume, c.vol_mean(24))
    return pd.Series(np.log(np.maximum(ratio.to_numpy(), VOLUME_RATIO_FLOOR)))


def _volume_z(c: _Bars) -> pd.Series:
    std = c.volume.rolling(24, min_periods=24).std(ddof=0)
    return _safe_div(c.volume - c.vol_mean(24), std)


def _cci(c: _Bars) -> pd.Series:
    # Same definition as ta.trend.CCIIndicator(window=20, constant=0.015), whose
    # rolling().apply(python function) takes seconds on 175k rows; the mean absolute
    # deviation is taken here over a (N-19, 20) sliding-window view instead.
    n = 20
    tp = ((c.high + c.low + c.close) / 3.0).to_numpy()
    mad = np.full(len(tp), np.nan)
    if len(tp) >= n:
        w = sliding_window_view(tp, n)  # (N-n+1, n)
        mad[n - 1 :] = np.abs(w - w.mean(axis=1, keepdims=True)).mean(axis=1)
    sma = pd.Series(tp).rolling(n, min_periods=n).mean()
    return _safe_div(tp - sma.to_numpy(), 0.015 * mad)


def _mfi(c: _Bars) -> pd.Series:
    # Same definition as ta.volume.MFIIndicator(window=14) (vectorised rolling sums instead of
    # rolling().apply): typical price x volume signed by the change of typical price.
    n = 14
    tp = (c.high + c.low + c.close) / 3.0
    prev = tp.shift(1)
    sign = np.where(tp > prev, 1.0, np.where(tp < prev, -1.0, 0.0))
    flow = tp * c.volume * sign
    pos = flow.clip(lower=0.0).rolling(n, min_periods=n).sum()
    neg = (-flow).clip(lower=0.0).rolling(n, min_periods=n).sum()
    return 100.0 * _safe_div(pos, pos + neg)


def _obv_slope(c: _Bars) -> pd.Series:
    # Change of on-balance volume over 24 bars divided by the volume traded in them: the
    # signed-volume share in [-1, 1]; scale-free unlike raw OBV (a cumulative sum).
    n = 24
    signed = np.where(c.close.diff(1) < 0, -c.volume, c.volume)
    signed[0] = np.nan
    num = pd.Series(signed).rolling(n, min_periods=n).sum()
    den = c.volume.rolling(n, min_periods=n).sum().where(num.notna())
    return _safe_div(num, den)


def _adx(c: _Bars) -> pd.Series:
    # Wilder's ADX(14). ta.trend.ADXIndicator loops in Python and leaves the last bar at 0
    # (its value at t depends on the series length), so it is computed here instead.
    n = 14
    up = c.high.diff(1)
    down = -c.low.diff(1)
    plus_dm = pd.Series(np.where((up > down) & (up > 0), up, 0.0))
    minus_dm = pd.Series(np.where((down > up) & (down > 0), down, 0.0))
    tr = c.true_range
    sm_tr = _wilder(tr, n, 1)
    plus_di = 100.0 * _safe_div(_wilder(plus_dm, n, 1), sm_tr)
    minus_di = 100.0 * _safe_div(_wilder(minus_dm, n, 1), sm_tr)
    dx = 100.0 * _safe_div((plus_di - minus_di).abs(), plus_di + minus_di)
    dx = dx.fillna(0.0).where(sm_tr.notna())  # +DI = -DI = 0 (no movement): no trend
    return _wilder(dx, n, n)


def _hour_angle(c: _Bars) -> np.ndarray:
    ts = utc_index(c.ts)
    hours = ts.hour.to_numpy() + ts.minute.to_numpy() / 60.0
    return 2.0 * np.pi * hours / 24.0


def utc_index(ts: pd.Series) -> pd.DatetimeIndex:
    """Timestamps as a tz-naive UTC DatetimeIndex (naive input is taken as UTC)."""
    idx = pd.DatetimeIndex(ts)
    return idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx


_REGISTRY: dict[str, _Feature] = {
    "ret_1": _Feature(_log_return(1), 1, "log(close_t / close_{t-1})"),
    "ret_3": _Feature(_log_return(3), 3, "log(close_t / close_{t-3})"),
    "ret_6": _Feature(_log_return(6), 6, "log(close_t / close_{t-6})"),
    "ret_12": _Feature(_log_return(12), 12, "log(close_t / close_{t-12})"),
    "ret_24": _Feature(_log_return(24), 24, "log(close_t / close_{t-24})"),
    "hl_range": _Feature(lambda c: c.high / c.low - 1.0, 0, "high / low - 1 (bar range)"),
    "body": _Feature(lambda c: (c.close - c.open) / c.open, 0, "(close - open) / open"),
    "upper_wick": _Feature(_upper_wick, 0, "(high - max(open, close)) / close"),
    "lower_wick": _Feature(_lower_wick, 0, "(min(open, close) - low) / close"),
    "close_sma_20": _Feature(
        lambda c: c.close / c.close.rolling(20, min_periods=20).mean() - 1.0,
        19,
        "close / SMA(close, 20) - 1",
    ),
    "close_ema_50": _Feature(
        _close_ema(50), 49, "close / EMA(close, span 50, recursive from bar 0) - 1"
    ),
    "volatility_24": _Feature(
        lambda c: c.ret1.rolling(24, min_periods=24).std(ddof=1),
        24,
        "std (ddof 1) of the last 24 one-bar log returns",
    ),
    "volume_ratio_24": _Feature(
        _volume_ratio,
        23,
        "log(volume / mean volume of the last 24 bars), ratio clipped below at 1e-3",
        neutral=0.0,
    ),
    "volume_z_24": _Feature(
        _volume_z, 23, "(volume - mean) / std (ddof 0) over the last 24 bars", neutral=0.0
    ),
    "rsi_14": _Feature(
        lambda c: indicators.rsi(c.close, window=14),
        13,
        "RSI(14), Wilder smoothing (ta.momentum.RSIIndicator), 0..100",
    ),
    "macd_line": _Feature(
        lambda c: c.macd().line / c.close,
        25,
        "MACD line EMA12 - EMA26 of close (ta.trend.MACD) / close",
    ),
    "macd_signal": _Feature(
        lambda c: c.macd().signal / c.close, 33, "MACD signal line, EMA9 of MACD / close"
    ),
    "macd_hist": _Feature(
        lambda c: c.macd().diff / c.close, 33, "MACD histogram (line - signal) / close"
    ),
    "bb_pband": _Feature(
        lambda c: c.bollinger().pband,
        19,
        "Bollinger %b (20, 2 std): (close - lower) / (upper - lower)",
        neutral=0.5,
    ),
    "bb_wband": _Feature(
        lambda c: c.bollinger().wband,
        19,
        "Bollinger bandwidth (20, 2 std): 100 (upper - lower) / middle",
    ),
    "stoch_k": _Feature(
        lambda c: c.stoch().k,
        13,
        "Stochastic %K (14): 100 (close - min low) / (max high - min low)",
        neutral=50.0,
    ),
    "stoch_d": _Feature(lambda c: c.stoch().d, 15, "Stochastic %D: SMA(3) of %K", neutral=50.0),
    "atr_14": _Feature(
        lambda c: _wilder(c.true_range, 14, 0) / c.close,
        13,
        "ATR(14) (Wilder, seeded like ta.volatility.AverageTrueRange) / close",
    ),
    "cci_20": _Feature(
        _cci, 19, "CCI(20): (tp - SMA(tp)) / (0.015 mean abs deviation), tp = (h+l+c)/3", 0.0
    ),
    "mfi_14": _Feature(
        _mfi, 13, "Money Flow Index (14), 0..100 (definition of ta.volume.MFIIndicator)", 50.0
    ),
    "williams_r_14": _Feature(
        lambda c: indicators.williams_r(c.high, c.low, c.close, lbp=14),
        13,
        "Williams %R (14), -100..0",
        neutral=-50.0,
    ),
    # Registered but not in DEFAULT_FEATURES (selectable through the feature list).
    "adx_14": _Feature(_adx, 27, "ADX(14), Wilder's average directional index, 0..100", 0.0),
    "obv_slope_24": _Feature(
        _obv_slope, 24, "OBV change over 24 bars / volume of those bars, -1..1", 0.0
    ),
    "ret_48": _Feature(_log_return(48), 48, "log(close_t / close_{t-48})"),
    "hour_sin": _Feature(lambda c: pd.Series(np.sin(_hour_angle(c))), 0, "sin(2 pi hour / 24)"),
    "hour_cos": _Feature(lambda c: pd.Series(np.cos(_hour_angle(c))), 0, "cos(2 pi hour / 24)"),
}

DEFAULT_FEATURES: tuple[str, ...] = (
    "ret_1",
    "ret_3",
    "ret_6",
    "ret_12",
    "ret_24",
    "hl_range",
    "body",
    "upper_wick",
    "lower_wick",
    "close_sma_20",
    "close_ema_50",
    "volatility_24",
    "volume_ratio_24",
    "volume_z_24",
    "rsi_14",
    "macd_line",
    "macd_signal",
    "macd_hist",
    "bb_pband",
    "bb_wband",
    "stoch_k",
    "stoch_d",
    "atr_14",
    "cci_20",
    "mfi_14",
    "williams_r_14",
)
"""The 26 per-bar features used by default (all scale-free: no raw price or volume level)."""

PER_BAR_FEATURES: tuple[str, ...] = (
    "ret_1",
    "hl_range",
    "body",
    "upper_wick",
    "lower_wick",
    "volume_ratio_24",
)
"""The default features that describe one bar (its return, range, body and wicks, its volume
against the last day's) rather than smooth many: what ``window_logreg`` reads at every bar of the
window, and the ``network_features`` the classifier ladder tried (issue 17)."""


def per_bar_columns(names: Sequence[str]) -> list[int]:
    """Columns of the feature list ``names`` that ``window_logreg`` reads at every bar: the
    :data:`PER_BAR_FEATURES` it has, or every feature when it has none of them."""
    columns = [list(names).index(f) for f in PER_BAR_FEATURES if f in names]
    return columns or list(range(len(names)))


AVAILABLE_FEATURES: tuple[str, ...] = tuple(_REGISTRY)
"""Every name ``compute_features`` accepts (the defaults plus a few optional ones)."""

FEATURE_DOCS: dict[str, str] = {name: f.doc for name, f in _REGISTRY.items()}
"""One line per feature; docs/features.md lists the same."""

AGENT_PRICE_FEATURE_NAMES: tuple[str, ...] = (
    "norm_price",
    "change",
    "volume",
    "rsi",
    "macd",
)
"""Columns of :func:`agent_price_features`."""

AGENT_PRICE_WARMUP = 49
"""Leading NaN rows of :func:`agent_price_features` (the 50-bar mean of close)."""


def check_feature_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple; :class:`FeatureError` for an unknown, duplicate or empty list."""
    if isinstance(names, str):
        names = (names,)
    out = tuple(names)
    unknown = [n for n in out if n not in _REGISTRY]
    if unknown:
        raise FeatureError(
            f"unknown feature name(s) {', '.join(map(repr, unknown))}; "
            f"valid names: {', '.join(AVAILABLE_FEATURES)}"
        )
    if not out:
        raise FeatureError("the feature list is empty; give at least one feature name")
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        raise FeatureError(f"feature name(s) listed twice: {', '.join(dup)}")
    return out


def warmup_bars(names: Sequence[str] = DEFAULT_FEATURES) -> int:
    """Leading rows where at least one of ``names`` is NaN (exact for finite positive input)."""
    return max(_REGISTRY[n].warmup for n in check_feature_names(names))


def compute_features(df: pd.DataFrame, names: Sequence[str] = DEFAULT_FEATURES) -> pd.DataFrame:
    """Compute the named per-bar features of an OHLCV frame.

    Args:
        df: columns timestamp, open, high, low, close, volume; rows in time order (bar = row).
        names: feature names (see ``AVAILABLE_FEATURES``); unknown -> :class:`FeatureError`.

    Returns:
        float64 frame with one column per name, ``len(df)`` rows and a RangeIndex. Feature
        ``f`` is NaN in its first ``warmup`` rows; after warm-up, where an indicator is
        undefined (a zero denominator such as a flat high-low range) its neutral value is used,
        so rows ``>= warmup_bars(names)`` are finite for finite positive prices.
    """
    names = check_feature_names(names)
    bars = _Bars(df)
    n = len(df)
    out: dict[str, np.ndarray] = {}
    for name in names:
        spec = _REGISTRY[name]
        values = np.asarray(spec.fn(bars), dtype=np.float64).copy()  # (N,)
        values[np.isinf(values)] = np.nan
        values[: min(spec.warmup, n)] = np.nan
        if spec.neutral is not None:
            tail = values[spec.warmup :]
            tail[np.isnan(tail)] = spec.neutral
        out[name] = values
    return pd.DataFrame(out, index=pd.RangeIndex(n), columns=list(names))


def agent_price_features(df: pd.DataFrame, feats: pd.DataFrame | None = None) -> np.ndarray:
    """Five causal price features for the trading environment, ``(N, 5)`` float32.

    Columns (``AGENT_PRICE_FEATURE_NAMES``): close / mean(close over last 50 bars) - 1;
    one-bar log return; log(volume / mean volume of the last 24 bars); RSI(14) / 100;
    MACD line / close. NaN in the first ``AGENT_PRICE_WARMUP`` rows. Columns already in
    ``feats`` (``ret_1``, ``volume_ratio_24``, ``rsi_14``, ``macd_line``) are reused.
    """
    needed = ("ret_1", "volume_ratio_24", "rsi_14", "macd_line")
    have = feats if feats is not None else pd.DataFrame(index=pd.RangeIndex(len(df)))
    missing = [c for c in needed if c not in have.columns]
    extra = compute_features(df, missing) if missing else None

    def col(name: str) -> np.ndarray:
        src = have if name in have.columns else extra
        assert src is not None
        return np.asarray(src[name], dtype=np.float64)

    close = pd.Series(np.asarray(df["close"], dtype=np.float64))
    norm_price = (close / close.rolling(50, min_periods=50).mean() - 1.0).to_numpy()
    out = np.column_stack(
        [norm_price, col("ret_1"), col("volume_ratio_24"), col("rsi_14") / 100.0, col("macd_line")]
    )  # (N, 5)
    out[:AGENT_PRICE_WARMUP] = np.nan
    return out.astype(np.float32)
