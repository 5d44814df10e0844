"""pipeline.data.features without the ``ta`` package: its own indicators
(pipeline.data.indicators) give ta's values bit for bit, and the module imports and computes with
only numpy and pandas (no ta, torch, sklearn, gymnasium, stable_baselines3 or lightgbm).

``ta`` stays a test dependency: it is the reference the values are compared with.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from pipeline.common import PROJECT_ROOT
from pipeline.data import features as F
from pipeline.data import indicators
from pipeline.data.load import load_dataset

DATASET = PROJECT_ROOT / "datasets" / "SYNTH-BTC-EUR_1H_20240101-20251231.csv"


def _random_walk(n: int, seed: int, flat_run: bool) -> pd.DataFrame:
    """A random walk of ``n`` hourly bars with a few flat bars (high == low == open == close)
    and a zero-volume bar. ``flat_run`` adds 25 flat bars at the start (a zero Bollinger
    width, a zero high-low range over the stochastic's window, no average loss for RSI), a
    rising stretch after them and 30 flat bars in a row later on."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    flat = [50, 51, 700, 1500, 1501, 1502]
    if flat_run:
        close[:65] = 100.0 * np.exp(np.r_[np.zeros(25), np.cumsum(np.full(40, 0.002))])
        flat += list(range(25)) + list(range(1000, 1030))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.005, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.005, n))
    volume = rng.uniform(1.0, 100.0, n)
    for i in flat:
        open_[i] = high[i] = low[i] = close[i] = close[max(i - 1, 0)]
    volume[900] = 0.0
    ts = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
    return pd.DataFrame(
        {"timestamp": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume}
    )


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    csv, _ = load_dataset(str(DATASET))
    return {
        "walk": _random_walk(3000, seed=7, flat_run=False),
        "walk_flat_run": _random_walk(3000, seed=3, flat_run=True),
        "csv": csv,
    }


