"""What a user sees of the validation evaluations.

At each evaluation TensorBoard gets the policy's behaviour (action histogram and shares, invalid
actions apart, trades per episode, time in market, mean position) and the classifier rule's return
on the same validation episodes; at the end of training a policy that never trades gets a one-line
warning with the rule's return beside it.

Tiny agents (smoke preset, 2 envs x 256 steps, one torch thread) on a seeded random-walk block
whose prediction features carry the classifier's probabilities under their pipeline names.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger

from pipeline.config.files import load_config
from ppo_approach import callbacks, evaluation
from ppo_approach import ppo_trading_agent as agent
from ppo_approach.agent_blocks import PRED_BASE_COLUMNS
from ppo_approach.evaluation import ClassifierRulePolicy, run_episode
from ppo_approach.reward_functions import RewardConfig, RewardFunction
from ppo_approach.trading_env import Actions, EnvConfig, MarketData, TradingEnv

pytestmark = pytest.mark.integration  # trains tiny agents (tiers: tests/conftest.py)

EPISODES, SEED, PPY = 3, 5, 8760.0
ENV_CFG = EnvConfig(action_set="orders", episode_length=100)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n: int = 400, seed: int = 0) -> MarketData:
    """A random walk with pipeline-named prediction features (pred_class, confidence, probs)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    probs = rng.dirichlet(np.ones(3), n)  # (n, 3)
    pred = np.column_stack([probs.argmax(axis=1) - 1.0, probs.max(axis=1), probs])
    return MarketData(
        open_, close, pred, rng.normal(0.0, 1.0, (n, 5)), pred_names=PRED_BASE_COLUMNS
    )


def _val_env(data: MarketData) -> TradingEnv:
    return TradingEnv(data, ENV_CFG, RewardFunction(RewardConfig()), random_start=True)


def _model(data: MarketData, tb: Path | None = None) -> PPO:
    cfg = load_config(None, None, "smoke", ["n_epochs=1"]).ppo
    venv, _ = agent.make_vec_env(data, ENV_CFG, RewardConfig(), 2, cfg.seed, "dummy")
    model = agent.build_model(cfg, venv, "cpu", tb)
    assert isinstance(model, PPO)
    return model


def _evaluator(data: MarketData, ck: Path, freq: int = 512) -> callbacks.ValidationEvalCallback:
    return callbacks.ValidationEvalCallback(_val_env(data), ck, freq, EPISODES, SEED, PPY)


def _always(model: PPO, action: Actions) -> PPO:
    """The deterministic policy picks ``action`` on every bar."""
    model.policy.action_net.weight.data[:] = 0.0
    model.policy.action_net.bias.data[:] = 0.0
    model.policy.action_net.bias.data[action] = 100.0
    return model


def _evaluate_once(model: PPO, data: MarketData, ck: Path) -> callbacks.ValidationEvalCallback:
    """One evaluation through the callback's end-of-training hook (as after ``learn()``)."""
    ev = _evaluator(data, ck)
    model.set_logger(Logger(None, []))  # learn() sets one; no output wanted here
    ev.init_callback(model)
    ev.on_training_start({}, {})
    model.num_timesteps = 512
    ev.on_training_end()
    return ev


# ---------------------------------------------------------------- TensorBoard


def test_tensorboard_gets_behaviour_and_rule_return_at_each_evaluation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = _data()
    model = _model(data, tmp_path / "tb")
    ev = _evaluator(data, tmp_path / "ck")
    stopper = callbacks.StopOnRequestCallback(callbacks.StopRequest())
    with caplog.at_level(logging.WARNING, logger="ppo_approach.callbacks"):
        agent.learn(model, 1024, [ev], stopper, "t", progress_bar=False)

    ea = EventAccumulator(str(tmp_path / "tb" / "t_1"), size_guidance={"histograms": 0})
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    wanted = {
        "eval/trades_per_episode",
        "eval/time_in_market",
        "eval/mean_position",
        "eval/invalid_share",
        "eval/mean_return",
        "eval/rule_return",
        *(f"eval/action_{a.name}" for a in Actions),
    }
    assert wanted <= tags, wanted - tags
    assert "eval/actions" in ea.Tags()["histograms"]
    # Evaluations at 512 and 1024: every tag at both; the rule does not learn.
    rule = [e.value for e in ea.Scalars("eval/rule_return")]
    assert [e.step for e in ea.Scalars("eval/rule_return")] == [512, 1024]
    assert rule[0] == rule[1] == pytest.approx(ev.rule_metrics()["mean_return"])  # type: ignore[index]
    for step, logged in zip((512, 1024), ev.history, strict=True):
        assert logged["timesteps"] == step
        shares = [logged[f"action_{a.name}"] for a in Actions]
        assert sum(shares) == pytest.approx(1.0)
        hist = ea.Histograms("eval/actions")[(512, 1024).index(step)].histogram_value
        assert hist.num == EPISODES * logged["mean_length"]
        got = ea.Scalars("eval/trades_per_episode")[(512, 1024).index(step)].value
        assert got == pytest.approx(logged["trades_per_episode"])
    # The end-of-training warning is logged exactly when the best policy never traded.
    warned = [r for r in caplog.records if "made no trade" in r.getMessage()]
    assert ev.best_trades is not None
    assert len(warned) == (1 if ev.best_trades == 0 else 0)


