"""sb3-contrib MaskablePPO as ``algorithm = maskable_ppo``.

Invalid actions are no-ops in the env, and an unmasked PPO policy learned that an invalid action is
a free HOLD (it picked invalid actions on every test bar). MaskablePPO reads the env's
``action_masks()`` while training, and :func:`ppo_approach.evaluation.policy_for` passes the mask in
``info["action_mask"]`` to its deterministic predictions (validation and backtest). The model files
load without unpickling, as PPO's do (tests/test_ppo_checkpoints.py).

Trains tiny agents on the random walk + real DLSTM prediction table of conftest's
``ppo_source_root`` (smoke preset, one torch thread).
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
from stable_baselines3 import PPO
from test_ppo_agent import (  # noqa: F401  (fixtures used by name)
    DATASET,
    _one_torch_thread,
    _smoke_cfg,
)
from test_ppo_checkpoints import _booby_trap

from pipeline.classifiers.prediction_table import load_prediction_table, load_table_meta
from pipeline.common import Paths, sha256_file
from pipeline.config.schema import PPOConfig
from ppo_approach import callbacks, evaluation, model_files
from ppo_approach import ppo_trading_agent as agent
from ppo_approach.agent_blocks import AgentBlock, build_blocks
from ppo_approach.evaluation import run_episode
from ppo_approach.reward_functions import RewardConfig, RewardFunction
from ppo_approach.trading_env import Actions, EnvConfig, TradingEnv

pytestmark = pytest.mark.integration

MASKABLE = ("algorithm=maskable_ppo", "action_set=orders", "n_epochs=1")
"""MaskablePPO on the order actions (masks are what it is for: target actions are never invalid)."""


@pytest.fixture(scope="module")
def blocks(ppo_source_root: Path) -> dict[str, AgentBlock]:
    """The agent's train / val / test blocks of the source dataset (smoke preset)."""
    cfg = _smoke_cfg()
    paths = Paths.from_root(ppo_source_root)
    return build_blocks(
        load_prediction_table(paths, "dlstm", DATASET),
        load_table_meta(paths, "dlstm", DATASET),
        cfg.ppo,
    )


def _cfg(*overrides: str) -> PPOConfig:
    return _smoke_cfg(*MASKABLE, *overrides).ppo


def _env(block: AgentBlock) -> TradingEnv:
    """An evaluation env over ``block`` (starts at bar 0, runs to the block's end)."""
    return TradingEnv(
        block.data,
        EnvConfig(action_set="orders"),
        RewardFunction(RewardConfig()),
        random_start=False,
    )


def _train(block: AgentBlock, timesteps: int, *overrides: str) -> MaskablePPO:
    cfg = _cfg(*overrides)
    venv, _ = agent.make_vec_env(
        block.data, EnvConfig(action_set="orders"), RewardConfig(), 2, cfg.seed, "dummy"
    )
    model = agent.build_model(cfg, venv, "cpu", None)
    stopper = callbacks.StopOnRequestCallback(callbacks.StopRequest())
    agent.learn(model, timesteps, [], stopper, "t", progress_bar=False)
    venv.close()
    assert isinstance(model, MaskablePPO)
    return model


@pytest.fixture(scope="module")
def trained(blocks: dict[str, AgentBlock]) -> MaskablePPO:
    """A MaskablePPO agent after 1,024 timesteps (rollouts of 256 steps x 2 envs)."""
    return _train(blocks["train"], 1024)


def _prefer_invalid(model: MaskablePPO) -> MaskablePPO:
    """Make the unmasked policy want SELL_100 above all (invalid while flat without shorts), then
    BUY_100: unmasked it stays flat with an invalid action on every bar; masked it must trade."""
    bias = model.policy.action_net.bias.data
    bias[:] = 0.0
    bias[Actions.SELL_100] = 100.0
    bias[Actions.BUY_100] = 50.0
    return model


# ---------------------------------------------------------------- env and vec env expose masks


