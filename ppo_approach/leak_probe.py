"""Step 7's run-time leak alarms: the trading environment probed for the future, and the agent's
Sharpe ratio checked for plausibility.

The env promises (``trading_env`` module docstring): the observation of bar ``t`` is built from
bars ``<= t``; an order decided at bar ``t`` fills at ``open[t+1]``. :func:`env_probe_alarms`
checks both on the test block at run time, the way freqtrade's ``lookahead-analysis`` checks
indicators: the same actions are replayed on a copy of the block whose bars after a cut ``c`` are
changed (prices scaled, features reversed). Up to ``c`` the observations must be identical (else
the observation reads a later bar), and a trade decided at ``c`` must fill differently (else its
price was known when it was decided: a fill before the decision bar).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from pipeline.checks.leak_alarms import LOOKAHEAD_CUTS, Alarm, lookahead_bars, sharpe_alarms
from ppo_approach.trading_env import MarketData, TradingEnv

__all__ = ["agent_alarms", "env_probe_alarms", "future_changed"]


def future_changed(data: MarketData, cut: int) -> MarketData:
    """``data`` with every bar after ``cut`` changed: prices x 1.37 and features reversed in time.

    Bars ``0..cut`` are untouched, so nothing known at bar ``cut`` differs.
    """
    after = slice(cut + 1, None)
    o, c = data.open.copy(), data.close.copy()
    o[after] *= 1.37
    c[after] *= 1.37
    pred, price = data.pred_features.copy(), data.price_features.copy()
    pred[after] = pred[after][::-1]
    price[after] = -price[after][::-1]
    return replace(data, open=o, close=c, pred_features=pred, price_features=price)


def _replay(env: TradingEnv, actions: np.ndarray, steps: int) -> tuple[list[np.ndarray], list[Any]]:
    """Observations of bars ``0..steps`` and ``(cash, position)`` after each of ``steps`` steps."""
    obs, _ = env.reset(seed=0)
    seen, books = [obs], []
    for t in range(steps):
        obs, _, term, trunc, info = env.step(int(actions[t]))
        seen.append(obs)
        books.append((float(info["cash"]), float(info["position"]), int(info["trades"])))
        if term or trunc:
            break
    return seen, books


def env_probe_alarms(
    make_env: Callable[[MarketData], TradingEnv],
    data: MarketData,
    n_actions: int,
    seed: int = 0,
    cuts: int = LOOKAHEAD_CUTS,
) -> list[Alarm]:
    """Replay seeded random actions on ``data`` and on :func:`future_changed` copies of it.

    ``make_env(data)`` builds the env exactly as the backtest does (whole block from bar 0).
    Returns an ``observation`` alarm when an observation at or before a cut differs, and a
    ``fill`` alarm when a trade decided at a cut leaves the same cash and position although the
    next bar's prices changed.
    """
    n = len(data.open)
    actions = np.random.default_rng(seed).integers(0, n_actions, size=n)
    at = lookahead_bars(1, n - 3, cuts)
    for cut in at:  # a change of action at each cut, so that an order fills there
        actions[cut] = (actions[cut - 1] + 1) % n_actions
    obs_bad: list[int] = []
    fill_checked, fill_bad = 0, []
    for cut in at:
        base_obs, base_books = _replay(make_env(data), actions, cut + 1)
        new_obs, new_books = _replay(make_env(future_changed(data, cut)), actions, cut + 1)
        upto = min(cut + 1, len(base_obs), len(new_obs))  # observations of bars 0..cut
        if any(not np.array_equal(base_obs[t], new_obs[t]) for t in range(upto)):
            obs_bad.append(cut)
        if len(base_books) > cut and len(new_books) > cut and cut > 0:
            traded = base_books[cut][2] > base_books[cut - 1][2]  # an order filled in step cut
            if traded:
                fill_checked += 1
                if base_books[cut][:2] == new_books[cut][:2]:
                    fill_bad.append(cut)
    alarms = []
    if obs_bad:
        alarms.append(
            Alarm(
                "observation",
                "agent env",
                f"observations at or before bar {obs_bad[0]:,} change when only later bars "
                f"change ({len(obs_bad)} of {cuts} cuts): the observation reads the future",
            )
        )
    if fill_bad:
        alarms.append(
            Alarm(
                "fill",
                "agent env",
                f"a trade decided at bar {fill_bad[0]:,} filled at the same price when the next "
                f"bar's prices changed ({len(fill_bad)} of {fill_checked} trades checked): it "
                "filled at a price known before the decision, not at the next bar's open",
            )
        )
    return alarms


def agent_alarms(report: dict[str, Any], max_sharpe: float) -> list[Alarm]:
    """Implausible test-block Sharpe ratios of the agent and of the classifier rule."""
    alarms = []
    for name, subject in (("agent", "agent"), ("classifier_rule", "classifier rule")):
        metrics = (report.get("strategies") or {}).get(name) or {}
        alarms += sharpe_alarms(subject, metrics.get("sharpe"), max_sharpe)
    return alarms
