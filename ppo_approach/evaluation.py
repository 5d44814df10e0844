"""How a policy is evaluated on a block: the episode runner, its record, the metrics and the
baseline policies; used by the validation callback (and so the tuner) and by the backtest.

Every strategy (the agent, buy-and-hold, always-flat, a random policy, a rule on the classifier's
probabilities) runs through the SAME :class:`ppo_approach.trading_env.TradingEnv`: decision at
bar ``t``, fill at ``open[t+1]``, the same fees and slippage, equity marked at ``close[t+1]``.
Which metrics there are, their order and how they print is :mod:`pipeline.run.report_names`'s.

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
  reads HOLD; the invalid ones are also counted apart (an agent that learned "an invalid action is
  a free HOLD" shows up here instead of hiding behind 0 trades).

Annualisation: ``P`` comes from :mod:`pipeline.data.annualisation` (inferred from the bars the
dataset has per calendar year; step 5 records it beside each prediction table).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.common import PipelineError
from pipeline.run.report_names import METRIC_NAMES, TABLE_COLUMNS
from ppo_approach.trading_env import Actions, TradingEnv

if TYPE_CHECKING:  # torch and SB3 load only where a model is evaluated (--help stays light)
    from ppo_approach.model_files import AgentModel

EVAL_SEED_OFFSET = 10_000
"""Evaluation episode ``i`` resets with ``seed + EVAL_SEED_OFFSET + i``: every evaluation sees the
same validation windows, so successive scores differ only by the policy, not by the windows."""


Policy = Callable[[np.ndarray, dict[str, Any]], int]
"""``policy(observation, info) -> action``; ``info`` is the env's info of the current bar."""


class BacktestError(PipelineError):
    """The backtest cannot run (empty block, bad interval, ...); the message says why."""


# ---------------------------------------------------------------- metrics


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
    valid: np.ndarray  # (n,) bool: the env's ``action_valid`` of each step
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
        it became), all nine listed."""
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
        # sends an order): counts and markers speak of orders for every action set.
        actions.append(int(info.get("order", action)))
        valid.append(bool(info["action_valid"]))
    trades, liquidated, final_mark = _liquidate(info, equity, fees, notional)
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


def _liquidate(
    info: dict[str, Any], equity: list[float], fees: list[float], notional: list[float]
) -> tuple[int, bool, float | None]:
    """The episode's fills, whether its open position was valued at liquidation, and the last
    mark that value replaced; the last step's equity, fee and notional change in place."""
    trades = int(info["trades"])
    liquidated = False
    final_mark: float | None = None
    if "liquidation_equity" in info and float(info["exit_notional"]) > 0.0:
        # Value the open position at liquidation: the last mark becomes the cash left after
        # closing at the last close, exit fee and slippage paid; the exit is a fill like any other
        # (fees, turnover, trade count).
        final_mark = equity[-1]
        equity[-1] = float(info["liquidation_equity"])
        fees[-1] += float(info["exit_fee"])
        notional[-1] += float(info["exit_notional"])
        trades += 1
        liquidated = True
    return trades, liquidated, final_mark


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


# ---------------------------------------------------------------- a model's policy on a block


def policy_for(model: AgentModel) -> Policy:
    """The model's deterministic policy as ``(obs, info) -> action``, for evaluation and backtest.

    A MaskablePPO model predicts with the env's current mask, ``info["action_mask"]`` (the
    :class:`TradingEnv` puts it in every reset's and step's info), so it never picks an invalid
    action; a plain PPO model predicts unmasked, as before.
    """
    from sb3_contrib import MaskablePPO

    if isinstance(model, MaskablePPO):

        def masked(obs: np.ndarray, info: dict[str, Any]) -> int:
            action, _ = model.predict(obs, deterministic=True, action_masks=info["action_mask"])
            return int(action)

        return masked

    def policy(obs: np.ndarray, info: dict[str, Any]) -> int:
        action, _ = model.predict(obs, deterministic=True)
        return int(action)

    return policy


