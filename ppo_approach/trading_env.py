"""Gymnasium trading environment over the numpy arrays of one block (no torch, no pandas).

Timing (no look-ahead): the agent decides at bar ``t`` from an observation built from bars ``<= t``;
the order fills at ``open[t+1]`` (buys at ``open * (1 + slippage)``, sells at ``open * (1 -
slippage)``), the fee ``transaction_cost * |traded notional|`` is taken from cash, equity is then
marked at ``close[t+1]`` and the step returns the observation of bar ``t+1``.

Portfolio: ``cash`` and signed ``units`` (negative = short, only with ``allow_short``);
``equity = cash + units * price``. A short sale credits its proceeds to cash, so a short's equity
falls as the price rises. The actions (:class:`Actions`) and their effect in each state are
tabulated in ``docs/actions.md``; legality lives in :meth:`TradingEnv._is_valid`, fees and fills in
:meth:`TradingEnv._trade`. An invalid action is executed as HOLD (time still advances): the
step's ``info["order"]`` says HOLD, ``info["requested_order"]`` what was asked, and it is counted
in ``info["invalid_actions"]`` (staying flat is HOLD, never a silent invalid order);
:meth:`TradingEnv.action_masks` gives the mask for sb3-contrib's MaskablePPO, and every ``reset`` /
``step`` info carries the same mask of the new state as ``info["action_mask"]`` (so a policy that
sees only ``(obs, info)`` can mask).

Episodes start at a random bar (``self.np_random``) or at bar 0, run ``episode_length`` steps or
until the block's last bar (``truncated=True``), and end early with ``terminated=True`` when equity
falls below ``ruin_threshold * initial_capital`` (or to zero).

Liquidation value: the last step's ``info`` also says what the account would be
worth if the open position were closed at that bar's close, exit fee and slippage included
(:meth:`TradingEnv.liquidation`). Step equity and rewards stay marked to market (a training
episode is a window of an ongoing market, and SB3 bootstraps the value at truncation); reports
(``ppo_approach.evaluation.run_episode``) value the end of every strategy at liquidation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pipeline.common import PipelineError
from pipeline.config.schema import PPOConfig, check_settings, schema_default, settings_from
from ppo_approach.reward_functions import RewardConfig, RewardFunction

OBS_CLIP = 10.0
"""Every observation entry is clipped to ``[-OBS_CLIP, OBS_CLIP]`` so the Box bounds are true."""

HOLDING_SCALE_BARS = 1000
"""Holding time is divided by ``episode_length``, or by this when episodes run to the end."""

MIN_TRADE_FRACTION = 1e-6
"""Orders smaller than this fraction of ``initial_capital`` are dust: the action is invalid."""

PORTFOLIO_NAMES: tuple[str, ...] = ("position_frac", "unrealized_pnl", "cash_frac", "holding_time")


class EnvConfigError(PipelineError, ValueError):
    """An environment setting is out of range (names the key, the value and the allowed range)."""


class MarketDataError(PipelineError, ValueError):
    """Inconsistent or non-finite block arrays (names the array and the first bad index)."""


class Actions(IntEnum):
    """The nine discrete actions (the seed document's order); see ``docs/actions.md``."""

    HOLD = 0
    BUY_25 = 1
    BUY_50 = 2
    BUY_100 = 3
    SELL_25 = 4
    SELL_50 = 5
    SELL_100 = 6
    CLOSE = 7
    REVERSE = 8


TARGETS_LONG: dict[str, float] = {"FLAT": 0.0, "LONG_50": 0.5, "LONG_100": 1.0}
"""``action_set = target`` without shorts: action i asks for the i-th exposure."""

TARGETS_SHORT: dict[str, float] = {"SHORT_100": -1.0, "FLAT": 0.0, "LONG_100": 1.0}
"""``action_set = target`` with ``allow_short``: short, flat or long with the whole equity."""

# The one order that moves the current exposure level to the target level. Every pair is
# reachable in one fill: BUY_x spends x of the cash (0.5 -> 1 spends the rest), SELL_50 halves a
# long, REVERSE flips, CLOSE exits; no entry means HOLD.
_TARGET_ORDER: dict[tuple[float, float], int] = {
    (0.0, 0.5): 2,  # BUY_50
    (0.0, 1.0): 3,  # BUY_100
    (0.5, 1.0): 3,  # BUY_100
    (1.0, 0.5): 5,  # SELL_50
    (0.5, 0.0): 7,  # CLOSE
    (1.0, 0.0): 7,
    (-1.0, 0.0): 7,
    (0.0, -1.0): 6,  # SELL_100 (opens a short of the whole capacity)
    (1.0, -1.0): 8,  # REVERSE
    (-1.0, 1.0): 8,
}

# Fraction of each BUY/SELL action, indexed by the action's value.
_FRACTION: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 0.25, 0.5, 1.0, 0.0, 0.0)


