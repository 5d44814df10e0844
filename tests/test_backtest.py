"""Backtest metrics on hand-made equity curves, baseline policies through the env, the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from pipeline.data import annualisation
from pipeline.run import report_names
from ppo_approach import backtest as bt
from ppo_approach import backtest_plot, evaluation
from ppo_approach.reward_functions import RewardConfig
from ppo_approach.trading_env import Actions, EnvConfig, MarketData, TradingEnv

# ---------------------------------------------------------------- metrics on hand-made curves


@pytest.mark.unit
def test_periods_per_year_and_bar_interval() -> None:
    assert annualisation.periods_per_year(3600) == 8760
    assert annualisation.periods_per_year(86400) == 365
    ts = pd.date_range("2024-01-01", periods=50, freq="15min").to_numpy()
    ts = np.delete(ts, [10, 20])  # two gaps do not change the median spacing
    assert annualisation.bar_interval_seconds(ts) == 900.0
    with pytest.raises(annualisation.AnnualisationError, match="bar interval"):
        annualisation.periods_per_year(0)


def _equity_trading_days(start: str, end: str) -> np.ndarray:
    """Weekdays without US federal holidays: a stand-in for an exchange calendar (~250/yr)."""
    from pandas.tseries.holiday import USFederalHolidayCalendar
    from pandas.tseries.offsets import CustomBusinessDay

    return pd.date_range(start, end, freq=CustomBusinessDay(calendar=USFederalHolidayCalendar()))


@pytest.mark.unit
def test_infer_periods_per_year_equity_daily_about_252() -> None:
    # Daily equity candles were annualised with 365 bars per year.
    ts = _equity_trading_days("2019-01-01", "2023-12-31").to_numpy()
    bars_per_year, why = annualisation.infer_periods_per_year(ts)
    assert 248 <= bars_per_year <= 254
    assert "full calendar years (2019-2023)" in why
    # Plain weekdays (no holidays): 261 in a 365-day year.
    ppy_wd, _ = annualisation.infer_periods_per_year(
        pd.bdate_range("2019-01-01", "2023-12-31").to_numpy()
    )
    assert ppy_wd == 261.0
    # The old rule (24/7 at the median spacing of 1 day) said 365.
    assert annualisation.periods_per_year(annualisation.bar_interval_seconds(ts)) == 365


@pytest.mark.unit
def test_infer_periods_per_year_changes_sharpe_and_cagr_as_issue_describes() -> None:
    # A daily equity curve that reads +45 %/yr under 365 bars/year.
    ts = _equity_trading_days("2019-01-01", "2023-12-31").to_numpy()
    bars_per_year, _ = annualisation.infer_periods_per_year(ts)
    drift = math.log(1.45) / 365
    eq = 100.0 * np.exp(np.linspace(0.0, drift * (ts.size - 1), ts.size))
    old_ann = evaluation.annualised_return(eq, 365)
    new_ann = evaluation.annualised_return(eq, bars_per_year)
    assert old_ann == pytest.approx(0.45)
    assert new_ann == pytest.approx(1.45 ** (bars_per_year / 365) - 1)
    assert 0.28 < new_ann < 0.31  # +30 % a year with 252 trading days
    rng = np.random.default_rng(0)
    rets = drift + 0.01 * rng.standard_normal(ts.size - 1)
    assert evaluation.sharpe_ratio(rets, bars_per_year) == pytest.approx(
        evaluation.sharpe_ratio(rets, 365) * math.sqrt(bars_per_year / 365)
    )
    assert evaluation.sharpe_ratio(rets, bars_per_year) < evaluation.sharpe_ratio(rets, 365)


@pytest.mark.unit
def test_infer_periods_per_year_other_markets() -> None:
    hourly = pd.date_range("2020-01-01", "2023-12-31 23:00", freq="1h")  # 24/7, 2020 a leap year
    assert annualisation.infer_periods_per_year(hourly.to_numpy())[0] == 8760.0
    daily = pd.date_range("2020-03-01", "2023-12-31", freq="1D")
    assert annualisation.infer_periods_per_year(daily.to_numpy())[0] == 365.0
    fx = hourly[hourly.day_of_week < 5]  # FX: 5 days x 24 hours
    assert annualisation.infer_periods_per_year(fx.to_numpy())[0] == pytest.approx(6240, abs=30)
    # No full calendar year: bars per elapsed 365-day year.
    part = pd.date_range("2021-03-01", "2021-10-31 23:00", freq="1h")
    bars_per_year, why = annualisation.infer_periods_per_year(part.to_numpy())
    assert bars_per_year == pytest.approx(8760.0)
    assert "elapsed year" in why
    # Under four weeks: too short to infer, the 24/7 rule at the bar spacing.
    short = pd.date_range("2024-01-01", periods=50, freq="1h")
    bars_per_year, why = annualisation.infer_periods_per_year(short.to_numpy())
    assert bars_per_year == 8760.0
    assert "too short" in why
    with pytest.raises(annualisation.AnnualisationError, match="at least 2 timestamps"):
        annualisation.infer_periods_per_year(short.to_numpy()[:1])


@pytest.mark.unit
def test_total_and_annualised_return() -> None:
    eq = np.array([100.0, 110.0, 121.0])  # +10 % per bar, 2 bars
    assert evaluation.total_return(eq) == pytest.approx(0.21)
    # 2 bars per year: the 2 bars ARE one year.
    assert evaluation.annualised_return(eq, bars_per_year=2) == pytest.approx(0.21)
    # 4 bars per year: two such half-years compound to 1.21 ** 2.
    assert evaluation.annualised_return(eq, bars_per_year=4) == pytest.approx(1.21**2 - 1)


@pytest.mark.unit
def test_sharpe_known_value_and_zero_volatility() -> None:
    r = np.array([0.01, 0.03, 0.01, 0.03])  # mean 0.02, sample std 0.01 * sqrt(4/3)
    expected = 0.02 / (0.01 * math.sqrt(4 / 3)) * math.sqrt(100)
    assert evaluation.sharpe_ratio(r, bars_per_year=100) == pytest.approx(expected)
    # Through an equity curve, as strategy_metrics computes it.
    eq = 100 * np.cumprod(np.concatenate(([1.0], 1 + r)))
    assert evaluation.sharpe_ratio(evaluation.simple_returns(eq), 100) == pytest.approx(expected)
    assert evaluation.sharpe_ratio(np.full(10, 0.001), 100) == 0.0  # no volatility: defined as 0


@pytest.mark.unit
def test_sortino_known_value_and_no_downside() -> None:
    r = np.array([0.02, -0.01, 0.02, -0.01])
    downside = math.sqrt((0.01**2 + 0.01**2) / 4)  # over ALL bars, target 0
    assert evaluation.sortino_ratio(r, bars_per_year=9) == pytest.approx(0.005 / downside * 3)
    assert evaluation.sortino_ratio(np.array([0.01, 0.02]), 9) is None  # never lost: undefined
    assert evaluation.sortino_ratio(np.zeros(5), 9) == 0.0


@pytest.mark.unit
def test_max_drawdown_and_calmar() -> None:
    eq = np.array([100.0, 120.0, 90.0, 130.0, 104.0])
    np.testing.assert_allclose(evaluation.drawdown_series(eq), [0, 0, 0.25, 0, 0.2])
    assert evaluation.max_drawdown(eq) == pytest.approx(0.25)
    assert evaluation.calmar_ratio(0.5, 0.25) == pytest.approx(2.0)
    assert evaluation.calmar_ratio(0.5, 0.0) is None
    assert evaluation.max_drawdown(np.array([1.0, 2.0, 3.0])) == 0.0


@pytest.mark.unit
def test_round_trips_and_win_rate() -> None:
    units = np.array([0, 1, 1, 0, 0, 2, 2, 0, 1])
    equity = np.array([100, 100, 110, 108, 108, 108, 100, 99, 99], dtype=float)
    trips = evaluation.round_trip_returns(units, equity)
    # Trip 1: from 100 (before the entry fill) to 108 after the exit; trip 2: 108 -> 99;
    # the position opened at the last step is still open and not counted.
    np.testing.assert_allclose(trips, [0.08, 99 / 108 - 1])
    assert evaluation.win_rate(trips) == 0.5
    assert evaluation.win_rate(np.array([])) is None
    # A reversal closes one trip and opens the next at the same step.
    trips = evaluation.round_trip_returns(np.array([0, 1, -1, 0]), np.array([100.0, 105, 103, 104]))
    np.testing.assert_allclose(trips, [0.03, 104 / 105 - 1])


@pytest.mark.unit
def test_json_safe_and_strict_json(tmp_path) -> None:
    report = {"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": np.float32(2.0)}}
    path = bt.write_report(report, tmp_path / "r.json")

    def refuse(token: str) -> None:
        raise AssertionError(f"non-strict JSON token {token}")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data == {"a": None, "b": [None, 1.5], "c": {"d": 2.0}}


# ---------------------------------------------------------------- strategies through the env


def _block(n: int = 60, seed: int = 0) -> tuple[MarketData, np.ndarray]:
    """A rising price path with noise, and probabilities that say Rise for the first 10 bars."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(0.002 + rng.normal(0, 0.005, n)))
    open_ = np.concatenate(([100.0], close[:-1])) * (1 + rng.normal(0, 0.0005, n))
    probs = np.tile([0.6, 0.3, 0.1], (n, 1))
    probs[:10] = [0.1, 0.2, 0.7]
    data = MarketData(
        open=open_,
        close=close,
        pred_features=probs,
        price_features=np.zeros((n, 5)),
        timestamps=pd.date_range("2024-01-01", periods=n, freq="1h").to_numpy(),
    )
    return data, probs


