"""The synthetic generator: determinism, candle consistency, stylised facts, planted signal."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.load import load_dataset
from pipeline.data.synthetic import COLUMNS, generate_ohlcv, write_ohlcv_csv

pytestmark = pytest.mark.unit  # every test here (tiers: tests/conftest.py)


def _log_returns(df: pd.DataFrame) -> np.ndarray:
    return np.diff(np.log(df["close"].to_numpy()))  # (N-1,)


def _autocorr(x: np.ndarray, lag: int) -> float:
    return float(np.corrcoef(x[lag:], x[:-lag])[0, 1])


@pytest.fixture(scope="module")
def walk() -> pd.DataFrame:
    """A pure random walk (signal 0), long enough for stable statistics."""
    return generate_ohlcv(20_000, signal=0.0, seed=11)


def test_schema_and_timestamps() -> None:
    df = generate_ohlcv(48, seed=1, start="2024-03-01", freq="1h", start_price=100.0)
    assert list(df.columns) == list(COLUMNS)
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert all(df[c].dtype == np.float64 for c in COLUMNS[1:])
    assert df["timestamp"].iloc[0] == pd.Timestamp("2024-03-01", tz="UTC")
    assert (df["timestamp"].diff().iloc[1:] == pd.Timedelta(hours=1)).all()
    assert df["open"].iloc[0] == pytest.approx(100.0)


def test_seeded_determinism() -> None:
    a = generate_ohlcv(500, signal=0.3, seed=5)
    b = generate_ohlcv(500, signal=0.3, seed=5)
    c = generate_ohlcv(500, signal=0.3, seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["close"], c["close"])


def test_signal_shares_noise_with_random_walk() -> None:
    # Same seed, different signal: identical noise, so the close paths differ only by the trend
    # component, and the first bar (no regime information yet) is identical.
    flat = generate_ohlcv(300, signal=0.0, seed=2)
    planted = generate_ohlcv(300, signal=1.0, seed=2)
    assert flat["close"].iloc[0] == planted["close"].iloc[0]
    assert not np.allclose(flat["close"], planted["close"])
    pd.testing.assert_series_equal(flat["timestamp"], planted["timestamp"])


def test_ohlc_consistency_and_continuity(walk: pd.DataFrame) -> None:
    o, h, lo, c = (walk[k].to_numpy() for k in ("open", "high", "low", "close"))
    assert (lo > 0).all() and (walk["volume"] > 0).all()
    assert (lo <= np.minimum(o, c)).all() and (h >= np.maximum(o, c)).all()
    assert (h > lo).all()
    gap = np.abs(o[1:] / c[:-1] - 1.0)  # open of bar t vs close of bar t-1
    assert gap.max() < 0.002 and np.median(gap) < 1e-4
    rng_pct = np.median(h / lo - 1.0)
    assert 0.003 < rng_pct < 0.02  # hourly high-low range of a BTC-like asset


def test_fat_tails_and_volatility_clustering(walk: pd.DataFrame) -> None:
    r = _log_returns(walk)
    assert pd.Series(r).kurt() > 1.0  # excess kurtosis
    assert _autocorr(np.abs(r), 1) > 0.05
    assert 0.004 < r.std() < 0.009  # about 0.6 % per hour


def test_hour_of_day_volume_pattern(walk: pd.DataFrame) -> None:
    by_hour = walk.groupby(walk["timestamp"].dt.hour)["volume"].median()
    assert by_hour.idxmax() in range(12, 19)  # busiest in the European / US afternoon
    assert by_hour.idxmin() in range(0, 7)
    assert by_hour.max() / by_hour.min() > 1.5
    r = np.abs(_log_returns(walk))
    assert np.corrcoef(r, walk["volume"].to_numpy()[1:])[0, 1] > 0.3  # busy bars are big bars


def test_random_walk_has_no_return_autocorrelation(walk: pd.DataFrame) -> None:
    r = _log_returns(walk)
    bound = 3.0 / np.sqrt(len(r))  # ~3 standard errors of a sample autocorrelation
    for lag in range(1, 6):
        assert abs(_autocorr(r, lag)) < bound, lag


def test_planted_signal_makes_momentum_predictive() -> None:
    # With the drift regime, past 60-bar momentum predicts the next 5-bar mean return.
    def momentum_corr(signal: float) -> float:
        df = generate_ohlcv(8_000, signal=signal, seed=4)
        logc = np.log(df["close"].to_numpy())
        past = logc[60:-5] - logc[:-65]  # (M,) return over bars t-59..t
        fut = np.array([logc[t + 1 : t + 6].mean() for t in range(60, len(logc) - 5)]) - logc[60:-5]
        return float(np.corrcoef(past, fut)[0, 1])

    assert abs(momentum_corr(0.0)) < 0.06
    weak, strong = momentum_corr(0.3), momentum_corr(1.0)
    assert 0.1 < weak < 0.35 and strong > 0.45


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="n_bars"):
        generate_ohlcv(0)
    with pytest.raises(ValueError, match="signal"):
        generate_ohlcv(10, signal=-1.0)


def test_write_csv_round_trip(tmp_path: Path) -> None:
    df = generate_ohlcv(30, seed=9)
    path = write_ohlcv_csv(df, tmp_path / "x.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "timestamp,open,high,low,close,volume"
    assert lines[1].startswith("2024-01-01T00:00:00Z,40000.0,")
    back = pd.read_csv(path)
    np.testing.assert_allclose(back["close"], df["close"], atol=0.006)
    assert (back["low"] <= back[["open", "close"]].min(axis=1)).all()
    assert (back["high"] >= back[["open", "close"]].max(axis=1)).all()


def test_make_synthetic_cli_writes_loadable_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = Path(__file__).resolve().parent.parent / "datasets" / "make_synthetic.py"
    spec = importlib.util.spec_from_file_location("make_synthetic", script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "SYNTH-T.csv"
    assert mod.main(["--rows", "48", "--signal", "0.5", "--seed", "3", "--out", str(out)]) == 0
    assert f"wrote {out} (48 rows" in capsys.readouterr().out
    df, info = load_dataset(str(out))
    assert info.rows == 48 and info.warnings == []
    expected = generate_ohlcv(48, signal=0.5, seed=3)
    np.testing.assert_allclose(df["close"], expected["close"].round(2))
    assert mod.main(["--rows", "0", "--out", str(tmp_path / "x.csv")]) == 1
    assert capsys.readouterr().err.strip() == "error: --rows must be >= 1, got 0"
    bad = ["--kind", "echo_ar", "--signal", "2", "--out", str(tmp_path / "y.csv")]
    assert mod.main(bad) == 1
    assert capsys.readouterr().err.strip() == (
        "error: --signal 2.0 --kind echo_ar: kind echo_ar needs signal < 1.25 (at 1.25 its "
        "autoregression has a unit root), got 2.0"
    )
    assert not (tmp_path / "y.csv").exists()


def test_kinds_plant_momentum_or_reversal_and_share_the_noise() -> None:
    """The agent ladder's series of other kinds. The momentum kinds make the past 10-bar return
    predict the next 5 bars' (positive correlation), mean reversion the opposite, and every kind
    with signal 0 is the same random walk (the noise of a seed is shared)."""
    import numpy as np

    def past_future_corr(kind: str, signal: float) -> float:
        lc = np.log(generate_ohlcv(12_000, signal=signal, seed=1, kind=kind)["close"].to_numpy())
        past, fut = lc[3:-5] - lc[:-8], lc[8:] - lc[3:-5]
        return float(np.corrcoef(past, fut)[0, 1])

    base = past_future_corr("momentum", 0.0)
    assert past_future_corr("momentum", 1.0) > base + 0.2
    assert past_future_corr("regime", 1.0) > base + 0.1
    assert past_future_corr("mean_reversion", 1.0) < base - 0.08
    noise = generate_ohlcv(500, signal=0.0, seed=3)
    for kind in ("regime", "mean_reversion"):
        other = generate_ohlcv(500, signal=0.0, seed=3, kind=kind)
        assert np.allclose(other["close"], noise["close"])


def test_unknown_kind_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="kind must be one of momentum, regime, mean_reversion"):
        generate_ohlcv(10, kind="trend")


def test_vol_trend_and_echo_hide_their_signal_from_per_bar_views() -> None:
    """``vol_trend`` pays momentum only in calm bars (and reverses it in busy ones), so momentum
    alone says little while momentum x calm says much; ``echo`` repeats each shock 24 bars later: a
    lag-24 autocorrelation, none at lag 1. Both share the seed's noise."""
    import numpy as np

    from pipeline.data.synthetic import ECHO_LAG_BARS

    df = generate_ohlcv(20_000, signal=1.0, seed=2, kind="vol_trend")
    lc = np.log(df["close"].to_numpy())
    r = np.diff(lc)  # (N-1,) bar returns
    past, fut = lc[10:-5] - lc[:-15], lc[15:] - lc[10:-5]
    rng_prev = np.log(df["high"] / df["low"]).rolling(10).mean().to_numpy()[10:-5]
    calm = np.where(rng_prev < np.nanmedian(rng_prev), 1.0, -1.0)
    ok = np.isfinite(rng_prev)
    plain = np.corrcoef(past[ok], fut[ok])[0, 1]
    signed = np.corrcoef((past * calm)[ok], fut[ok])[0, 1]
    assert signed > abs(plain) + 0.05, (signed, plain)

    r = np.diff(np.log(generate_ohlcv(20_000, signal=1.0, seed=2, kind="echo")["close"]))
    lag = ECHO_LAG_BARS
    assert np.corrcoef(r[lag:], r[:-lag])[0, 1] > 0.2
    assert abs(np.corrcoef(r[1:], r[:-1])[0, 1]) < 0.05
    # vol_echo: the shock's SIZE comes back: invisible to a linear view of past returns
    r = np.diff(np.log(generate_ohlcv(20_000, signal=1.0, seed=2, kind="vol_echo")["close"]))
    assert np.corrcoef(r[lag:], np.abs(r[:-lag]))[0, 1] > 0.2
    assert abs(np.corrcoef(r[lag:], r[:-lag])[0, 1]) < 0.05
    assert abs(r.mean()) < 0.1 * r.std()  # centred: no drift
    for kind in ("vol_trend", "echo", "vol_echo"):
        other = generate_ohlcv(500, signal=0.0, seed=3, kind=kind)
        assert np.allclose(other["close"], generate_ohlcv(500, signal=0.0, seed=3)["close"])


