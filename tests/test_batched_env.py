"""``vec_env = batched``: N copies of the trading env as arrays give exactly what N TradingEnvs in
a DummyVecEnv give (observations, rewards, dones, every info key, masks; episode ends, ruin and
resets included), for every action set and reward setting, and PPO trained on either learns the
same parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from pipeline.config.schema import PPOConfig
from ppo_approach import ppo_trading_agent as agent
from ppo_approach.batched_env import BatchedTradingEnv
from ppo_approach.reward_functions import RewardConfig
from ppo_approach.trading_env import EnvConfig, EnvFactory, MarketData


def _block(n: int = 400, seed: int = 0, segments: tuple[int, ...] = (0,)) -> MarketData:
    """A volatile random walk (2 % a bar: ruin and short squeezes happen) with gaps between
    opens and closes, 3 prediction and 5 price columns."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))  # (n,)
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, 0.005, n))  # (n,)
    pred = rng.random((n, 3)).astype(np.float32)  # (n, 3)
    price = rng.normal(0.0, 1.0, (n, 5)).astype(np.float32)  # (n, 5)
    return MarketData(open_, close, pred, price, segment_starts=segments)


def _same_info(a: Any, b: Any, where: tuple[int, int]) -> None:
    a, b = dict(a), dict(b)
    assert set(a) == set(b), (where, set(a) ^ set(b))
    for key, x in a.items():
        y = b[key]
        if key == "episode":  # VecMonitor's: return (float32), length (int32), wall time
            assert (x["r"], x["l"]) == (y["r"], y["l"]) and type(x["r"]) is type(y["r"]), where
            assert type(x["l"]) is type(y["l"]), where
            continue
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert np.array_equal(x, y), (where, key, x, y)
        else:
            assert x == y and type(x) is type(y), (where, key, x, y)


def _compare(cfg: EnvConfig, reward: RewardConfig, data: MarketData, n: int = 8) -> int:
    """Both vec envs over 500 steps of the same random actions (invalid ones included); returns
    the number of episode ends seen."""
    dummy = VecMonitor(
        DummyVecEnv([EnvFactory(data, cfg, 3, rank, True, reward) for rank in range(n)])
    )
    batched = BatchedTradingEnv(data, cfg, n, 3, reward)
    assert np.array_equal(dummy.reset(), batched.reset())
    rng = np.random.default_rng(1)
    ends = 0
    for step in range(500):
        actions = rng.integers(0, dummy.action_space.n, n)
        dummy.step_async(actions)
        batched.step_async(actions)
        obs_d, rew_d, done_d, info_d = dummy.step_wait()
        obs_b, rew_b, done_b, info_b = batched.step_wait()
        assert np.array_equal(obs_d, obs_b), step
        assert np.array_equal(rew_d, rew_b), step
        assert np.array_equal(done_d, done_b), step
        for i in range(n):
            _same_info(info_d[i], info_b[i], (step, i))
        masks_d = np.stack(dummy.env_method("action_masks"))
        assert np.array_equal(masks_d, np.stack(batched.env_method("action_masks")))
        ends += int(done_d.sum())
    return ends


ACTION_SETS = [("orders", False), ("orders", True), ("target", False), ("target", True)]
REWARDS = {
    "default": RewardConfig(),
    "simple+sharpe+cost": RewardConfig(
        profit_return="simple", sharpe_weight=0.5, drawdown_weight=1.0, cost_weight=1.0
    ),
}


@pytest.mark.unit
@pytest.mark.parametrize(("action_set", "allow_short"), ACTION_SETS)
@pytest.mark.parametrize(("episode_length", "ruin"), [(50, 0.5), (0, 0.9), (30, 0.0)])
@pytest.mark.parametrize("reward", list(REWARDS))
def test_the_batched_env_gives_what_n_trading_envs_give(
    action_set: str, allow_short: bool, episode_length: int, ruin: float, reward: str
) -> None:
    cfg = EnvConfig(
        episode_length=episode_length,
        ruin_threshold=ruin,
        transaction_cost=0.001,
        slippage=0.0005,
        action_set=action_set,
        allow_short=allow_short,
    )
    assert _compare(cfg, REWARDS[reward], _block()) > 0  # episodes ended and were reset


@pytest.mark.unit
def test_episodes_never_cross_a_segment_gap() -> None:
    """A block of several walk-forward segments (the agent's train block): truncation at each
    segment's last bar, as the env."""
    assert _compare(EnvConfig(episode_length=40), RewardConfig(), _block(segments=(0, 150, 300)))


@pytest.mark.unit
@pytest.mark.parametrize("algorithm", ["ppo", "maskable_ppo"])
def test_ppo_learns_the_same_parameters_on_batched_and_dummy(algorithm: str) -> None:
    """Same seed, same observations and rewards: PPO (and MaskablePPO, which reads the masks
    through env_method) ends with identical weights after two rollouts and updates."""
    data = _block(600, seed=4)
    env_cfg = EnvConfig(episode_length=100, action_set="orders", allow_short=True)
    cfg = PPOConfig(algorithm=algorithm, n_steps=64, batch_size=64, n_epochs=2,
                    net_arch=(16, 16), seed=7)  # fmt: skip
    params = {}
    for kind in ("dummy", "batched"):
        torch.manual_seed(0)
        venv, used = agent.make_vec_env(data, env_cfg, RewardConfig(), 4, 7, kind)
        assert used == kind
        model = agent.build_model(cfg, venv, "cpu", None)
        model.learn(total_timesteps=512)
        params[kind] = model.policy.state_dict()
        venv.close()
    for name, tensor in params["dummy"].items():
        assert torch.equal(tensor, params["batched"][name]), name