@pytest.mark.unit
def test_baselines_through_the_same_env() -> None:
    data, probs = _block()
    tc = 0.001
    cfg = EnvConfig(action_set="orders", transaction_cost=tc, episode_length=10, ruin_threshold=0.5)
    runs = bt.run_strategies(data, cfg, RewardConfig(), evaluation.flat_policy, probs, [1, 2, 3])
    bars_per_year = 8760.0
    m = bt.summarise_runs(runs, bars_per_year)
    assert set(m) == set(report_names.STRATEGY_NAMES)
    n = data.n_bars - 1  # the backtest runs the WHOLE block despite episode_length = 10
    assert all(r.n_steps == n for recs in runs.values() for r in recs)

    # Buy and hold: all cash (fee included) at open[1], valued at liquidation at the last close
    # (formerly a fee-free mark: two fees, one closed round trip).
    bh = m["buy_and_hold"]
    units = 10_000 / (data.open[1] * (1 + tc))
    exit_value = units * data.close[-1]
    assert bh["total_return"] == pytest.approx(
        data.close[-1] * (1 - tc) / (data.open[1] * (1 + tc)) - 1
    )
    assert bh["n_trades"] == 2
    assert bh["n_round_trips"] == 1 and bh["win_rate"] == (1.0 if bh["total_return"] > 0 else 0.0)
    assert bh["time_in_market"] == 1.0
    assert bh["fees_paid"] == pytest.approx(tc * 10_000 / (1 + tc) + tc * exit_value)
    assert bh["turnover"] == pytest.approx(
        (10_000 / (1 + tc) + exit_value) / runs["buy_and_hold"][0].equity.mean()
    )

    flat = m["flat"]
    assert flat["total_return"] == 0 and flat["n_trades"] == 0 and flat["sharpe"] == 0
    assert flat["max_drawdown"] == 0 and flat["calmar"] is None and flat["time_in_market"] == 0
    # The "agent" here is the flat policy too: fees do not matter when it never trades.
    assert m["agent"] == m["agent_cost_0x"] == m["agent_cost_2x"] == flat

    # Classifier rule: Rise for bars 0..9 -> long from open[1], CLOSE decided at bar 10 fills
    # at open[11]; one closed round trip.
    rule = runs["classifier_rule"][0]
    assert m["classifier_rule"]["n_trades"] == 2
    assert rule.units[1] > 0 and rule.units[10] > 0 and rule.units[11] == 0
    units = 10_000 / (data.open[1] * (1 + tc))
    cash_end = units * data.open[11] * (1 - tc)
    assert rule.equity[-1] == pytest.approx(cash_end)
    assert m["classifier_rule"]["win_rate"] == (1.0 if cash_end > 10_000 else 0.0)
    assert m["classifier_rule"]["n_round_trips"] == 1  # the win rate is over ONE trip
    assert m["classifier_rule"]["time_in_market"] == pytest.approx(10 / n)

    # Random: the metric-wise mean of its three seeds.
    singles = [evaluation.strategy_metrics(r, bars_per_year) for r in runs["random"]]
    assert len(singles) == 3 and len({s["n_trades"] for s in singles}) > 1
    assert m["random"]["total_return"] == pytest.approx(
        np.mean([s["total_return"] for s in singles])
    )
    trips = [s["n_round_trips"] for s in singles]
    assert all(isinstance(k, int) and k > 0 for k in trips)
    assert m["random"]["n_round_trips"] == pytest.approx(np.mean(trips))


