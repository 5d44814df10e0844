"""Features, labels, windows and leakage-safe chronological splits.

Everything here is a pure function of arrays: no files, no config. ``prepare_arrays`` is the one
entry point the classifier trainer and the benchmark call; it returns a :class:`PreparedArrays`.

Causality
    Every feature at bar ``t`` uses bars ``<= t`` only: rolling windows end at ``t``, EMAs are
    recursive (``adjust=False``) from bar 0, nothing is centred, back-filled or normalised over the
    whole series. Computing the features on the first ``n`` rows gives exactly the first ``n`` rows
    of the features of the full series (tested for every feature).

Labels (Ntakaris et al. 2018, "Benchmark dataset for mid-price forecasting of limit order book
data with machine learning methods", FI-2010)
    ``m(t) = mean(close[t+1 .. t+k])``, ``r(t) = m(t) / close(t) - 1``; class 0 Fall if
    ``r < -delta``, 2 Rise if ``r > delta``, 1 Stationary otherwise, ``-1`` where ``t + k >= N``.
    Averaging the next ``k`` closes (instead of taking close[t+k]) smooths away single-bar noise.

Splits (half-open ranges of *sample bars*; a sample at bar ``t`` is the window ``t-L+1 .. t`` of
features and the label of ``t``, whose horizon is ``t+1 .. t+k``)::

    bar 0          first = warmup + L - 1                       last = N - k - 1     N-1
    |-- warm-up --|------------------------ usable sample bars ---------------------|-- k --|
                  [ train ......... ) purge [ val ... ) purge [ test ............. ]
                  [ fold0 ) purge [ fold1 ) purge [ fold2 ) purge [ fold3 )
                  |<------------------- dev ------------------>|

    purge = max(purge_gap, k + L)  (purge_gap None / "auto" -> k + L)
    test  = last test_fraction of the usable span
    val   = last val_fraction of dev; folds = n_folds equal walk-forward folds over dev

With a gap of at least ``k + L`` bars between consecutive blocks, the label horizon of the last
bar of one block (``t + k``) ends before the first bar that any window of the next block reads
(``start - L + 1``): no label of a training sample is built from prices a validation or test
sample sees, and no window overlaps the previous block's labels (Lopez de Prado 2018, "Advances
in Financial Machine Learning", ch. 7: purging). The scaler and the auto threshold are fit on
the training block's rows only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.preprocessing import StandardScaler
from ta.momentum import RSIIndicator, StochasticOscillator, WilliamsRIndicator
from ta.trend import MACD
from ta.volatility import BollingerBands

from pipeline.common import PipelineError

REQUIRED_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")

CLASS_NAMES: tuple[str, ...] = ("Fall", "Stationary", "Rise")
"""Label classes by index: 0 Fall, 1 Stationary, 2 Rise (-1 = no label)."""

MIN_BLOCK_SAMPLES = 10
"""Fewest sample bars any split block (train, val, test, each fold) may have."""

VOLUME_RATIO_FLOOR = 1e-3
"""Lower clip of volume / mean volume before the log, so a zero-volume bar gives a finite value."""


class FeatureError(PipelineError):
    """Unknown feature name, missing column or malformed input to the feature code."""


class SplitError(PipelineError):
    """The requested chronological split does not fit the data or breaks the purge rule."""


# ---------------------------------------------------------------- feature registry


@dataclass(frozen=True)
class _Feature:
    """One registered feature: how to compute it, its leading-NaN count and its doc line."""

    fn: Callable[[_Ctx], pd.Series]
    warmup: int
    doc: str
    neutral: float | None = None
    """Value used after warm-up where the indicator is undefined (e.g. zero high-low range)."""


class _Ctx:
    """Input columns plus a cache, so shared intermediates (EMAs, MACD) are computed once."""

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

    def macd(self) -> MACD:
        return self.cached(
            "macd",
            lambda: MACD(self.close, window_slow=26, window_fast=12, window_sign=9, fillna=False),
        )

    def bollinger(self) -> BollingerBands:
        return self.cached(
            "bb", lambda: BollingerBands(self.close, window=20, window_dev=2, fillna=False)
        )

    def stoch(self) -> StochasticOscillator:
        return self.cached(
            "stoch",
            lambda: StochasticOscillator(
                self.high, self.low, self.close, window=14, smooth_window=3, fillna=False
            ),
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


def _log_return(n: int) -> Callable[[_Ctx], pd.Series]:
    def fn(c: _Ctx) -> pd.Series:
        return c.log_close.diff(n)

    return fn


def _upper_wick(c: _Ctx) -> pd.Series:
    return (c.high - np.maximum(c.open, c.close)) / c.close


def _lower_wick(c: _Ctx) -> pd.Series:
    return (np.minimum(c.open, c.close) - c.low) / c.close


def _close_ema(n: int) -> Callable[[_Ctx], pd.Series]:
    def fn(c: _Ctx) -> pd.Series:
        ema = c.close.ewm(span=n, adjust=False, min_periods=n).mean()
        return c.close / ema - 1.0

    return fn


def _volume_ratio(c: _Ctx) -> pd.Series:
    ratio = _safe_div(c.volume, c.vol_mean(24))
    return pd.Series(np.log(np.maximum(ratio.to_numpy(), VOLUME_RATIO_FLOOR)))


def _volume_z(c: _Ctx) -> pd.Series:
    std = c.volume.rolling(24, min_periods=24).std(ddof=0)
    return _safe_div(c.volume - c.vol_mean(24), std)


def _cci(c: _Ctx) -> pd.Series:
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


def _mfi(c: _Ctx) -> pd.Series:
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


def _obv_slope(c: _Ctx) -> pd.Series:
    # Change of on-balance volume over 24 bars divided by the volume traded in them: the
    # signed-volume share in [-1, 1]; scale-free unlike raw OBV (a cumulative sum).
    n = 24
    signed = np.where(c.close.diff(1) < 0, -c.volume, c.volume)
    signed[0] = np.nan
    num = pd.Series(signed).rolling(n, min_periods=n).sum()
    den = c.volume.rolling(n, min_periods=n).sum().where(num.notna())
    return _safe_div(num, den)


def _adx(c: _Ctx) -> pd.Series:
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


def _hour_angle(c: _Ctx) -> np.ndarray:
    ts = _utc_index(c.ts)
    hours = ts.hour.to_numpy() + ts.minute.to_numpy() / 60.0
    return 2.0 * np.pi * hours / 24.0


def _utc_index(ts: pd.Series) -> pd.DatetimeIndex:
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
        lambda c: RSIIndicator(c.close, window=14, fillna=False).rsi(),
        13,
        "RSI(14), Wilder smoothing (ta.momentum.RSIIndicator), 0..100",
    ),
    "macd_line": _Feature(
        lambda c: c.macd().macd() / c.close,
        25,
        "MACD line EMA12 - EMA26 of close (ta.trend.MACD) / close",
    ),
    "macd_signal": _Feature(
        lambda c: c.macd().macd_signal() / c.close, 33, "MACD signal line, EMA9 of MACD / close"
    ),
    "macd_hist": _Feature(
        lambda c: c.macd().macd_diff() / c.close, 33, "MACD histogram (line - signal) / close"
    ),
    "bb_pband": _Feature(
        lambda c: c.bollinger().bollinger_pband(),
        19,
        "Bollinger %b (20, 2 std): (close - lower) / (upper - lower)",
        neutral=0.5,
    ),
    "bb_wband": _Feature(
        lambda c: c.bollinger().bollinger_wband(),
        19,
        "Bollinger bandwidth (20, 2 std): 100 (upper - lower) / middle",
    ),
    "stoch_k": _Feature(
        lambda c: c.stoch().stoch(),
        13,
        "Stochastic %K (14): 100 (close - min low) / (max high - min low)",
        neutral=50.0,
    ),
    "stoch_d": _Feature(
        lambda c: c.stoch().stoch_signal(), 15, "Stochastic %D: SMA(3) of %K", neutral=50.0
    ),
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
        lambda c: WilliamsRIndicator(c.high, c.low, c.close, lbp=14, fillna=False).williams_r(),
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


def _check_names(names: Sequence[str]) -> tuple[str, ...]:
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
    return max(_REGISTRY[n].warmup for n in _check_names(names))


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
    names = _check_names(names)
    ctx = _Ctx(df)
    n = len(df)
    out: dict[str, np.ndarray] = {}
    for name in names:
        spec = _REGISTRY[name]
        values = np.asarray(spec.fn(ctx), dtype=np.float64).copy()  # (N,)
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


# ---------------------------------------------------------------- labels


def smoothed_future_return(close: np.ndarray, k: int) -> np.ndarray:
    """``r(t) = mean(close[t+1 .. t+k]) / close[t] - 1``; NaN where ``t + k >= N``.

    The smoothed label target of Ntakaris et al. 2018 (FI-2010): the mean of the next ``k``
    prices against the current one, so one noisy bar does not decide the class.
    """
    if k < 1:
        raise FeatureError(f"smoothing k must be >= 1, got {k}")
    c = np.asarray(close, dtype=np.float64)  # (N,)
    r = np.full(len(c), np.nan)
    if len(c) > k:
        future_mean = sliding_window_view(c[1:], k).mean(axis=1)  # (N-k,), bar t -> c[t+1..t+k]
        r[: len(c) - k] = future_mean / c[: len(c) - k] - 1.0
    return r


def make_labels(r: np.ndarray, delta: float) -> np.ndarray:
    """Classes from smoothed returns: 0 Fall (r < -delta), 1 Stationary, 2 Rise (r > delta).

    ``-1`` where ``r`` is NaN (no full label horizon). Returns int8 ``(N,)``.
    """
    if not np.isfinite(delta) or delta < 0:
        raise FeatureError(f"label threshold delta must be a finite number >= 0, got {delta}")
    r = np.asarray(r, dtype=np.float64)
    labels = np.ones(len(r), dtype=np.int8)
    labels[r < -delta] = 0
    labels[r > delta] = 2
    labels[np.isnan(r)] = -1
    return labels


def auto_threshold(r_train: np.ndarray) -> float:
    """Threshold ``delta`` that makes Fall / Stationary / Rise roughly equal on these rows.

    ``delta`` is the 1/3 quantile of ``|r|`` over the finite values given, so a third of the
    rows are Stationary (``|r| <= delta``) and the other two thirds split by sign, about a third
    each when returns are roughly symmetric. Pass the TRAINING rows only: the threshold is a
    fitted parameter like the scaler (Ntakaris et al. 2018 use a fixed threshold; a quantile
    keeps the classes balanced across assets and bar sizes).
    """
    r = np.asarray(r_train, dtype=np.float64)
    r = r[np.isfinite(r)]
    if len(r) == 0:
        raise FeatureError("auto_threshold got no finite returns (no labelled training rows)")
    return float(np.quantile(np.abs(r), 1.0 / 3.0))


# ---------------------------------------------------------------- windows


def make_windows(x: np.ndarray, lookback: int, bars: np.ndarray) -> np.ndarray:
    """Windows of ``lookback`` rows of ``x`` ending at each bar: ``(len(bars), lookback, F)``.

    The window for bar ``t`` is ``x[t-lookback+1 .. t]``. Built from a sliding-window view and
    one fancy-indexing copy (float32).
    """
    x = np.asarray(x, dtype=np.float32)  # (N, F)
    if x.ndim != 2:
        raise FeatureError(f"make_windows expects a 2-D (N, F) array, got shape {x.shape}")
    if lookback < 1:
        raise FeatureError(f"lookback must be >= 1, got {lookback}")
    bars = np.asarray(bars, dtype=np.int64)  # (n,)
    n_rows, n_feat = x.shape
    if len(bars) and (bars.min() < lookback - 1 or bars.max() >= n_rows):
        raise FeatureError(
            f"window bars must lie in {lookback - 1}..{n_rows - 1} for lookback {lookback} "
            f"and {n_rows} rows; got {bars.min()}..{bars.max()}"
        )
    if n_rows < lookback:
        return np.empty((0, lookback, n_feat), dtype=np.float32)
    view = sliding_window_view(x, (lookback, n_feat))  # (N-L+1, 1, L, F), no copy
    return view[bars - lookback + 1, 0]  # (n, L, F), one copy


# ---------------------------------------------------------------- splits


@dataclass(frozen=True)
class Block:
    """Half-open range ``[start, stop)`` of sample bars."""

    name: str
    start: int
    stop: int

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def bars(self) -> np.ndarray:
        """The sample bars of the block, ``(len,)`` int64."""
        return np.arange(self.start, self.stop, dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "start", "stop", "n"}``."""
        return {"name": self.name, "start": self.start, "stop": self.stop, "n": len(self)}


