"""TradingEnv: gym API conformance, accounting to the cent, legality, causality, seeding, ruin."""

from __future__ import annotations

import pickle
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env

from ppo_approach.reward_functions import RewardConfig, RewardFunction
from ppo_approach.trading_env import (
    Actions,
    EnvConfig,
    EnvConfigError,
    EnvFactory,
    MarketData,
    MarketDataError,
    TradingEnv,
)

pytestmark = pytest.mark.unit  # every test here (tiers: tests/conftest.py)

A = Actions


def random_walk_data(n: int = 600, p: int = 3, seed: int = 0, vol: float = 0.01) -> MarketData:
    """A seeded random-walk block with P prediction columns and 5 price features."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, vol / 10, n))
    probs = rng.dirichlet(np.ones(3), n)[:, :p] if p <= 3 else rng.random((n, p))
    return MarketData(open_, close, probs, rng.normal(0.0, 1.0, (n, 5)))


def price_data(open_: list[float], close: list[float], p: int = 0) -> MarketData:
    """A block with given prices and zero features."""
    n = len(open_)
    return MarketData(np.array(open_), np.array(close), np.zeros((n, p)), np.zeros((n, 5)))


def flat_env(allow_short: bool = False, **kw: float) -> TradingEnv:
    """Env over hand-made prices (see test_accounting_to_the_cent), starting at bar 0."""
    data = price_data([100, 100, 110, 120, 125, 130, 140], [100, 105, 115, 122, 128, 135, 140])
    cfg = EnvConfig(**{"action_set": "orders", **kw}, allow_short=allow_short, episode_length=0)
    env = TradingEnv(data, cfg, random_start=False)
    env.reset(seed=0)
    return env


def test_check_env_passes_with_zero_warnings() -> None:
    for allow_short in (False, True):
        env = TradingEnv(
            random_walk_data(),
            EnvConfig(action_set="orders", allow_short=allow_short, episode_length=50),
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env, warn=True)
        assert [str(w.message) for w in caught] == []


def test_observation_layout_and_names() -> None:
    env = TradingEnv(random_walk_data(p=3), EnvConfig(action_set="orders"), random_start=False)
    obs, info = env.reset(seed=1)
    names = env.observation_names()
    assert names == [
        *(f"pred_{i}" for i in range(3)),
        *(f"price_{i}" for i in range(5)),
        "position_frac",
        "unrealized_pnl",
        "cash_frac",
        "holding_time",
    ]
    assert obs.shape == (12,) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[:3], env.data.pred_features[0], rtol=1e-6)
    np.testing.assert_allclose(obs[3:8], np.clip(env.data.price_features[0], -10, 10), rtol=1e-6)
    assert obs[8:].tolist() == [0.0, 0.0, 1.0, 0.0]  # flat: all cash
    assert info["equity"] == 10000.0 and info["bar"] == 0


def test_features_are_clipped_to_box() -> None:
    data = random_walk_data(p=2)
    data.price_features[3, 1] = 55.0
    env = TradingEnv(data, EnvConfig(action_set="orders"), random_start=False)
    env.reset(seed=0)
    obs = env._observation(3)
    assert obs[2 + 1] == 10.0
    assert env.observation_space.contains(obs)


def test_accounting_to_the_cent() -> None:
    """Fee 0.1 % per side, no slippage; every expected number derived by hand below."""
    env = flat_env(allow_short=True)

    # Bar 0: BUY_50 spends 5000 of 10000 cash, fee included, at open[1] = 100.
    _, _, _, _, info = env.step(A.BUY_50)
    units1 = 5000 / (100 * 1.001)  # 49.95004995
    fee1 = 5000 - units1 * 100  # 4.995005
    assert info["position"] == pytest.approx(units1, rel=1e-12)
    assert info["cash"] == pytest.approx(5000.00, abs=0.005)
    assert info["fees"] == pytest.approx(4.995005, abs=1e-6) == pytest.approx(fee1)
    assert info["equity"] == pytest.approx(5000 + units1 * 105)
    assert info["equity"] == pytest.approx(10244.76, abs=0.005)  # marked at close[1] = 105

    # Bar 1: SELL_25 sells a quarter of the units at open[2] = 110.
    _, _, _, _, info = env.step(A.SELL_25)
    proceeds2 = 0.25 * units1 * 110  # 1373.626374
    assert info["fees"] == pytest.approx(1.37, abs=0.005)
    assert info["cash"] == pytest.approx(5000 + proceeds2 * 0.999)
    assert info["cash"] == pytest.approx(6372.25, abs=0.005)
    assert info["position"] == pytest.approx(0.75 * units1, rel=1e-12)
    assert info["equity"] == pytest.approx(10680.44, abs=0.005)  # 6372.25 + 37.4625 * 115

    # Bar 2: CLOSE sells the rest at open[3] = 120.
    _, _, _, _, info = env.step(A.CLOSE)
    assert info["position"] == 0.0
    assert info["fees"] == pytest.approx(0.75 * units1 * 120 * 0.001)
    assert info["cash"] == pytest.approx(10863.26, abs=0.005)
    assert info["equity"] == info["cash"]
    assert info["total_fees"] == pytest.approx(10.86, abs=0.005)  # 4.995 + 1.374 + 4.496

    # Bar 3: BUY_100 puts all cash in at open[4] = 125.
    cash3 = info["cash"]
    _, _, _, _, info = env.step(A.BUY_100)
    units4 = cash3 / (125 * 1.001)  # 86.819275
    assert info["cash"] == 0.0
    assert info["position"] == pytest.approx(units4, rel=1e-12)
    assert info["equity"] == pytest.approx(11112.87, abs=0.005)  # 86.819275 * 128

    # Bar 4: REVERSE sells 2 * units at open[5] = 130: short of the same number of units.
    _, _, _, _, info = env.step(A.REVERSE)
    assert info["position"] == pytest.approx(-units4, rel=1e-12)
    assert info["fees"] == pytest.approx(22.57, abs=0.005)  # 0.001 * 2 * 86.819 * 130
    assert info["cash"] == pytest.approx(2 * units4 * 130 * 0.999)
    assert info["cash"] == pytest.approx(22550.44, abs=0.005)
    assert info["equity"] == pytest.approx(10829.84, abs=0.005)  # 22550.44 - 86.819 * 135

    # Bar 5: REVERSE again at open[6] = 140: buy back the short, go long as far as cash allows.
    cash5 = info["cash"]
    _, _, terminated, truncated, info = env.step(A.REVERSE)
    cash_after_cover = cash5 - units4 * 140 * 1.001  # 10383.72
    long_units = cash_after_cover / (140 * 1.001)  # 74.094372 (< 86.82: cash-limited)
    assert info["position"] == pytest.approx(long_units, rel=1e-12)
    assert info["cash"] == 0.0
    assert info["equity"] == pytest.approx(10373.21, abs=0.005)
    assert info["trades"] == 6 and info["invalid_actions"] == 0
    assert info["total_fees"] == pytest.approx(66.82, abs=0.005)
    # Bar 6 is the block's last bar: the episode is cut (truncated), not ruined.
    assert (terminated, truncated) == (False, True)
    summary = info["episode_summary"]
    assert summary["steps"] == 6 and summary["trades"] == 6
    assert summary["total_return"] == pytest.approx(10373.21 / 10000 - 1, abs=1e-6)
    assert summary["ruined"] is False


def test_slippage_is_adverse_on_both_sides() -> None:
    env = flat_env(slippage=0.01)
    _, _, _, _, info = env.step(A.BUY_100)  # fills at 100 * 1.01 = 101
    units = 10000 / (101 * 1.001)
    assert info["position"] == pytest.approx(units, rel=1e-12)
    _, _, _, _, info = env.step(A.CLOSE)  # fills at 110 * 0.99 = 108.9
    assert info["cash"] == pytest.approx(units * 108.9 * 0.999, rel=1e-12)


def test_last_step_reports_liquidation_value_long_and_short() -> None:
    # The last info says what closing the position at the last close leaves, exit fee and adverse
    # slippage included; the step's own equity stays marked to market.
    data = price_data([100, 100, 110], [100, 105, 120])
    cfg = EnvConfig(
        action_set="orders",
        episode_length=0,
        transaction_cost=0.01,
        slippage=0.005,
        allow_short=True,
    )
    env = TradingEnv(data, cfg, random_start=False)
    env.reset(seed=0)
    _, _, _, _, info = env.step(A.BUY_100)  # fills at 100 * 1.005
    assert "liquidation_equity" not in info  # not the last step
    units = 10000 / (100.5 * 1.01)
    _, _, _, trunc, info = env.step(A.HOLD)
    assert trunc
    assert info["equity"] == pytest.approx(units * 120, rel=1e-12)
    assert info["exit_notional"] == pytest.approx(units * 120 * 0.995, rel=1e-12)
    assert info["exit_fee"] == pytest.approx(0.01 * units * 120 * 0.995, rel=1e-12)
    assert info["liquidation_equity"] == pytest.approx(units * 120 * 0.995 * 0.99, rel=1e-12)
    summary = info["episode_summary"]
    assert summary["liquidation_equity"] == info["liquidation_equity"]
    assert summary["final_equity"] == info["equity"]
    # Short 50 % of equity at open[1] = 100 * 0.995; bought back at the close 120 * 1.005.
    env.reset(seed=0)
    env.step(A.SELL_50)
    _, _, _, _, info = env.step(A.HOLD)
    short = info["position"]
    assert short < 0
    buy_back = -short * 120 * 1.005
    assert info["exit_fee"] == pytest.approx(0.01 * buy_back, rel=1e-12)
    assert info["liquidation_equity"] == pytest.approx(info["cash"] - buy_back * 1.01, rel=1e-12)
    # Flat at the end: the cash, nothing to pay.
    env.reset(seed=0)
    env.step(A.HOLD)
    _, _, _, _, info = env.step(A.HOLD)
    assert info["liquidation_equity"] == info["equity"] == 10000
    assert info["exit_fee"] == 0.0 and info["exit_notional"] == 0.0


def test_portfolio_observation_after_buy() -> None:
    env = flat_env()
    obs, *_ = env.step(A.BUY_50)
    units = 5000 / 100.1
    equity = 5000 + units * 105
    assert obs[-4] == pytest.approx(units * 105 / equity, rel=1e-6)  # position_frac
    assert obs[-3] == pytest.approx(105 / 100 - 1, rel=1e-6)  # unrealized_pnl vs entry 100
    assert obs[-2] == pytest.approx(5000 / equity, rel=1e-6)  # cash_frac
    assert obs[-1] == pytest.approx(1 / 1000)  # one bar held, H = 1000 (episode_length = 0)
    obs, *_ = env.step(A.HOLD)
    assert obs[-1] == pytest.approx(2 / 1000)


def test_short_sizing_and_cover() -> None:
    env = flat_env(allow_short=True)
    _, _, _, _, info = env.step(A.SELL_50)  # flat: short 50 % of equity (10000) at 100
    assert info["position"] == pytest.approx(-50.0)
    assert info["cash"] == pytest.approx(10000 + 5000 * 0.999)
    _, _, _, _, info = env.step(A.BUY_50)  # cover half of the 50 units at 110
    assert info["position"] == pytest.approx(-25.0)
    assert info["cash"] == pytest.approx(14995 - 25 * 110 * 1.001)
    # SELL_100 when short fills the spare capacity: short notional = equity after the fill.
    _, _, _, _, info = env.step(A.SELL_100)  # at open 120
    equity_at_open = info["cash"] + info["position"] * 120  # fee is the only difference
    assert -info["position"] * 120 == pytest.approx(equity_at_open + info["fees"], rel=1e-9)
    assert not env._is_valid(A.SELL_25)  # no capacity left


def test_invalid_actions_are_counted_noops() -> None:
    env = flat_env(allow_short=False)
    for a in (A.SELL_25, A.SELL_100, A.CLOSE, A.REVERSE):
        _, _, _, _, info = env.step(a)
        assert info["action_valid"] is False
        assert (info["cash"], info["position"], info["fees"]) == (10000.0, 0.0, 0.0)
    assert info["invalid_actions"] == 4 and info["trades"] == 0
    _, _, _, _, info = env.step(A.BUY_100)
    _, _, _, _, info = env.step(A.BUY_25)  # no cash left
    assert info["action_valid"] is False and info["invalid_actions"] == 5
    assert info["trades"] == 1


def test_action_masks_per_state() -> None:
    env = flat_env(allow_short=False)
    assert env.action_masks().tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]
    env.step(A.BUY_50)
    assert env.action_masks().tolist() == [1, 1, 1, 1, 1, 1, 1, 1, 0]  # long, cash left
    env.step(A.BUY_100)
    assert env.action_masks().tolist() == [1, 0, 0, 0, 1, 1, 1, 1, 0]  # long, no cash
    env = flat_env(allow_short=True)
    assert env.action_masks().tolist() == [1, 1, 1, 1, 1, 1, 1, 0, 0]
    env.step(A.SELL_25)
    assert env.action_masks().tolist() == [1, 1, 1, 1, 1, 1, 1, 1, 1]  # short with capacity
    env.step(A.SELL_100)
    assert env.action_masks().tolist() == [1, 1, 1, 1, 0, 0, 0, 1, 1]  # short at 1x equity


@pytest.mark.parametrize("allow_short", [False, True])
def test_random_agent_over_whole_block_is_finite(allow_short: bool) -> None:
    data = random_walk_data(n=3000, vol=0.03, seed=3)
    cfg = EnvConfig(
        action_set="orders", allow_short=allow_short, episode_length=0, ruin_threshold=0.0
    )
    env = TradingEnv(data, cfg, random_start=False)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps = 0
    done = False
    while not done:
        mask = env.action_masks()
        a = int(rng.integers(0, 9))
        obs, reward, terminated, truncated, info = env.step(a)
        assert info["action_valid"] == bool(mask[a])  # the mask predicts validity
        assert np.isfinite(obs).all() and env.observation_space.contains(obs)
        assert np.isfinite(reward) and -10.0 <= reward <= 10.0
        assert np.isfinite(info["equity"]) and np.isfinite(info["cash"])
        assert info["cash"] >= 0.0 or info["position"] < 0.0  # only a short's cover can overdraw
        steps += 1
        done = terminated or truncated
    assert truncated and info["bar"] == 2999 and steps == 2999
    assert info["invalid_actions"] > 0 and info["trades"] > 100


def test_same_seed_same_trajectory() -> None:
    data = random_walk_data()
    actions = np.random.default_rng(5).integers(0, 9, 200)

    def run(seed: int) -> list[tuple[float, ...]]:
        env = TradingEnv(data, EnvConfig(action_set="orders", allow_short=True, episode_length=100))
        obs, info = env.reset(seed=seed)
        out = [(info["bar"], *obs.tolist())]
        for a in actions:
            obs, r, term, trunc, info = env.step(a)
            out.append((info["bar"], r, info["equity"], *obs.tolist()))
            if term or trunc:
                obs, info = env.reset()
                out.append((info["bar"], *obs.tolist()))
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_random_start_and_episode_length() -> None:
    data = random_walk_data(n=300)
    env = TradingEnv(data, EnvConfig(action_set="orders", episode_length=100))
    starts = set()
    for seed in range(20):
        _, info = env.reset(seed=seed)
        starts.add(info["bar"])
        steps, done = 0, False
        while not done:
            _, _, term, trunc, info = env.step(A.HOLD)
            steps += 1
            done = term or trunc
        assert steps == 100 and trunc and not term
    assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= 300 - 1 - 100
    _, info = env.reset(options={"start": 42})
    assert info["bar"] == 42
    with pytest.raises(MarketDataError, match="start = 299"):
        env.reset(options={"start": 299})


def test_episodes_never_cross_a_segment_gap() -> None:
    """Walk-forward folds are separated by purge gaps: an episode stops at its segment's end."""
    base = random_walk_data(n=300)
    data = MarketData(
        base.open, base.close, base.pred_features, base.price_features, segment_starts=(0, 120, 200)
    )
    env = TradingEnv(data, EnvConfig(action_set="orders", episode_length=60))
    ends = {119, 199, 299}
    for seed in range(40):
        _, info = env.reset(seed=seed)
        start = info["bar"]
        seg_last = min(e for e in ends if e >= start)
        done = False
        while not done:
            _, _, term, trunc, info = env.step(A.HOLD)
            done = term or trunc
        assert info["bar"] <= seg_last
        assert info["bar"] - start == min(60, seg_last - start)
    full = TradingEnv(data, EnvConfig(action_set="orders", episode_length=0), random_start=False)
    full.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, term, trunc, info = full.step(A.HOLD)
        steps += 1
        done = term or trunc
    assert (steps, info["bar"]) == (119, 119)
    with pytest.raises(MarketDataError, match="segment_starts"):
        MarketData(
            base.open, base.close, base.pred_features, base.price_features, segment_starts=(0, 299)
        )
    with pytest.raises(MarketDataError, match="start = 119"):
        env.reset(options={"start": 119})


