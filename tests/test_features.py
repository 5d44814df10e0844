"""Features (pipeline.data.features), labels (pipeline.data.labels) and the sample windows
(pipeline.classifiers.windows.WindowData): causality, values, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ta
import torch

from pipeline.classifiers import metrics as classifier_metrics
from pipeline.classifiers.windows import WindowData
from pipeline.common import PipelineError
from pipeline.data import features as F
from pipeline.data import labels as L

pytestmark = pytest.mark.unit  # every test here (tiers: tests/conftest.py)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "features.md"


def _ohlcv(n: int, seed: int = 0) -> pd.DataFrame:
    """Realistic candles: the project's synthetic generator (GARCH returns, daily volume)."""
    from pipeline.data.synthetic import generate_ohlcv

    return generate_ohlcv(n, signal=0.3, seed=seed)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return _ohlcv(3000, seed=7)


@pytest.fixture(scope="module")
def all_feats(frame: pd.DataFrame) -> pd.DataFrame:
    return F.compute_features(frame, F.AVAILABLE_FEATURES)


# ---------------------------------------------------------------- feature table


def test_default_features_are_26_unique_documented() -> None:
    assert len(F.DEFAULT_FEATURES) == 26
    assert len(set(F.DEFAULT_FEATURES)) == 26
    assert set(F.DEFAULT_FEATURES) <= set(F.AVAILABLE_FEATURES)
    assert set(F.FEATURE_DOCS) == set(F.AVAILABLE_FEATURES)
    text = DOCS.read_text(encoding="utf-8")
    for name in F.AVAILABLE_FEATURES:
        assert f"`{name}`" in text, f"docs/features.md does not list {name}"


def test_compute_features_shape_dtype_columns(frame: pd.DataFrame) -> None:
    feats = F.compute_features(frame)
    assert feats.shape == (len(frame), 26)
    assert list(feats.columns) == list(F.DEFAULT_FEATURES)
    assert (feats.dtypes == np.float64).all()
    assert isinstance(feats.index, pd.RangeIndex)


@pytest.mark.parametrize("n", [100, 137, 500, 1999])
def test_features_are_causal(frame: pd.DataFrame, all_feats: pd.DataFrame, n: int) -> None:
    # Features of the first n rows == first n rows of the features of the whole series:
    # nothing at bar t depends on a bar after t or on the length of the series.
    head = F.compute_features(frame.iloc[:n], F.AVAILABLE_FEATURES)
    full = all_feats.to_numpy()[:n]
    for j, name in enumerate(F.AVAILABLE_FEATURES):
        assert np.allclose(head.to_numpy()[:, j], full[:, j], rtol=1e-9, atol=0, equal_nan=True), (
            name
        )
    agent_head = F.agent_price_features(frame.iloc[:n])
    agent_full = F.agent_price_features(frame)[:n]
    assert np.allclose(agent_head, agent_full, rtol=1e-6, atol=0, equal_nan=True)


def test_warmup_is_exact_and_no_nan_after(all_feats: pd.DataFrame) -> None:
    for name in F.AVAILABLE_FEATURES:
        values = all_feats[name].to_numpy()
        w = F.warmup_bars([name])
        assert np.isnan(values[:w]).all(), name
        assert np.isfinite(values[w:]).all(), name
    w = F.warmup_bars(F.DEFAULT_FEATURES)
    assert w == max(F.warmup_bars([n]) for n in F.DEFAULT_FEATURES) == 49
    default = all_feats[list(F.DEFAULT_FEATURES)].to_numpy()
    assert np.isfinite(default[w:]).all()
    assert np.isnan(default[w - 1]).any()


def test_features_are_scale_free(frame: pd.DataFrame, all_feats: pd.DataFrame) -> None:
    scaled = frame.copy()
    for col in ("open", "high", "low", "close"):
        scaled[col] = scaled[col] * 1234.5
    scaled["volume"] = scaled["volume"] * 0.01
    again = F.compute_features(scaled, F.AVAILABLE_FEATURES)
    for name in F.AVAILABLE_FEATURES:
        a, b = again[name].to_numpy(), all_feats[name].to_numpy()
        assert np.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True), name


