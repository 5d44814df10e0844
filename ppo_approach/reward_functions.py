"""Reward terms for the trading environment, each a small pure function, and their weighted sum.

The reward of a step (decision at bar ``t``, filled at ``open[t+1]``, marked at ``close[t+1]``) is

    r = clip(profit + cost + drawdown + sharpe, -reward_clip, +reward_clip)

| term       | formula                                                          | sign  |
|------------|------------------------------------------------------------------|-------|
| `profit`   | ``profit_scale * (E_t / E_{t-1} - 1)`` (or ``* log(E_t/E_{t-1})``) | +/-   |
| `cost`     | ``-cost_weight * profit_scale * fees_t / E_{t-1}``               | <= 0  |
| `drawdown` | ``-drawdown_weight * profit_scale * max(0, DD_t - DD_{t-1})``    | <= 0  |
| `sharpe`   | ``sharpe_weight * D_t`` (differential Sharpe ratio, see below)   | +/-   |

``E`` is equity, ``DD_t = 1 - E_t / max(E_0..E_t)`` the drawdown from the running peak. With
``profit_return = log`` the profit term is the log return: an episode's summed profit term is then
exactly ``profit_scale * log(E_T / E_0)``, so the agent maximises terminal wealth's log (Kelly's
criterion) instead of a sum of simple returns that a volatile path inflates.

Why the cost and drawdown terms carry ``profit_scale``: they are fractions of equity just like the
step return, so scaling all three alike keeps them in the same units, and a weight of 1 means "one
unit of fees (or of new drawdown) hurts as much again as the same loss in equity". The fees are
already inside the equity change (the profit term), so ``cost_weight`` is an *extra* penalty that
discourages churning; ``cost_weight = 0`` charges fees exactly once.

The drawdown term penalises only the *increase* of drawdown: holding through an existing drawdown
or recovering from it costs nothing (recovery is already rewarded by the profit term), so the agent
is not pushed to close a position just because it is under water.

Overriding: subclass :class:`RewardFunction` and override ``__call__`` or one of the ``*_term``
methods (the same idea as FreqAI's ``calculate_reward`` in freqtrade). The environment only calls
``reset()`` at the start of an episode and ``reward_fn(equity_prev, equity_now, fees)`` each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline.common import PipelineError
from pipeline.config.checks import check_settings, schema_default, settings_from
from pipeline.config.schema import PPOConfig

DSR_VARIANCE_EPS = 1e-14
"""Below this EMA variance of returns the differential Sharpe ratio is undefined; it returns 0.

Per-bar returns of crypto candles are ~1e-4..1e-2, so with ``eta = 0.01`` the variance estimate is
~1e-10..1e-6 once a few non-zero returns have arrived; 1e-14 only catches the start of an episode
and long flat stretches, where the ratio would otherwise be 0/0.
"""

TERM_NAMES: tuple[str, ...] = ("profit", "cost", "drawdown", "sharpe")
"""Keys of the terms dict returned by :meth:`RewardFunction.__call__` (plus ``"total"``)."""


class RewardConfigError(PipelineError, ValueError):
    """A reward setting is out of range (names the key, the value and the allowed range)."""


# ------------------------------------------------------------------ pure terms


def profit_term(equity_prev: float, equity_now: float, profit_scale: float) -> float:
    """Step return of equity times ``profit_scale`` (positive on a gain, negative on a loss)."""
    return (equity_now / equity_prev - 1.0) * profit_scale


def log_profit_term(equity_prev: float, equity_now: float, profit_scale: float) -> float:
    """Log step return of equity times ``profit_scale``: sums to the episode's log return."""
    return math.log(equity_now / equity_prev) * profit_scale


def cost_term(fees_paid_this_step: float, equity_prev: float, weight: float) -> float:
    """Penalty ``-weight * fees / equity_prev`` (<= 0, proportional to the fees of this step)."""
    return -weight * fees_paid_this_step / equity_prev


def drawdown_term(dd_prev: float, dd_now: float, weight: float) -> float:
    """Penalty ``-weight * max(0, dd_now - dd_prev)``: only a *growing* drawdown costs (<= 0).

    ``dd_*`` are drawdowns as fractions of the running equity peak (0 = at the peak).
    """
    increase = dd_now - dd_prev
    return -weight * increase if increase > 0.0 else 0.0


def sharpe_term(
    ret: float, a_prev: float, b_prev: float, eta: float, eps: float = DSR_VARIANCE_EPS
) -> tuple[float, float, float]:
    """Differential Sharpe ratio of one return and the updated EMA moments ``(D_t, A_t, B_t)``.

    Moody & Saffell (2001), "Learning to trade via direct reinforcement", IEEE Trans. Neural
    Networks 12(4), eq. (9)-(10): with exponential moving estimates of the first and second moment
    of the returns, ``A_t = A_{t-1} + eta (R_t - A_{t-1})``, ``B_t = B_{t-1} + eta (R_t^2 -
    B_{t-1})``, the first-order sensitivity of the moving Sharpe ratio to the newest return is

        D_t = (B_{t-1} dA_t - 0.5 A_{t-1} dB_t) / (B_{t-1} - A_{t-1}^2)^{3/2},

    ``dA_t = R_t - A_{t-1}``, ``dB_t = R_t^2 - B_{t-1}``. It is positive when ``R_t`` raises the
    running Sharpe ratio (a return above the running mean, not too large relative to the spread)
    and invariant to the scale of the returns. While the variance estimate is ~0 (first step of an
    episode, long flat stretches) the ratio is 0/0, so the term is 0 there.
    """
    d_a = ret - a_prev
    d_b = ret * ret - b_prev
    var = b_prev - a_prev * a_prev
    dsr = (b_prev * d_a - 0.5 * a_prev * d_b) / (var * math.sqrt(var)) if var > eps else 0.0
    return dsr, a_prev + eta * d_a, b_prev + eta * d_b


