"""The trading account of :class:`ppo_approach.trading_env.TradingEnv` without gymnasium: state,
one step of it (fill at ``open[t+1]``, mark at ``close[t+1]``), the portfolio part of the
observation, the action mask, the target action set's orders and the liquidation value.

The environment and the paper-trading runtime (:mod:`ppo_approach.runtime`, which must run with
numpy, pandas and onnxruntime only) both inherit it, so a paper account fills, charges and
observes exactly as the backtest did: one definition, not a copy.
"""

from __future__ import annotations

from typing import Any

from ppo_approach.env_actions import TARGET_ORDER, TARGETS_LONG, TARGETS_SHORT, Actions
from ppo_approach.env_fills import FillAccounting

OBS_CLIP = 10.0
"""Every observation entry is clipped to ``[-OBS_CLIP, OBS_CLIP]`` so the Box bounds are true."""

HOLDING_SCALE_BARS = 1000
"""Holding time is divided by ``episode_length``, or by this when episodes run to the end."""

MIN_TRADE_FRACTION = 1e-6
"""Orders smaller than this fraction of ``initial_capital`` are dust: the action is invalid."""

PORTFOLIO_NAMES: tuple[str, ...] = ("position_frac", "unrealized_pnl", "cash_frac", "holding_time")


def action_names(action_set: str, allow_short: bool) -> tuple[str, ...]:
    """The names of the actions, in action-index order: the nine orders (:class:`Actions`), or
    the exposure targets of ``action_set = target``."""
    if action_set == "target":
        return tuple(TARGETS_SHORT if allow_short else TARGETS_LONG)
    return tuple(a.name for a in Actions)


class Account(FillAccounting):
    """Cash, signed units, entry price, holding time and the running totals of one account.

    The owner sets ``_open`` / ``_close`` (prices by row, Python floats) and ``_t`` (the row of
    the last marked close) and calls :meth:`_set_account` once, :meth:`_reset_portfolio` to
    start and :meth:`_advance` for each new bar.
    """

    _equity: float
    _peak: float
    _max_dd: float
    _steps: int
    _invalid: int
    _start: int
    _hold_scale: float
    _targets: tuple[float, ...] | None
    _open: list[float]

    def _set_account(
        self,
        initial_capital: float,
        transaction_cost: float,
        slippage: float,
        allow_short: bool,
        action_set: str,
        episode_length: int,
    ) -> None:
        """The settings as plain floats (the env config's keys, same meaning)."""
        self._capital = float(initial_capital)
        self._tc = float(transaction_cost)
        self._buy_mult = 1.0 + float(slippage)
        self._sell_mult = 1.0 - float(slippage)
        self._short = bool(allow_short)
        self._min_trade = MIN_TRADE_FRACTION * self._capital
        ep_len = int(episode_length)
        self._hold_scale = float(ep_len if ep_len > 0 else HOLDING_SCALE_BARS)
        # action_set = target: the agent names the exposure to hold and the account sends the
        # order; the order actually executed is in each step's info["order"].
        self._targets = None
        if action_set == "target":
            names = TARGETS_SHORT if allow_short else TARGETS_LONG
            self._targets = tuple(names.values())

    def _reset_portfolio(self, start: int) -> None:
        self._t = start
        self._start = start
        self._cash = self._capital
        self._units = 0.0
        self._entry = 0.0
        self._held = 0
        self._equity = self._capital
        self._peak = self._capital
        self._max_dd = 0.0
        self._steps = 0
        self._trades = 0
        self._invalid = 0
        self._total_fees = 0.0

    def _advance(self, action: int) -> tuple[int, bool, float]:
        """Act at row ``t`` with ``action`` (an index of the action set), fill at ``open[t+1]``,
        mark at ``close[t+1]``; returns ``(order, valid, fees)`` (``order``: the
        :class:`Actions` value asked for)."""
        a = int(action) if self._targets is None else self._order_for_target(int(action))
        t1 = self._t + 1
        fees = 0.0
        valid = self._is_valid(a)
        if not valid:
            self._invalid += 1
        elif a != 0:
            fees = self._execute(a, self._open[t1])
        units = self._units
        equity = self._cash + units * self._close[t1]
        self._equity = equity
        self._t = t1
        self._steps += 1
        if units != 0.0:
            self._held += 1
        if equity > self._peak:
            self._peak = equity
        elif self._peak > 0.0:
            dd = 1.0 - equity / self._peak
            if dd > self._max_dd:
                self._max_dd = dd
        return a, valid, fees

    def _portfolio_obs(self, obs: Any, i: int) -> None:
        """Write ``position_frac, unrealized_pnl, cash_frac, holding_time`` of the current state
        at row ``t``'s close into ``obs[i : i + 4]`` (a float32 array; clipped)."""
        units = self._units
        if units == 0.0:
            obs[i] = 0.0
            obs[i + 1] = 0.0
            obs[i + 2] = 1.0
            obs[i + 3] = 0.0
            return
        price = self._close[self._t]
        equity = self._equity if self._equity > 1e-12 else 1e-12
        lim = OBS_CLIP
        v = units * price / equity
        obs[i] = lim if v > lim else (-lim if v < -lim else v)
        v = (price / self._entry - 1.0) if units > 0.0 else (1.0 - price / self._entry)
        obs[i + 1] = lim if v > lim else (-lim if v < -lim else v)
        v = self._cash / equity
        obs[i + 2] = lim if v > lim else (-lim if v < -lim else v)
        v = self._held / self._hold_scale
        obs[i + 3] = 1.0 if v > 1.0 else v

    def liquidation(self) -> dict[str, float]:
        """What closing the whole position at the current bar's close would leave; no state change.

        The exit fills at ``close[t]`` with the adverse slippage of :meth:`_trade` (a long sells at
        ``close * (1 - slippage)``, a short buys back at ``close * (1 + slippage)``) and pays
        ``transaction_cost`` on that notional: ``liquidation_equity = cash + units * fill - fee``.
        Flat: the equity, no fee.
        """
        units = self._units
        if units == 0.0:
            return {"liquidation_equity": self._cash, "exit_fee": 0.0, "exit_notional": 0.0}
        fill = self._close[self._t] * (self._sell_mult if units > 0.0 else self._buy_mult)
        notional = abs(units) * fill
        fee = self._tc * notional
        return {
            "liquidation_equity": self._cash + units * fill - fee,
            "exit_fee": fee,
            "exit_notional": notional,
        }

    def action_valid_list(self) -> list[bool]:
        """Whether each action index is valid now (the action mask as a list); every target of
        the target action set is valid (the current one is a HOLD)."""
        if self._targets is not None:
            return [True] * len(self._targets)
        return [self._is_valid(a) for a in range(len(Actions))]

    def _order_for_target(self, action: int) -> int:
        """The order (an :class:`Actions` value) that moves the current exposure level to target
        ``action``. The level is read from the position: flat 0; short -1; long 1, or 0.5 while
        the long is at most 3/4 of equity (a half position drifting with the price stays a half
        position, so asking for it again is a HOLD, not a rebalancing trade)."""
        assert self._targets is not None
        if not 0 <= action < len(self._targets):
            raise ValueError(f"action {action}, expected 0..{len(self._targets) - 1}")
        target = self._targets[action]
        units = self._units
        if units == 0.0:
            level = 0.0
        elif units < 0.0:
            level = -1.0
        elif self._short:
            level = 1.0
        else:
            exposure = units * self._close[self._t] / max(self._equity, 1e-12)
            level = 1.0 if exposure > 0.75 else 0.5
        return TARGET_ORDER.get((level, target), int(Actions.HOLD))