def _columns(df: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """high, low, close as float64 Series on a RangeIndex (as features._Bars builds them)."""
    index = pd.RangeIndex(len(df))
    h, lo, c = (
        pd.Series(np.asarray(df[k], dtype=np.float64), index=index)
        for k in ("high", "low", "close")
    )
    return h, lo, c


def _ta_outputs(df: pd.DataFrame) -> dict[str, pd.Series]:
    """The five indicators as the ta package computes them (fillna=False)."""
    from ta.momentum import RSIIndicator, StochasticOscillator, WilliamsRIndicator
    from ta.trend import MACD
    from ta.volatility import BollingerBands

    h, lo, c = _columns(df)
    macd = MACD(c, window_slow=26, window_fast=12, window_sign=9, fillna=False)
    bb = BollingerBands(c, window=20, window_dev=2, fillna=False)
    st = StochasticOscillator(h, lo, c, window=14, smooth_window=3, fillna=False)
    return {
        "rsi": RSIIndicator(c, window=14, fillna=False).rsi(),
        "macd_line": macd.macd(),
        "macd_signal": macd.macd_signal(),
        "macd_diff": macd.macd_diff(),
        "bb_pband": bb.bollinger_pband(),
        "bb_wband": bb.bollinger_wband(),
        "stoch_k": st.stoch(),
        "stoch_d": st.stoch_signal(),
        "williams_r": WilliamsRIndicator(h, lo, c, lbp=14, fillna=False).williams_r(),
    }


def _own_outputs(df: pd.DataFrame) -> dict[str, pd.Series]:
    """The same nine series from pipeline.data.indicators."""
    h, lo, c = _columns(df)
    macd = indicators.macd(c, slow=26, fast=12, sign=9)
    bb = indicators.bollinger(c, window=20, window_dev=2)
    st = indicators.stoch(h, lo, c, window=14, smooth_window=3)
    return {
        "rsi": indicators.rsi(c, window=14),
        "macd_line": macd.line,
        "macd_signal": macd.signal,
        "macd_diff": macd.diff,
        "bb_pband": bb.pband,
        "bb_wband": bb.wband,
        "stoch_k": st.k,
        "stoch_d": st.d,
        "williams_r": indicators.williams_r(h, lo, c, lbp=14),
    }


# How features.py turned ta's outputs into features before it stopped importing ta.
_FEATURE_FROM_TA: dict[str, Callable[[dict[str, pd.Series], pd.Series], pd.Series]] = {
    "rsi_14": lambda t, c: t["rsi"],
    "macd_line": lambda t, c: t["macd_line"] / c,
    "macd_signal": lambda t, c: t["macd_signal"] / c,
    "macd_hist": lambda t, c: t["macd_diff"] / c,
    "bb_pband": lambda t, c: t["bb_pband"],
    "bb_wband": lambda t, c: t["bb_wband"],
    "stoch_k": lambda t, c: t["stoch_k"],
    "stoch_d": lambda t, c: t["stoch_d"],
    "williams_r_14": lambda t, c: t["williams_r"],
}


def _as_compute_features(name: str, raw: pd.Series) -> np.ndarray:
    """compute_features's post-processing of one raw feature: inf -> NaN, NaN warm-up rows,
    the neutral value where still undefined after warm-up."""
    spec = F._REGISTRY[name]
    values = np.asarray(raw, dtype=np.float64).copy()
    values[np.isinf(values)] = np.nan
    values[: spec.warmup] = np.nan
    if spec.neutral is not None:
        tail = values[spec.warmup :]
        tail[np.isnan(tail)] = spec.neutral
    return values


@pytest.mark.unit
def test_indicators_and_features_are_bit_identical_to_ta(frames: dict[str, pd.DataFrame]) -> None:
    for label, df in frames.items():
        ta_out, own = _ta_outputs(df), _own_outputs(df)
        for key, expected in ta_out.items():
            got = own[key]
            assert got.dtype == np.float64, (label, key)
            assert got.index.equals(expected.index), (label, key)
            assert np.array_equal(got.to_numpy(), expected.to_numpy(), equal_nan=True), (
                f"{label}: {key} differs from ta's"
            )
        feats = F.compute_features(df, F.AVAILABLE_FEATURES)
        _, _, close = _columns(df)
        for name, from_ta in _FEATURE_FROM_TA.items():
            expected_feature = _as_compute_features(name, from_ta(ta_out, close))
            assert np.array_equal(feats[name].to_numpy(), expected_feature, equal_nan=True), (
                f"{label}: feature {name} differs from the ta-based value"
            )
        agent = F.agent_price_features(df, feats)
        assert np.array_equal(agent, F.agent_price_features(df), equal_nan=True)
        w = F.AGENT_PRICE_WARMUP
        rsi = (feats["rsi_14"].to_numpy()[w:] / 100.0).astype(np.float32)
        macd_line = feats["macd_line"].to_numpy()[w:].astype(np.float32)
        assert np.array_equal(agent[w:, 3], rsi, equal_nan=True)
        assert np.array_equal(agent[w:, 4], macd_line, equal_nan=True)


@pytest.mark.unit
def test_the_series_reach_the_undefined_cases(frames: dict[str, pd.DataFrame]) -> None:
    """The comparison above covers the zero denominators: no average loss (RSI = 100), a zero
    Bollinger width and a zero high-low range over the stochastic's window. (After moving prices
    pandas' rolling std of a flat stretch is a small residual, not 0: hence the flat start.)"""
    own = _own_outputs(frames["walk_flat_run"])
    assert (own["rsi"] == 100.0).any()
    assert own["bb_wband"].eq(0.0).any() and own["bb_pband"].isna().iloc[19:].any()
    assert own["stoch_k"].isna().iloc[13:].any() and own["williams_r"].isna().iloc[13:].any()
    feats = F.compute_features(frames["walk_flat_run"], ["bb_pband", "stoch_k", "williams_r_14"])
    assert feats["bb_pband"].iloc[19] == 0.5 and feats["stoch_k"].iloc[13] == 50.0


_BLOCKED_IMPORTS = textwrap.dedent(
    """
    import sys

    BLOCKED = {"ta", "torch", "sklearn", "gymnasium", "stable_baselines3", "lightgbm"}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"import of {name} blocked by the test")
            return None

    sys.meta_path.insert(0, Blocker())

    import numpy as np
    import pandas as pd

    from pipeline.data import features

    n = 200
    rng = np.random.default_rng(0)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    df = pd.DataFrame({
        "timestamp": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
        "open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
        "volume": rng.uniform(1.0, 10.0, n),
    })
    feats = features.compute_features(df, features.AVAILABLE_FEATURES)
    agent = features.agent_price_features(df, feats)
    assert feats.shape == (n, len(features.AVAILABLE_FEATURES))
    assert np.isfinite(feats.to_numpy()[features.warmup_bars(features.AVAILABLE_FEATURES):]).all()
    assert agent.shape == (n, 5)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    """
)


# integration, not unit: it runs a subprocess (the tiers of tests/conftest.py).
@pytest.mark.integration
def test_features_import_and_compute_without_ta_or_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORTS],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