def test_feature_values_match_definitions(frame: pd.DataFrame, all_feats: pd.DataFrame) -> None:
    close, high, low = frame["close"], frame["high"], frame["low"]
    op, vol = frame["open"], frame["volume"]
    f = all_feats
    np.testing.assert_allclose(f["ret_3"][3:], np.log(close / close.shift(3))[3:], atol=1e-15)
    np.testing.assert_allclose(f["body"], (close - op) / op, rtol=1e-12)
    np.testing.assert_allclose(f["hl_range"], high / low - 1, rtol=1e-12)
    sma = close.rolling(20).mean()
    np.testing.assert_allclose(f["close_sma_20"][19:], (close / sma - 1)[19:], rtol=1e-9)
    ratio = np.log(vol / vol.rolling(24).mean())
    np.testing.assert_allclose(f["volume_ratio_24"][23:], ratio[23:], rtol=1e-9)
    # Own vectorised versions have the same semantics as ta's slow (loop / apply) ones.
    atr = ta.volatility.AverageTrueRange(high, low, close, 14).average_true_range() / close
    np.testing.assert_allclose(f["atr_14"][13:], atr[13:], rtol=1e-9)
    cci = ta.trend.CCIIndicator(high, low, close, 20).cci()
    np.testing.assert_allclose(f["cci_20"][19:], cci[19:], rtol=1e-9)
    mfi = ta.volume.MFIIndicator(high, low, close, vol, 14).money_flow_index()
    np.testing.assert_allclose(f["mfi_14"][13:], mfi[13:], rtol=1e-9)
    adx = ta.trend.ADXIndicator(high, low, close, 14).adx()
    # ta leaves its last bars at 0 (a length-dependent bug); compare the middle.
    np.testing.assert_allclose(f["adx_14"][27:-2], adx[27:-2], rtol=1e-9)
    rsi = ta.momentum.RSIIndicator(close, 14).rsi()
    np.testing.assert_allclose(f["rsi_14"][13:], rsi[13:], rtol=1e-12)
    macd = ta.trend.MACD(close).macd()
    np.testing.assert_allclose(f["macd_line"][25:], (macd / close)[25:], rtol=1e-12)


def test_flat_bars_give_neutral_values_not_nan() -> None:
    df = _ohlcv(200, seed=3)
    flat = slice(100, 140)
    price = float(df.loc[99, "close"])
    for col in ("open", "high", "low", "close"):
        df.loc[flat, col] = price
    df.loc[flat, "volume"] = 0.0
    feats = F.compute_features(df)
    assert np.isfinite(feats.to_numpy()[F.warmup_bars() :]).all()
    assert feats.loc[130, "stoch_k"] == 50.0
    assert feats.loc[130, "williams_r_14"] == -50.0
    assert feats.loc[130, "bb_pband"] == 0.5
    assert feats.loc[130, "volume_ratio_24"] == 0.0  # 0 / 0 volume: neutral
    assert feats.loc[110, "volume_ratio_24"] == pytest.approx(np.log(F.VOLUME_RATIO_FLOOR))


def test_unknown_feature_name_lists_valid_ones(frame: pd.DataFrame) -> None:
    with pytest.raises(F.FeatureError) as exc:
        F.compute_features(frame, ["ret_1", "rsi_99"])
    msg = str(exc.value)
    assert "'rsi_99'" in msg and "valid names" in msg and "macd_hist" in msg
    with pytest.raises(F.FeatureError, match="rsi_99"):
        F.warmup_bars(["rsi_99"])
    assert issubclass(F.FeatureError, F.PipelineError)


def test_missing_column_is_named(frame: pd.DataFrame) -> None:
    with pytest.raises(F.FeatureError, match="volume"):
        F.compute_features(frame.drop(columns=["volume"]))


def test_agent_price_features(frame: pd.DataFrame, all_feats: pd.DataFrame) -> None:
    out = F.agent_price_features(frame, all_feats)
    assert out.shape == (len(frame), 5) and out.dtype == np.float32
    assert len(F.AGENT_PRICE_FEATURE_NAMES) == 5
    w = F.AGENT_PRICE_WARMUP
    assert np.isnan(out[:w]).all() and np.isfinite(out[w:]).all()
    close = frame["close"]
    norm = (close / close.rolling(50).mean() - 1).to_numpy()
    np.testing.assert_allclose(out[w:, 0], norm[w:], rtol=1e-5)
    np.testing.assert_allclose(out[w:, 1], all_feats["ret_1"][w:], rtol=1e-5)
    np.testing.assert_allclose(out[w:, 3], all_feats["rsi_14"][w:] / 100, rtol=1e-5)
    # Without a precomputed table the same numbers come out.
    np.testing.assert_array_equal(F.agent_price_features(frame), out)


# ---------------------------------------------------------------- labels