@dataclass
class EnvConfig:
    """Environment settings: the ``env`` group of ``PPOConfig``, same names and order.

    Defaults and ranges are declared once, in :class:`pipeline.config.schema.PPOConfig` (what each
    key means is its doc line there), and read from there, so the config loader refuses every
    value this class refuses.
    """

    initial_capital: float = schema_default(PPOConfig, "initial_capital")
    transaction_cost: float = schema_default(PPOConfig, "transaction_cost")
    slippage: float = schema_default(PPOConfig, "slippage")
    allow_short: bool = schema_default(PPOConfig, "allow_short")
    episode_length: int = schema_default(PPOConfig, "episode_length")
    ruin_threshold: float = schema_default(PPOConfig, "ruin_threshold")
    action_set: str = schema_default(PPOConfig, "action_set")

    def __post_init__(self) -> None:
        check_settings(self, PPOConfig, EnvConfigError, "env config")

    @classmethod
    def from_ppo_config(cls, cfg: Any) -> EnvConfig:
        """Read the environment fields of a ``pipeline.config.schema.PPOConfig`` (by attribute
        name)."""
        return settings_from(cls, cfg)


def _check_finite(name: str, arr: np.ndarray) -> None:
    """Raise MarketDataError naming ``name`` and the first non-finite index of ``arr``."""
    ok = np.isfinite(arr)
    if not ok.all():
        idx = np.unravel_index(int(np.flatnonzero(~ok.ravel())[0]), arr.shape)
        where = f"row {idx[0]}" + (f", column {idx[1]}" if arr.ndim == 2 else "")
        raise MarketDataError(
            f"market data: {name} has a non-finite value {float(arr[idx])!r} at {where}; "
            "expected finite numbers"
        )


