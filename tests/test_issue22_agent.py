"""Defects found running the pipeline as a new user, the agent side: step 6 refuses an overflowing
scaler and the PPO progress lines stop at 100 % and keep coming through the policy update and the
evaluation.

The marks are per test: the callback tests are unit tests, the others train or use a trained
root (tests/conftest.py).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from pipeline.common import Paths, PipelineError
from ppo_approach import callbacks
from ppo_approach.prediction_wrapper import validate_models

# ---------------------------------------------------------------- step 6 and the scaler


def _overflow_the_scaler(root: Path, model: str, dataset: str) -> None:
    """Mean 1e308 for every feature, the same in the model file and the scaler file."""
    mpath = root / "models" / f"{model}_{dataset}_classification.pth"
    payload = torch.load(mpath, weights_only=True)
    payload["scaler"]["mean"] = [1e308] * len(payload["scaler"]["mean"])
    torch.save(payload, mpath)
    spath = root / "scalers" / f"scaler_{dataset}.json"
    info = json.loads(spath.read_text(encoding="utf-8"))
    info["mean"] = [1e308] * len(info["mean"])
    spath.write_text(json.dumps(info), encoding="utf-8")


@pytest.mark.integration
def test_step6_refuses_a_scaler_that_overflows(
    signal_run: tuple[Path, Any, Any], tmp_path: Path, signal_config: Any
) -> None:
    """Consistent in the model file and the scaler file, so every earlier check passes (the
    agent uses dlstm alone: the other models were trained with the scaler file's old numbers)."""
    src, _, _ = signal_run
    cfg = signal_config("ppo.prediction_model=dlstm")
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    assert set(validate_models(cfg, "SIG", Paths.from_root(root))) == {"dlstm", "table"}
    _overflow_the_scaler(root, "dlstm", "SIG")
    with pytest.raises(PipelineError) as info:
        validate_models(cfg, "SIG", Paths.from_root(root))
    msg = str(info.value)
    assert "\n" not in msg
    model, scaler = root / "models" / "dlstm_SIG_classification.pth", root / "scalers"
    assert msg.startswith(f"{model} (scaler {scaler / 'scaler_SIG.json'}): row "), msg
    assert "of the dataset scales to a non-finite value in feature" in msg
    assert "(mean 1e+308, scale " in msg and msg.endswith("rerun train_models.py")


# ---------------------------------------------------------------- past 100 %


@pytest.mark.unit
def test_progress_stops_at_100_percent_and_keeps_the_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SB3 overshoots total (1000 -> 1064 here, 100,000 -> 106,496 in the demo): one 100 % line
    when it is reached, then one every 30 s at most; the ETA is never negative."""
    now = [0.0]
    cb = callbacks.ProgressLogCallback(1000, interval_s=30.0, clock=lambda: now[0])
    cb.model = SimpleNamespace(num_timesteps=0)  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger=callbacks.__name__):
        cb._on_training_start()
        for t in range(1, 1065):  # one timestep and 0.1 s a step
            now[0] = 0.1 * t
            cb.model.num_timesteps = t
            cb._on_step()
    msgs = [r.getMessage() for r in caplog.records if "PPO training" in r.getMessage()]
    assert msgs == [
        "PPO training: 300/1000 timesteps (30%), 30 s elapsed, ETA 70 s",
        "PPO training: 600/1000 timesteps (60%), 60 s elapsed, ETA 40 s",
        "PPO training: 900/1000 timesteps (90%), 90 s elapsed, ETA 10 s",
        "PPO training: 1000/1000 timesteps (100%), 100 s elapsed, ETA 0 s",
    ]


@pytest.mark.unit
def test_progress_past_the_total_is_100_percent_every_30_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    cb = callbacks.ProgressLogCallback(1000, interval_s=30.0, clock=lambda: now[0])
    cb.model = SimpleNamespace(num_timesteps=0)  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger=callbacks.__name__):
        cb._on_training_start()
        for t in range(1, 101):  # a long last rollout: 1 s a step, far past the total
            now[0] = float(t)
            cb.model.num_timesteps = 990 + 10 * t
            cb._on_step()
    msgs = [r.getMessage() for r in caplog.records if "PPO training" in r.getMessage()]
    assert msgs == [
        f"PPO training: 1000/1000 timesteps (100%), {s} s elapsed, ETA 0 s" for s in (1, 31, 61, 91)
    ]


# ---------------------------------------------------------------- update and evaluation


@pytest.mark.unit
def test_progress_lines_come_while_only_the_policy_runs(caplog: pytest.LogCaptureFixture) -> None:
    """No env step of the run (policy update, validation evaluation): the policy's action_net
    still runs, and a line comes once 30 s passed; after training the hook is gone."""
    now = [0.0]
    cb = callbacks.ProgressLogCallback(1000, interval_s=30.0, clock=lambda: now[0])
    net = torch.nn.Linear(2, 3)
    cb.model = SimpleNamespace(num_timesteps=0, policy=SimpleNamespace(action_net=net))  # type: ignore[assignment]
    x = torch.zeros(1, 2)
    with caplog.at_level(logging.INFO, logger=callbacks.__name__):
        cb._on_training_start()
        cb.model.num_timesteps = 500
        for s in range(1, 70):  # 69 s of forward passes, no _on_step
            now[0] = float(s)
            net(x)
        cb._on_training_end()
        now[0] = 200.0
        net(x)
    msgs = [r.getMessage() for r in caplog.records if "PPO training" in r.getMessage()]
    assert msgs == [
        "PPO training: 500/1000 timesteps (50%), 30 s elapsed, ETA 30 s",
        "PPO training: 500/1000 timesteps (50%), 60 s elapsed, ETA 60 s",
    ]


@pytest.mark.integration
def test_a_real_ppo_update_logs_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """With SB3 itself: a line is logged while ``train()`` updates the policy (no callback runs
    there), when the clock says 30 s passed (the fake clock jumps 31 s inside ``train()``)."""
    torch.manual_seed(0)
    model = PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=64, batch_size=32, n_epochs=1, seed=0)
    phase = {"train": False, "t": 0.0}

    def clock() -> float:
        phase["t"] += 31.0 if phase["train"] else 0.001
        return phase["t"]

    train = model.train

    def spied_train() -> None:
        phase["train"] = True
        try:
            train()
        finally:
            phase["train"] = False

    monkeypatch.setattr(model, "train", spied_train)
    in_train: list[bool] = []
    handler = logging.Handler()
    handler.emit = lambda record: in_train.append(bool(phase["train"]))  # type: ignore[method-assign]
    callbacks.log.addHandler(handler)
    old_level = callbacks.log.level
    callbacks.log.setLevel(logging.INFO)
    try:
        cb = callbacks.ProgressLogCallback(10_000, interval_s=30.0, clock=clock)
        model.learn(128, callback=cb)
    finally:
        callbacks.log.removeHandler(handler)
        callbacks.log.setLevel(old_level)
    assert True in in_train, in_train
    assert cb._hook is None  # removed at the end of training
    assert np.isfinite(phase["t"])


@pytest.mark.integration
def test_progress_lines_during_an_evaluation_at_the_start_of_training() -> None:
    """An earlier callback that evaluates the starting policy in its own training-start hook
    (ValidationEvalCallback with evaluate_at_start) is covered too: the policy is watched from
    SB3's init of the callbacks, which comes before any training-start hook."""
    torch.manual_seed(0)
    env = gym.make("CartPole-v1")
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0)
    phase = {"eval": False, "t": 0.0}

    def clock() -> float:
        phase["t"] += 31.0 if phase["eval"] else 0.001
        return phase["t"]

    class EvaluateAtStart(BaseCallback):
        def _on_training_start(self) -> None:
            phase["eval"] = True
            obs, _ = env.reset(seed=0)
            for _ in range(3):
                self.model.predict(obs, deterministic=True)
            phase["eval"] = False

        def _on_step(self) -> bool:
            return True

    in_eval: list[bool] = []
    handler = logging.Handler()
    handler.emit = lambda record: in_eval.append(bool(phase["eval"]))  # type: ignore[method-assign]
    callbacks.log.addHandler(handler)
    old_level = callbacks.log.level
    callbacks.log.setLevel(logging.INFO)
    try:
        progress = callbacks.ProgressLogCallback(10_000, interval_s=30.0, clock=clock)
        model.learn(64, callback=[EvaluateAtStart(), progress])
    finally:
        callbacks.log.removeHandler(handler)
        callbacks.log.setLevel(old_level)
    assert in_eval[:1] == [True], in_eval