def test_echo_blip_hides_its_direction_from_multi_bar_returns() -> None:
    """``echo_blip`` brings each shock back 24 bars later and takes it back the bar after: a
    lag-24 autocorrelation and an opposite one at lag 25, so the past 24-bar return (what logreg's
    summaries sum) says little about the next 5 bars, where for ``echo`` it says much (issue 17)."""
    from pipeline.data.labels import smoothed_future_return

    def past_24_vs_label(kind: str) -> float:
        close = generate_ohlcv(20_000, signal=1.0, seed=2, kind=kind)["close"].to_numpy()
        lc = np.log(close)
        label = smoothed_future_return(close, 5)[24:]  # (N-24,) from bar 24 on
        ok = np.isfinite(label)
        return float(np.corrcoef((lc[24:] - lc[:-24])[ok], label[ok])[0, 1])

    r = _log_returns(generate_ohlcv(20_000, signal=1.0, seed=2, kind="echo_blip"))
    assert _autocorr(r, 24) > 0.25
    assert _autocorr(r, 25) < -0.25
    assert past_24_vs_label("echo") > 0.15
    assert abs(past_24_vs_label("echo_blip")) < 0.07
    other = generate_ohlcv(500, signal=0.0, seed=3, kind="echo_blip")
    assert np.allclose(other["close"], generate_ohlcv(500, signal=0.0, seed=3)["close"])