@dataclass
class MarketData:
    """The arrays of ONE block (bars ``0..n-1`` of the block, in time order).

    ``open``/``close`` (n,) prices > 0; ``pred_features`` (n, P) classifier outputs for each bar
    (P may be 0); ``price_features`` (n, K) from ``features.agent_price_features`` (K = 5 in the
    pipeline); ``timestamps`` (n,) optional, any dtype, not used by the env; ``pred_names`` /
    ``price_names`` optional column names for :meth:`TradingEnv.observation_names`. Validated on
    construction; arrays are converted to contiguous float64 (prices) / float32 (features).
    """

    open: np.ndarray
    close: np.ndarray
    pred_features: np.ndarray
    price_features: np.ndarray
    timestamps: np.ndarray | None = None
    pred_names: tuple[str, ...] | None = None
    price_names: tuple[str, ...] | None = field(default=None)
    segment_starts: tuple[int, ...] = (0,)
    """Rows where a new contiguous run of bars begins (the first is 0). A block made of several
    walk-forward folds has purge gaps between them: an episode never steps across a gap, since the
    next row's open is not the next bar's open."""

    def __post_init__(self) -> None:
        self.open = np.ascontiguousarray(self.open, dtype=np.float64)
        self.close = np.ascontiguousarray(self.close, dtype=np.float64)
        self.pred_features = np.ascontiguousarray(self.pred_features, dtype=np.float32)
        self.price_features = np.ascontiguousarray(self.price_features, dtype=np.float32)
        n = self.open.shape[0] if self.open.ndim == 1 else -1
        if self.open.ndim != 1 or n < 2:
            raise MarketDataError(
                f"market data: open has shape {self.open.shape}, expected (n,) with n >= 2 bars"
            )
        expected = {"close": 1, "pred_features": 2, "price_features": 2}
        for name, ndim in expected.items():
            arr = getattr(self, name)
            if arr.ndim != ndim or arr.shape[0] != n:
                want = f"({n},)" if ndim == 1 else f"({n}, columns)"
                raise MarketDataError(
                    f"market data: {name} has shape {arr.shape}, expected {want} like open"
                )
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps)
            if self.timestamps.shape != (n,):
                raise MarketDataError(
                    f"market data: timestamps has shape {self.timestamps.shape}, expected ({n},)"
                )
        for name in ("open", "close", "pred_features", "price_features"):
            _check_finite(name, getattr(self, name))
        for name in ("open", "close"):
            arr = getattr(self, name)
            bad = np.flatnonzero(arr <= 0)
            if bad.size:
                raise MarketDataError(
                    f"market data: {name} has a non-positive price {float(arr[bad[0]])!r} at row "
                    f"{int(bad[0])}; expected prices > 0"
                )
        starts = tuple(int(s) for s in self.segment_starts)
        if not starts or starts[0] != 0 or any(np.diff(starts) <= 0):
            raise MarketDataError(
                f"market data: segment_starts = {starts}, expected increasing rows starting at 0"
            )
        if starts[-1] > n - 2:
            raise MarketDataError(
                f"market data: segment_starts = {starts}: the last segment starts at row "
                f"{starts[-1]}, expected every segment to have at least 2 rows (n = {n})"
            )
        self.segment_starts = starts
        for name, arr in (("pred_names", self.pred_features), ("price_names", self.price_features)):
            names = getattr(self, name)
            if names is not None:
                names = tuple(str(s) for s in names)
                setattr(self, name, names)
                if len(names) != arr.shape[1]:
                    raise MarketDataError(
                        f"market data: {name} has {len(names)} names, expected {arr.shape[1]}"
                    )

    @property
    def n_bars(self) -> int:
        """Number of bars in the block."""
        return int(self.open.shape[0])