def test_observation_is_causal() -> None:
    """Changing every bar after t leaves the observations (and rewards) up to bar t unchanged."""
    t = 40
    base = random_walk_data(n=100, seed=11)
    changed = MarketData(
        base.open.copy(), base.close.copy(), base.pred_features.copy(), base.price_features.copy()
    )
    changed.open[t + 1 :] *= 3.0
    changed.close[t + 1 :] *= 0.2
    changed.pred_features[t + 1 :] = 0.9
    changed.price_features[t + 1 :] = -4.0
    actions = np.random.default_rng(2).integers(0, 9, t)

    def trajectory(data: MarketData) -> list[list[float]]:
        env = TradingEnv(
            data,
            EnvConfig(action_set="orders", allow_short=True, episode_length=0),
            random_start=False,
        )
        obs, _ = env.reset(seed=0)
        rows = [obs.tolist()]
        for a in actions:
            obs, r, *_ = env.step(a)
            rows.append([*obs.tolist(), r])
        return rows

    a, b = trajectory(base), trajectory(changed)
    assert len(a) == t + 1
    assert a == b


def test_ruin_terminates() -> None:
    data = price_data([100, 100, 60, 40, 30], [100, 90, 45, 35, 30])
    env = TradingEnv(data, EnvConfig(action_set="orders", episode_length=0), random_start=False)
    env.reset(seed=0)
    _, _, term, trunc, info = env.step(A.BUY_100)  # equity ~ 9000
    assert not term
    _, _, term, trunc, info = env.step(A.HOLD)  # equity ~ 4500 < 0.5 * 10000
    assert term and not trunc
    assert info["equity"] == pytest.approx(10000 / 100.1 * 45)
    assert info["episode_summary"]["ruined"] is True
    assert info["episode_summary"]["max_drawdown"] == pytest.approx(1 - 45 / 100.1 / 1.0, rel=1e-6)