@dataclass
class Splits:
    """Chronological blocks of sample bars (see the module docstring's diagram)."""

    train: Block
    val: Block
    test: Block
    dev: Block
    folds: list[Block]
    purge: int
    first_bar: int
    last_bar: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for run summaries and the saved scaler's metadata)."""
        return {
            "train": self.train.to_dict(),
            "val": self.val.to_dict(),
            "test": self.test.to_dict(),
            "dev": self.dev.to_dict(),
            "folds": [f.to_dict() for f in self.folds],
            "purge": self.purge,
            "first_bar": self.first_bar,
            "last_bar": self.last_bar,
        }


def resolve_purge(purge_gap: int | str | None, k: int, lookback: int) -> int:
    """Bars dropped between blocks: ``k + lookback`` for None/"auto", else ``purge_gap``.

    A ``purge_gap`` below ``k + lookback`` would let a training label horizon reach bars a
    validation window reads, so it raises :class:`SplitError` naming the minimum.
    """
    minimum = k + lookback
    if purge_gap is None or (isinstance(purge_gap, str) and purge_gap.strip().lower() == "auto"):
        return minimum
    try:
        gap = int(purge_gap)
    except (TypeError, ValueError):
        raise SplitError(f"purge_gap = {purge_gap!r} is not an integer or 'auto'") from None
    if gap != purge_gap and not isinstance(purge_gap, str):
        raise SplitError(f"purge_gap = {purge_gap!r} is not an integer or 'auto'")
    if gap < minimum:
        raise SplitError(
            f"purge_gap = {gap} is below the minimum smoothing_k + lookback = {k} + {lookback} "
            f"= {minimum}; use purge_gap >= {minimum} or 'auto'"
        )
    return gap


