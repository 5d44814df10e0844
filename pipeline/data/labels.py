"""Labels of the sample bars: the smoothed future return and its three classes.

Labels (Ntakaris et al. 2018, "Benchmark dataset for mid-price forecasting of limit order book
data with machine learning methods", FI-2010)
    ``m(t) = mean(close[t+1 .. t+k])``, ``r(t) = m(t) / close(t) - 1``; class 0 Fall if
    ``r < -delta``, 2 Rise if ``r > delta``, 1 Stationary otherwise, ``-1`` where ``t + k >= N``.
    Averaging the next ``k`` closes (instead of taking close[t+k]) smooths away single-bar noise.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.data.features import FeatureError

CLASS_NAMES: tuple[str, str, str] = ("Fall", "Stationary", "Rise")
"""Label classes by index: 0 Fall, 1 Stationary, 2 Rise (-1 = no label)."""


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