@pytest.mark.unit
def test_agent_cost_multipliers_change_only_fees() -> None:
    data, probs = _block()
    cfg = EnvConfig(action_set="orders", transaction_cost=0.002)
    trader = evaluation.ClassifierRulePolicy(probs)  # stands in for the agent: trades twice
    runs = bt.run_strategies(data, cfg, RewardConfig(), trader, probs, [0])
    m = bt.summarise_runs(runs, 8760.0)
    assert m["agent_cost_0x"]["fees_paid"] == 0.0
    assert m["agent"]["fees_paid"] > 0
    assert m["agent_cost_2x"]["fees_paid"] == pytest.approx(2 * m["agent"]["fees_paid"], rel=0.01)
    assert (
        m["agent_cost_0x"]["total_return"]
        > m["agent"]["total_return"]
        > m["agent_cost_2x"]["total_return"]
    )


@pytest.mark.unit
def test_run_episode_records_are_aligned() -> None:
    data, _ = _block(30)
    env = TradingEnv(data, EnvConfig(action_set="orders", episode_length=0), random_start=False)
    rec = evaluation.run_episode(env, evaluation.buy_and_hold_policy)
    assert rec.n_steps == 29
    assert rec.equity.shape == rec.units.shape == rec.bars.shape == (30,)
    np.testing.assert_array_equal(rec.bars, np.arange(30))
    assert rec.notional[0] == pytest.approx(rec.units[1] * data.open[1])
    assert rec.notional[1:-1].sum() == 0
    # The last step carries the liquidation of the position at the last close.
    assert rec.notional[-1] == pytest.approx(rec.units[-1] * data.close[-1])
    assert rec.liquidated
    np.testing.assert_allclose(rec.position_fraction()[1:], 1.0, rtol=1e-9)