def _layout(
    n_bars: int,
    warmup: int,
    lookback: int,
    k: int,
    test_fraction: float,
    val_fraction: float,
    purge: int,
    n_folds: int,
) -> Splits:
    """Block boundaries without size checks (blocks may come out empty)."""
    first = warmup + lookback - 1
    last = n_bars - k - 1
    span = max(0, last + 1 - first)
    n_test = int(round(span * test_fraction))
    test = Block("test", last + 1 - n_test, last + 1)
    dev = Block("dev", first, test.start - purge)
    n_val = int(round(len(dev) * val_fraction))
    val = Block("val", dev.stop - n_val, dev.stop)
    train = Block("train", first, val.start - purge)
    folds: list[Block] = []
    if n_folds > 0:
        usable = len(dev) - (n_folds - 1) * purge
        # Equal folds; the integer remainder goes to the earliest folds.
        sizes = [usable // n_folds + (1 if i < usable % n_folds else 0) for i in range(n_folds)]
        start = first
        for i, size in enumerate(sizes):
            folds.append(Block(f"fold{i}", start, start + size))
            start += size + purge
    return Splits(train, val, test, dev, folds, purge, first, last)


def _too_small(s: Splits, min_samples: int) -> Block | None:
    for block in (s.train, s.val, s.test, *s.folds):
        if block.stop - block.start < min_samples:
            return block
    return None


def make_splits(
    n_bars: int,
    warmup: int,
    lookback: int,
    k: int,
    test_fraction: float,
    val_fraction: float,
    purge_gap: int | str | None,
    n_folds: int,
    min_samples: int = MIN_BLOCK_SAMPLES,
) -> Splits:
    """Chronological train / val / test blocks and walk-forward folds with purge gaps.

    Usable sample bars are ``first = warmup + lookback - 1`` (first window without NaN
    features) .. ``last = n_bars - k - 1`` (last bar with a full label horizon). ``test`` is
    the last ``test_fraction`` of that span; ``dev`` the part before it minus a purge gap;
    ``val`` the last ``val_fraction`` of dev and ``train`` the rest minus a purge gap;
    ``folds`` are ``n_folds`` equal contiguous folds over dev with purge gaps between them.
    ``purge = max(purge_gap, k + lookback)``; see the module docstring for the diagram.

    Raises:
        SplitError: bad parameter, purge_gap below ``k + lookback``, or a block with fewer than
            ``min_samples`` bars (the message names the block and the rows needed).
    """
    if lookback < 1:
        raise SplitError(f"lookback = {lookback} must be >= 1")
    if k < 1:
        raise SplitError(f"smoothing_k = {k} must be >= 1")
    if warmup < 0:
        raise SplitError(f"warmup = {warmup} must be >= 0")
    for key, frac in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 < float(frac) < 1.0:
            raise SplitError(f"{key} = {frac} must be between 0 and 1 (exclusive)")
    if n_folds < 0:
        raise SplitError(f"n_folds = {n_folds} must be >= 0 (0 = no walk-forward folds)")
    purge = resolve_purge(purge_gap, k, lookback)
    args = (warmup, lookback, k, test_fraction, val_fraction, purge, n_folds)
    splits = _layout(n_bars, *args)
    small = _too_small(splits, min_samples)
    if small is not None:
        needed = _rows_needed(args, min_samples, n_bars)
        if splits.last_bar < splits.first_bar:
            raise SplitError(
                f"the dataset has {n_bars} rows: no bar has both a full feature window and a "
                f"full label horizon (first sample bar is {splits.first_bar} = warm-up {warmup} "
                f"+ lookback {lookback} - 1, last is {splits.last_bar} = rows - smoothing_k "
                f"{k} - 1); the split needs at least {needed} rows"
            )
        raise SplitError(
            f"not enough rows for the chronological split: block '{small.name}' would have "
            f"{len(small)} sample bars (needs at least {min_samples}); the dataset has {n_bars} "
            f"rows, needs at least {needed} with warm-up {warmup}, lookback {lookback}, "
            f"smoothing_k {k}, purge {purge}, test_fraction {test_fraction}, "
            f"val_fraction {val_fraction}, n_folds {n_folds}"
        )
    return splits


def min_rows_for_split(
    warmup: int,
    lookback: int,
    k: int,
    test_fraction: float,
    val_fraction: float,
    purge_gap: int | str | None,
    n_folds: int,
    min_samples: int = MIN_BLOCK_SAMPLES,
) -> int | None:
    """Fewest rows whose split :func:`make_splits` accepts (None: no count does); preflight
    shows it so that preflight and step 5 cannot disagree (issue 8 item 13)."""
    purge = resolve_purge(purge_gap, k, lookback)
    args = (warmup, lookback, k, test_fraction, val_fraction, purge, n_folds)
    return _rows_needed(args, min_samples, 1)


def _rows_needed(args: tuple[Any, ...], min_samples: int, n_bars: int) -> int | None:
    """Smallest row count whose layout passes the size check (binary search, then verified)."""

    def ok(n: int) -> bool:
        return _too_small(_layout(n, *args), min_samples) is None

    hi = max(n_bars, 64)
    while not ok(hi):
        hi *= 2
        if hi > 2**40:
            return None
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    # Rounding of fractions can make the check non-monotone by a bar or two; step up if so.
    while not all(ok(lo + d) for d in range(4)):
        lo += 1
    return lo


# ---------------------------------------------------------------- prepared arrays


def scaler_rows(block: Block, lookback: int) -> slice:
    """Feature rows the windows of ``block`` cover: ``start - lookback + 1 .. stop - 1``."""
    return slice(block.start - lookback + 1, block.stop)


def fit_scaler(features: np.ndarray, block: Block, lookback: int) -> StandardScaler:
    """StandardScaler fit on the feature rows read by the windows of ``block`` only.

    Walk-forward fold models call this with their own training fold, so no fold is scaled
    with statistics of later bars.
    """
    rows = np.asarray(features[scaler_rows(block, lookback)], dtype=np.float64)  # (n+L-1, F)
    if len(rows) == 0 or not np.isfinite(rows).all():
        raise FeatureError(
            f"cannot fit the scaler on block '{block.name}' bars {block.start}..{block.stop - 1}"
            f" (lookback {lookback}): rows are empty or contain NaN (inside the warm-up?)"
        )
    return StandardScaler().fit(rows)


def apply_scaler(scaler: StandardScaler, features: np.ndarray) -> np.ndarray:
    """``scaler`` applied to every row, ``(N, F)`` float32; NaN warm-up rows stay NaN."""
    x = np.asarray(features, dtype=np.float64)
    return ((x - scaler.mean_) / scaler.scale_).astype(np.float32)


@dataclass
class PreparedArrays:
    """Everything the classifier trainer needs, as arrays indexed by bar."""

    feature_names: tuple[str, ...]
    lookback: int
    k: int
    delta: float
    delta_auto: bool
    timestamps: np.ndarray  # (N,) datetime64, UTC with the timezone dropped
    open: np.ndarray  # (N,) float64
    close: np.ndarray  # (N,) float64
    features: np.ndarray  # (N, F) float32, unscaled, NaN in warm-up rows
    price_features: np.ndarray  # (N, 5) float32, agent_price_features
    r: np.ndarray  # (N,) float64 smoothed future return, NaN in the last k rows
    labels: np.ndarray  # (N,) int8, -1 = no label
    splits: Splits
    scaler: StandardScaler
    scaled: np.ndarray  # (N, F) float32, scaled with `scaler`
    warmup: int = 0  # leading NaN rows of `features`

    @property
    def n_bars(self) -> int:
        """Rows (bars) of the dataset."""
        return len(self.close)

    def windows(
        self,
        block: Block,
        scaler: StandardScaler | None = None,
        delta: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples of ``block``: ``(X (n, L, F) float32, y (n,) int64, bars (n,) int64)``.

        Bars without a label are skipped. By default ``X`` comes from ``scaled`` (the train
        block's scaler) and ``y`` from ``labels``; a walk-forward fold model passes its own
        ``scaler`` (:func:`fit_scaler` on its training fold) and ``delta``
        (:func:`auto_threshold` on its training fold's ``r``).
        """
        bars = block.bars()
        labels = self.labels if delta is None else make_labels(self.r, delta)
        bars = bars[labels[bars] >= 0]
        if scaler is None:
            source = self.scaled
        else:
            lo = max(0, block.start - self.lookback + 1)
            source = np.full_like(self.scaled, np.nan)
            source[lo : block.stop] = apply_scaler(scaler, self.features[lo : block.stop])
        x = make_windows(source, self.lookback, bars)  # (n, L, F)
        return x, labels[bars].astype(np.int64), bars


def prepare_arrays(
    df: pd.DataFrame,
    feature_names: Sequence[str] = DEFAULT_FEATURES,
    lookback: int = 60,
    k: int = 5,
    delta: float | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    purge_gap: int | str | None = None,
    n_folds: int = 4,
) -> PreparedArrays:
    """Features, labels, splits, the train-only scaler and scaled features of one dataset.

    ``delta = None`` picks the label threshold with :func:`auto_threshold` on the TRAIN block's
    returns only; the scaler is fit on the feature rows the train windows read (bars
    ``train.start - lookback + 1 .. train.stop - 1``). Nothing after the train block influences
    either. Raises :class:`FeatureError` / :class:`SplitError` on bad input.
    """
    names = _check_names(feature_names)
    feats = compute_features(df, names)  # (N, F) float64
    warm = warmup_bars(names)
    splits = make_splits(
        len(df), warm, lookback, k, test_fraction, val_fraction, purge_gap, n_folds
    )
    close = np.asarray(df["close"], dtype=np.float64)
    r = smoothed_future_return(close, k)  # (N,)
    delta_auto = delta is None
    d = auto_threshold(r[splits.train.bars()]) if delta is None else float(delta)
    labels = make_labels(r, d)
    features = feats.to_numpy(dtype=np.float32)  # (N, F)
    scaler = fit_scaler(features, splits.train, lookback)
    return PreparedArrays(
        feature_names=names,
        lookback=lookback,
        k=k,
        delta=d,
        delta_auto=delta_auto,
        timestamps=_utc_index(df["timestamp"]).to_numpy(),
        open=np.asarray(df["open"], dtype=np.float64),
        close=close,
        features=features,
        price_features=agent_price_features(df, feats),
        r=r,
        labels=labels,
        splits=splits,
        scaler=scaler,
        scaled=apply_scaler(scaler, features),
        warmup=warm,
    )