def test_every_info_carries_the_mask_of_the_new_state(blocks: dict[str, AgentBlock]) -> None:
    env = _env(blocks["val"])
    _, info = env.reset(seed=0)
    masks = [info["action_mask"]]
    np.testing.assert_array_equal(info["action_mask"], env.action_masks())
    for action in (Actions.BUY_100, Actions.HOLD, Actions.SELL_100, Actions.CLOSE):
        _, _, _, _, info = env.step(int(action))
        masks.append(info["action_mask"])
        np.testing.assert_array_equal(info["action_mask"], env.action_masks())
    for mask in masks:
        assert mask.dtype == np.bool_ and mask.shape == (len(Actions),)
    assert not masks[0][Actions.SELL_100] and masks[1][Actions.SELL_100]  # flat, then long


@pytest.mark.parametrize("kind", ["dummy", "subproc", "batched"])
def test_vec_envs_forward_action_masks(blocks: dict[str, AgentBlock], kind: str) -> None:
    """VecMonitor over DummyVecEnv / SubprocVecEnv, and the batched env itself, answer
    ``env_method("action_masks")`` (what sb3-contrib asks)."""
    venv, used = agent.make_vec_env(
        blocks["val"].data, EnvConfig(action_set="orders"), RewardConfig(), 2, 0, kind
    )
    try:
        assert used == kind and is_masking_supported(venv)
        venv.reset()
        masks = get_action_masks(venv)
        assert masks.shape == (2, len(Actions)) and masks.dtype == np.bool_
        assert masks[:, Actions.HOLD].all() and not masks[:, Actions.CLOSE].any()  # flat
    finally:
        venv.close()


# ---------------------------------------------------------------- build, learn, predict masked


def test_maskable_ppo_builds_with_the_config_and_learns(trained: MaskablePPO) -> None:
    assert isinstance(trained.policy, MaskableActorCriticPolicy)
    assert trained.num_timesteps == 1024
    assert trained.n_steps == 256 and trained.n_epochs == 1
    assert trained.policy.net_arch == {"pi": [64, 64], "vf": [64, 64]}


def test_plain_ppo_stays_the_default() -> None:
    assert _smoke_cfg().ppo.algorithm == "ppo"


def test_masked_policy_never_picks_an_invalid_action_on_the_test_block(
    trained: MaskablePPO, blocks: dict[str, AgentBlock]
) -> None:
    rec = run_episode(_env(blocks["test"]), evaluation.policy_for(trained))
    assert rec.n_steps == blocks["test"].data.n_bars - 1
    assert rec.invalid_actions == 0


def test_the_mask_overrides_a_policy_that_prefers_invalid_actions(
    blocks: dict[str, AgentBlock],
) -> None:
    """The control: without the mask the same weights pick a no-op on every bar."""
    model = _prefer_invalid(_train(blocks["train"], 512))
    env = _env(blocks["test"])
    unmasked = run_episode(env, lambda obs, info: int(model.predict(obs, deterministic=True)[0]))
    assert unmasked.invalid_actions == unmasked.n_steps and unmasked.trades == 0
    masked = run_episode(env, evaluation.policy_for(model))
    assert masked.invalid_actions == 0 and masked.trades > 0
    # The validation evaluation predicts through the same mask.
    res = evaluation.evaluate_on_block(model, _env(blocks["val"]), 1, 0, 8760.0)
    assert res["mean_return"] != 0.0


# ---------------------------------------------------------------- files: save, load, resume


def _spaces(block: AgentBlock) -> tuple[Any, Any]:
    env = _env(block)
    return env.observation_space, env.action_space


def _load(path: Path, block: AgentBlock, algorithm: str = "maskable_ppo", env: Any = None) -> Any:
    """``load_model`` with the file's current hash (as a run that recorded it)."""
    return model_files.load_model(
        path,
        env,
        "cpu",
        spaces=_spaces(block),
        expected_sha256=sha256_file(path),
        algorithm=algorithm,
    )