SEED_ENDS_LONG = 0
"""A RandomPolicy seed that ends the 6-bar block below with a position open."""


@pytest.mark.unit
def test_open_positions_valued_at_liquidation_exactly() -> None:
    # A position open at the end pays its exit fee and slippage, for every strategy alike. Prices
    # are exact binary fractions so the numbers can be checked exactly.
    n = 6
    open_ = np.array([100.0, 100.0, 104.0, 96.0, 112.0, 120.0])
    close = np.array([100.0, 104.0, 96.0, 112.0, 120.0, 128.0])
    probs = np.tile([0.1, 0.2, 0.7], (n, 1))  # the rule says Rise on every bar: long to the end
    data = MarketData(
        open=open_,
        close=close,
        pred_features=probs,
        price_features=np.zeros((n, 5)),
        timestamps=pd.date_range("2024-01-01", periods=n, freq="1h").to_numpy(),
    )
    tc, slip, cap = 0.01, 0.005, 10_000.0
    cfg = EnvConfig(action_set="orders", initial_capital=cap, transaction_cost=tc, slippage=slip)
    runs = bt.run_strategies(data, cfg, RewardConfig(), evaluation.buy_and_hold_policy, probs, [0])
    units = cap / (100.0 * (1 + slip) * (1 + tc))  # bought at open[1] with all cash, fee included
    final = units * 128.0 * (1 - slip) * (1 - tc)  # sold at the last close: the second fee
    for name in ("agent", "buy_and_hold", "classifier_rule", "agent_cost_2x"):
        rec = runs[name][0]
        assert rec.liquidated, name
        assert rec.trades == 2, name
    for name in ("agent", "buy_and_hold", "classifier_rule"):
        rec = runs[name][0]
        assert rec.equity[-1] == pytest.approx(final, rel=1e-12), name
        # Marks before the last stay at market: bar 4 closes at 120.
        assert rec.equity[-2] == pytest.approx(units * 120.0, rel=1e-12), name
        fee_in = tc * units * 100.0 * (1 + slip)
        fee_out = tc * units * 128.0 * (1 - slip)
        assert rec.fees.sum() == pytest.approx(fee_in + fee_out, rel=1e-12), name
    rec2 = runs["agent_cost_2x"][0]
    u2 = cap / (100.0 * (1 + slip) * (1 + 2 * tc))
    assert rec2.equity[-1] == pytest.approx(u2 * 128.0 * (1 - slip) * (1 - 2 * tc), rel=1e-12)
    m = bt.summarise_runs(runs, 8760.0)
    assert m["buy_and_hold"]["total_return"] == pytest.approx(final / cap - 1, rel=1e-12)
    assert m["buy_and_hold"]["n_round_trips"] == 1 and m["buy_and_hold"]["win_rate"] == 1.0
    # Flat pays nothing at the end; a random policy's open position is liquidated too.
    assert runs["flat"][0].equity[-1] == cap and not runs["flat"][0].liquidated
    env = TradingEnv(data, bt.backtest_env_config(cfg), random_start=False)
    policy, seed = evaluation.RandomPolicy(SEED_ENDS_LONG), SEED_ENDS_LONG
    obs, info = env.reset()
    done = False
    while not done:
        obs, _, term, trunc, info = env.step(policy(obs, info))
        done = term or trunc
    assert info["position"] != 0 and info["exit_fee"] > 0
    rnd = bt.run_strategies(data, cfg, RewardConfig(), evaluation.flat_policy, probs, [seed])[
        "random"
    ][0]
    assert rnd.liquidated and rnd.final_mark == info["equity"]
    assert rnd.equity[-1] == info["liquidation_equity"] < info["equity"]