def test_rule_return_equals_a_direct_run_of_the_rule(tmp_path: Path) -> None:
    data = _data()
    ev = _evaluator(data, tmp_path)
    rule = ClassifierRulePolicy(data.pred_features[:, 2:5])
    env = _val_env(data)
    direct = [
        run_episode(env, rule, seed=SEED + evaluation.EVAL_SEED_OFFSET + i) for i in range(EPISODES)
    ]
    returns = [r.equity[-1] / r.equity[0] - 1.0 for r in direct]
    got = ev.rule_metrics()
    assert got is not None and got["mean_return"] == pytest.approx(float(np.mean(returns)))
    assert got["trades_per_episode"] == pytest.approx(np.mean([r.trades for r in direct]))
    assert got["mean_return"] != 0.0  # the rule trades on these probabilities
    assert ev.rule_metrics() is got  # computed once


def test_behaviour_metrics_of_a_known_policy(tmp_path: Path) -> None:
    """Always BUY_100: one fill in, the liquidation exit out; long after every step; the
    invalid BUY_100s once long are executed as HOLD, and counted apart."""
    data = _data()
    recs = evaluation.run_block(lambda obs, info: int(Actions.BUY_100), _val_env(data), 2, SEED)
    m = evaluation.block_metrics(recs, PPY)
    assert m["trades_per_episode"] == 2.0 and m["total_trades"] == 4.0
    assert m["time_in_market"] == 1.0 and 0.9 < m["mean_position"] <= 1.0
    steps = sum(r.n_steps for r in recs)
    assert m["action_BUY_100"] == pytest.approx(2 / steps)
    assert m["action_HOLD"] == pytest.approx((steps - 2) / steps)
    assert m["invalid_share"] == pytest.approx((steps - 2) / steps)


def test_validation_and_backtest_metrics_have_one_definition(tmp_path: Path) -> None:
    """Every report metric reaches the validation metrics as its episode mean, computed by the
    backtest's own ``strategy_metrics`` (a new metric is one change)."""
    from pipeline.run.report_names import TABLE_COLUMNS

    data = _data()
    rule = ClassifierRulePolicy(data.pred_features[:, 2:5])
    recs = evaluation.run_block(rule, _val_env(data), EPISODES, SEED)
    m = evaluation.block_metrics(recs, PPY)
    per_episode = [evaluation.strategy_metrics(r, PPY) for r in recs]
    for name in TABLE_COLUMNS:
        values = [e[name] for e in per_episode if e[name] is not None]
        key = evaluation.BLOCK_NAMES.get(name, f"mean_{name}")
        if values:
            assert m[key] == pytest.approx(float(np.mean(values))), name
        else:
            assert key not in m, name
    assert m["mean_return"] == pytest.approx(
        np.mean([r.equity[-1] / r.equity[0] - 1 for r in recs])
    )
    assert "mean_max_drawdown" in m and "mean_fees_paid" in m


# ---------------------------------------------------------------- the no-trade warning


def test_a_flat_policy_gets_the_warning_with_the_rule_return(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _data()
    model = _always(_model(data), Actions.HOLD)
    with caplog.at_level(logging.WARNING, logger="ppo_approach.callbacks"):
        ev = _evaluate_once(model, data, tmp_path)
    assert ev.best_trades == 0 and ev.best_timesteps == 512
    rule = ev.rule_metrics()
    assert rule is not None
    msg = callbacks.no_trade_warning(ev)
    assert msg is not None and "\n" not in msg
    assert msg.startswith(
        f"the best policy made no trade on the validation block ({EPISODES} episodes)"
    )
    assert f"the classifier rule returned {100 * rule['mean_return']:+.2f} % there" in msg
    assert "no edge after fees, or the agent did not learn" in msg
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [msg]


def test_a_trading_policy_gets_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _data()
    model = _always(_model(data), Actions.BUY_100)
    with caplog.at_level(logging.WARNING, logger="ppo_approach.callbacks"):
        ev = _evaluate_once(model, data, tmp_path)
    assert ev.best_trades == 2 * EPISODES
    assert callbacks.no_trade_warning(ev) is None
    assert not [r for r in caplog.records if "made no trade" in r.getMessage()]


def test_no_warning_before_any_evaluation_and_the_trade_count_survives_resume(
    tmp_path: Path,
) -> None:
    data = _data()
    assert callbacks.no_trade_warning(_evaluator(data, tmp_path)) is None
    _evaluate_once(_always(_model(data), Actions.HOLD), data, tmp_path)
    resumed = _evaluator(data, tmp_path)
    resumed.load_best_meta()
    assert resumed.best_trades == 0 and callbacks.no_trade_warning(resumed) is not None
