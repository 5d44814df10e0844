"""Gymnasium trading environment over the numpy arrays of one block (no torch, no pandas).

Timing (no look-ahead): the agent decides at bar ``t`` from an observation built from bars ``<= t``;
the order fills at ``open[t+1]`` (buys at ``open * (1 + slippage)``, sells at ``open * (1 -
slippage)``), the fee ``transaction_cost * |traded notional|`` is taken from cash, equity is then
marked at ``close[t+1]`` and the step returns the observation of bar ``t+1``.

Portfolio: ``cash`` and signed ``units`` (negative = short, only with ``allow_short``);
``equity = cash + units * price``. A short sale credits its proceeds to cash, so a short's equity
falls as the price rises. The actions (:class:`Actions`) and their effect in each state are
tabulated in ``docs/actions.md``; legality lives in :meth:`TradingEnv._is_valid`, fees and fills in
:meth:`TradingEnv._trade` (both in :mod:`ppo_approach.env_fills`). An invalid action is executed
as HOLD (time still advances): the step's ``info["order"]`` says HOLD, ``info["requested_order"]``
what was asked, and it is counted in ``info["invalid_actions"]`` (staying flat is HOLD, never a
silent invalid order); :meth:`TradingEnv.action_masks` gives the mask for sb3-contrib's
MaskablePPO, and every ``reset`` / ``step`` info carries the same mask of the new state as
``info["action_mask"]`` (so a policy that sees only ``(obs, info)`` can mask).

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

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pipeline.common import PipelineError
from pipeline.config.checks import check_settings, schema_default, settings_from
from pipeline.config.schema import PPOConfig
from ppo_approach.env_actions import Actions
from ppo_approach.env_portfolio import (
    OBS_CLIP,
    PORTFOLIO_NAMES,
    Account,
    action_names,
)
from ppo_approach.market_data import MarketData, MarketDataError
from ppo_approach.reward_functions import RewardConfig, RewardFunction


class EnvConfigError(PipelineError, ValueError):
    """An environment setting is out of range (names the key, the value and the allowed range)."""


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


class TradingEnv(Account, gym.Env):
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
        self._init_spaces(data, config)
        self._init_arrays(data)
        self._init_config(data, config)
        self._reset_portfolio(0)

    def _init_spaces(self, data: MarketData, config: EnvConfig) -> None:
        """Observation size, the action set (nine orders, or the targets) and both spaces."""
        p = data.pred_features.shape[1]
        k = data.price_features.shape[1]
        self.n_features = p + k
        self.n_obs = p + k + len(PORTFOLIO_NAMES)
        self.action_names: tuple[str, ...] = action_names(config.action_set, config.allow_short)
        self.action_space = spaces.Discrete(len(self.action_names))
        low = np.full(self.n_obs, -OBS_CLIP, dtype=np.float32)
        high = np.full(self.n_obs, OBS_CLIP, dtype=np.float32)
        low[-1], high[-1] = 0.0, 1.0
        self.observation_space = spaces.Box(low=low, high=high, dtype=np.float32)

    def _init_arrays(self, data: MarketData) -> None:
        """The observation rows of every bar and the prices as Python lists."""
        n = data.n_bars
        p = data.pred_features.shape[1]
        k = data.price_features.shape[1]
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

    def _init_config(self, data: MarketData, config: EnvConfig) -> None:
        """The settings as plain floats, the segment ends and the random start rows."""
        n = data.n_bars
        c = config
        self._set_account(
            c.initial_capital,
            c.transaction_cost,
            c.slippage,
            c.allow_short,
            c.action_set,
            c.episode_length,
        )
        self._ep_len = int(c.episode_length)
        self._ruin = float(c.ruin_threshold) * self._capital
        # (n,) last row of each row's segment; an episode is truncated there.
        bounds = np.array([*data.segment_starts, n])
        self._seg_last = np.repeat(bounds[1:] - 1, np.diff(bounds))
        steps_left = self._seg_last - np.arange(n)
        # Random starts: rows with a full-length episode ahead when there are any, else any row
        # with at least one step left (one segment: rows 0 .. n-1-episode_length).
        starts = np.flatnonzero(steps_left >= max(self._ep_len, 1))
        self._starts = starts if starts.size else np.flatnonzero(steps_left >= 1)
        self._last = n - 1

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
        equity_prev = self._equity
        a, valid, fees = self._advance(action)
        t1 = self._t
        equity = self._equity
        units = self._units
        price = self._close[t1]
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

    def action_masks(self) -> np.ndarray:
        """Boolean mask of valid actions, shape (9,) (sb3-contrib MaskablePPO convention); every
        target of the target action set is valid (the current one is a HOLD)."""
        return np.array(self.action_valid_list(), dtype=bool)

    # ------------------------------------------------------------------ internals

    def _observation(self, t: int) -> np.ndarray:
        """Observation of bar ``t`` (a fresh array; the market part was clipped at construction)."""
        obs = self._rows[t].copy()
        self._portfolio_obs(obs, self._i_pos)
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