@pytest.mark.unit
def test_summary_prints_counts_as_integers_and_explains_columns() -> None:
    # Counts were printed as 1849.000; the random row is a mean over seeds.
    data, probs = _block()
    runs = bt.run_strategies(
        data,
        EnvConfig(action_set="orders"),
        RewardConfig(),
        evaluation.ClassifierRulePolicy(probs),
        probs,
        [0, 1],
    )
    strategies = bt.summarise_runs(runs, 8760.0)
    report = {
        "strategies": strategies,
        "random_policy_seeds": 2,
        "periods_per_year": 8760.0,
        "periods_per_year_basis": "8760.0 bars/year: median bar count of 1 full calendar year",
    }
    lines = bt.format_summary(report).splitlines()
    header = lines[1].split()
    # line 0: title, 1: header, 2: rule (the one table formatter, pipeline.tables), 3+: rows
    assert set(lines[2]) <= {"-", " "}
    rows = {ln.split()[0]: ln.split() for ln in lines[3 : 3 + len(report_names.STRATEGY_NAMES)]}
    for name, row in rows.items():
        for col in ("n_trades", "n_round_trips"):
            cell = row[header.index(col)]
            value = strategies[name][col]
            if name == "random":
                # A mean of two integers: a whole number or one decimal (.5), never "x.000".
                assert cell == (str(int(value)) if float(value).is_integer() else f"{value:.1f}")
            else:
                assert cell == str(value) and cell.isdigit(), (name, col, cell)
            assert not cell.endswith(".000")
    assert rows["agent"][header.index("n_trades")] == "2"  # the rule: in at bar 1, out at 11
    # A mean that is not whole prints one decimal.
    assert bt._fmt(1849.4, pct=False, count=True) == "1849.4"
    assert bt._fmt(1849.0, pct=False, count=True) == "1849"
    notes = lines[3 + len(report_names.STRATEGY_NAMES) :]
    assert notes[0] == "  note: random: mean of 2 seeds (so its counts can be fractional)"
    assert any("n_round_trips: closed trips win_rate is over" in ln for ln in notes)
    assert any("valued at liquidation" in ln for ln in notes)
    assert notes[-1].endswith(
        "annualised with 8760.0 bars/year: median bar count of 1 full calendar year"
    )


