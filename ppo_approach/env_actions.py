"""The discrete actions of :class:`ppo_approach.trading_env.TradingEnv` and the tables the env
reads them through: the exposure levels of ``action_set = target``, the one order that reaches
each target level, and the fraction of each BUY/SELL action (see ``docs/actions.md``)."""

from __future__ import annotations

from enum import IntEnum


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
TARGET_ORDER: dict[tuple[float, float], int] = {
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
ORDER_FRACTION: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 0.25, 0.5, 1.0, 0.0, 0.0)
