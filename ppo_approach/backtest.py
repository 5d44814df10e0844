"""Performance metrics, baseline policies and the backtest report of a trained agent.

Every strategy (the agent, buy-and-hold, always-flat, a random policy, a rule on the classifier's
probabilities, and the agent at 0x and 2x the transaction cost) runs through the SAME
:class:`ppo_approach.trading_env.TradingEnv` over the test block: decision at bar ``t``, fill at
``open[t+1]``, the same fees and slippage, equity marked at ``close[t+1]``. The numbers are
therefore comparable: a baseline is never given a cheaper fill than the agent. A position still
open after the last step is valued at liquidation: closed at the last bar's close with the same
slippage and exit fee, for every strategy alike (issue 8 item 22), so buy-and-hold pays two fees
and the last equity point is cash an investor could actually have.

Metric definitions (``E_0 .. E_n`` = equity after each of the ``n`` steps, ``E_0`` = initial
capital, ``r_i = E_i / E_{i-1} - 1`` the per-bar simple returns, ``P`` = bars per year):

* ``total_return`` = ``E_n / E_0 - 1``; ``annualised_return`` = ``(E_n / E_0) ** (P / n) - 1``.
* ``sharpe`` = ``mean(r) / std(r, ddof=1) * sqrt(P)`` (risk-free rate 0; 0 when ``std = 0``).
* ``sortino`` = ``mean(r) / sqrt(mean(min(r, 0) ** 2)) * sqrt(P)`` (target 0, downside deviation
  over ALL bars as in Sortino & Price 1994); undefined (``None``) when no bar lost money.
* ``max_drawdown`` = ``max_i (1 - E_i / max_{j <= i} E_j)`` as a positive fraction.
* ``calmar`` = ``annualised_return / max_drawdown`` (Young 1991); ``None`` without a drawdown.
* ``n_trades`` = fills, the final liquidation included; ``win_rate`` = share of closed round
  trips (flat -> position -> flat, or until a reversal, or liquidated at the end) whose equity
  ended above where it started, fees included; ``None`` when no round trip closed.
  ``n_round_trips`` = the number of closed round trips ``win_rate`` is over, printed beside it
  so that "100 %" over one trip is not mistaken for a track record.
* ``turnover`` = traded notional / mean equity over the block (2.0 = one full buy and one full
  sell); ``fees_paid`` in account currency; ``time_in_market`` = share of bars that ended with a
  position.
* ``invalid_actions`` = decisions the env refused (SELL while flat without shorting, CLOSE
  while flat, ...) and executed as HOLD; ``action_counts`` = ``{order name: count}`` of the
  orders EXECUTED over the nine :class:`~ppo_approach.trading_env.Actions`, an invalid order
  counted as the HOLD it became, so the counts add up to the number of steps and staying flat
  reads HOLD (issue 16); the invalid ones are also counted apart (issue 10: an agent that learned
  "an invalid action is a free HOLD" shows up here instead of hiding behind 0 trades).

Annualisation: ``P`` is inferred from the bars the dataset actually has per calendar year
(:func:`infer_periods_per_year`: ~8,760 for 24/7 crypto hours, ~252 for daily equity candles,
~6,240 for FX hours); :func:`periods_per_year` (``365 * 24 * 3600 / interval_seconds``, a 24/7
market) remains for spans too short to infer from. The report says which rule gave ``P``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common import PipelineError, atomic_path, atomic_write_json
from pipeline.tables import format_table
from ppo_approach.reward_functions import RewardConfig, RewardFunction
from ppo_approach.trading_env import Actions, EnvConfig, MarketData, TradingEnv

log = logging.getLogger(__name__)

SECONDS_PER_YEAR = 365 * 24 * 3600
"""Calendar seconds per year; crypto trades 24/7, so every bar of the year counts."""

METRIC_NAMES: tuple[str, ...] = (
    "total_return",
    "annualised_return",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "n_trades",
    "win_rate",
    "n_round_trips",
    "turnover",
    "fees_paid",
    "time_in_market",
    "invalid_actions",
    "action_counts",
)
"""Keys of :func:`strategy_metrics`, in the order the report prints them."""

TABLE_COLUMNS: tuple[str, ...] = tuple(k for k in METRIC_NAMES if k != "action_counts")
"""The metrics :func:`format_summary` prints as columns (``action_counts``, a dict, is a note)."""

STRATEGY_NAMES: tuple[str, ...] = (
    "agent",
    "buy_and_hold",
    "flat",
    "random",
    "classifier_rule",
    "agent_cost_0x",
    "agent_cost_2x",
)
"""Keys of ``report["strategies"]``."""

Policy = Callable[[np.ndarray, dict[str, Any]], int]
"""``policy(observation, info) -> action``; ``info`` is the env's info of the current bar."""


class BacktestError(PipelineError):
    """The backtest cannot run (empty block, bad interval, ...); the message says why."""


# ---------------------------------------------------------------- metrics


def periods_per_year(interval_seconds: float) -> float:
    """Bars per calendar year for bars of ``interval_seconds`` (24/7 market)."""
    if not (interval_seconds > 0 and math.isfinite(interval_seconds)):
        raise BacktestError(f"bar interval {interval_seconds!r} s; expected a positive number")
    return SECONDS_PER_YEAR / float(interval_seconds)