def test_smoothed_future_return_by_hand() -> None:
    close = np.array([10.0, 11.0, 12.0, 9.0, 10.0, 10.0])
    r = L.smoothed_future_return(close, 2)
    expected = [
        (11 + 12) / 2 / 10 - 1,  # 0.15
        (12 + 9) / 2 / 11 - 1,  # -0.04545
        (9 + 10) / 2 / 12 - 1,  # -0.2083
        (10 + 10) / 2 / 9 - 1,  # 0.1111
        np.nan,
        np.nan,
    ]
    np.testing.assert_allclose(r, expected, rtol=1e-12, equal_nan=True)
    labels = L.make_labels(r, 0.1)
    assert labels.dtype == np.int8
    assert labels.tolist() == [2, 1, 0, 2, -1, -1]
    np.testing.assert_allclose(L.smoothed_future_return(close, 1)[:-1], close[1:] / close[:-1] - 1)
    assert np.isnan(L.smoothed_future_return(close, 6)).all()
    with pytest.raises(F.FeatureError, match="k must be >= 1"):
        L.smoothed_future_return(close, 0)


def test_make_labels_thresholds_are_strict() -> None:
    r = np.array([0.1, -0.1, 0.1000001, -0.1000001, 0.0, np.nan])
    assert L.make_labels(r, 0.1).tolist() == [1, 1, 2, 0, 1, -1]
    assert L.make_labels(r, 0.0).tolist() == [2, 0, 2, 0, 1, -1]
    assert L.CLASS_NAMES == ("Fall", "Stationary", "Rise")
    assert classifier_metrics.CLASS_NAMES is L.CLASS_NAMES  # one copy
    with pytest.raises(F.FeatureError, match="delta"):
        L.make_labels(r, -0.5)


def test_auto_threshold_balances_classes(frame: pd.DataFrame) -> None:
    r = L.smoothed_future_return(frame["close"].to_numpy(), 5)
    delta = L.auto_threshold(r)
    counts = (
        np.bincount(L.make_labels(r, delta)[np.isfinite(r)], minlength=3) / np.isfinite(r).sum()
    )
    assert counts[1] == pytest.approx(1 / 3, abs=0.01)
    assert counts[0] == pytest.approx(1 / 3, abs=0.06)
    assert counts[2] == pytest.approx(1 / 3, abs=0.06)


def test_auto_threshold_uses_only_given_rows() -> None:
    r = np.array([0.01, -0.02, 0.03, -0.04, 0.05, 0.06, np.nan])
    expected = np.quantile(np.abs(r[:6]), 1 / 3)
    assert L.auto_threshold(r) == pytest.approx(expected)
    assert L.auto_threshold(r[:3]) == pytest.approx(np.quantile([0.01, 0.02, 0.03], 1 / 3))
    with pytest.raises(F.FeatureError, match="no finite returns"):
        L.auto_threshold(np.array([np.nan]))


# ---------------------------------------------------------------- windows (WindowData)


def _windows(x: np.ndarray, lookback: int, bars: np.ndarray) -> torch.Tensor:
    """Every window of ``bars`` from :class:`pipeline.classifiers.windows.WindowData` (CPU), ``(n,
    L, F)``."""
    data = WindowData.create(x, bars, None, lookback, torch.device("cpu"))
    xb, _ = data.batch(torch.arange(len(data)))
    return xb


def test_window_data_matches_naive_loop() -> None:
    # WindowData is the one windowing implementation.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    lookback = 5
    bars = np.array([4, 5, 17, 39, 10])
    got = _windows(x, lookback, bars)
    naive = np.stack([x[t - lookback + 1 : t + 1] for t in bars]).astype(np.float32)
    assert got.dtype == torch.float32 and got.shape == (5, lookback, 3)
    np.testing.assert_array_equal(got.numpy(), naive)
    np.testing.assert_array_equal(got[:, -1, :].numpy(), x[bars].astype(np.float32))  # ends AT t
    assert got.is_contiguous()
    x32 = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    data = WindowData.create(x32, bars, None, lookback, torch.device("cpu"))
    xb, _ = data.batch(torch.arange(len(data)))
    xb += 1.0  # a copy, not a view: the feature matrix is untouched
    np.testing.assert_array_equal(data.features.numpy(), x.astype(np.float32))
    assert _windows(x, lookback, np.array([], dtype=int)).shape == (0, lookback, 3)


def test_window_data_rejects_bars_without_full_window() -> None:
    x = np.zeros((10, 2))
    with pytest.raises(PipelineError, match="full window of 3 bars inside 0..9"):
        WindowData.create(x, np.array([1, 5]), None, 3, torch.device("cpu"))
    with pytest.raises(PipelineError, match="full window of 3 bars inside 0..9"):
        WindowData.create(x, np.array([10]), None, 3, torch.device("cpu"))