def run_block(policy: Policy, env: TradingEnv, episodes: int, seed: int) -> list[EpisodeRecord]:
    """``policy`` over ``episodes`` seeded episodes of ``env``: episode ``i`` resets with
    ``seed + EVAL_SEED_OFFSET + i``, so two policies run on the same windows."""
    return [run_episode(env, policy, seed=seed + EVAL_SEED_OFFSET + i) for i in range(episodes)]


BLOCK_NAMES: dict[str, str] = {
    "total_return": "mean_return",
    "sharpe": "mean_sharpe",
    "n_trades": "trades_per_episode",
    "time_in_market": "time_in_market",
}
"""Metric -> the name :func:`block_metrics` reports its episode mean under, for the metrics the
validation log, TensorBoard and ``selection_metric`` have always used; every other metric of
:data:`pipeline.run.report_names.TABLE_COLUMNS` is reported as ``mean_<name>``."""


def block_metrics(records: Sequence[EpisodeRecord], bars_per_year: float) -> dict[str, float]:
    """Means over episodes of every report metric (:func:`strategy_metrics`, one definition for
    the validation and the backtest), and what the policy did (what a user sees).

    ``mean_reward`` (summed env reward), ``mean_length`` (steps), the metrics' means under
    :data:`BLOCK_NAMES` (``mean_return``, ``mean_sharpe``, ``trades_per_episode``,
    ``time_in_market``) or ``mean_<name>`` (a metric undefined in every episode, e.g. a Sortino
    ratio without a losing bar, is left out), ``mean_position`` (mean signed exposure
    ``units * price / equity`` after each step), ``total_trades`` (all episodes),
    ``invalid_share`` (share of steps whose action was an invalid order, executed as HOLD) and
    ``action_<NAME>`` (share of steps each of the nine :class:`Actions` was executed, an invalid
    order counted as the HOLD it became and also apart in ``invalid_share``).
    """
    means = mean_metrics([strategy_metrics(rec, bars_per_year) for rec in records])
    actions = np.concatenate([rec.actions for rec in records])  # (all steps,)
    steps = max(int(actions.size), 1)
    counts = np.bincount(actions, minlength=len(Actions))
    res = {
        "mean_reward": float(np.mean([float(rec.rewards.sum()) for rec in records])),
        "mean_length": float(np.mean([rec.n_steps for rec in records])),
    }
    for name in TABLE_COLUMNS:
        if means[name] is not None:
            res[BLOCK_NAMES.get(name, f"mean_{name}")] = float(means[name])
    res["total_trades"] = float(np.sum([rec.trades for rec in records]))
    res["mean_position"] = float(
        np.mean([float(np.mean(rec.position_fraction()[1:])) for rec in records])
    )
    res["invalid_share"] = float(sum(rec.invalid_actions for rec in records) / steps)
    for action in Actions:
        res[f"action_{action.name}"] = float(counts[action] / steps)
    return res


def evaluate_on_block(
    model: AgentModel,
    env: TradingEnv,
    episodes: int,
    seed: int,
    bars_per_year: float,
) -> dict[str, float]:
    """Deterministic policy over ``episodes`` seeded episodes of ``env`` (validation block):
    :func:`block_metrics` of :func:`run_block` with :func:`policy_for` ``(model)``."""
    return block_metrics(run_block(policy_for(model), env, episodes, seed), bars_per_year)


RULE_PROB_NAMES = ("p_fall", "p_stationary", "p_rise")
"""The prediction features the classifier rule reads (``AgentBlock.probs`` holds the same)."""


def block_probs(env: TradingEnv) -> np.ndarray | None:
    """``(n, 3)`` p_fall, p_stationary, p_rise of ``env``'s block, read from its prediction
    features by name; ``None`` when the block has no such named columns."""
    names = env.data.pred_names
    if names is None or not set(RULE_PROB_NAMES) <= set(names):
        return None
    cols = [names.index(n) for n in RULE_PROB_NAMES]
    return np.asarray(env.data.pred_features[:, cols], dtype=np.float64)