def test_checkpoint_loads_without_unpickling_and_predicts_the_same(
    trained: MaskablePPO, blocks: dict[str, AgentBlock], tmp_path: Path
) -> None:
    path = callbacks.save_checkpoint(trained, tmp_path, 1024, keep=3)
    with zipfile.ZipFile(path) as z:
        meta = json.loads(z.read(model_files.META_ENTRY))
    assert meta["algorithm"] == "maskable_ppo"

    loaded = _load(path, blocks["val"])
    assert isinstance(loaded, MaskablePPO) and loaded.num_timesteps == 1024
    env = _env(blocks["test"])
    a = run_episode(env, evaluation.policy_for(trained)).actions
    b = run_episode(env, evaluation.policy_for(loaded)).actions
    np.testing.assert_array_equal(a, b)


def test_an_old_sb3_zip_is_refused_and_its_pickles_never_fire(
    trained: MaskablePPO, blocks: dict[str, AgentBlock], tmp_path: Path
) -> None:
    trapped, marker = tmp_path / "trapped.zip", tmp_path / "fired"
    trained.save(trapped)  # sb3-contrib's own format, as earlier versions wrote it
    _booby_trap(trapped, marker, "_last_obs")
    with contextlib.suppress(Exception):  # positive control: sb3-contrib's own loader runs it
        MaskablePPO.load(trapped, device="cpu")
    assert marker.exists()
    marker.unlink()
    with pytest.raises(model_files.OldModelFormatError, match="older version"):
        _load(trapped, blocks["val"])
    assert not marker.exists()


def test_a_file_of_the_other_algorithm_is_one_clear_error(
    trained: MaskablePPO, blocks: dict[str, AgentBlock], tmp_path: Path
) -> None:
    masked = model_files.save_model_atomic(trained, tmp_path / "masked.zip")
    cfg = _smoke_cfg("n_epochs=1").ppo
    venv, _ = agent.make_vec_env(
        blocks["val"].data, EnvConfig(action_set="orders"), RewardConfig(), 2, 0, "dummy"
    )
    plain = agent.build_model(cfg, venv, "cpu", None)
    venv.close()
    assert isinstance(plain, PPO)
    plain_path = model_files.save_model_atomic(plain, tmp_path / "plain.zip")
    cases = ((masked, "ppo", "maskable_ppo"), (plain_path, "maskable_ppo", "ppo"))
    for path, algorithm, saved in cases:  # (file, config's algorithm, the file's)
        with pytest.raises(model_files.AgentError) as err:
            _load(path, blocks["val"], algorithm)
        msg = str(err.value)
        assert not isinstance(err.value, model_files.CorruptModelError)  # not skipped on resume
        assert "\n" not in msg and msg.startswith(f"{path}: a {saved} model")
        assert f"algorithm = {algorithm}" in msg
    assert isinstance(_load(plain_path, blocks["val"], "ppo"), PPO)


def test_resume_from_a_checkpoint_continues_training(
    blocks: dict[str, AgentBlock], tmp_path: Path
) -> None:
    cfg = _cfg()
    data = blocks["train"].data
    venv, _ = agent.make_vec_env(
        data, EnvConfig(action_set="orders"), RewardConfig(), 2, cfg.seed, "dummy"
    )
    model = agent.build_model(cfg, venv, "cpu", None)
    checkpoints = callbacks.RolloutCheckpointCallback(tmp_path, freq=512)
    stopper = callbacks.StopOnRequestCallback(callbacks.StopRequest())
    agent.learn(model, 1024, [checkpoints], stopper, "t", progress_bar=False)
    venv.close()
    assert [t for t, _ in model_files.list_checkpoints(tmp_path)] == [512]

    venv, _ = agent.make_vec_env(
        data, EnvConfig(action_set="orders"), RewardConfig(), 2, cfg.seed, "dummy"
    )
    path = tmp_path / "checkpoint_512.zip"
    resumed = _load(path, blocks["train"], env=venv)
    assert isinstance(resumed, MaskablePPO) and resumed.num_timesteps == 512
    stopper = callbacks.StopOnRequestCallback(callbacks.StopRequest())
    result = agent.learn(resumed, 1536, [], stopper, "t", progress_bar=False)
    venv.close()
    assert not result.interrupted and result.timesteps == resumed.num_timesteps == 1536