def test_echo_ar_plants_what_the_window_shows() -> None:
    """``echo_ar`` echoes the bar's return as the candles show it, not its hidden shock: the
    planted part of the label rebuilt from the candles is the planted part (``echo_blip``'s is
    blurred by each bar's own echo of an older shock), multi-bar returns still net it out, and
    a ``signal`` at the unit root is refused with the bound (issue 17)."""
    from pipeline.data.labels import smoothed_future_return
    from pipeline.data.synthetic import planted_signal

    def exact_vs_rebuilt(kind: str) -> float:
        df = generate_ohlcv(20_000, signal=1.0, seed=2, kind=kind)
        planted, sigma = planted_signal(20_000, 1.0, 2, kind, k=5)
        seen = np.log(df["close"].to_numpy() / df["open"].to_numpy()) / sigma  # (N,)
        rebuilt, _ = planted_signal(20_000, 1.0, 2, kind, k=5, shocks=seen)
        return float(np.corrcoef(planted[100:], rebuilt[100:])[0, 1])

    assert exact_vs_rebuilt("echo_ar") > 0.98
    assert exact_vs_rebuilt("echo_blip") < 0.95
    close = generate_ohlcv(20_000, signal=1.0, seed=2, kind="echo_ar")["close"].to_numpy()
    r, lc = np.diff(np.log(close)), np.log(close)
    assert _autocorr(r, 24) > 0.3
    assert _autocorr(r, 25) < -0.3
    label = smoothed_future_return(close, 5)[24:]  # (N-24,)
    ok = np.isfinite(label)
    assert abs(np.corrcoef((lc[24:] - lc[:-24])[ok], label[ok])[0, 1]) < 0.07
    quiet = generate_ohlcv(500, signal=0.0, seed=3, kind="echo_ar")
    assert np.allclose(quiet["close"], generate_ohlcv(500, signal=0.0, seed=3)["close"])
    with pytest.raises(ValueError, match=r"kind echo_ar needs signal < 1\.25 .*got 1\.3"):
        generate_ohlcv(100, signal=1.3, kind="echo_ar")