class TradingEnv(gym.Env):
    """One instrument, discrete actions (:class:`Actions`), equity-based reward.

    Observation (float32, every entry clipped to ``[-10, 10]``), for bar ``t``:

    | index      | name           | meaning                                                  |
    |------------|----------------|----------------------------------------------------------|
    | 0 .. P-1   | pred names     | ``pred_features[t]`` (classifier outputs for bar t)      |
    | P .. P+K-1 | price names    | ``price_features[t]`` (K = 5 in the pipeline)            |
    | P+K        | position_frac  | ``units * close[t] / equity`` (signed: < 0 short)        |
    | P+K+1      | unrealized_pnl | ``sign(units) * (close[t] / entry - 1)``, 0 when flat    |
    | P+K+2      | cash_frac      | ``cash / equity`` (1 when flat, > 1 when short)          |
    | P+K+3      | holding_time   | ``min(1, bars held / H)``, ``H = episode_length or 1000`` |

    ``entry_price`` is the volume-weighted fill price of the open position. ``holding_time`` is the
    number of closes marked since the position was opened (or flipped); it lies in ``[0, 1]``.

    ``info`` of each step: ``bar`` (t+1), ``equity``, ``cash``, ``position`` (units), ``price``
    (``close[t+1]``), ``fees`` (this step), ``total_fees``, ``trades`` (fills so far),
    ``invalid_actions`` (so far), ``action_valid``, ``reward_terms`` (dict from the reward
    function), ``action_mask`` (:meth:`action_masks` of the new state; also in ``reset``'s info);
    the last step adds ``episode_summary`` and the liquidation keys of
    :meth:`liquidation` (``liquidation_equity``, ``exit_fee``, ``exit_notional``).
    ``reset(options={"start": bar})`` starts at a given bar (for evaluation).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        data: MarketData,
        config: EnvConfig,
        reward_fn: RewardFunction | None = None,
        random_start: bool = True,
    ) -> None:
        super().__init__()
        self.data = data
        self.config = config
        self.reward_fn = reward_fn if reward_fn is not None else RewardFunction(RewardConfig())
        self.random_start = bool(random_start)
        self.render_mode = None

        n = data.n_bars
        p = data.pred_features.shape[1]
        k = data.price_features.shape[1]
        self.n_features = p + k
        self.n_obs = p + k + len(PORTFOLIO_NAMES)
        # action_set = target: the agent names the exposure to hold and the env sends the order;
        # the order actually executed is in each step's info["order"].
        self._targets: tuple[float, ...] | None = None
        if config.action_set == "target":
            names = TARGETS_SHORT if config.allow_short else TARGETS_LONG
            self._targets = tuple(names.values())
            self.action_names: tuple[str, ...] = tuple(names)
        else:
            self.action_names = tuple(a.name for a in Actions)
        self.action_space = spaces.Discrete(len(self.action_names))
        low = np.full(self.n_obs, -OBS_CLIP, dtype=np.float32)
        high = np.full(self.n_obs, OBS_CLIP, dtype=np.float32)
        low[-1], high[-1] = 0.0, 1.0
        self.observation_space = spaces.Box(low=low, high=high, dtype=np.float32)

        # (n, P+K+4): market features of every bar clipped once, portfolio columns filled per step.
        rows = np.zeros((n, self.n_obs), dtype=np.float32)
        rows[:, :p] = data.pred_features
        rows[:, p : p + k] = data.price_features
        np.clip(rows, -OBS_CLIP, OBS_CLIP, out=rows)
        self._rows = rows
        # Python lists: indexing them and float math is several times faster than numpy scalars.
        self._open: list[float] = data.open.tolist()
        self._close: list[float] = data.close.tolist()
        self._n = n
        self._i_pos = p + k  # index of position_frac in the observation

        c = config
        self._capital = float(c.initial_capital)
        self._tc = float(c.transaction_cost)
        self._buy_mult = 1.0 + float(c.slippage)
        self._sell_mult = 1.0 - float(c.slippage)
        self._short = bool(c.allow_short)
        self._ep_len = int(c.episode_length)
        self._ruin = float(c.ruin_threshold) * self._capital
        self._min_trade = MIN_TRADE_FRACTION * self._capital
        self._hold_scale = float(self._ep_len if self._ep_len > 0 else HOLDING_SCALE_BARS)
        # (n,) last row of each row's segment; an episode is truncated there.
        bounds = np.array([*data.segment_starts, n])
        self._seg_last = np.repeat(bounds[1:] - 1, np.diff(bounds))
        steps_left = self._seg_last - np.arange(n)
        # Random starts: rows with a full-length episode ahead when there are any, else any row
        # with at least one step left (one segment: rows 0 .. n-1-episode_length).
        starts = np.flatnonzero(steps_left >= max(self._ep_len, 1))
        self._starts = starts if starts.size else np.flatnonzero(steps_left >= 1)
        self._last = n - 1
        self._reset_portfolio(0)

    # ------------------------------------------------------------------ public API

    def observation_names(self) -> list[str]:
        """Name of each observation entry, in index order."""
        p = self.data.pred_features.shape[1]
        k = self.data.price_features.shape[1]
        pred = list(self.data.pred_names or [f"pred_{i}" for i in range(p)])
        price = list(self.data.price_names or [f"price_{i}" for i in range(k)])
        return pred + price + list(PORTFOLIO_NAMES)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode at a random bar (``self.np_random``), bar 0, or ``options["start"]``."""
        super().reset(seed=seed)
        if options is not None and "start" in options:
            start = int(options["start"])
            if not (0 <= start < self._n and self._seg_last[start] > start):
                raise MarketDataError(
                    f"reset option start = {start}, expected a bar in [0, {self._n - 2}] with at "
                    "least one bar after it in its segment"
                )
        elif self.random_start:
            start = int(self._starts[self.np_random.integers(0, self._starts.size)])
        else:
            start = 0
        self._last = int(self._seg_last[start])
        self._reset_portfolio(start)
        self.reward_fn.reset()
        info = {
            "bar": start,
            "equity": self._equity,
            "cash": self._cash,
            "position": 0.0,
            "price": self._close[start],
            "fees": 0.0,
            "total_fees": 0.0,
            "trades": 0,
            "invalid_actions": 0,
            # The mask of the new state, for policies that see only (obs, info).
            "action_mask": self.action_masks(),
        }
        return self._observation(start), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Act at bar t, fill at open[t+1], mark at close[t+1], return the observation of t+1."""
        a = int(action) if self._targets is None else self._order_for_target(int(action))
        t1 = self._t + 1
        equity_prev = self._equity
        fees = 0.0
        valid = self._is_valid(a)
        if not valid:
            self._invalid += 1
        elif a != 0:
            fees = self._execute(a, self._open[t1])
        units = self._units
        price = self._close[t1]
        equity = self._cash + units * price
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

        terminated = equity < self._ruin or equity <= 0.0
        truncated = (not terminated) and (
            t1 >= self._last or (self._ep_len > 0 and self._steps >= self._ep_len)
        )
        if equity_prev > 0.0:
            reward, terms = self.reward_fn(equity_prev, equity, fees)
        else:  # unreachable with ruin_threshold >= 0; keeps a NaN out if equity ever hits 0
            reward, terms = 0.0, {}
        info: dict[str, Any] = {
            "bar": t1,
            "equity": equity,
            "cash": self._cash,
            "position": units,
            "price": price,
            "fees": fees,
            "total_fees": self._total_fees,
            "trades": self._trades,
            "invalid_actions": self._invalid,
            "action_valid": valid,
            # The order executed: the action itself, or the target's order; an invalid order
            # is executed as HOLD and reported as one (flat means HOLD).
            "order": a if valid else int(Actions.HOLD),
            "requested_order": a,
            "reward_terms": terms,
            "action_mask": self.action_masks(),
        }
        if terminated or truncated:
            info.update(self.liquidation())
            info["episode_summary"] = self._summary(terminated)
        return self._observation(t1), float(reward), terminated, truncated, info

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

    def action_masks(self) -> np.ndarray:
        """Boolean mask of valid actions, shape (9,) (sb3-contrib MaskablePPO convention); every
        target of the target action set is valid (the current one is a HOLD)."""
        if self._targets is not None:
            return np.ones(len(self._targets), dtype=bool)
        return np.array([self._is_valid(a) for a in range(len(Actions))], dtype=bool)

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
        return _TARGET_ORDER.get((level, target), int(Actions.HOLD))

    # ------------------------------------------------------------------ internals

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

    def _is_valid(self, action: int) -> bool:
        """Whether ``action`` changes the portfolio in the current state (docs/actions.md)."""
        if action == 0:  # HOLD
            return True
        units = self._units
        if action <= 3:  # BUY_x: spend x of cash (flat/long) or cover x of a short
            return units < 0.0 or self._cash > self._min_trade
        if action <= 6:  # SELL_x: sell x of a long, or open/extend a short (allow_short)
            if units > 0.0:
                return True
            if not self._short:
                return False
            return self._short_capacity(self._close[self._t]) > self._min_trade
        if action == 7:  # CLOSE
            return units != 0.0
        # REVERSE: long -> short needs allow_short; short -> long always (shorts need it anyway)
        return units < 0.0 or (units > 0.0 and self._short)

    def _short_capacity(self, price: float) -> float:
        """Notional that may still be sold short at ``price``: equity minus the short's notional.

        Caps short exposure at 1x equity, the mirror of the long side, where BUY can spend at
        most the cash. Flat: capacity = equity = cash.
        """
        units = self._units
        equity = self._cash + units * price
        short_notional = -units * price if units < 0.0 else 0.0
        return equity - short_notional

    def _execute(self, action: int, open_price: float) -> float:
        """Turn a valid non-HOLD action into one fill at ``open_price``; returns the fee paid."""
        units = self._units
        if action <= 3:  # BUY_x
            frac = _FRACTION[action]
            if units < 0.0:
                return self._trade(-units * frac, open_price)
            buy_price = open_price * self._buy_mult
            # Spend frac * cash in total, fee included, so cash never goes negative.
            return self._trade(frac * self._cash / (buy_price * (1.0 + self._tc)), open_price)
        if action <= 6:  # SELL_x
            frac = _FRACTION[action]
            if units > 0.0:
                return self._trade(-units * frac if frac < 1.0 else -units, open_price)
            capacity = self._short_capacity(open_price)
            if capacity <= 0.0:  # price gapped against the short since the decision
                return 0.0
            return self._trade(-frac * capacity / (open_price * self._sell_mult), open_price)
        if action == 7:  # CLOSE
            return self._trade(-units, open_price)
        # REVERSE, as one fill of twice the position
        if units > 0.0:
            return self._trade(-2.0 * units, open_price)
        buy_price = open_price * self._buy_mult
        cash_after_cover = self._cash + units * buy_price * (1.0 + self._tc)
        long_units = min(-units, max(0.0, cash_after_cover / (buy_price * (1.0 + self._tc))))
        return self._trade(long_units - units, open_price)

    def _trade(self, delta_units: float, open_price: float) -> float:
        """Fill ``delta_units`` (> 0 buy, < 0 sell) at ``open_price`` with slippage; pay the fee.

        The ONE place where cash, units, fees, trade count and entry price change.
        """
        if delta_units == 0.0:
            return 0.0
        fill = open_price * (self._buy_mult if delta_units > 0.0 else self._sell_mult)
        notional = delta_units * fill  # signed
        fee = self._tc * (notional if notional > 0.0 else -notional)
        old = self._units
        new = old + delta_units
        if -1e-12 * abs(old) < new < 1e-12 * abs(old):
            new = 0.0  # closing a position leaves no float dust
        cash = self._cash - (notional + fee)
        if -1e-9 * self._capital < cash < 0.0:
            cash = 0.0  # spending all cash can round to -1e-13; keep cash_frac >= 0
        self._cash = cash
        self._units = new
        self._total_fees += fee
        self._trades += 1
        if new == 0.0:
            self._entry = 0.0
            self._held = 0
        elif old == 0.0 or (old > 0.0) != (new > 0.0):  # opened or flipped
            self._entry = fill
            self._held = 0
        elif abs(new) > abs(old):  # added to the position: volume-weighted entry
            self._entry = (abs(old) * self._entry + abs(delta_units) * fill) / abs(new)
        return fee

    def _observation(self, t: int) -> np.ndarray:
        """Observation of bar ``t`` (a fresh array; the market part was clipped at construction)."""
        obs = self._rows[t].copy()
        units = self._units
        if units == 0.0:
            obs[self._i_pos + 2] = 1.0
            return obs
        price = self._close[t]
        equity = self._equity if self._equity > 1e-12 else 1e-12
        i = self._i_pos
        lim = OBS_CLIP
        v = units * price / equity
        obs[i] = lim if v > lim else (-lim if v < -lim else v)
        v = (price / self._entry - 1.0) if units > 0.0 else (1.0 - price / self._entry)
        obs[i + 1] = lim if v > lim else (-lim if v < -lim else v)
        v = self._cash / equity
        obs[i + 2] = lim if v > lim else (-lim if v < -lim else v)
        v = self._held / self._hold_scale
        obs[i + 3] = 1.0 if v > 1.0 else v
        return obs

    def _summary(self, terminated: bool) -> dict[str, Any]:
        """Totals of the finished episode (``final_equity`` marked to market; see liquidation)."""
        liq = self.liquidation()
        return {
            "start_bar": self._start,
            "end_bar": self._t,
            "steps": self._steps,
            "final_equity": self._equity,
            "total_return": self._equity / self._capital - 1.0,
            "max_drawdown": self._max_dd,
            "trades": self._trades,
            "total_fees": self._total_fees,
            "invalid_actions": self._invalid,
            "ruined": bool(terminated),
            "liquidation_equity": liq["liquidation_equity"],
            "exit_fee": liq["exit_fee"],
        }


@dataclass
class EnvFactory:
    """Picklable thunk that builds env number ``rank`` (for SubprocVecEnv / DummyVecEnv).

    The env is reset once with ``seed + rank`` so each worker draws its own reproducible stream of
    start bars; later ``reset()`` calls without a seed continue that stream.
    """

    data: MarketData
    config: EnvConfig
    seed: int
    rank: int
    random_start: bool = True
    reward_config: RewardConfig | None = None

    def __call__(self) -> TradingEnv:
        """Build, seed and return the env."""
        env = TradingEnv(
            self.data,
            self.config,
            RewardFunction(self.reward_config),
            random_start=self.random_start,
        )
        seed = int(self.seed) + int(self.rank)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env