@pytest.mark.integration
def test_plot_agent_on_top_and_one_colour_per_strategy() -> None:
    # The agent's line hid under the others at the start value, and classifier_rule / flat swapped
    # colours between panels.
    import matplotlib.pyplot as plt

    data, probs = _block()
    runs = bt.run_strategies(
        data, EnvConfig(action_set="orders"), RewardConfig(), evaluation.flat_policy, probs, [0, 1]
    )
    fig = backtest_plot.backtest_figure(runs, data.timestamps, "t")
    try:
        colours: dict[str, set[str]] = {}
        # The strategy panels; the agent's position/action strip has its own test.
        panels = [ax for ax in fig.axes if ax.get_label() != backtest_plot.STRIP_LABEL]
        assert len(panels) == 3
        for ax in panels:
            lines = ax.get_lines()
            names = [ln.get_label().split()[0] for ln in lines]
            assert names[-1] == "agent"  # drawn last ...
            agent = lines[-1]
            others = lines[:-1]
            assert all(agent.get_zorder() > ln.get_zorder() for ln in others)  # ... and on top
            assert all(agent.get_linewidth() > ln.get_linewidth() for ln in others)
            for name, ln in zip(names, lines, strict=True):
                colours.setdefault(name, set()).add(str(ln.get_color()))
            legend = [t.get_text().split()[0] for t in ax.get_legend().get_texts()]
            assert legend[0] == "agent"  # the legend keeps the usual order
        assert all(len(c) == 1 for c in colours.values()), colours
        assert len({next(iter(c)) for c in colours.values()}) == len(colours)  # all distinct
        assert colours["classifier_rule"] == {backtest_plot.STRATEGY_COLOURS["classifier_rule"]}
        assert colours["flat"] == {backtest_plot.STRATEGY_COLOURS["flat"]}
    finally:
        plt.close(fig)


@pytest.mark.unit
def test_classifier_rule_rejects_bad_shape() -> None:
    with pytest.raises(evaluation.BacktestError, match=r"shape \(4, 2\), expected \(n, 3\)"):
        evaluation.ClassifierRulePolicy(np.zeros((4, 2)))


@pytest.mark.unit
def test_summary_table_and_plot(tmp_path) -> None:
    data, probs = _block()
    runs = bt.run_strategies(
        data, EnvConfig(action_set="orders"), RewardConfig(), evaluation.flat_policy, probs, [0, 1]
    )
    report = {
        "model": "dlstm",
        "dataset": "X",
        "chosen_model": "final",
        "prediction_source": "walk_forward",
        "in_sample_predictions": True,
        "blocks": {"test": {"start": "a", "end": "b", "bars": 60}},
        "strategies": bt.summarise_runs(runs, 8760.0),
    }
    text = bt.format_summary(report)
    lines = text.splitlines()
    assert "IN-SAMPLE" in lines[0] and "test block a .. b (60 bars)" in lines[0]
    assert lines[1].split()[:3] == ["strategy", "total_return", "annualised_return"]
    # Rows, then the notes under the table.
    assert [ln.split()[0] for ln in lines[3 : 3 + len(report_names.STRATEGY_NAMES)]] == list(
        report_names.STRATEGY_NAMES
    )
    assert lines[3 + report_names.STRATEGY_NAMES.index("flat")].split()[1] == "0.00%"
    # The win rate is printed next to the number of round trips it is computed over.
    header = lines[1].split()
    assert header[header.index("win_rate") + 1] == "n_round_trips"
    flat_row = lines[3 + report_names.STRATEGY_NAMES.index("flat")].split()
    assert (
        flat_row[header.index("win_rate")] == "-" and flat_row[header.index("n_round_trips")] == "0"
    )
    png = backtest_plot.plot_backtest(runs, data.timestamps, tmp_path / "b.png", "title")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------- action counts


class ScriptedPolicy:
    """Plays ``script[bar]`` at each bar of a block started at bar 0, then HOLD (stateless, so
    the agent's runs at other costs replay the same script)."""

    def __init__(self, script: list[Actions]) -> None:
        self.script = list(script)

    def __call__(self, obs: np.ndarray, info: dict) -> int:
        """The scripted action of this bar."""
        bar = int(info["bar"])
        return int(self.script[bar] if bar < len(self.script) else Actions.HOLD)


SCRIPT = [Actions.BUY_100, Actions.HOLD, Actions.SELL_100, Actions.SELL_50, Actions.CLOSE]
"""Buy, hold, sell all while long (valid), then SELL and CLOSE while flat (both invalid)."""


def _scripted_report(tmp_path) -> tuple[dict, dict]:
    data, probs = _block(12)
    runs = bt.run_strategies(
        data, EnvConfig(action_set="orders"), RewardConfig(), ScriptedPolicy(SCRIPT), probs, [0, 1]
    )
    report = {"strategies": bt.summarise_runs(runs, 8760.0), "random_policy_seeds": 2}
    path = bt.write_report(report, tmp_path / "r.json")
    return runs, json.loads(path.read_text())