@pytest.mark.parametrize("kind", ["echo", "echo_blip", "echo_ar", "vol_echo"])
def test_planted_signal_is_what_the_label_holds(kind: str) -> None:
    """The oracle of the headroom bench: the planted part of each bar's label return, in units
    of the next bar's volatility, follows the label closely; rebuilt from the shocks the candles
    show (which carry older echoes) it follows it less but still clearly; ``echo_ar`` echoes
    the shown returns themselves, so there it follows it as closely."""
    from pipeline.data.labels import smoothed_future_return
    from pipeline.data.synthetic import planted_signal

    df = generate_ohlcv(20_000, signal=1.0, seed=2, kind=kind)
    planted, sigma = planted_signal(20_000, 1.0, 2, kind, k=5)
    label = smoothed_future_return(df["close"].to_numpy(), 5)[:-1] / sigma[1:]  # (N-1,)
    ok = np.isfinite(label)
    exact = np.corrcoef(planted[:-1][ok], label[ok])[0, 1]
    seen = np.log(df["close"].to_numpy() / df["open"].to_numpy()) / sigma  # (N,)
    rebuilt, _ = planted_signal(20_000, 1.0, 2, kind, k=5, shocks=seen)
    approx = np.corrcoef(rebuilt[:-1][ok], label[ok])[0, 1]
    assert exact > 0.3
    if kind == "echo_ar":  # it echoes the returns the candles show: nothing is hidden
        assert abs(approx - exact) < 0.01
    else:
        assert 0.15 < approx < exact
    flat, _ = planted_signal(20_000, 0.0, 2, kind, k=5)
    assert not flat.any()


def test_planted_signal_refuses_kinds_without_one() -> None:
    from pipeline.data.synthetic import planted_signal

    with pytest.raises(ValueError, match="kind must be one of echo, echo_blip, echo_ar, vol_echo"):
        planted_signal(100, 1.0, 0, "momentum", k=5)
    with pytest.raises(ValueError, match="k must be in 1..23"):
        planted_signal(100, 1.0, 0, "echo", k=24)