def test_reward_matches_reward_function() -> None:
    env = flat_env()
    _, reward, _, _, info = env.step(A.BUY_50)
    expected, terms = RewardFunction(RewardConfig())(10000.0, info["equity"], info["fees"])
    assert reward == pytest.approx(expected)
    assert info["reward_terms"] == pytest.approx(terms)
    assert terms["cost"] == 0.0  # fees are charged once by default
    # With the extra cost penalty switched on, the env passes the step's fees to it.
    rc = RewardConfig(cost_weight=1.0)
    data = price_data([100, 100, 110, 120, 125, 130, 140], [100, 105, 115, 122, 128, 135, 140])
    env = TradingEnv(
        data,
        EnvConfig(action_set="orders", episode_length=0),
        RewardFunction(rc),
        random_start=False,
    )
    env.reset(seed=0)
    _, reward, _, _, info = env.step(A.BUY_50)
    assert info["fees"] > 0
    assert info["reward_terms"]["cost"] == pytest.approx(-100 * info["fees"] / 10000)
    assert reward == pytest.approx(RewardFunction(rc)(10000.0, info["equity"], info["fees"])[0])


def test_market_data_validation_names_array_and_index() -> None:
    n = 10
    ok = {"open": np.full(n, 100.0), "close": np.full(n, 100.0)}
    feats = {"pred_features": np.zeros((n, 2)), "price_features": np.zeros((n, 5))}
    bad_close = ok["close"].copy()
    bad_close[7] = np.nan
    with pytest.raises(MarketDataError, match=r"close has a non-finite value nan at row 7"):
        MarketData(ok["open"], bad_close, **feats)
    bad_pred = feats["pred_features"].copy()
    bad_pred[4, 1] = np.inf
    with pytest.raises(ValueError, match=r"pred_features .* at row 4, column 1"):
        MarketData(**ok, pred_features=bad_pred, price_features=feats["price_features"])
    with pytest.raises(MarketDataError, match=r"price_features has shape \(9, 5\)"):
        MarketData(**ok, pred_features=feats["pred_features"], price_features=np.zeros((9, 5)))
    bad_open = ok["open"].copy()
    bad_open[2] = 0.0
    with pytest.raises(MarketDataError, match="open has a non-positive price 0.0 at row 2"):
        MarketData(bad_open, ok["close"], **feats)


