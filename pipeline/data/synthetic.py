"""Seeded synthetic OHLCV candles that look like crypto data, with an optional planted signal.

What the generator produces (all from one ``np.random.default_rng(seed)``):

* **Returns** ``r_t = d_t + sigma_t * z_t`` (open-to-close log return of bar ``t``).
  ``z_t`` are Student-t innovations (``df = 6``) rescaled to unit variance, so returns have fat
  tails (excess kurtosis of ``z`` alone is 3). ``sigma_t`` follows a GARCH(1,1) recursion
  (Bollerslev 1986) ``sigma2_t = omega + alpha * sigma2_{t-1} z2_{t-1} + beta * sigma2_{t-1}``
  with ``alpha = 0.06, beta = 0.92``: volatility clusters, so ``|r|`` is autocorrelated. The
  unconditional per-bar volatility is 0.6 % for hourly bars (roughly BTC), scaled by
  ``sqrt(bar length / 1 h)`` for other frequencies.
* **Candles**: ``open_t = close_{t-1} * exp(g_t)`` with a tiny gap ``g_t ~ N(0, (0.02 sigma_t)^2)``
  (exchanges print the first trade of the next bar, not the last close). ``high``/``low`` are drawn
  from the exact distribution of the maximum / minimum of a Brownian bridge from ``open`` to
  ``close`` with variance ``sigma_t^2`` (``M = (r + sqrt(r^2 - 2 sigma^2 ln U)) / 2``), so
  ``low <= open, close <= high`` holds by construction and ranges scale with volatility.
* **Volume** = base level x hour-of-day profile (peak around 15:00 UTC, trough around 03:00 UTC,
  +-35 %) x weekend factor (0.8 on Saturday/Sunday) x ``(1 + 1.5 |r_t| / sigma_bar)`` (busy bars
  are big bars) x ``(sigma_t / sigma_bar)^0.5`` x log-normal noise (``sd = 0.35``).

The planted signal (``signal > 0``), documented so tests and the demo know what can be learned:

* A hidden **drift regime** ``mu_t`` is a stationary AR(1) process, ``mu_t = phi mu_{t-1} +
  sqrt(1 - phi^2) eta_t`` ~ ``N(0, 1)``, with a half-life of ``DRIFT_HALF_LIFE_BARS = 120`` bars
  (``phi = 0.5 ** (1 / 120)``). It moves slowly, so over the next few bars it is nearly constant.
* It feeds a **trend component** of the log price,
  ``T_t = (1 - kappa) T_{t-1} + signal * DRIFT_SCALE * sigma_t * mu_{t-1}``, and each bar's return
  gets ``d_t = T_t - T_{t-1}``. So the expected return of a bar is about
  ``signal * DRIFT_SCALE * mu_{t-1}`` times its own volatility (a per-bar Sharpe ratio;
  ``DRIFT_SCALE = 0.6``), minus a tiny pull ``kappa T_{t-1}`` back towards the random walk
  (``ANCHOR_HALF_LIFE_BARS = 720``: the accumulated trend decays with a 30-day half-life on hourly
  bars). The anchor exists only to keep prices plausible: without it a persistent drift compounds
  into price paths spanning many orders of magnitude. Bar ``t`` uses the regime of bar ``t - 1``, so
  nothing about bar ``t`` is known before bar ``t - 1`` closed.
* Because ``mu`` persists, its sign and strength show up in the volatility-normalised momentum of
  the past ~20-120 bars, and they carry over to the next ``k = 5`` bars that define the label
  (mean of the next 5 closes vs the current close). Past-momentum features therefore predict the
  label's direction. ``signal = 0`` makes ``T = 0``: a pure random walk (GARCH noise only), nothing
  about the direction is predictable from the past.
* Calibration (logistic regression on 5 volatility-normalised momentum features over the past
  5..60 bars, chronological 70/30 split, 3 balanced classes with the threshold fitted on the train
  part, 17,520 hourly bars, mean of seeds 0-4): ``signal = 0`` gives 33 % test accuracy (chance),
  ``signal = 0.3`` about 41 %, ``signal = 0.5`` about 47 %, ``signal = 1.0`` about 59 %.
  Over 17,520 bars the log price spans about 1.2 (``signal = 0``), 2.4 (``0.3``) and 6.5
  (``1.0``) units.

The random draws are made in the same order whatever ``signal`` is, so two series with the same
seed and different ``signal`` share the same noise and differ only by the trend component.

Kinds of planted signal (``kind``; the agent ladder must not be tuned on one kind of series):

* ``momentum`` (default, above): the drift regime ``mu`` persists, past momentum predicts.
* ``regime``: the same drift, switched on and off by a hidden two-state Markov gate with a mean
  stay of ``GATE_MEAN_BARS`` bars in each state (about half the bars carry the drift): momentum
  pays in some stretches and not in others.
* ``mean_reversion``: no drift regime; the log price is the random walk plus a stationary
  Ornstein-Uhlenbeck level ``u`` (AR(1), half-life ``MR_HALF_LIFE_BARS``) of standard deviation
  ``signal * MR_SCALE * sigma_bar * sqrt(MR_HALF_LIFE_BARS)``: a displacement shows in the recent
  returns and decays over the next bars, so past returns (RSI, momentum) predict the reversal.

* ``vol_trend``: no drift regime; each bar's drift follows the sign of the last 10 bars' return
  where their realised volatility is below the unconditional level (calm: trends continue) and
  runs against it above (busy: they reverse). Momentum and volatility each say little about
  direction alone; their product says much (a linear model on them cannot see it, trees and
  networks can).
* ``echo``: no drift regime; each bar's shock returns ``ECHO_LAG_BARS`` (24) bars later, scaled
  by ``signal * ECHO_SCALE`` and the current volatility. The next 5 bars' echoes are the shocks
  of 19-23 bars ago: visible to a model that reads the window bar by bar (lookback >= 24), blurred
  in per-bar rolling features that sum many bars. Being linear in past returns, it is still
  partly visible to a linear model on multi-bar returns (``ret_24 - ret_12`` covers lags 12-23).
* ``echo_blip``: like ``echo``, but each shock comes back for one bar only and is taken back the
  bar after (``+`` at 24 bars, ``-`` at 25). The next 5 bars' smoothed return then weighs the
  shock of 24 bars ago at ``-1`` and those of 19-23 bars ago at ``+0.2`` each: the weights sum to
  zero, so a rolling sum or mean over many bars (ret_24, SMA, MACD, a window mean) nets most of
  it out, while a model reading the window bar by bar sees one lag's shock. The direction row of
  the ladder that per-bar summaries cannot see (issue 17: ``echo``'s smooth 5-bar bump is most of
  what logreg's multi-bar returns already hold, ``bench/bench_ladder_headroom.py``).
* ``echo_ar``: ``echo_blip``'s blip, but what comes back is the bar's RETURN as the candles show
  it (in units of its volatility), not its hidden shock: ``u_t = z_t + a (u_{t-24} - u_{t-25})``
  with ``a = signal * ECHO_AR_SCALE``, an autoregression. In ``echo`` and ``echo_blip`` the shock
  a bar echoes is blurred by that bar's own echo of an older one (a moving average that a window
  of 32 bars cannot invert), so even a model that knows the rule sees about one standard error
  more than logreg; here the planted part is a fixed linear function of the returns 19-25 bars
  back, all inside the window, and a stronger ``signal`` gives a model reading the window more
  to find (``bench/bench_ladder_headroom.py``). ``signal`` must stay below ``0.5 / ECHO_AR_SCALE``
  (1.25: at ``a = 0.5`` the autoregression has a unit root at the two-bar alternation).
* ``vol_echo``: like ``echo``, but what comes back ``ECHO_LAG_BARS`` bars later is the shock's
  SIZE, centred: a large move (either way) is followed by a rise 24 bars later, a quiet bar by a
  fall. No linear function of past returns sees it (it is symmetric in each shock's sign) and a
  rolling volatility blurs its timing over the window: the sequential row of the classifier ladder.

Every kind draws its extra random numbers after the common ones, so the noise of a seed is the
same across kinds and signals.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from pipeline.common import atomic_path

COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")

T_DF = 6.0
"""Degrees of freedom of the Student-t innovations (finite kurtosis needs df > 4)."""

GARCH_ALPHA = 0.06
GARCH_BETA = 0.92
"""GARCH(1,1) coefficients; alpha + beta = 0.98 is typical for hourly crypto returns."""

HOURLY_VOL = 0.006
"""Unconditional volatility of one hourly log return (about BTC's)."""

DRIFT_HALF_LIFE_BARS = 120.0
"""Half-life of the hidden drift regime ``mu`` in bars."""

DRIFT_SCALE = 0.6
"""Per-bar Sharpe ratio of the drift when ``signal = 1`` and ``mu = 1``."""

ANCHOR_HALF_LIFE_BARS = 720.0
"""Half-life in bars with which the accumulated trend component decays back to 0."""

GAP_FRACTION = 0.02
"""Std of the open-vs-previous-close gap as a fraction of the bar's volatility."""

GATE_MEAN_BARS = 500.0
"""``kind = regime``: mean number of bars the momentum gate stays on (or off)."""

MR_HALF_LIFE_BARS = 8.0
"""``kind = mean_reversion``: half-life in bars of the level that reverts."""

MR_SCALE = 2.0
"""``kind = mean_reversion``: the level's std in units of ``sigma_bar * sqrt(half-life)``."""

ECHO_LAG_BARS = 24
"""``kind = echo``: each bar's shock comes back, scaled, this many bars later."""

ECHO_SCALE = 0.5
"""``kind = echo``: the echo's size, times ``signal``, in units of the bar's volatility."""

ECHO_AR_SCALE = 0.4
"""``kind = echo_ar``: the autoregression's coefficient ``a`` per unit of ``signal``. At the
ladder's ``signal = 1`` it is 0.4, a fifth short of the unit root at 0.5: about the strongest blip
the autoregression carries with room to spare (the lag-1 autocorrelation its alternation adds is
-0.26 there and grows fast nearer the root)."""

VOL_ECHO_SCALE = 0.75
"""``kind = vol_echo``: the centred size echo's scale, times ``signal``; the echo's std is about
``0.75 x 0.66 = 0.5`` of the bar's volatility, as ``echo``'s."""

KINDS: tuple[str, ...] = (
    "momentum",
    "regime",
    "mean_reversion",
    "vol_trend",
    "echo",
    "echo_blip",
    "echo_ar",
    "vol_echo",
)
"""The kinds of planted signal (``generate_ohlcv(kind=...)``)."""

PLANTED_KINDS: tuple[str, ...] = ("echo", "echo_blip", "echo_ar", "vol_echo")
"""Kinds whose planted signal is a function of past shocks (:func:`_echo`), so
:func:`planted_signal` can hand it to a model as an oracle feature."""

BASE_VOLUME_PER_HOUR = 60.0
"""Typical volume of one hourly bar (in base-currency units, e.g. BTC)."""


_T_ABS_MEAN = (
    2.0
    * math.sqrt(T_DF)
    * math.gamma((T_DF + 1.0) / 2.0)
    / (math.sqrt(math.pi) * (T_DF - 1.0) * math.gamma(T_DF / 2.0))
    * math.sqrt((T_DF - 2.0) / T_DF)
)
"""E|z| of the unit-variance Student-t innovations (about 0.75 for df = 6)."""


def _bar_seconds(freq: str) -> float:
    """Length of one bar of pandas frequency ``freq`` in seconds."""
    offset = pd.tseries.frequencies.to_offset(freq)
    return float(pd.Timedelta(offset).total_seconds())


def _unit_shocks(rng: np.random.Generator, n: int) -> np.ndarray:
    """The first draw of every series: ``n`` unit-variance Student-t shocks ``z`` (N,)."""
    return rng.standard_t(T_DF, size=n) * np.sqrt((T_DF - 2.0) / T_DF)


def _echo(shocks: np.ndarray, signal: float, kind: str) -> np.ndarray:
    """The drift the ``PLANTED_KINDS`` add to each bar, in units of its volatility (N,): the
    shock of ``ECHO_LAG_BARS`` bars ago (``echo``), that minus the one a bar older
    (``echo_blip``), or its centred size (``vol_echo``: E|z| of the unit-variance Student-t taken
    off, so no drift)."""
    n, lag = len(shocks), ECHO_LAG_BARS
    past = np.concatenate((np.zeros(lag), shocks[:-lag]))[:n]  # (N,) shock of bar t - L
    if kind == "echo":
        return signal * ECHO_SCALE * past
    if kind in ("echo_blip", "echo_ar"):
        older = np.concatenate((np.zeros(lag + 1), shocks[: -lag - 1]))[:n]  # (N,) bar t - L - 1
        scale = ECHO_SCALE if kind == "echo_blip" else ECHO_AR_SCALE
        return signal * scale * (past - older)
    size = np.where(np.arange(n) >= lag, np.abs(past) - _T_ABS_MEAN, 0.0)
    return signal * VOL_ECHO_SCALE * size


def _echoed(z: np.ndarray, signal: float, kind: str) -> np.ndarray:
    """The series whose echo the ``PLANTED_KINDS`` plant (N,): the unit shocks ``z`` themselves,
    or for ``echo_ar`` the returns in units of volatility ``u = z + _echo(u)`` (the
    autoregression run by ``lfilter``)."""
    if kind != "echo_ar":
        return z
    a = signal * ECHO_AR_SCALE
    if a >= 0.5:
        raise ValueError(
            f"kind echo_ar needs signal < {0.5 / ECHO_AR_SCALE:g} (at "
            f"{0.5 / ECHO_AR_SCALE:g} its autoregression has a unit root), got {signal}"
        )
    ar = np.zeros(ECHO_LAG_BARS + 2)
    ar[0], ar[ECHO_LAG_BARS], ar[ECHO_LAG_BARS + 1] = 1.0, -a, a
    return np.asarray(lfilter([1.0], ar, z))


def _garch_variance(z2: np.ndarray, sigma2_bar: float) -> np.ndarray:
    """GARCH(1,1) conditional variances for squared unit innovations ``z2`` (N,).

    ``sigma2_t = omega + (alpha z2_{t-1} + beta) sigma2_{t-1}`` is a first-order linear
    recursion with time-varying coefficient; a loop over Python floats runs ~175k bars in well
    under 0.1 s, which is simpler and numerically safer than a cumulative-product closed form.
    """
    omega = sigma2_bar * (1.0 - GARCH_ALPHA - GARCH_BETA)
    coef = (GARCH_ALPHA * z2 + GARCH_BETA).tolist()
    out = [0.0] * len(coef)
    s = sigma2_bar
    for t, a in enumerate(coef):
        out[t] = s
        s = omega + a * s
    return np.asarray(out, dtype=np.float64)


def _ar1_filter(x: np.ndarray, a: float) -> np.ndarray:
    """``y_t = a y_{t-1} + x_t`` with ``y_{-1} = 0`` for ``x`` (N,).

    ``scipy.signal.lfilter`` runs the recursion in C, so 175k bars take about a millisecond.
    """
    return np.asarray(lfilter([1.0], [1.0, -a], x), dtype=np.float64)


def _stationary_ar1(eta: np.ndarray, phi: float) -> np.ndarray:
    """Stationary AR(1) ``x_t = phi x_{t-1} + sqrt(1 - phi^2) eta_t``, ``x_0 = eta_0`` ~ N(0, 1)."""
    scaled = np.sqrt(1.0 - phi * phi) * eta
    scaled[0] = eta[0]
    return _ar1_filter(scaled, phi)


VOL_TREND_WINDOW = 10
"""``kind = vol_trend``: bars of the momentum and realised volatility that set the drift."""


def _vol_trend_returns(
    noise: np.ndarray, sigma: np.ndarray, sigma_bar: float, signal: float
) -> np.ndarray:
    """Returns whose drift is an interaction of observable trend and volatility.

    ``r_t = noise_t + signal * DRIFT_SCALE * sigma_t * sign(m_{t-1}) * c_{t-1}`` with ``m`` the
    return of the last ``VOL_TREND_WINDOW`` bars and ``c = +1`` where their realised volatility
    is below ``sigma_bar`` (calm: the trend continues), ``-1`` above (busy: it reverses). With
    about as many busy as calm bars, momentum alone predicts little; momentum x calm predicts.
    """
    n, w = len(noise), VOL_TREND_WINDOW
    r = np.array(noise, dtype=np.float64)  # (N,)
    scale = signal * DRIFT_SCALE
    for t in range(w, n):
        past = r[t - w : t]
        calm = np.sqrt(np.mean(past * past)) < sigma_bar
        r[t] += scale * sigma[t] * np.sign(past.sum()) * (1.0 if calm else -1.0)
    return r


def generate_ohlcv(
    n_bars: int,
    signal: float = 0.0,
    seed: int = 0,
    start: str = "2024-01-01",
    freq: str = "1h",
    start_price: float = 40000.0,
    kind: str = "momentum",
) -> pd.DataFrame:
    """Generate ``n_bars`` synthetic candles; see the module docstring for the model.

    Args:
        n_bars: number of bars (rows), >= 1.
        signal: strength of the planted drift regime; 0 = pure random walk, 0.3 = weak (demo),
            1.0 = clearly learnable.
        seed: seed of ``np.random.default_rng``; same arguments give identical frames.
        start: first timestamp (UTC).
        freq: pandas frequency of the bars (``"1h"``, ``"15min"``, ``"1D"`` ...).
        start_price: open of the first bar.
        kind: one of :data:`KINDS` (module docstring).

    Returns:
        DataFrame with columns timestamp (datetime64[ns, UTC]), open, high, low, close, volume
        (float64) and a RangeIndex.
    """
    if n_bars < 1:
        raise ValueError(f"n_bars must be >= 1, got {n_bars}")
    if signal < 0:
        raise ValueError(f"signal must be >= 0, got {signal}")
    if start_price <= 0:
        raise ValueError(f"start_price must be > 0, got {start_price}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    rng = np.random.default_rng(seed)
    n = int(n_bars)
    bar_hours = _bar_seconds(freq) / 3600.0
    sigma_bar = HOURLY_VOL * np.sqrt(bar_hours)

    # Every draw happens in this fixed order whatever `signal` is (shared noise across signals).
    z = _unit_shocks(rng, n)  # (N,) unit variance
    eta = rng.standard_normal(n)  # (N,) regime shocks
    gap = rng.standard_normal(n)  # (N,) open gaps
    u_high = rng.random(n)  # (N,) uniforms for the bridge maximum
    u_low = rng.random(n)  # (N,) uniforms for the bridge minimum
    vol_noise = rng.standard_normal(n)  # (N,) volume noise
    gate_u = rng.random(n) if kind == "regime" else None  # (N,) gate switches, after the rest

    sigma = np.sqrt(_garch_variance(z * z, sigma_bar**2))  # (N,)
    kappa = 1.0 - 0.5 ** (1.0 / ANCHOR_HALF_LIFE_BARS)
    if kind in PLANTED_KINDS:
        # The shock of bar t - L comes back at bar t (known L bars before it arrives).
        push = sigma * _echo(_echoed(z, signal, kind), signal, kind)  # (N,)
    elif kind == "mean_reversion":
        # An Ornstein-Uhlenbeck level u (short half-life) added to the random walk's log price:
        # a displacement of u shows in the recent returns and decays over the next bars.
        u = _stationary_ar1(eta, 0.5 ** (1.0 / MR_HALF_LIFE_BARS))  # (N,) ~ N(0, 1)
        level = signal * MR_SCALE * sigma_bar * np.sqrt(MR_HALF_LIFE_BARS) * u
        push = np.diff(level, prepend=0.0)  # (N,) the level's change is part of each return
    else:
        phi = 0.5 ** (1.0 / DRIFT_HALF_LIFE_BARS)
        mu = _stationary_ar1(eta, phi)  # (N,)
        mu_prev = np.concatenate(([0.0], mu[:-1]))  # regime known at the end of bar t-1
        push = signal * DRIFT_SCALE * sigma * mu_prev
        if gate_u is not None:  # regime: momentum only while the hidden gate is on
            flips = gate_u < 1.0 / GATE_MEAN_BARS  # (N,) the gate switches at these bars
            gate = (np.cumsum(flips) % 2 == 0).astype(np.float64)
            push = push * np.concatenate(([0.0], gate[:-1]))
    # Trend component of log price: integrates the drift and decays back to 0 (anchor).
    trend = _ar1_filter(push, 1.0 - kappa)  # (N,)
    drift = np.diff(trend, prepend=0.0)  # (N,) expected part of each bar's return
    r = drift + sigma * z  # (N,) open-to-close log return
    if kind == "vol_trend":
        r = _vol_trend_returns(sigma * z, sigma, sigma_bar, signal)

    g = GAP_FRACTION * sigma * gap  # (N,)
    g[0] = 0.0
    # log open_t = log close_{t-1} + g_t; log close_t = log open_t + r_t.
    log_close = np.log(start_price) + np.cumsum(r + g)  # (N,)
    log_open = log_close - r  # (N,)

    # Max / min of a Brownian bridge from 0 to r with variance sigma^2 (exact inverse CDF).
    root_h = np.sqrt(r * r - 2.0 * sigma * sigma * np.log1p(-u_high))
    root_l = np.sqrt(r * r - 2.0 * sigma * sigma * np.log1p(-u_low))
    log_high = log_open + 0.5 * (r + root_h)
    log_low = log_open + 0.5 * (r - root_l)

    ts = pd.date_range(start=start, periods=n, freq=freq, tz="UTC")
    hour = ts.hour.to_numpy() + ts.minute.to_numpy() / 60.0
    hour_profile = 1.0 + 0.35 * np.cos(2.0 * np.pi * (hour - 15.0) / 24.0)
    weekend = np.where(ts.day_of_week.to_numpy() >= 5, 0.8, 1.0)
    volume = (
        BASE_VOLUME_PER_HOUR
        * bar_hours
        * hour_profile
        * weekend
        * (1.0 + 1.5 * np.abs(r) / sigma_bar)
        * np.sqrt(sigma / sigma_bar)
        * np.exp(0.35 * vol_noise - 0.5 * 0.35**2)
    )

    open_ = np.exp(log_open)
    close = np.exp(log_close)
    # exp() of the bridge bounds can round a hair inside open/close; clamp so OHLC is exact.
    high = np.maximum(np.exp(log_high), np.maximum(open_, close))
    low = np.minimum(np.exp(log_low), np.minimum(open_, close))
    return pd.DataFrame(
        {
            "timestamp": ts.as_unit("ns"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )


def write_ohlcv_csv(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    price_decimals: int = 2,
    volume_decimals: int = 4,
) -> Path:
    """Write ``df`` atomically as ``timestamp,open,high,low,close,volume`` CSV with ISO timestamps.

    Prices are rounded to ``price_decimals`` (cents for BTC-EUR) and volume to ``volume_decimals``
    to keep the file small; rounding is monotone, so ``low <= open, close <= high`` still holds.
    Timestamps are written as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC).
    """
    out = pd.DataFrame(
        {
            "timestamp": df["timestamp"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            **{c: df[c].round(price_decimals) for c in ("open", "high", "low", "close")},
            "volume": df["volume"].round(volume_decimals),
        }
    )
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False, lineterminator="\n")
        # mkstemp creates 0600 files; a dataset is meant to be shared, so honour the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
    return Path(path)


def planted_signal(
    n_bars: int,
    signal: float,
    seed: int,
    kind: str,
    k: int,
    freq: str = "1h",
    shocks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """What the generator planted in the label of each bar, known at that bar: an oracle.

    For the :data:`PLANTED_KINDS` the next ``k`` bars' expected returns are echoes of shocks
    (``echo_ar``: returns) 19-23 (``echo_blip``, ``echo_ar``: 19-24) bars old
    (``ECHO_LAG_BARS``), so the part of the smoothed label return (``pipeline.data.labels``: bar
    ``t + i`` weighs ``(k - i + 1) / k``) the generator planted is known at bar ``t``. Same
    ``n_bars``, ``signal``, ``seed``, ``kind`` and ``freq`` as the frame's. Returns ``(planted,
    sigma)``, each ``(N,)``: the planted part in units of the bars' volatility, ``sum_i (k - i +
    1) / k * e_{t+i}`` with ``e`` the echo of :func:`generate_ohlcv` divided by ``sigma``, and
    ``sigma``, each bar's GARCH volatility (``sigma[t + 1]`` is a function of the shocks up to
    ``t``). ``shocks`` (N,): echo these instead of the generator's own unit shocks, e.g. the
    shocks as the candles show them (``log(close / open) / sigma``, which also carry the echoes
    of older shocks; for ``echo_ar`` exactly what it echoes): a reference for what a model
    reading the window can reach, not a bound. The classifier ladder's headroom bench fits a
    model on these (plus logreg's view) to measure how much of a row's signal logreg already
    sees (issue 17).
    """
    if kind not in PLANTED_KINDS:
        raise ValueError(f"kind must be one of {', '.join(PLANTED_KINDS)}, got {kind!r}")
    if not 1 <= k < ECHO_LAG_BARS:
        raise ValueError(f"k must be in 1..{ECHO_LAG_BARS - 1}, got {k}")
    n = int(n_bars)
    z = _unit_shocks(np.random.default_rng(seed), n)  # (N,) the frame's own first draw
    sigma_bar = HOURLY_VOL * np.sqrt(_bar_seconds(freq) / 3600.0)
    sigma = np.sqrt(_garch_variance(z * z, sigma_bar**2))  # (N,)
    echoed = _echoed(z, signal, kind) if shocks is None else np.asarray(shocks, dtype=np.float64)
    echo = _echo(echoed, signal, kind)
    planted = np.zeros(n)
    for i in range(1, k + 1):  # bar t + i's echo, weighted as the smoothed label weighs it
        planted[: n - i] += (k - i + 1) / k * echo[i:]
    return planted, sigma