def bar_interval_seconds(timestamps: np.ndarray) -> float:
    """Median spacing of ``timestamps`` (N,) datetime64 in seconds (robust to a few gaps)."""
    ts = np.asarray(timestamps).astype("datetime64[ns]").astype(np.int64)  # (N,)
    if ts.size < 2:
        raise BacktestError(f"need at least 2 timestamps to infer the bar interval, got {ts.size}")
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
    days a year and FX hours ~5 x 24 per week (issue 8 item 20). So, from the sorted
    ``timestamps`` (N,) datetime64:

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


def simple_returns(equity: np.ndarray) -> np.ndarray:
    """Per-bar simple returns ``E_i / E_{i-1} - 1`` of an equity curve (n+1,) -> (n,)."""
    e = np.asarray(equity, dtype=np.float64)
    return e[1:] / e[:-1] - 1.0


def total_return(equity: np.ndarray) -> float:
    """``E_n / E_0 - 1``."""
    e = np.asarray(equity, dtype=np.float64)
    return float(e[-1] / e[0] - 1.0)


def annualised_return(equity: np.ndarray, bars_per_year: float) -> float:
    """Compound annual growth rate ``(E_n / E_0) ** (bars_per_year / n) - 1`` over ``n`` bars."""
    e = np.asarray(equity, dtype=np.float64)
    n = e.size - 1
    if n < 1:
        return 0.0
    growth = e[-1] / e[0]
    if growth <= 0:
        return -1.0
    return float(math.exp(math.log(growth) * bars_per_year / n) - 1.0)


def sharpe_ratio(returns: np.ndarray, bars_per_year: float) -> float:
    """Annualised Sharpe ratio ``mean / std(ddof=1) * sqrt(bars_per_year)``; 0 when the std is 0."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return 0.0
    sd = float(r.std(ddof=1))
    if sd < 1e-15:
        return 0.0
    return float(r.mean() / sd * math.sqrt(bars_per_year))


def sortino_ratio(returns: np.ndarray, bars_per_year: float) -> float | None:
    """Annualised Sortino ratio (target 0); ``None`` when there is no downside at all."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 1:
        return None
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if downside < 1e-15:
        return None if r.mean() > 0 else 0.0
    return float(r.mean() / downside * math.sqrt(bars_per_year))


def drawdown_series(equity: np.ndarray) -> np.ndarray:
    """Drawdown from the running peak at each point, ``1 - E_i / max(E_0..E_i)`` (>= 0)."""
    e = np.asarray(equity, dtype=np.float64)
    return 1.0 - e / np.maximum.accumulate(e)


def max_drawdown(equity: np.ndarray) -> float:
    """Largest peak-to-trough loss as a positive fraction (0.25 = -25 %)."""
    return float(drawdown_series(equity).max(initial=0.0))


def calmar_ratio(annual_return: float, mdd: float) -> float | None:
    """``annualised_return / max_drawdown``; ``None`` when there was no drawdown."""
    if mdd < 1e-12:
        return None
    return float(annual_return / mdd)


def round_trip_returns(
    units: np.ndarray, equity: np.ndarray, closed_at_end: bool = False
) -> np.ndarray:
    """Equity return of each CLOSED round trip, fees included, from aligned (n+1,) series.

    ``units[i]`` / ``equity[i]`` are the position and equity after step ``i`` (index 0 = start).
    A round trip opens at the step where the position leaves 0 (or flips sign) and closes where it
    returns to 0 (or flips); its return is ``equity[close] / equity[open - 1] - 1``. While flat the
    equity equals the cash, so this measures exactly what the trade made or lost. A reversal closes
    one trip and opens the next at the same step (the bar of the flip is counted in both, a small
    approximation that only matters with ``allow_short``). A trip still open at the end is not
    counted, unless ``closed_at_end`` (the position was liquidated into ``equity[-1]``).
    """
    u = np.sign(np.asarray(units, dtype=np.float64))
    e = np.asarray(equity, dtype=np.float64)
    out: list[float] = []
    start_equity: float | None = None
    for i in range(1, u.size):
        if u[i] == u[i - 1]:
            continue
        if u[i - 1] != 0 and start_equity is not None:
            out.append(e[i] / start_equity - 1.0)
            start_equity = None
        if u[i] != 0:
            start_equity = e[i - 1]
    if closed_at_end and u.size and u[-1] != 0 and start_equity is not None:
        out.append(e[-1] / start_equity - 1.0)
    return np.asarray(out, dtype=np.float64)


def win_rate(trip_returns: np.ndarray) -> float | None:
    """Share of round trips with a positive return; ``None`` when there are none."""
    r = np.asarray(trip_returns, dtype=np.float64)
    if r.size == 0:
        return None
    return float(np.mean(r > 0.0))


# ---------------------------------------------------------------- running a policy