@pytest.mark.unit
def test_action_counts_and_invalid_actions_in_the_report(tmp_path) -> None:
    # The agent picked an invalid action (a free HOLD) on every bar and the report only said
    # "0 trades"; the report now counts every decision, the invalid ones apart.
    runs, rep = _scripted_report(tmp_path)
    agent = runs["agent"][0]
    np.testing.assert_array_equal(agent.valid[:5], [True, True, True, False, False])
    assert agent.valid[5:].all() and agent.n_steps == 11
    m = rep["strategies"]["agent"]
    assert m["invalid_actions"] == 2
    expected = {a.name: 0 for a in Actions}
    # the scripted HOLD + 6 after the script + the 2 invalid orders executed as HOLD
    expected.update(HOLD=1 + 6 + 2, BUY_100=1, SELL_100=1)
    assert m["action_counts"] == expected
    assert sum(m["action_counts"].values()) == agent.n_steps
    assert m["n_trades"] == 2
    # The same counts at other costs; buy-and-hold buys once and holds; flat only holds.
    assert rep["strategies"]["agent_cost_2x"]["action_counts"] == expected
    bh = rep["strategies"]["buy_and_hold"]
    assert bh["action_counts"]["BUY_100"] == 1 and bh["action_counts"]["HOLD"] == 10
    assert bh["invalid_actions"] == 0
    assert rep["strategies"]["flat"]["action_counts"]["HOLD"] == 11
    # Random: the per-action mean over its two seeds, invalid ones apart.
    singles = [evaluation.strategy_metrics(r, 8760.0) for r in runs["random"]]
    for name in expected:
        assert rep["strategies"]["random"]["action_counts"][name] == pytest.approx(
            np.mean([s["action_counts"][name] for s in singles])
        )
    assert rep["strategies"]["random"]["invalid_actions"] == pytest.approx(
        np.mean([s["invalid_actions"] for s in singles])
    )
    assert set(m) == set(report_names.METRIC_NAMES)


@pytest.mark.unit
def test_summary_shows_invalid_actions_and_the_agents_action_counts(tmp_path) -> None:
    _, rep = _scripted_report(tmp_path)
    lines = bt.format_summary(rep).splitlines()
    header = lines[1].split()
    rows = {ln.split()[0]: ln.split() for ln in lines[3 : 3 + len(report_names.STRATEGY_NAMES)]}
    assert rows["agent"][header.index("invalid_actions")] == "2"
    assert rows["buy_and_hold"][header.index("invalid_actions")] == "0"
    assert "action_counts" not in header  # a dict: printed as a note, not a column
    notes = lines[3 + len(report_names.STRATEGY_NAMES) :]
    assert (
        "  note: agent orders: HOLD 9, BUY_100 1, SELL_100 1; 2 invalid orders executed as HOLD"
        in notes
    )
    assert any("invalid_actions: decisions the env refused" in ln for ln in notes)