def test_env_config_validation_and_from_ppo_config() -> None:
    with pytest.raises(EnvConfigError, match=r"transaction_cost = -0\.1, expected in \[0, 1\)"):
        EnvConfig(transaction_cost=-0.1)
    with pytest.raises(EnvConfigError, match="episode_length"):
        EnvConfig(episode_length=-1)
    cfg = SimpleNamespace(
        initial_capital=500.0,
        transaction_cost=0.002,
        slippage=0.0005,
        allow_short=True,
        episode_length=64,
        ruin_threshold=0.3,
        action_set="target",
        profit_scale=1.0,  # other PPOConfig fields are ignored
    )
    ec = EnvConfig.from_ppo_config(cfg)
    assert ec == EnvConfig(500.0, 0.002, 0.0005, True, 64, 0.3, "target")


def test_env_factory_is_picklable_and_seeded() -> None:
    data = random_walk_data(n=400)
    fns = [
        EnvFactory(data, EnvConfig(action_set="orders", episode_length=50), seed=3, rank=r)
        for r in range(3)
    ]
    clones = [pickle.loads(pickle.dumps(f)) for f in fns]
    starts = [f()._start for f in fns]
    assert starts == [f()._start for f in clones]  # same seed + rank -> same first start
    assert len(set(starts)) > 1  # ranks draw different streams
    env = fns[0]()
    assert isinstance(env, TradingEnv) and env.config.episode_length == 50


