"""Reward terms: sign and size on hand-made equity paths, DSR formula, clipping, overriding."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest

from pipeline.config.files import load_config
from pipeline.config.schema import ConfigError
from ppo_approach.reward_functions import (
    RewardConfig,
    RewardConfigError,
    RewardFunction,
    cost_term,
    drawdown_term,
    profit_term,
    sharpe_term,
)

pytestmark = pytest.mark.unit  # every test here (tiers: tests/conftest.py)


def test_profit_term_is_scaled_step_return() -> None:
    assert profit_term(10000.0, 10100.0, 100.0) == pytest.approx(1.0)  # +1 % -> +1
    assert profit_term(10000.0, 9950.0, 100.0) == pytest.approx(-0.5)  # -0.5 % -> -0.5
    assert profit_term(10000.0, 10000.0, 100.0) == 0.0


def test_cost_term_is_a_penalty_proportional_to_fees() -> None:
    assert cost_term(0.0, 10000.0, 1.0) == 0.0
    assert cost_term(10.0, 10000.0, 1.0) == pytest.approx(-0.001)
    assert cost_term(20.0, 10000.0, 1.0) == pytest.approx(2 * cost_term(10.0, 10000.0, 1.0))
    assert cost_term(10.0, 10000.0, 3.0) == pytest.approx(-0.003)


def test_drawdown_term_penalises_only_increase() -> None:
    assert drawdown_term(0.0, 0.05, 2.0) == pytest.approx(-0.1)
    assert drawdown_term(0.05, 0.08, 1.0) == pytest.approx(-0.03)
    assert drawdown_term(0.08, 0.02, 1.0) == 0.0  # recovery: no penalty (and no bonus)
    assert drawdown_term(0.02, 0.02, 1.0) == 0.0


def test_sharpe_term_matches_moody_saffell_formula() -> None:
    a, b, r, eta = 0.001, 0.001**2 + 1e-4, 0.004, 0.01
    dsr, a_new, b_new = sharpe_term(r, a, b, eta)
    # D = (B dA - 0.5 A dB) / (B - A^2)^1.5 with dA = R - A, dB = R^2 - B (written out by hand).
    expected = (b * (r - a) - 0.5 * a * (r * r - b)) / (b - a * a) ** 1.5
    assert dsr == pytest.approx(expected, rel=1e-12)
    assert a_new == pytest.approx(a + eta * (r - a))
    assert b_new == pytest.approx(b + eta * (r * r - b))


def test_sharpe_term_sign_and_scale_invariance() -> None:
    a, b = 0.001, 0.001**2 + 1e-4  # running mean 0.1 %, std 1 %
    assert sharpe_term(0.01, a, b, 0.01)[0] > 0  # above the running mean
    assert sharpe_term(-0.01, a, b, 0.01)[0] < 0  # below it
    # Doubling every return (and so A and 4 B) leaves D unchanged: it is a ratio.
    d1 = sharpe_term(0.005, a, b, 0.01)[0]
    d2 = sharpe_term(0.010, 2 * a, 4 * b, 0.01)[0]
    assert d2 == pytest.approx(d1, rel=1e-9)


def test_sharpe_term_is_zero_while_variance_is_zero() -> None:
    dsr, a, b = sharpe_term(0.01, 0.0, 0.0, 0.01)
    assert dsr == 0.0
    assert (a, b) == (pytest.approx(1e-4), pytest.approx(1e-6))
    assert sharpe_term(0.02, 0.01, 0.0001, 0.01)[0] == 0.0  # B - A^2 = 0 exactly


def test_reward_function_terms_on_equity_path() -> None:
    # The simple-return profit term (the default is the log return now; the log term
    # is tested in test_log_profit_term_sums_to_the_episode_log_return).
    fn = RewardFunction(RewardConfig(sharpe_weight=0.0, profit_return="simple"))
    path = [10000.0, 10100.0, 9999.0, 10049.5, 9899.0]
    rewards = []
    for prev, now in zip(path[:-1], path[1:], strict=True):
        r, terms = fn(prev, now, 0.0)
        rewards.append((r, terms))
    # 1: +1 % at a new peak: profit +1, no drawdown.
    assert rewards[0][1]["profit"] == pytest.approx(1.0)
    assert rewards[0][1]["drawdown"] == 0.0
    # 2: 10100 -> 9999 is a drawdown of 1 % from the peak: penalty 100 * 0.01 = 1.
    assert rewards[1][1]["drawdown"] == pytest.approx(-1.0)
    assert rewards[1][1]["profit"] == pytest.approx(-1.0)
    # 3: partial recovery to 10049.5: drawdown shrinks to 0.5 %, no penalty.
    assert rewards[2][1]["drawdown"] == 0.0
    assert rewards[2][1]["profit"] > 0
    # 4: 10049.5 -> 9899 is drawdown 0.5 % -> 1.99 %: penalty 100 * 0.0149.
    assert rewards[3][1]["drawdown"] == pytest.approx(-100 * (1 - 9899 / 10100 - 0.005), rel=1e-9)
    for r, terms in rewards:
        assert r == pytest.approx(terms["profit"] + terms["cost"] + terms["drawdown"])
        assert terms["total"] == r
        assert terms["sharpe"] == 0.0


def test_reward_function_cost_term_uses_profit_scale() -> None:
    fn = RewardFunction(RewardConfig(cost_weight=2.0, sharpe_weight=0.0))
    _, terms = fn(10000.0, 10000.0, 10.0)  # fees of 0.1 % of equity
    assert terms["cost"] == pytest.approx(-2.0 * 100.0 * 0.001)


def test_reward_function_dsr_positive_after_return_above_mean() -> None:
    fn = RewardFunction(RewardConfig(sharpe_weight=1.0))
    equity = 10000.0
    for ret in (0.001, -0.001, 0.002, -0.002, 0.001):  # warm up A, B
        fn(equity, equity * (1 + ret), 0.0)
        equity *= 1 + ret
    _, up = fn(equity, equity * 1.003, 0.0)
    assert up["sharpe"] > 0
    _, down = fn(equity * 1.003, equity * 1.003 * 0.99, 0.0)
    assert down["sharpe"] < 0


def test_reward_is_clipped() -> None:
    fn = RewardFunction(RewardConfig(profit_return="simple"))
    r, terms = fn(10000.0, 20000.0, 0.0)  # +100 % -> profit 100
    assert terms["profit"] == pytest.approx(100.0)
    assert r == 10.0
    fn.reset()
    r, _ = fn(10000.0, 5000.0, 0.0)
    assert r == -10.0


def test_reset_forgets_peak_and_moments() -> None:
    fn = RewardFunction()
    fn(10000.0, 12000.0, 0.0)
    fn(12000.0, 11000.0, 0.0)
    fn.reset()
    assert (fn.state.peak_equity, fn.state.a, fn.state.b) == (0.0, 0.0, 0.0)
    _, terms = fn(5000.0, 5000.0, 0.0)  # a fresh episode at lower equity is not a drawdown
    assert terms["drawdown"] == 0.0


def test_subclass_can_override_a_term() -> None:
    class NoCost(RewardFunction):
        def cost(self, fees: float, equity_prev: float) -> float:
            return 0.0

    r, terms = NoCost(RewardConfig(sharpe_weight=0.0))(10000.0, 10000.0, 50.0)
    assert terms["cost"] == 0.0
    assert r == 0.0


def test_reward_config_from_ppo_config_and_validation() -> None:
    cfg = SimpleNamespace(
        profit_scale=50.0,
        cost_weight=0.5,
        drawdown_weight=2.0,
        sharpe_weight=0.2,
        sharpe_eta=0.05,
        reward_clip=5.0,
        profit_return="log",
    )
    rc = RewardConfig.from_ppo_config(cfg)
    assert rc == RewardConfig(50.0, 0.5, 2.0, 0.2, 0.05, 5.0, "log")
    # Whole numbers from a config file become floats, like the defaults.
    cfg.profit_scale, cfg.reward_clip = 50, 5
    rc = RewardConfig.from_ppo_config(cfg)
    assert type(rc.profit_scale) is float and type(rc.reward_clip) is float
    with pytest.raises(RewardConfigError, match=r"sharpe_eta = 1\.5, expected in \(0, 1\)"):
        RewardConfig(sharpe_eta=1.5)
    with pytest.raises(RewardConfigError, match="reward_clip"):
        RewardConfig(reward_clip=math.inf)


def test_reward_config_is_the_reward_group_of_ppo_config() -> None:
    # Names, order, types and defaults are PPOConfig's "reward" group, declared once;
    # profit_scale = 0 is refused here and by the config loader alike
    import dataclasses
    import typing

    from pipeline.config.schema import PPOConfig

    group = [f for f in dataclasses.fields(PPOConfig) if f.metadata["group"] == "reward"]
    ours = dataclasses.fields(RewardConfig)
    assert [f.name for f in ours] == [f.name for f in group]
    assert [f.default for f in ours] == [f.default for f in group]
    hints, schema_hints = typing.get_type_hints(RewardConfig), typing.get_type_hints(PPOConfig)
    assert all(hints[f.name] == schema_hints[f.name] for f in ours)
    assert RewardConfig.from_ppo_config(PPOConfig()) == RewardConfig()
    with pytest.raises(RewardConfigError, match=r"^reward config: profit_scale = 0, expected > 0"):
        RewardConfig(profit_scale=0)
    with pytest.raises(RewardConfigError, match=r"cost_weight = -1\.0, expected >= 0"):
        RewardConfig(cost_weight=-1.0)


def test_log_profit_term_sums_to_the_episode_log_return() -> None:
    """Reward alternatives: with ``profit_return = log`` the summed profit term of an episode is
    ``profit_scale * log(E_T / E_0)`` whatever the path; the simple return's sum is not
    (a +50 % / -33.3 % round trip sums to +16.7 % although wealth is unchanged)."""
    path = [100.0, 150.0, 100.0, 120.0, 90.0]
    for kind, expected in (("log", 100 * math.log(90 / 100)), ("simple", None)):
        fn = RewardFunction(
            RewardConfig(
                profit_return=kind,
                cost_weight=0,
                drawdown_weight=0,
                sharpe_weight=0,
                reward_clip=1e6,
            )  # fmt: skip
        )
        total = sum(fn(a, b, 0.0)[1]["profit"] for a, b in itertools.pairwise(path))
        if expected is not None:
            assert total == pytest.approx(expected)
        else:
            assert total == pytest.approx(100 * (0.5 - 1 / 3 + 0.2 - 0.25))


def test_profit_return_must_be_simple_or_log() -> None:
    with pytest.raises(RewardConfigError, match="profit_return"):
        RewardConfig(profit_return="sqrt")
    with pytest.raises(ConfigError, match="profit_return"):
        load_config(None, None, None, ["profit_return=sqrt"])


def test_defaults_charge_fees_once_on_the_log_return() -> None:
    """Set from the learnability ladder: by default the profit term is the log return and fees are
    charged once (inside the equity change, no extra cost penalty); the drawdown and Sharpe terms
    keep their weights."""
    cfg = RewardConfig()
    assert (cfg.profit_return, cfg.cost_weight) == ("log", 0.0)
    assert (cfg.drawdown_weight, cfg.sharpe_weight) == (1.0, 0.1)
    _, terms = RewardFunction(cfg)(10000.0, 9990.0, 10.0)  # a fee of 10 was the whole loss
    assert terms["cost"] == 0.0
    assert terms["profit"] == pytest.approx(100 * math.log(0.999))