@dataclass
class EpisodeRecord:
    """What one run of a policy through the env produced; series are aligned (n+1,) or (n,)."""

    bars: np.ndarray  # (n+1,) int: bar of each mark, index 0 = start bar
    equity: np.ndarray  # (n+1,) float64
    units: np.ndarray  # (n+1,) float64, signed position in units of the asset
    price: np.ndarray  # (n+1,) float64 close used for the mark
    fees: np.ndarray  # (n,) fee of each step
    notional: np.ndarray  # (n,) absolute traded notional of each step (at the open, no fee)
    rewards: np.ndarray  # (n,) env rewards
    actions: np.ndarray  # (n,) int actions taken
    valid: np.ndarray  # (n,) bool: the env's ``action_valid`` of each step (issue 10)
    trades: int
    invalid_actions: int
    liquidated: bool = False  # a position was open at the end; equity[-1] is its liquidation value
    final_mark: float | None = None  # equity marked to market at the last close, when liquidated

    @property
    def n_steps(self) -> int:
        """Number of steps (bars traded)."""
        return int(self.fees.size)

    def position_fraction(self) -> np.ndarray:
        """Signed exposure ``units * price / equity`` after each step, (n+1,).

        The last point uses the market value before the liquidation (the exposure held through
        the last bar), not the cash after it.
        """
        equity = self.equity.copy()
        if self.final_mark is not None:
            equity[-1] = self.final_mark
        return self.units * self.price / np.maximum(equity, 1e-12)

    def action_counts(self) -> dict[str, int]:
        """``{order name: count}`` of the executed orders (an invalid one counts as the HOLD
        it became), all nine listed (issues 10, 16)."""
        taken = np.bincount(self.actions, minlength=len(Actions))  # (9,)
        return {a.name: int(taken[a.value]) for a in Actions}


def run_episode(
    env: Any,
    policy: Policy,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
) -> EpisodeRecord:
    """Reset ``env`` (``seed`` / ``options`` as for gymnasium) and run ``policy`` to the end.

    A position still open after the last step is valued at liquidation (the env's last ``info``
    carries ``liquidation_equity``): ``equity[-1]`` is then the cash after the exit, whose fee
    and notional are added to the last step's, and ``trades`` counts the exit fill.
    """
    obs, info = env.reset(seed=seed, options=options)
    opens = env.data.open  # (n_bars,)
    bars = [int(info["bar"])]
    equity = [float(info["equity"])]
    units = [float(info["position"])]
    price = [float(info["price"])]
    fees: list[float] = []
    notional: list[float] = []
    rewards: list[float] = []
    actions: list[int] = []
    valid: list[bool] = []
    done = False
    while not done:
        action = int(policy(obs, info))
        prev_units = units[-1]
        obs, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        bar = int(info["bar"])
        bars.append(bar)
        equity.append(float(info["equity"]))
        units.append(float(info["position"]))
        price.append(float(info["price"]))
        fees.append(float(info["fees"]))
        # Fills happen at open[bar] (the decision at bar-1 fills at the next open); slippage is
        # a cost like the fee, so the turnover counts the notional at the open price.
        notional.append(abs(units[-1] - prev_units) * float(opens[bar]))
        rewards.append(float(reward))
        # The order executed (with action_set = target the agent names a position and the env
        # sends an order): counts and markers speak of orders for every action set (issue 10).
        actions.append(int(info.get("order", action)))
        valid.append(bool(info["action_valid"]))
    trades = int(info["trades"])
    liquidated = False
    final_mark: float | None = None
    if "liquidation_equity" in info and float(info["exit_notional"]) > 0.0:
        # Value the open position at liquidation (issue 8 item 22): the last mark becomes the
        # cash left after closing at the last close, exit fee and slippage paid; the exit is a
        # fill like any other (fees, turnover, trade count).
        final_mark = equity[-1]
        equity[-1] = float(info["liquidation_equity"])
        fees[-1] += float(info["exit_fee"])
        notional[-1] += float(info["exit_notional"])
        trades += 1
        liquidated = True
    return EpisodeRecord(
        bars=np.asarray(bars, dtype=np.int64),
        equity=np.asarray(equity),
        units=np.asarray(units),
        price=np.asarray(price),
        fees=np.asarray(fees),
        notional=np.asarray(notional),
        rewards=np.asarray(rewards),
        actions=np.asarray(actions, dtype=np.int64),
        valid=np.asarray(valid, dtype=bool),
        trades=trades,
        invalid_actions=int(info["invalid_actions"]),
        liquidated=liquidated,
        final_mark=final_mark,
    )


def strategy_metrics(rec: EpisodeRecord, bars_per_year: float) -> dict[str, Any]:
    """Every metric of :data:`METRIC_NAMES` for one episode (see the module docstring)."""
    r = simple_returns(rec.equity)
    ann = annualised_return(rec.equity, bars_per_year)
    mdd = max_drawdown(rec.equity)
    in_market = rec.units[1:] != 0.0
    trips = round_trip_returns(rec.units, rec.equity, closed_at_end=rec.liquidated)
    return {
        "total_return": total_return(rec.equity),
        "annualised_return": ann,
        "sharpe": sharpe_ratio(r, bars_per_year),
        "sortino": sortino_ratio(r, bars_per_year),
        "max_drawdown": mdd,
        "calmar": calmar_ratio(ann, mdd),
        "n_trades": int(rec.trades),
        "win_rate": win_rate(trips),
        "n_round_trips": int(trips.size),
        "turnover": float(rec.notional.sum() / max(float(rec.equity.mean()), 1e-12)),
        "fees_paid": float(rec.fees.sum()),
        "time_in_market": float(in_market.mean()) if in_market.size else 0.0,
        "invalid_actions": int(rec.invalid_actions),
        "action_counts": rec.action_counts(),
    }