# ------------------------------------------------------------------ config, state, sum


@dataclass
class RewardConfig:
    """Weights of the reward terms: the ``reward`` group of ``PPOConfig``, same names and order.

    Defaults and ranges are declared once, in :class:`pipeline.config.schema.PPOConfig`, and read
    from there, so the config loader refuses every value this class refuses.
    """

    profit_scale: float = schema_default(PPOConfig, "profit_scale")
    cost_weight: float = schema_default(PPOConfig, "cost_weight")
    drawdown_weight: float = schema_default(PPOConfig, "drawdown_weight")
    sharpe_weight: float = schema_default(PPOConfig, "sharpe_weight")
    sharpe_eta: float = schema_default(PPOConfig, "sharpe_eta")
    reward_clip: float = schema_default(PPOConfig, "reward_clip")
    profit_return: str = schema_default(PPOConfig, "profit_return")

    def __post_init__(self) -> None:
        check_settings(self, PPOConfig, RewardConfigError, "reward config")

    @classmethod
    def from_ppo_config(cls, cfg: Any) -> RewardConfig:
        """Read the reward fields of a ``pipeline.config.schema.PPOConfig`` (by attribute name)."""
        return settings_from(cls, cfg)


@dataclass
class RewardState:
    """What the reward remembers within an episode: equity peak and the DSR's EMA moments."""

    peak_equity: float = 0.0
    a: float = 0.0  # EMA of returns (Moody & Saffell's A_t)
    b: float = 0.0  # EMA of squared returns (B_t)


class RewardFunction:
    """Weighted, clipped sum of the reward terms; call :meth:`reset` at the start of an episode.

    ``reward, terms = fn(equity_prev, equity_now, fees)``: ``terms`` has one entry per name in
    :data:`TERM_NAMES` (already weighted, before clipping) and ``"total"`` (after clipping).
    """

    def __init__(self, config: RewardConfig | None = None) -> None:
        self.config = config if config is not None else RewardConfig()
        self.state = RewardState()
        # Plain attributes: the env calls this every step, dataclass lookups add up.
        c = self.config
        self._scale = float(c.profit_scale)
        self._log = c.profit_return == "log"
        self._cost_w = float(c.cost_weight) * self._scale
        self._dd_w = float(c.drawdown_weight) * self._scale
        self._sharpe_w = float(c.sharpe_weight)
        self._eta = float(c.sharpe_eta)
        self._clip = float(c.reward_clip)

    def reset(self) -> None:
        """Forget the equity peak and the return moments (start of an episode)."""
        self.state = RewardState()

    def profit(self, equity_prev: float, equity_now: float) -> float:
        """Weighted profit term (override to change it)."""
        if self._log:
            return log_profit_term(equity_prev, equity_now, self._scale)
        return profit_term(equity_prev, equity_now, self._scale)

    def cost(self, fees: float, equity_prev: float) -> float:
        """Weighted cost term (override to change it)."""
        return cost_term(fees, equity_prev, self._cost_w)

    def drawdown(self, equity_prev: float, equity_now: float) -> float:
        """Weighted drawdown-increase term; updates the running equity peak."""
        st = self.state
        peak = st.peak_equity if st.peak_equity > equity_prev else equity_prev
        dd_prev = 1.0 - equity_prev / peak
        if equity_now > peak:
            peak = equity_now
        st.peak_equity = peak
        return drawdown_term(dd_prev, 1.0 - equity_now / peak, self._dd_w)

    def sharpe(self, equity_prev: float, equity_now: float) -> float:
        """Weighted differential Sharpe ratio of this step's return; updates the EMA moments."""
        st = self.state
        dsr, st.a, st.b = sharpe_term(equity_now / equity_prev - 1.0, st.a, st.b, self._eta)
        return self._sharpe_w * dsr

    def __call__(
        self, equity_prev: float, equity_now: float, fees: float
    ) -> tuple[float, dict[str, float]]:
        """Reward of one step and its terms; ``equity_prev`` must be > 0 (the env ends at ruin)."""
        p = self.profit(equity_prev, equity_now)
        c = self.cost(fees, equity_prev)
        d = self.drawdown(equity_prev, equity_now)
        s = self.sharpe(equity_prev, equity_now) if self._sharpe_w != 0.0 else 0.0
        total = p + c + d + s
        clip = self._clip
        if total > clip:
            total = clip
        elif total < -clip:
            total = -clip
        return total, {"profit": p, "cost": c, "drawdown": d, "sharpe": s, "total": total}