def test_env_config_is_the_env_group_of_ppo_config() -> None:
    # Names, order, types and defaults are PPOConfig's "env" group, declared once
    import dataclasses
    import typing

    from pipeline.config.schema import PPOConfig

    group = [f for f in dataclasses.fields(PPOConfig) if f.metadata["group"] == "env"]
    ours = dataclasses.fields(EnvConfig)
    assert [f.name for f in ours] == [f.name for f in group]
    assert [f.default for f in ours] == [f.default for f in group]
    hints, schema_hints = typing.get_type_hints(EnvConfig), typing.get_type_hints(PPOConfig)
    assert all(hints[f.name] == schema_hints[f.name] for f in ours)
    assert EnvConfig.from_ppo_config(PPOConfig()) == EnvConfig()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial_capital": 0.0}, r"initial_capital = 0\.0, expected > 0"),
        ({"slippage": 1.0}, r"slippage = 1\.0, expected in \[0, 1\)"),
        ({"ruin_threshold": float("nan")}, r"ruin_threshold = nan, expected in \[0, 1\)"),
        ({"episode_length": 2.5}, r"episode_length = 2\.5, expected an integer"),
        ({"initial_capital": 1e16}, r"initial_capital = 1e\+16: .*expected <= 1e\+15"),
    ],
)
def test_env_config_refuses_what_the_config_refuses(kwargs: dict, message: str) -> None:
    with pytest.raises(EnvConfigError, match=r"^env config: " + message):
        EnvConfig(**kwargs)