@pytest.mark.unit
def test_plot_has_the_agents_position_and_action_strip(tmp_path) -> None:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    runs, _ = _scripted_report(tmp_path)
    fig = backtest_plot.backtest_figure(runs, _block(12)[0].timestamps, "t")
    try:
        strips = [ax for ax in fig.axes if ax.get_label() == backtest_plot.STRIP_LABEL]
        assert len(fig.axes) == 4 and len(strips) == 1
        strip = strips[0]
        assert fig.axes.index(strip) == 1  # right under the equity panel
        legend = [t.get_text() for t in strip.get_legend().get_texts()]
        assert legend == ["long", "buy", "sell", "invalid (2)"]
        marks = {ln.get_label(): ln for ln in strip.get_lines()}
        assert len(marks["buy"].get_xdata()) == 1 and len(marks["sell"].get_xdata()) == 1
        assert len(marks["invalid (2)"].get_xdata()) == 2
        # Long from the buy's fill (bar 1) to the sell's fill (bar 3): one shaded span.
        ts = mdates.date2num(_block(12)[0].timestamps)
        bars = [c for c in strip.collections if isinstance(c, PolyCollection)]
        assert len(bars) == 1
        extent = bars[0].get_paths()[0].get_extents()
        assert extent.x0 == pytest.approx(ts[1]) and extent.x1 == pytest.approx(ts[3])
        assert marks["buy"].get_xdata()[0] == pytest.approx(ts[1])
        assert marks["sell"].get_xdata()[0] == pytest.approx(ts[3])
    finally:
        plt.close(fig)
    # Without an agent run there is no strip.
    no_agent = {k: v for k, v in runs.items() if k != "agent"}
    fig = backtest_plot.backtest_figure(no_agent, _block(12)[0].timestamps, "t")
    try:
        assert len(fig.axes) == 3
        assert not [ax for ax in fig.axes if ax.get_label() == backtest_plot.STRIP_LABEL]
    finally:
        plt.close(fig)
    png = backtest_plot.plot_backtest(
        runs, _block(12)[0].timestamps, tmp_path / "s.png", "scripted"
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.unit
def test_target_action_agent_beside_baselines_that_speak_orders() -> None:
    """With ``action_set = target`` the agent's actions are targets, the baselines' orders; an agent
    asking for LONG_100 on every bar trades exactly like buy-and-hold, and its action counts name
    the orders sent (BUY_100 once, then HOLD)."""
    n = 6
    open_ = np.array([100.0, 100.0, 104.0, 96.0, 112.0, 120.0])
    close = np.array([100.0, 104.0, 96.0, 112.0, 120.0, 128.0])
    probs = np.tile([0.1, 0.2, 0.7], (n, 1))
    data = MarketData(open_, close, probs, np.zeros((n, 5)))
    cfg = EnvConfig(transaction_cost=0.01, action_set="target")
    runs = bt.run_strategies(data, cfg, RewardConfig(), lambda obs, info: 2, probs, [0])
    agent, bh = runs["agent"][0], runs["buy_and_hold"][0]
    np.testing.assert_array_equal(agent.equity, bh.equity)
    assert agent.action_counts()["BUY_100"] == 1 and agent.action_counts()["HOLD"] == n - 2
    np.testing.assert_array_equal(runs["classifier_rule"][0].equity, bh.equity)


@pytest.mark.unit
def test_run_strategies_logs_each_run_and_every_30_s_inside_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No silent minute in the final backtest. A line as each strategy run starts, and inside a run
    a line with the bar reached once 30 s passed (fake clock: 1 s per bar)."""
    data, probs = _block()
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    progress = bt.StrategyProgress(8, data.n_bars, 30.0, clock)
    with caplog.at_level("INFO", logger=bt.__name__):
        bt.run_strategies(
            data,
            EnvConfig(action_set="orders"),
            RewardConfig(),
            evaluation.flat_policy,
            probs,
            [0, 1],
            progress,
        )
    msgs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("backtest:")]
    names = [
        "agent",
        "buy_and_hold",
        "flat",
        "random (seed 0)",
        "random (seed 1)",
        "classifier_rule",
        "agent_cost_0x",
        "agent_cost_2x",
    ]
    starts = [m for m in msgs if m.startswith("backtest: running ")]
    assert starts == [f"backtest: running {n} ({k} of 8)" for k, n in enumerate(names, 1)]
    inside = [m for m in msgs if m not in starts]
    # 59 steps a run, one clock tick each: a line after 30 s in every run, none twice as often.
    assert len(inside) == 8, msgs
    assert inside[0] == "backtest: agent at bar 30 of 60, 30 s into this run"
    assert inside[-1] == "backtest: agent_cost_2x at bar 30 of 60, 30 s into this run"


@pytest.mark.unit
def test_plot_legend_carries_the_luck_verdict_interval_and_psr(tmp_path) -> None:
    """The PNG's equity legend gives each judged strategy its verdict, the 95 % interval of its
    total return and its PSR (the figure reads the report's entry)."""
    import matplotlib.pyplot as plt

    runs, _ = _scripted_report(tmp_path)
    luck = bt.significance_section(runs, 8760.0)
    fig = backtest_plot.backtest_figure(runs, _block(12)[0].timestamps, "t", luck)
    try:
        texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    finally:
        plt.close(fig)
    agent = next(t for t in texts if t.startswith("agent"))
    assert agent == f"agent ({backtest_plot.luck_label(luck['agent'])})"
    assert "95 % CI [" in agent and "PSR " in agent and luck["agent"]["verdict"] in agent
    assert any(t.startswith("buy_and_hold (") for t in texts)
    assert "flat" in texts  # strategies without a judgement keep their plain name