def mean_metrics(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Metric-wise mean over several runs (``None`` entries skipped; ``None`` if all are).

    ``action_counts`` is averaged action by action (a dict of means).
    """
    out: dict[str, Any] = {}
    for key in METRIC_NAMES:
        if key == "action_counts":
            counts = [m[key] for m in items if m.get(key) is not None]
            out[key] = (
                {a.name: float(np.mean([c.get(a.name, 0) for c in counts])) for a in Actions}
                if counts
                else None
            )
            continue
        vals = [float(m[key]) for m in items if m.get(key) is not None]
        out[key] = float(np.mean(vals)) if vals else None
    return out


# ---------------------------------------------------------------- baseline policies


def flat_policy(obs: np.ndarray, info: dict[str, Any]) -> int:
    """Never trade (equity stays at the initial capital)."""
    return Actions.HOLD


def buy_and_hold_policy(obs: np.ndarray, info: dict[str, Any]) -> int:
    """Buy with all cash at the first decision, then hold to the end."""
    return Actions.BUY_100 if float(info["position"]) == 0.0 else Actions.HOLD


class RandomPolicy:
    """Uniformly random action each bar (same 9 actions as the agent; invalid ones are no-ops)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        """A random action."""
        return int(self.rng.integers(0, len(Actions)))


class ClassifierRulePolicy:
    """Long 100 % while Rise is the classifier's most probable class at bar ``t``, flat otherwise.

    ``probs`` (n, 3) are ``p_fall, p_stationary, p_rise`` of the block's bars (the same numbers
    the agent sees), indexed by the env's ``info["bar"]``.
    """

    def __init__(self, probs: np.ndarray) -> None:
        p = np.asarray(probs, dtype=np.float64)  # (n, 3)
        if p.ndim != 2 or p.shape[1] != 3:
            raise BacktestError(f"classifier probabilities have shape {p.shape}, expected (n, 3)")
        self.rise = np.argmax(p, axis=1) == 2  # (n,)

    def __call__(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        """BUY_100 when Rise is most probable and flat; CLOSE when it is not and long."""
        long = float(info["position"]) > 0.0
        if self.rise[int(info["bar"])]:
            return Actions.HOLD if long else Actions.BUY_100
        return Actions.CLOSE if long else Actions.HOLD


# ---------------------------------------------------------------- the report


def backtest_env_config(env_config: EnvConfig, cost_multiplier: float = 1.0) -> EnvConfig:
    """The env config of a backtest: whole block, no ruin stop, fees times ``cost_multiplier``.

    ``ruin_threshold = 0`` so that every strategy covers the same bars (an early stop would make
    the curves incomparable); ``episode_length = 0`` runs to the block's last bar.
    """
    return replace(
        env_config,
        episode_length=0,
        ruin_threshold=0.0,
        transaction_cost=float(env_config.transaction_cost) * cost_multiplier,
    )


def block_env(data: MarketData, config: EnvConfig, reward: RewardConfig) -> TradingEnv:
    """A fresh env over a whole block from its first bar (``random_start=False``)."""
    return TradingEnv(data, config, RewardFunction(reward), random_start=False)


BACKTEST_PROGRESS_INTERVAL_S = 30.0
"""Inside a strategy run longer than this, a line with the bar reached at least this often."""


class StrategyProgress:
    """Progress lines of :func:`run_strategies` (issue 22 item 17: no silent minute in the final
    backtest): ``backtest: running <name> (k of n)`` as each run starts, and inside a run, after
    ``interval_s`` without a line, ``backtest: <name> at bar b of N, s s into this run``."""

    def __init__(
        self,
        n_runs: int,
        n_bars: int,
        interval_s: float = BACKTEST_PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.n_runs, self.n_bars = n_runs, n_bars
        self.interval_s, self.clock = interval_s, clock
        self.k = 0
        self.name = ""
        self.started = self.last = clock()

    def start(self, name: str) -> None:
        """Log the line of the next run, ``name``."""
        self.k += 1
        self.name = name
        self.started = self.last = self.clock()
        log.info("backtest: running %s (%d of %d)", name, self.k, self.n_runs)

    def watch(self, policy: Policy) -> Policy:
        """``policy``, logging the bar reached whenever ``interval_s`` passed since a line."""

        def watched(obs: np.ndarray, info: dict[str, Any]) -> int:
            now = self.clock()
            if now - self.last >= self.interval_s:
                self.last = now
                log.info(
                    "backtest: %s at bar %d of %d, %.0f s into this run",
                    self.name,
                    int(info.get("bar", 0)) + 1,
                    self.n_bars,
                    now - self.started,
                )
            return policy(obs, info)

        return watched


def run_strategies(
    data: MarketData,
    env_config: EnvConfig,
    reward_config: RewardConfig,
    agent_policy: Policy,
    probs: np.ndarray,
    random_seeds: Sequence[int],
    progress: StrategyProgress | None = None,
) -> dict[str, list[EpisodeRecord]]:
    """Run every strategy of :data:`STRATEGY_NAMES` once over the block (random: once per seed).

    Each run gets a fresh env over ``data`` (:func:`block_env`) with :func:`backtest_env_config`
    of ``env_config``, so every strategy trades through the same fills and fees. ``progress``
    (default: a :class:`StrategyProgress` on the clock) logs a line per run and at least every
    30 s inside one.
    """
    base = backtest_env_config(env_config)
    # The baselines speak orders, whatever the agent's action set (issue 10: target actions).
    orders = replace(base, action_set="orders")
    if progress is None:
        progress = StrategyProgress(6 + len(random_seeds), len(data.open))

    def run(name: str, policy: Policy, config: EnvConfig = orders) -> EpisodeRecord:
        progress.start(name)
        return run_episode(block_env(data, config, reward_config), progress.watch(policy))

    return {
        "agent": [run("agent", agent_policy, base)],
        "buy_and_hold": [run("buy_and_hold", buy_and_hold_policy)],
        "flat": [run("flat", flat_policy)],
        "random": [run(f"random (seed {s})", RandomPolicy(s)) for s in random_seeds],
        "classifier_rule": [run("classifier_rule", ClassifierRulePolicy(probs))],
        "agent_cost_0x": [run("agent_cost_0x", agent_policy, backtest_env_config(env_config, 0.0))],
        "agent_cost_2x": [run("agent_cost_2x", agent_policy, backtest_env_config(env_config, 2.0))],
    }


def summarise_runs(
    runs: dict[str, list[EpisodeRecord]], bars_per_year: float
) -> dict[str, dict[str, Any]]:
    """Metrics per strategy (the random policy: mean over its seeds)."""
    out: dict[str, dict[str, Any]] = {}
    for name, recs in runs.items():
        metrics = [strategy_metrics(r, bars_per_year) for r in recs]
        out[name] = metrics[0] if len(metrics) == 1 else mean_metrics(metrics)
    return out


SIGNIFICANCE_STRATEGIES = ("agent", "classifier_rule", "buy_and_hold")


def significance_section(
    runs: dict[str, list[EpisodeRecord]],
    bars_per_year: float,
    seeds: dict[str, Any] | None = None,
    configurations_tried: int = 1,
) -> dict[str, dict[str, Any]]:
    """Is it luck? (issue 18 item 3) For the agent, the classifier rule and buy-and-hold on the
    test block: PSR, 95 % block-bootstrap intervals of total return and annualised Sharpe, and a
    verdict (:mod:`pipeline.significance`). The agent's DSR deflates for ``configurations_tried``
    (tuning trials) times the seeds, with the variance of the seeds' test-block Sharpe ratios
    when there are several, else the estimation variance of one Sharpe ratio."""
    from pipeline.significance import significance

    rows = (seeds or {}).get("runs") or []
    srs = [
        float(r["test_sharpe"]) / math.sqrt(bars_per_year)
        for r in rows
        if r.get("test_sharpe") is not None
    ]
    var_sr = float(np.var(srs, ddof=1)) if len(srs) > 1 else None
    out: dict[str, dict[str, Any]] = {}
    for name in SIGNIFICANCE_STRATEGIES:
        if not runs.get(name):
            continue
        rec = runs[name][0]
        agent = name == "agent"
        out[name] = significance(
            rec.equity,
            bars_per_year,
            n_trials=max(1, int(configurations_tried)) * max(1, len(rows)) if agent else 1,
            var_sr=var_sr if agent else None,
            traded=rec.trades > 0,
        ).as_dict()
    return out


def significance_lines(section: dict[str, Any]) -> list[str]:
    """One line per strategy for the console summary."""
    out = []
    for name, s in section.items():
        lo, hi = s.get("total_return_ci95") or (None, None)
        slo, shi = s.get("sharpe_annualised_ci95") or (None, None)
        dsr = s.get("dsr")
        deflated = f", DSR {dsr:.2f} over {s['n_trials']} configurations" if dsr is not None else ""
        psr = s.get("psr")
        out.append(
            f"{name}: {s['verdict']} (PSR {_fmt(psr, False)}{deflated}; 95 % interval of the "
            f"total return [{_pct(lo)}, {_pct(hi)}], of the Sharpe [{_fmt(slo, False)}, "
            f"{_fmt(shi, False)}], block bootstrap over {s['n_returns']:,} bars)"
        )
    return out


def json_safe(obj: Any) -> Any:
    """Replace NaN / infinite floats by ``None`` (strict JSON has neither), recursively."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


_PCT = {"total_return", "annualised_return", "max_drawdown", "win_rate", "time_in_market"}
_COUNTS = {"n_trades", "n_round_trips", "invalid_actions"}
"""Integer counts: printed as integers (``1849``), or with one decimal when they are a mean over
the random policy's seeds (``1849.4``), never as ``1849.000`` (issue 8 item 28)."""


def _fmt(value: Any, pct: bool, count: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if count:
        v = float(value)
        return str(int(v)) if v.is_integer() else f"{v:.1f}"
    return f"{100 * value:.2f}%" if pct else f"{value:.3f}"


COLUMN_NOTES: tuple[str, ...] = (
    "n_trades: fills, the final liquidation included; n_round_trips: closed trips win_rate is over",
    "turnover: traded notional / mean equity; time_in_market: share of bars ending with a position",
    "open positions at the end are valued at liquidation (exit fee and slippage paid)",
    "invalid_actions: decisions the env refused (e.g. SELL while flat) and executed as HOLD;"
    " the order counts count them as HOLD",
)
"""Lines under the backtest table that explain its less obvious columns (issue 8 item 28)."""


def _pct(value: Any) -> str:
    return f"{100 * float(value):+.1f} %" if isinstance(value, (int, float)) else "n/a"


def agent_verdict(report: dict[str, Any]) -> str:
    """What happened, in plain words (issue 16 item 6), from the report's strategies and its
    ``agent`` section: "did not learn" when the classifier rule made money on validation and the
    agent never traded; "no edge" only when the rule did not make money on validation either;
    otherwise the agent's test return beside the rule's and buy-and-hold's, and whether the
    agent is still its warm start (PPO did not beat it on validation)."""
    strategies = report.get("strategies") or {}
    agent = strategies.get("agent") or {}
    info = report.get("agent") or {}
    val = info.get("validation") or {}
    rule_val = val.get("rule_return")
    trades = agent.get("n_trades")
    if trades == 0:
        if isinstance(rule_val, (int, float)) and rule_val > 0:
            return (
                f"the agent did not learn: the classifier rule made {_pct(rule_val)} on "
                "validation, the agent never traded"
            )
        if isinstance(rule_val, (int, float)):
            return (
                f"no edge: the classifier rule made {_pct(rule_val)} on validation after fees, "
                "and the agent stayed flat (0 trades on the test block)"
            )
        return "the agent never traded on the test block"
    rule_test = (strategies.get("classifier_rule") or {}).get("total_return")
    bh = (strategies.get("buy_and_hold") or {}).get("total_return")
    n = f"{trades:.0f}" if isinstance(trades, (int, float)) else "some"
    out = (
        f"the agent traded ({n} trades): test return {_pct(agent.get('total_return'))} vs the "
        f"classifier rule {_pct(rule_test)}, buy-and-hold {_pct(bh)}, flat +0.0 %"
    )
    warm = info.get("warm_start") or {}
    if warm and info.get("best_timesteps") == 0:
        behaviour = warm.get("behaviour")
        out += f"; it is its warm start ({behaviour}): PPO did not beat that on validation"
    return out


def format_summary(report: dict[str, Any]) -> str:
    """The report's strategies as an aligned text table (one row per strategy)."""
    cols = TABLE_COLUMNS
    rows = [
        [name, *(_fmt(m.get(c), c in _PCT, c in _COUNTS) for c in cols)]
        for name, m in report["strategies"].items()
    ]
    table = format_table(["strategy", *cols], rows, right=range(1, len(cols) + 1))
    blocks = report.get("blocks", {})
    head = (
        f"backtest {report.get('model')} on {report.get('dataset')}: "
        f"{report.get('chosen_model')} model, predictions {report.get('prediction_source')}"
        + (" (IN-SAMPLE rows present)" if report.get("in_sample_predictions") else "")
        + (f" [{report['oracle']['label']}]" if report.get("oracle") else "")
    )
    if "test" in blocks:
        t = blocks["test"]
        head += f"; test block {t['start']} .. {t['end']} ({t['bars']} bars)"
    notes = []
    if "random" in report["strategies"]:
        seeds = report.get("random_policy_seeds")
        n = f"{int(seeds)} seeds" if seeds else "its seeds"
        notes.append(f"random: mean of {n} (so its counts can be fractional)")
    notes.extend(COLUMN_NOTES)
    agent = report["strategies"].get("agent") or {}
    if agent.get("action_counts"):
        notes.append(agent_actions_line(agent))
    if report.get("periods_per_year_basis"):
        notes.append(f"annualised with {report['periods_per_year_basis']}")
    elif report.get("periods_per_year"):
        notes.append(f"annualised with {float(report['periods_per_year']):.1f} bars/year")
    info = report.get("agent") or {}
    if info.get("model_choice"):
        notes.insert(0, f"the agent's classifier: {info['model_choice']}")
    out = head + "\n" + table + "\n" + "\n".join(f"  note: {x}" for x in notes)
    if report.get("verdict"):
        out += f"\n  verdict: {report['verdict']}"
    for line in significance_lines(report.get("significance") or {}):
        out += f"\n  is it luck? {line}"
    if report.get("seeds"):
        out += "\n" + format_seeds(report["seeds"])
    return out


def seed_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report's ``seeds`` entry of a multi-seed run (issue 10): every seed's row (validation
    result, test-block result) and the median, min and max of the test-block total return over the
    seeds, so a reader sees the spread behind the selected agent's number."""
    rets = [float(r["test_total_return"]) for r in rows]
    return {
        "selection": "best validation score (selection_metric; the test block plays no part)",
        "selected_seed": next((r["seed"] for r in rows if r.get("selected")), None),
        "runs": list(rows),
        "test_total_return_median": float(np.median(rets)) if rets else None,
        "test_total_return_min": min(rets) if rets else None,
        "test_total_return_max": max(rets) if rets else None,
    }


def format_seeds(seeds: dict[str, Any]) -> str:
    """The ``seeds`` entry as a table: one row per seed, the selected one marked, then the median
    and spread of the test-block total return."""
    rows = [
        [
            f"{r['seed']}{' *' if r.get('selected') else ''}",
            _fmt(r.get("validation_reward"), False),
            _fmt(r.get("validation_return"), True),
            _fmt(r.get("test_total_return"), True),
            _fmt(r.get("test_sharpe"), False),
            _fmt(r.get("test_trades"), False, True),
        ]
        for r in seeds["runs"]
    ]
    table = format_table(
        ["seed", "val_reward", "val_return", "test_return", "test_sharpe", "test_trades"],
        rows,
        right=range(1, 6),
    )
    return (
        f"agents by seed (* = final model, chosen by {seeds['selection']}):\n{table}\n"
        f"  test total return over {len(rows)} seeds: median "
        f"{_fmt(seeds['test_total_return_median'], True)}, min "
        f"{_fmt(seeds['test_total_return_min'], True)}, max "
        f"{_fmt(seeds['test_total_return_max'], True)}"
    )


def agent_actions_line(metrics: dict[str, Any]) -> str:
    """``"agent orders: HOLD 57, BUY_100 1, CLOSE 1; 0 invalid orders executed as HOLD"``.

    Orders never executed are left out; an invalid order counts as the HOLD it became and is
    counted apart too (issues 10, 16).
    """
    counts = metrics.get("action_counts") or {}
    taken = [
        f"{name} {_fmt(n, False, True)}" for name, n in counts.items() if n is not None and n > 0
    ]
    invalid = _fmt(metrics.get("invalid_actions"), False, True)
    return f"agent orders: {', '.join(taken) or 'none'}; {invalid} invalid orders executed as HOLD"


STRATEGY_COLOURS: dict[str, str] = {
    "agent": "black",
    "buy_and_hold": "tab:blue",
    "flat": "tab:gray",
    "random": "tab:orange",
    "classifier_rule": "tab:green",
    "agent_cost_0x": "tab:purple",
    "agent_cost_2x": "tab:red",
}
"""One colour per strategy in every panel of the backtest PNG (issue 8 item 28: the colour cycle
gave ``classifier_rule`` and ``flat`` the same colour in different panels)."""


def _line_style(name: str) -> dict[str, Any]:
    """Matplotlib line keywords of strategy ``name``: fixed colour; the agent thick and on top."""
    colour = STRATEGY_COLOURS.get(name, "tab:brown")
    if name == "agent":
        return {"color": colour, "linewidth": 2.4, "zorder": 10}
    style: dict[str, Any] = {"color": colour, "linewidth": 1.1, "alpha": 0.85, "zorder": 2}
    if name == "flat":
        style["linestyle"] = ":"
    elif name.startswith("agent_cost"):
        style["linestyle"] = "--"
    return style


STRIP_LABEL = "agent_actions"
"""``Axes.get_label()`` of the PNG's position/action strip (issue 10), so tests can find it."""

_ACTION_MARKERS: tuple[tuple[str, tuple[Actions, ...], dict[str, Any]], ...] = (
    ("buy", (Actions.BUY_25, Actions.BUY_50, Actions.BUY_100), {"marker": "^", "color": "green"}),
    ("sell", (Actions.SELL_25, Actions.SELL_50, Actions.SELL_100), {"marker": "v", "color": "red"}),
    ("close", (Actions.CLOSE,), {"marker": "x", "color": "black"}),
    ("reverse", (Actions.REVERSE,), {"marker": "D", "color": "purple"}),
)
"""Strip markers of the agent's valid trade actions: (legend label, actions, marker style)."""


def _draw_action_strip(ax: Any, rec: EpisodeRecord, ts: np.ndarray) -> None:
    """The agent's position (long / short shading, flat blank) and its actions on ``ax``.

    Position ``units[i]`` is held from ``ts[bars[i]]`` to ``ts[bars[i + 1]]``; an action decided
    at step ``i`` is marked where it fills, at ``ts[bars[i + 1]]``, so a marker sits where the
    shading changes. Valid trade actions sit on the middle line, invalid decisions (no-ops) as
    grey ticks at the bottom (issue 10).
    """
    import matplotlib.dates as mdates

    x = np.asarray(mdates.date2num(ts[rec.bars]), dtype=np.float64)  # (n+1,) days
    step = float(np.median(np.diff(x))) if x.size > 1 else 1.0
    ends = np.append(x[1:], x[-1] + step)  # (n+1,) end of each holding span
    side = np.sign(rec.units)  # (n+1,)
    for sign, colour, label in ((1.0, "tab:green", "long"), (-1.0, "tab:red", "short")):
        on = np.flatnonzero(side == sign)
        if on.size == 0:
            continue
        # Contiguous runs of the same side become one bar each (few artists for long blocks).
        breaks = np.flatnonzero(np.diff(on) > 1)
        starts = on[np.concatenate(([0], breaks + 1))]
        stops = on[np.concatenate((breaks, [on.size - 1]))]
        spans = [(x[a], ends[b] - x[a]) for a, b in zip(starts, stops, strict=True)]
        ax.broken_barh(spans, (0.0, 1.0), color=colour, alpha=0.25, label=label, linewidth=0)
    fill_x = x[1:]  # (n,) where each step's action fills
    acts = rec.actions
    for label, members, style in _ACTION_MARKERS:
        hit = rec.valid & np.isin(acts, [int(a) for a in members])
        if hit.any():
            ax.plot(
                fill_x[hit],
                np.full(int(hit.sum()), 0.5),
                linestyle="none",
                label=label,
                markersize=6,
                **style,
            )
    if (~rec.valid).any():
        bad = ~rec.valid
        ax.plot(
            fill_x[bad],
            np.full(int(bad.sum()), 0.08),
            linestyle="none",
            marker="|",
            color="tab:gray",
            markersize=5,
            label=f"invalid ({int(bad.sum())})",
        )
    ax.set_ylim(0.0, 1.45)  # headroom above the shading for the legend, which hides nothing
    ax.set_yticks([])
    ax.set_ylabel("agent")
    ax.set_label(STRIP_LABEL)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", fontsize=7, ncol=len(labels), framealpha=0.6)


def luck_label(s: dict[str, Any]) -> str:
    """Short form of one strategy's ``significance`` entry, for the PNG's legend."""
    lo, hi = s.get("total_return_ci95") or (None, None)
    dsr = s.get("dsr")
    score = f"DSR {_fmt(dsr, False)}" if dsr is not None else f"PSR {_fmt(s.get('psr'), False)}"
    return f"{s.get('verdict', '?')}: 95 % CI [{_pct(lo)}, {_pct(hi)}], {score}"


def backtest_figure(
    runs: dict[str, list[EpisodeRecord]],
    timestamps: np.ndarray,
    title: str,
    luck: dict[str, dict[str, Any]] | None = None,
) -> Any:
    """The matplotlib figure of :func:`plot_backtest` (the caller closes it). ``luck``: the
    report's ``significance`` entry; its strategies' legend labels carry the verdict, the 95 %
    interval of the total return and the PSR (DSR for a deflated agent) (issue 18).

    Panels: equity of every strategy; a strip of the agent's position (long / short shading)
    and actions (:data:`STRIP_LABEL`, issue 10; only with an ``agent`` run); then drawdown and
    exposure of the agent, buy-and-hold and the classifier rule. Each strategy has its colour of
    :data:`STRATEGY_COLOURS` in every panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = np.asarray(timestamps)
    if "agent" in runs:
        fig, all_axes = plt.subplots(
            4, 1, figsize=(11, 10), sharex=True, height_ratios=(3, 0.8, 1.3, 1.3)
        )
        axes = [all_axes[0], all_axes[2], all_axes[3]]
    else:
        fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True, height_ratios=(3, 1.3, 1.3))
    # The agent last, so it is drawn on top of the baselines it coincides with (flat, or its own
    # cost variants while it does not trade) (issue 8 item 28).
    order = [n for n in runs if n != "agent"] + (["agent"] if "agent" in runs else [])
    for name in order:
        recs = runs[name]
        rec = recs[0]
        x = ts[rec.bars]
        eq = np.mean([r.equity for r in recs], axis=0) if len(recs) > 1 else rec.equity
        label = f"{name} (mean of {len(recs)} seeds)" if len(recs) > 1 else name
        if luck and name in luck:
            label += f" ({luck_label(luck[name])})"
        axes[0].plot(x, eq, label=label, **_line_style(name))
    axes[0].set_ylabel("equity")
    axes[0].set_title(title)
    for name in [n for n in ("buy_and_hold", "classifier_rule", "agent") if n in runs]:
        rec = runs[name][0]
        style = _line_style(name)
        axes[1].plot(ts[rec.bars], -100 * drawdown_series(rec.equity), label=name, **style)
        axes[2].plot(
            ts[rec.bars], 100 * rec.position_fraction(), label=name, drawstyle="steps", **style
        )
    # Legends in the strategies' usual order (agent first) although the agent is drawn last.
    for ax, loc in ((axes[0], "best"), (axes[1], "lower left"), (axes[2], "best")):
        handles, labels = ax.get_legend_handles_labels()
        rank = {n: i for i, n in enumerate(STRATEGY_NAMES)}
        pairs = sorted(
            zip(handles, labels, strict=True), key=lambda h: rank.get(h[1].split()[0], 99)
        )
        ax.legend([h for h, _ in pairs], [lb for _, lb in pairs], loc=loc, fontsize=8)
    axes[1].set_ylabel("drawdown %")
    axes[2].set_ylabel("exposure %")
    if "agent" in runs:
        # Drawn after the date-valued panels, so the shared x axis already has its date units.
        _draw_action_strip(all_axes[1], runs["agent"][0], ts)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def plot_backtest(
    runs: dict[str, list[EpisodeRecord]],
    timestamps: np.ndarray,
    path: str | Path,
    title: str,
    luck: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Equity curves (agent and baselines), drawdowns and positions, saved atomically as PNG.

    ``timestamps`` (n_bars,) of the block; records index it through their ``bars``; ``luck``:
    the report's ``significance`` entry, shown in the legend.
    """
    import matplotlib.pyplot as plt

    fig = backtest_figure(runs, timestamps, title, luck)
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return target


def write_report(report: dict[str, Any], json_path: str | Path) -> Path:
    """Write the report as strict JSON (NaN / inf as null), atomically."""
    return atomic_write_json(json_path, json_safe(report))