# ---------------------------------------------------------------- action_set = target


def test_target_action_set_passes_check_env_and_has_its_own_space() -> None:
    for allow_short, names in (
        (False, ("FLAT", "LONG_50", "LONG_100")),
        (True, ("SHORT_100", "FLAT", "LONG_100")),
    ):
        cfg = EnvConfig(allow_short=allow_short, episode_length=50, action_set="target")
        env = TradingEnv(random_walk_data(), cfg)
        assert env.action_space.n == len(names) and env.action_names == names
        assert env.action_masks().tolist() == [True] * len(names)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env, warn=True)
        assert [str(w.message) for w in caught] == []


def test_target_actions_send_the_one_order_that_reaches_the_exposure() -> None:
    """Long only: FLAT / LONG_50 / LONG_100 reach exposure 0 / ~0.5 / ~1 with one fill each;
    asking for the level already held is a HOLD (no fill), and info["order"] names the order."""
    flat, half, full = 0, 1, 2
    env = flat_env(action_set="target")
    expected = [
        (half, A.BUY_50, (0.45, 0.55)),
        (half, A.HOLD, (0.45, 0.6)),  # still the half position (it drifted with the price)
        (full, A.BUY_100, (0.98, 1.0)),
        (half, A.SELL_50, (0.45, 0.55)),
        (flat, A.CLOSE, (0.0, 0.0)),
        (flat, A.HOLD, (0.0, 0.0)),
    ]
    trades = 0
    for action, order, (lo, hi) in expected:
        _, _, _, _, info = env.step(action)
        assert info["order"] == order and info["action_valid"]
        trades += order != A.HOLD
        assert info["trades"] == trades
        exposure = info["position"] * info["price"] / info["equity"]
        assert lo <= exposure <= hi, (action, exposure)


def test_target_actions_with_shorts_flip_with_one_reverse() -> None:
    short, flat, long = 0, 1, 2
    env = flat_env(allow_short=True, action_set="target")
    orders = [env.step(a)[4]["order"] for a in (long, short, short, flat, short, long)]
    assert orders == [A.BUY_100, A.REVERSE, A.HOLD, A.CLOSE, A.SELL_100, A.REVERSE]
