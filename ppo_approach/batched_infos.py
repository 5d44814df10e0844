"""The infos of :class:`ppo_approach.batched_env.BatchedTradingEnv`, built only when read.

SB3 reads ``info.get("episode")`` of every copy each step; building N dicts for that would cost
more than the step itself. A step keeps its per-copy values as arrays (:class:`Snapshot`) and
:class:`LazyInfos` hands out one :class:`LazyInfo` per copy that builds the copy's dict, exactly
as ``DummyVecEnv`` over ``TradingEnv`` (plus ``VecMonitor``'s ``episode``) gives it, on the first
read of a key it has.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ppo_approach.env_actions import Actions

if TYPE_CHECKING:
    from ppo_approach.batched_env import BatchedTradingEnv


class Snapshot:
    """One step's per-copy values, kept for building infos later (arrays, copied)."""

    def __init__(self, env: BatchedTradingEnv, requested: np.ndarray, valid: np.ndarray,
                 fees: np.ndarray, terms: dict, truncated: np.ndarray) -> None:  # fmt: skip
        self.bar = env.t.copy()
        self.equity, self.cash, self.units = env.equity.copy(), env.cash.copy(), env.units.copy()
        self.price = env._close[env.t]
        self.fees, self.total_fees = fees, env.total_fees.copy()
        self.trades, self.invalid = env.trades.copy(), env.invalid.copy()
        self.valid, self.requested = valid, requested
        self.terms, self.truncated = terms, truncated
        self.env = env  # for the action mask of a copy whose info is read
        self.done: dict[int, dict[str, Any]] = {}

    def finish(self, env: BatchedTradingEnv, idx: np.ndarray, obs: np.ndarray,
               terminated: np.ndarray) -> None:  # fmt: skip
        """The end-of-episode keys of the done copies (before they are reset)."""
        for i in idx.tolist():
            liq = _liquidation(env, i)
            self.done[i] = {
                **liq,
                "episode_summary": {
                    "start_bar": int(env.start[i]),
                    "end_bar": int(env.t[i]),
                    "steps": int(env.steps[i]),
                    "final_equity": float(env.equity[i]),
                    "total_return": float(env.equity[i]) / env._capital - 1.0,
                    "max_drawdown": float(env.max_dd[i]),
                    "trades": int(env.trades[i]),
                    "total_fees": float(env.total_fees[i]),
                    "invalid_actions": int(env.invalid[i]),
                    "ruined": bool(terminated[i]),
                    "liquidation_equity": liq["liquidation_equity"],
                    "exit_fee": liq["exit_fee"],
                },  # fmt: skip
                "terminal_observation": obs[i].copy(),
                "episode": {
                    "r": env._ep_return[i],
                    "l": np.int32(env.steps[i]),
                    "t": round(time.time() - env._t_start, 6),
                },
            }
            env._ep_return[i] = 0.0

    def info(self, i: int) -> dict[str, Any]:
        """The info dict of copy ``i``, as ``DummyVecEnv`` over ``TradingEnv`` gives it."""
        t = self.terms
        valid = bool(self.valid[i])
        out: dict[str, Any] = {
            "bar": int(self.bar[i]), "equity": float(self.equity[i]),
            "cash": float(self.cash[i]), "position": float(self.units[i]),
            "price": float(self.price[i]), "fees": float(self.fees[i]),
            "total_fees": float(self.total_fees[i]), "trades": int(self.trades[i]),
            "invalid_actions": int(self.invalid[i]), "action_valid": valid,
            "order": int(self.requested[i]) if valid else int(Actions.HOLD),
            "requested_order": int(self.requested[i]),
            "reward_terms": {k: float(t[k][i]) for k in ("profit", "cost", "drawdown", "sharpe",
                                                          "total")},
            "action_mask": self.env.action_masks(
                (self.units[i : i + 1], self.cash[i : i + 1], self.bar[i : i + 1])
            )[0],
        }  # fmt: skip
        done = self.done.get(i)
        if done is not None:
            out.update(
                {k: v for k, v in done.items() if k not in ("terminal_observation", "episode")}
            )
        out["TimeLimit.truncated"] = bool(self.truncated[i])
        if done is not None:
            out["terminal_observation"] = done["terminal_observation"]
            out["episode"] = done["episode"]
        return out


def _liquidation(env: BatchedTradingEnv, i: int) -> dict[str, float]:
    """:meth:`Account.liquidation` of copy ``i``."""
    units = float(env.units[i])
    if units == 0.0:
        return {"liquidation_equity": float(env.cash[i]), "exit_fee": 0.0, "exit_notional": 0.0}
    fill = float(env._close[env.t[i]]) * (env._sell_mult if units > 0.0 else env._buy_mult)
    notional = abs(units) * fill
    fee = env._tc * notional
    return {
        "liquidation_equity": float(env.cash[i]) + units * fill - fee,
        "exit_fee": fee,
        "exit_notional": notional,
    }


class LazyInfo(Mapping[str, Any]):
    """Copy ``i``'s info, built on the first read of a key it has (``get`` of a key no info
    has, or of ``"episode"`` for a copy whose episode goes on, builds nothing)."""

    __slots__ = ("_snap", "_i", "_dict")
    _KEYS = frozenset({"bar", "equity", "cash", "position", "price", "fees", "total_fees",
                       "trades", "invalid_actions", "action_valid", "order", "requested_order",
                       "reward_terms", "action_mask", "TimeLimit.truncated",
                       "liquidation_equity", "exit_fee", "exit_notional", "episode_summary",
                       "terminal_observation", "episode"})  # fmt: skip

    def __init__(self, snap: Snapshot, i: int) -> None:
        self._snap, self._i, self._dict = snap, i, None

    def _full(self) -> dict[str, Any]:
        if self._dict is None:
            self._dict = self._snap.info(self._i)
        return self._dict

    def __getitem__(self, key: str) -> Any:
        return self._full()[key]

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self._KEYS or (key == "episode" and self._i not in self._snap.done):
            return default
        return self._full().get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._full())

    def __len__(self) -> int:
        return len(self._full())

    def copy(self) -> dict[str, Any]:
        """A plain dict of every key."""
        return dict(self._full())


class LazyInfos(Sequence[Mapping[str, Any]]):
    """The N infos of one step, each built when read."""

    def __init__(self, snap: Snapshot) -> None:
        self._snap = snap
        self._items: list[LazyInfo | None] = [None] * len(snap.bar)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        item = self._items[i]
        if item is None:
            item = self._items[i] = LazyInfo(self._snap, int(i) % len(self._items))
        return item
