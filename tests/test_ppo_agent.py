"""PPO agent: training artifacts, backtest report, interrupt + resume, determinism, vec envs.

One module fixture builds a random-walk dataset (``generate_ohlcv(signal=0)``) and runs the real
step 5 (``train_models.main`` with the smoke preset, DLSTM only) once, so the agent trains on a
genuine walk-forward prediction table. Every training test copies that into its own root.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from pipeline.classifiers.prediction_table import (
    classifier_settings,
    load_prediction_table,
    load_table_meta,
)
from pipeline.common import PROJECT_ROOT, Paths, sha256_file
from pipeline.config.files import Config, load_config, load_resolved
from pipeline.data import annualisation
from pipeline.run import report_names
from pipeline.store.artifacts import Artifacts
from ppo_approach import agent_blocks, callbacks, evaluation, model_files, run_folder
from ppo_approach import backtest as bt
from ppo_approach import ppo_trading_agent as agent
from ppo_approach import train_ppo_agent as step
from ppo_approach.reward_functions import RewardConfig
from ppo_approach.trading_env import EnvConfig, TradingEnv

DATASET = "RW-TEST_1H"
SMOKE = ["--preset", "smoke"]


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Any:
    """Tiny networks gain nothing from threads, and on a busy 2-core machine OpenMP threads
    spin-wait against each other (learn() ran several times slower with 2). ``train_models``
    sets its own thread count, so the module fixtures set 1 again after calling it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fresh_root(src: Path, dst: Path) -> Path:
    """A root with the dataset and the prediction tables only (no agent artifacts)."""
    shutil.copytree(src / "datasets", dst / "datasets")
    (dst / "results").mkdir(parents=True)
    for p in (src / "results").glob("predictions_*"):  # each table (.csv) and its .json
        shutil.copy(p, dst / "results" / p.name)
    return dst


def _smoke_cfg(*overrides: str) -> Config:
    return load_config(None, None, "smoke", list(overrides))


@pytest.fixture(scope="module")
def trained(ppo_source_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One smoke run of step 7 through ``main`` (the smoke preset: DummyVecEnv, 2 envs, net
    64x64, 2,048 timesteps) on the DLSTM prediction table of ``ppo_source_root``."""
    root = _fresh_root(ppo_source_root, tmp_path_factory.mktemp("ppo_run"))
    torch.set_num_threads(1)
    code = step.main(["--dataset", DATASET, "--root", str(root), *SMOKE])
    report = json.loads((root / "results" / f"backtest_dlstm_{DATASET}.json").read_text())
    return {"code": code, "root": root, "report": report}


# ---------------------------------------------------------------- the full step


@pytest.mark.integration
def test_training_writes_model_config_meta_and_checkpoints(trained: dict[str, Any]) -> None:
    assert trained["code"] == 0
    paths = Paths.from_root(trained["root"])
    final = paths.ppo_models / f"ppo_dlstm_{DATASET}.zip"
    model = model_files.load_model(final, None, "cpu")
    assert model.num_timesteps == 2048
    # Separate policy and value networks of the configured sizes.
    arch = model.policy.net_arch
    assert arch == {"pi": [64, 64], "vf": [64, 64]}
    assert model.n_steps == 256 and model.batch_size == 256 and model.n_epochs == 2

    resolved = load_resolved(paths.ppo_models / f"ppo_dlstm_{DATASET}_config.txt")
    # prediction_model = auto is saved as the model it resolved to
    assert resolved.to_dict() == _smoke_cfg("prediction_model=dlstm").to_dict()
    meta = json.loads((paths.ppo_models / f"ppo_dlstm_{DATASET}_meta.json").read_text())
    assert meta["dataset_sha256"] == sha256_file(paths.datasets / f"{DATASET}.csv")
    assert meta["timesteps"] == 2048 and meta["vec_env"] == "batched"
    assert "command" in meta and meta["resumed_from"] is None

    ck = paths.ppo_checkpoints / f"dlstm_{DATASET}"
    # checkpoint_freq = 1024, rollout = 256 steps x 2 envs: the boundary at 1024 is saved; the
    # one at 2048 is the end of training (the final model), not a checkpoint.
    assert [t for t, _ in model_files.list_checkpoints(ck)] == [1024]
    assert (ck / "best_model.zip").is_file()
    best = json.loads((ck / "best_model.json").read_text())
    assert best["timesteps"] in (0, 1024, 2048)  # 0: the warm start stayed best
    assert not list(ck.glob(".*.tmp")) and not list(paths.ppo_models.glob(".*.tmp"))


@pytest.mark.integration
def test_eval_on_validation_logged_to_tensorboard(trained: dict[str, Any]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = Paths.from_root(trained["root"]).ppo_logs
    assert [p.name for p in logs.iterdir()] == [f"ppo_dlstm_{DATASET}_1"]
    ea = EventAccumulator(str(logs / f"ppo_dlstm_{DATASET}_1"))
    ea.Reload()
    # Step 0: the warm-started policy is evaluated before the first rollout.
    for tag in ("eval/mean_reward", "eval/mean_ep_length", "eval/mean_return", "eval/mean_sharpe"):
        assert [e.step for e in ea.Scalars(tag)] == [0, 1024, 2048], tag
    # Evaluation episodes run episode_length = 200 steps on the validation block.
    assert {e.value for e in ea.Scalars("eval/mean_ep_length")} == {200.0}


@pytest.mark.integration
def test_backtest_report_contents(trained: dict[str, Any], ppo_source_root: Path) -> None:
    rep = trained["report"]
    for key in (
        "model",
        "dataset",
        "dataset_sha256",
        "prediction_source",
        "in_sample_predictions",
        "timesteps",
        "chosen_model",
        "blocks",
        "strategies",
    ):
        assert key in rep, key
    assert rep["model"] == "dlstm" and rep["dataset"] == DATASET
    assert rep["chosen_model"] == "best" and rep["timesteps"] == 2048
    assert rep["prediction_source"] == "walk_forward" and rep["in_sample_predictions"] is False
    assert set(rep["strategies"]) == set(report_names.STRATEGY_NAMES)
    for name, m in rep["strategies"].items():
        assert set(m) == set(report_names.METRIC_NAMES), name
    assert rep["periods_per_year"] == 8760
    # The block ranges are the table's.
    table = pd.read_csv(ppo_source_root / "results" / f"predictions_dlstm_{DATASET}.csv")
    for block in ("train", "val", "test"):
        rows = table[table["agent_block"] == block]
        got = rep["blocks"][block]
        assert got["bars"] == len(rows)
        assert pd.Timestamp(got["start"]) == pd.Timestamp(rows["timestamp"].iloc[0])
        assert pd.Timestamp(got["end"]) == pd.Timestamp(rows["timestamp"].iloc[-1])
    # Flat is exactly flat; buy and hold holds all the time; fees scale with the cost multiplier.
    s = rep["strategies"]
    assert s["flat"]["total_return"] == 0 and s["flat"]["n_trades"] == 0
    # Buy at the start and the liquidation at the end (the exit fill counts as a trade).
    assert s["buy_and_hold"]["time_in_market"] == 1.0 and s["buy_and_hold"]["n_trades"] == 2
    assert s["agent_cost_0x"]["fees_paid"] == 0
    png = trained["root"] / "results" / f"backtest_dlstm_{DATASET}.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def _block_sigma(root: Path) -> tuple[float, int]:
    """Std of the test block's per-bar log returns times sqrt(bars), and the bar count."""
    table = pd.read_csv(root / "results" / f"predictions_dlstm_{DATASET}.csv")
    bars = table.loc[table["agent_block"] == "test", "bar"].to_numpy()
    close = pd.read_csv(root / "datasets" / f"{DATASET}.csv")["close"].to_numpy()[bars]
    r = np.diff(np.log(close))
    return float(r.std(ddof=1) * math.sqrt(r.size)), int(r.size)


@pytest.mark.integration
def test_random_walk_agent_does_not_beat_buy_and_hold(trained: dict[str, Any]) -> None:
    """Leakage alarm: on a pure random walk nothing is predictable, so the agent must not beat
    buy-and-hold by more than noise.

    Tolerance: a strategy without information differs from buy-and-hold by holding a different
    exposure; the log-return of the block has standard deviation ``sigma_bar * sqrt(bars)``
    (per-bar log-return volatility of the test block times the square root of its length, about
    0.17 here), and the difference of the two strategies is at most that much noise times the
    exposure difference (<= 1). We allow 3 of those: a chance false alarm is below 0.2 % for a
    Gaussian, while a leak of future prices into the observation makes the excess many times
    larger (see the positive control below, which exceeds it by far).
    """
    sigma, _ = _block_sigma(trained["root"])
    s = trained["report"]["strategies"]
    excess = math.log1p(s["agent"]["total_return"]) - math.log1p(s["buy_and_hold"]["total_return"])
    assert excess < 3 * sigma, (excess, sigma)


@pytest.mark.integration
def test_leaky_predictions_would_trip_the_alarm(ppo_source_root: Path) -> None:
    """Positive control for the alarm above: a classifier that knows whether the NEXT bar rises
    (close > open of bar t+1, i.e. the fill-to-mark move) makes the classifier rule beat
    buy-and-hold by more than twice the 3-sigma tolerance (about 1.3 vs 0.53 in log
    return), through the same env and fees."""
    cfg = _smoke_cfg("action_set=orders")  # the baselines speak orders
    paths = Paths.from_root(ppo_source_root)
    blocks = step.build_blocks(
        load_prediction_table(paths, "dlstm", DATASET), _meta(paths), cfg.ppo
    )
    test = blocks["test"]
    nxt_up = np.append(test.data.close[1:] > test.data.open[1:], False)  # (n,)
    leaky = np.where(nxt_up[:, None], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1])
    env_cfg = bt.backtest_env_config(EnvConfig.from_ppo_config(cfg.ppo))

    def make(config: EnvConfig) -> TradingEnv:
        return bt.block_env(test.data, config, RewardConfig())

    runs = {
        "rule": [evaluation.run_episode(make(env_cfg), evaluation.ClassifierRulePolicy(leaky))],
        "bh": [evaluation.run_episode(make(env_cfg), evaluation.buy_and_hold_policy)],
    }
    m = bt.summarise_runs(runs, 8760.0)
    excess = math.log1p(m["rule"]["total_return"]) - math.log1p(m["bh"]["total_return"])
    sigma, _ = _block_sigma(ppo_source_root)
    assert excess > 2 * (3 * sigma), (excess, sigma)


# ---------------------------------------------------------------- interrupt and resume


@pytest.mark.integration
def test_sigint_writes_checkpoint_then_resume_continues_to_total(
    ppo_source_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = _fresh_root(ppo_source_root, tmp_path / "root")
    argv = [
        "--dataset",
        DATASET,
        "--root",
        str(root),
        *SMOKE,
        "--set",
        "total_timesteps=4096",
        "--set",
        "eval_freq=2048",
    ]
    ck = root / "ppo_approach" / "checkpoints" / f"dlstm_{DATASET}"
    handler_before = signal.getsignal(signal.SIGINT)

    def interrupt_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(ck.glob("checkpoint_*.zip")):
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)

    killer = threading.Thread(target=interrupt_after_first_checkpoint, daemon=True)
    killer.start()
    code = step.main(argv)
    killer.join()
    err = capsys.readouterr().err
    assert code == 130
    assert "interrupted by SIGINT" in err
    resume_line = [ln for ln in err.splitlines() if ln.startswith("resume with:")]
    assert resume_line and resume_line[0].endswith("--resume")
    assert signal.getsignal(signal.SIGINT) is handler_before  # handlers restored
    stopped_at, ck_path = model_files.latest_checkpoint(ck)
    # Saved at a rollout boundary (256 steps x 2 envs) before the end: the weights hold exactly
    # `stopped_at` timesteps of experience.
    assert 1024 <= stopped_at < 4096 and stopped_at % 512 == 0
    assert not (root / "ppo_approach" / "models" / f"ppo_dlstm_{DATASET}.zip").exists()
    saved = model_files.load_model(ck_path, None, "cpu")
    assert saved.num_timesteps == stopped_at

    seen: dict[str, Any] = {}
    real_learn = agent.learn

    def spying_learn(model: PPO, *args: Any, **kwargs: Any) -> agent.LearnResult:
        seen["start"] = model.num_timesteps
        seen["params"] = {k: v.clone() for k, v in model.policy.state_dict().items()}
        return real_learn(model, *args, **kwargs)

    monkeypatch.setattr(agent, "learn", spying_learn)
    assert step.main([*argv, "--resume"]) == 0
    assert seen["start"] == stopped_at
    want = saved.policy.state_dict()
    assert seen["params"].keys() == want.keys()
    for k, v in want.items():
        torch.testing.assert_close(seen["params"][k], v, rtol=0, atol=0, msg=k)
    meta = json.loads(
        (root / "ppo_approach" / "models" / f"ppo_dlstm_{DATASET}_meta.json").read_text()
    )
    assert meta["timesteps"] == 4096 and meta["resumed_from"] == str(ck_path)
    final = model_files.load_model(
        root / "ppo_approach" / "models" / f"ppo_dlstm_{DATASET}.zip", None, "cpu"
    )
    assert final.num_timesteps == 4096
    # The same TensorBoard run continued.
    assert [p.name for p in (root / "ppo_approach" / "logs").iterdir()] == [
        f"ppo_dlstm_{DATASET}_1"
    ]


@pytest.mark.unit
def test_sigterm_sets_the_stop_request_like_sigint() -> None:
    """SIGTERM (a pod shutdown) takes the same path as the SIGINT test above: the handler sets the
    request, learn() stops at the rollout boundary and the checkpoint is written."""
    before = signal.getsignal(signal.SIGTERM)
    request = callbacks.StopRequest()
    with callbacks.stop_signals(request):
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not request.is_set() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert request.is_set() and request.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.integration
def test_resume_of_a_finished_run_only_backtests(
    trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(trained["root"], root)
    calls: list[int] = []
    real_learn = PPO.learn

    def counting_learn(self: PPO, *args: Any, **kwargs: Any) -> PPO:
        calls.append(self.num_timesteps)
        return real_learn(self, *args, **kwargs)

    monkeypatch.setattr(PPO, "learn", counting_learn)
    assert step.main(["--dataset", DATASET, "--root", str(root), *SMOKE, "--resume"]) == 0
    assert calls == []  # nothing left to train
    meta = json.loads(
        (root / "ppo_approach" / "models" / f"ppo_dlstm_{DATASET}_meta.json").read_text()
    )
    assert meta["timesteps"] == 2048 and meta["resumed_from"].endswith(f"ppo_dlstm_{DATASET}.zip")
    report = json.loads((root / "results" / f"backtest_dlstm_{DATASET}.json").read_text())
    assert report["strategies"] == trained["report"]["strategies"]  # deterministic backtest


@pytest.mark.integration
def test_resume_with_changed_config_fails_with_one_line(
    trained: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A checkpoint keeps its own hyperparameters (agent.json): resuming under changed settings
    would silently train with the old ones, so it is refused, naming what changed."""
    root = tmp_path / "copy"
    shutil.copytree(trained["root"], root)
    ck = root / "ppo_approach" / "checkpoints" / f"dlstm_{DATASET}"
    before = sorted(p.name for p in ck.iterdir())
    calls: list[int] = []
    monkeypatch.setattr(PPO, "learn", lambda self, *a, **k: calls.append(1))
    argv = ["--dataset", DATASET, "--root", str(root), *SMOKE, "--resume"]
    # The agent's classifier settings are those its prediction table was made with (step 7 reads
    # them from the table's .json, not from the current config): as if step 5 had rebuilt the table
    # with smoothing_k = 3.
    table_meta = Artifacts(Paths.from_root(root), DATASET).prediction_meta("dlstm")
    meta_json = json.loads(table_meta.read_text())
    meta_json["classifier_settings"]["smoothing_k"] = 3
    table_meta.write_text(json.dumps(meta_json))
    capsys.readouterr()
    code = step.main([*argv, "--set", "ppo.learning_rate=0.001", "--set", "smoothing_k=3"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and calls == []
    assert "Traceback" not in "\n".join(lines)
    err = [ln for ln in lines if ln.startswith("error:")]
    assert len(err) == 1 and lines[-1] == err[0], lines
    assert err[0].startswith(f"error: --resume: ppo_dlstm_{DATASET}.zip (2048 timesteps)"), err
    assert "ppo.learning_rate = 0.0003 (now 0.001)" in err[0]
    assert "training.smoothing_k = 5 (now 3)" in err[0]
    assert "run without --resume to start over, or --set the old values" in err[0]
    assert sorted(p.name for p in ck.iterdir()) == before  # nothing deleted or written


@pytest.mark.integration
def test_resume_with_more_timesteps_continues_from_the_final_model(
    trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """total_timesteps (like checkpoint_freq, device, ...) may change on resume; the final model
    (2048 timesteps) is newer than the last checkpoint (1024), so training goes on from it."""
    root = tmp_path / "copy"
    shutil.copytree(trained["root"], root)
    starts: list[int] = []
    real_learn = agent.learn

    def spying_learn(model: PPO, *args: Any, **kwargs: Any) -> agent.LearnResult:
        starts.append(model.num_timesteps)
        return real_learn(model, *args, **kwargs)

    monkeypatch.setattr(agent, "learn", spying_learn)
    argv = ["--dataset", DATASET, "--root", str(root), *SMOKE, "--resume"]
    assert step.main([*argv, "--set", "total_timesteps=2560", "--set", "checkpoint_freq=4096"]) == 0
    assert starts == [2048]
    meta = json.loads(
        (root / "ppo_approach" / "models" / f"ppo_dlstm_{DATASET}_meta.json").read_text()
    )
    assert meta["timesteps"] == 2560 and meta["resumed_from"].endswith(f"ppo_dlstm_{DATASET}.zip")


@pytest.mark.unit
def test_resume_point_prefers_a_matching_candidate(tmp_path: Path) -> None:
    """A final model of an older run with other settings does not block resuming this run's
    checkpoint; a checkpoint folder of an older version (no run_config.json) is resumed."""
    paths = Paths.from_root(tmp_path)
    ck = Artifacts(paths, "X").ppo_checkpoint_dir("dlstm")
    ck.mkdir(parents=True)
    final = Artifacts(paths, "X").ppo_model("dlstm")
    final.parent.mkdir(parents=True)
    now = {"dataset_sha256": "a", "ppo.seed": 1}
    (ck / "checkpoint_512.zip").write_bytes(b"")
    assert run_folder._resume_point(paths, ck, "dlstm", "X", now) == (
        512,
        ck / "checkpoint_512.zip",
    )
    (ck / run_folder.RUN_CONFIG_NAME).write_text(json.dumps(now))
    final.write_bytes(b"")
    meta = {"timesteps": 4096, "run_config": {**now, "ppo.seed": 2}}
    final.with_name(f"{final.stem}_meta.json").write_text(json.dumps(meta))
    assert run_folder._resume_point(paths, ck, "dlstm", "X", now) == (
        512,
        ck / "checkpoint_512.zip",
    )
    with pytest.raises(run_folder.ResumeMismatchError, match=r"\(4096 timesteps\).*ppo.seed = 2"):
        run_folder._resume_point(paths, ck, "dlstm", "X", {**now, "ppo.seed": 3})


@pytest.mark.unit
def test_run_fingerprint_keys() -> None:
    # The fingerprint is taken after prediction_model = auto resolved to a model; its classifier
    # keys are the settings step 5 recorded beside the table.
    def fingerprint(cfg: Config, sha: str, models: tuple[str, ...] = ("dlstm",)) -> dict[str, Any]:
        return run_folder.run_fingerprint(cfg, sha, classifier_settings(cfg, models))

    fp = fingerprint(_smoke_cfg("prediction_model=dlstm"), "abc")
    assert fp["dataset_sha256"] == "abc" and fp["ppo.learning_rate"] == 3e-4
    assert "training.dlstm_units" in fp and "training.lookback" in fp
    # Other classifiers' sizes, run-only keys and backtest-only keys may change on resume.
    assert "training.gru_units" not in fp and "training.num_threads" not in fp
    assert not {f"ppo.{k}" for k in run_folder.RESUME_FREE_KEYS} & set(fp)
    same = fingerprint(
        _smoke_cfg(
            "prediction_model=dlstm",
            "total_timesteps=99",
            "ppo.device=cpu",
            "gru_units=3",
            "random_policy_seeds=1",
        ),
        "abc",
    )
    assert run_folder.fingerprint_changes(fp, same) == []
    other = fingerprint(_smoke_cfg("prediction_model=dlstm", "n_envs=4", "ppo.seed=1"), "def")
    assert run_folder.fingerprint_changes(fp, other) == [
        "dataset_sha256 = abc (now def)",
        "ppo.n_envs = 2 (now 4)",
        "ppo.seed = 42 (now 1)",
    ]
    ens = fingerprint(
        _smoke_cfg("prediction_model=ensemble", "ensemble_models=gru,lstm"), "abc", ("gru", "lstm")
    )
    assert "training.gru_units" in ens and "training.lstm_units" in ens
    assert "training.dlstm_units" not in ens


# ---------------------------------------------------------------- units of the agent module


def _meta(paths: Paths) -> dict[str, Any]:
    """The DLSTM prediction table's ``.json`` (what its dataset is)."""
    return load_table_meta(paths, "dlstm", DATASET)


@pytest.fixture(scope="module")
def val_block(ppo_source_root: Path) -> agent_blocks.AgentBlock:
    """The agent's validation block of the source dataset (small, for unit tests)."""
    cfg = _smoke_cfg()
    paths = Paths.from_root(ppo_source_root)
    return step.build_blocks(load_prediction_table(paths, "dlstm", DATASET), _meta(paths), cfg.ppo)[
        "val"
    ]


def _train_tiny(block: agent_blocks.AgentBlock, seed: int, timesteps: int = 1024) -> PPO:
    cfg = _smoke_cfg(f"ppo.seed={seed}", "n_epochs=1").ppo
    venv, kind = agent.make_vec_env(
        block.data, EnvConfig.from_ppo_config(cfg), RewardConfig(), 2, cfg.seed, "dummy"
    )
    model = agent.build_model(cfg, venv, "cpu", None)
    model.learn(timesteps)
    venv.close()
    return model


@pytest.mark.integration
def test_same_seed_same_actions(val_block: agent_blocks.AgentBlock) -> None:
    block = val_block
    obs = np.concatenate(
        [block.data.pred_features, block.data.price_features, np.zeros((block.data.n_bars, 4))],
        axis=1,
    ).astype(np.float32)  # (n, P+K+4) flat portfolio
    obs[:, -2] = 1.0  # cash_frac of a flat portfolio
    a, b, c = (_train_tiny(block, s, timesteps=512) for s in (7, 7, 8))
    act_a, _ = a.predict(obs, deterministic=True)
    act_b, _ = b.predict(obs, deterministic=True)
    np.testing.assert_array_equal(act_a, act_b)
    for (k, va), vb in zip(
        a.policy.state_dict().items(), b.policy.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
    diff = [
        not torch.equal(va, vc)
        for va, vc in zip(
            a.policy.state_dict().values(), c.policy.state_dict().values(), strict=True
        )
    ]
    assert any(diff)  # a different seed is a different run


@pytest.mark.integration
def test_checkpoints_counted_in_timesteps_at_rollout_boundaries(
    val_block: agent_blocks.AgentBlock, tmp_path: Path
) -> None:
    block = val_block
    cfg = _smoke_cfg("n_epochs=1").ppo
    venv, _ = agent.make_vec_env(
        block.data, EnvConfig(action_set="orders"), RewardConfig(), 2, 0, "dummy"
    )
    model = agent.build_model(cfg, venv, "cpu", None)
    cb = callbacks.RolloutCheckpointCallback(tmp_path, freq=768)
    stopper = callbacks.StopOnRequestCallback(callbacks.StopRequest())
    result = agent.learn(model, 2560, [cb], stopper, "t", progress_bar=False)
    venv.close()
    assert not result.interrupted and result.timesteps == 2560
    # Rollouts end at 512, 1024, ...: the first boundary past 768 is 1024, past 1536 is 1536,
    # past 2304 is 2560 = the end (no rollout starts there), so two checkpoints.
    assert [t for t, _ in model_files.list_checkpoints(tmp_path)] == [1024, 1536]
    assert (
        model_files.load_model(tmp_path / "checkpoint_1536.zip", None, "cpu").num_timesteps == 1536
    )


@pytest.mark.integration
def test_stop_request_ends_learning_at_last_rollout_boundary(
    val_block: agent_blocks.AgentBlock,
) -> None:
    block = val_block
    cfg = _smoke_cfg("n_epochs=1").ppo
    venv, _ = agent.make_vec_env(
        block.data, EnvConfig(action_set="orders"), RewardConfig(), 2, 0, "dummy"
    )
    model = agent.build_model(cfg, venv, "cpu", None)
    request = callbacks.StopRequest()

    class StopAt(agent.BaseCallback):
        def _on_step(self) -> bool:
            if self.model.num_timesteps >= 700:
                request.set("test")
            return True

    stopper = callbacks.StopOnRequestCallback(request)
    result = agent.learn(model, 4096, [StopAt()], stopper, "t", progress_bar=False)
    venv.close()
    assert result.interrupted and result.signal_name == "test"
    assert result.timesteps == 512  # the rollout 512..1024 was cut short and thrown away


@pytest.mark.integration
def test_subproc_vec_env_matches_dummy_and_trains(val_block: agent_blocks.AgentBlock) -> None:
    block = val_block
    env_cfg = EnvConfig(action_set="orders", episode_length=50)
    sub, kind = agent.make_vec_env(block.data, env_cfg, RewardConfig(), 2, 5, "subproc")
    dummy, _ = agent.make_vec_env(block.data, env_cfg, RewardConfig(), 2, 5, "dummy")
    try:
        assert kind == "subproc" and isinstance(sub.venv, SubprocVecEnv)
        assert isinstance(dummy.venv, DummyVecEnv)
        np.testing.assert_array_equal(sub.reset(), dummy.reset())
        rng = np.random.default_rng(0)
        for _ in range(60):  # crosses an episode end (auto-reset in both)
            actions = rng.integers(0, 9, size=2)
            o1, r1, d1, _ = sub.step(actions)
            o2, r2, d2, _ = dummy.step(actions)
            np.testing.assert_array_equal(o1, o2)
            np.testing.assert_allclose(r1, r2, rtol=1e-6)  # DummyVecEnv buffers in float32
            np.testing.assert_array_equal(d1, d2)
        cfg = _smoke_cfg("n_steps=64", "ppo.batch_size=64", "n_epochs=1").ppo
        model = agent.build_model(cfg, sub, "cpu", None)
        with agent.parent_threads("subproc", 2):
            model.learn(256)
        assert model.num_timesteps == 256
    finally:
        sub.close()
        dummy.close()


@pytest.mark.integration
def test_subproc_failure_falls_back_to_dummy(
    val_block: agent_blocks.AgentBlock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    block = val_block

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("cannot start workers here")

    monkeypatch.setattr(agent, "SubprocVecEnv", broken)
    with caplog.at_level(logging.WARNING):
        venv, kind = agent.make_vec_env(
            block.data, EnvConfig(action_set="orders"), RewardConfig(), 2, 0, "subproc"
        )
    assert kind == "dummy" and isinstance(venv.venv, DummyVecEnv) and venv.num_envs == 2
    assert "cannot start workers here" in caplog.text and "DummyVecEnv" in caplog.text
    venv.close()


@pytest.mark.unit
def test_batch_size_warnings_name_the_numbers() -> None:
    assert agent.batch_size_warnings(1024, 16, 2048) == []
    (msg,) = agent.batch_size_warnings(100, 3, 64)
    assert "does not divide n_steps * n_envs = 100 * 3 = 300" in msg
    assert "4 full minibatches" in msg and "truncated one of 44" in msg
    (msg,) = agent.batch_size_warnings(64, 2, 256)
    assert "larger than the rollout n_steps * n_envs = 64 * 2 = 128" in msg


@pytest.mark.unit
def test_resolve_device() -> None:
    """One device helper for classifiers and PPO: PPO passes ``str(device)`` to SB3."""
    from pipeline.common import PipelineError
    from pipeline.device import resolve_device

    assert str(resolve_device("cpu", key="ppo device")) == "cpu"
    assert str(resolve_device("auto")) == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(PipelineError, match="ppo device = cuda but no CUDA GPU is visible"):
            resolve_device("cuda", key="ppo device")


# ---------------------------------------------------------------- prediction table -> blocks


@pytest.mark.unit
def test_prediction_features_single_and_ensemble() -> None:
    table = pd.DataFrame(
        {
            "pred_class": [0, 2],
            "confidence": [0.5, 0.6],
            "p_fall": [0.5, 0.2],
            "p_stationary": [0.3, 0.2],
            "p_rise": [0.2, 0.6],
            **{f"p_{c}_{m}": [0.1, 0.2] for m in ("dlstm", "gru") for c in ("fall",)},
            **{f"p_{c}_{m}": [0.3, 0.3] for m in ("dlstm", "gru") for c in ("stationary", "rise")},
        }
    )
    single = agent_blocks.prediction_features(table, _smoke_cfg().ppo)
    np.testing.assert_allclose(single, [[-1, 0.5, 0.5, 0.3, 0.2], [1, 0.6, 0.2, 0.2, 0.6]])
    ens_cfg = _smoke_cfg("prediction_model=ensemble", "ensemble_models=dlstm,gru").ppo
    assert agent_blocks.prediction_feature_names(ens_cfg)[5:8] == (
        "p_fall_dlstm",
        "p_stationary_dlstm",
        "p_rise_dlstm",
    )
    ens = agent_blocks.prediction_features(table, ens_cfg)
    assert ens.shape == (2, 11) and ens.dtype == np.float32
    np.testing.assert_allclose(ens[:, 5], [0.1, 0.2])
    with pytest.raises(agent_blocks.PredictionTableError, match="p_fall_bilstm"):
        agent_blocks.prediction_features(
            table, _smoke_cfg("prediction_model=ensemble", "ensemble_models=dlstm,bilstm").ppo
        )


@pytest.mark.integration
def test_price_features_standardised_with_train_block_statistics(ppo_source_root: Path) -> None:
    """Observation scaling: ``price_feature_scaling = train_zscore`` standardises the agent's price
    features with the TRAIN block's mean and std; val and test get the same numbers (not their own),
    the predictions and prices are untouched; ``none`` leaves them raw."""
    paths = Paths.from_root(ppo_source_root)
    raw_cfg = _smoke_cfg()
    table = load_prediction_table(paths, "dlstm", DATASET)
    raw = step.build_blocks(table, _meta(paths), raw_cfg.ppo)
    scaled = step.build_blocks(
        table, _meta(paths), _smoke_cfg("price_feature_scaling=train_zscore").ppo
    )
    train = raw["train"].data.price_features.astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    assert (std > 0).all() and (np.abs(mean) / std > 0.05).any()  # scaling changes something
    np.testing.assert_allclose(scaled["train"].data.price_features.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(scaled["train"].data.price_features.std(axis=0), 1, atol=1e-4)
    for name in ("val", "test"):
        got = scaled[name].data.price_features
        want = (raw[name].data.price_features - mean) / std
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert not np.allclose(got.std(axis=0), 1.0, atol=1e-3)  # not the block's own stats
        np.testing.assert_array_equal(scaled[name].data.pred_features, raw[name].data.pred_features)
        np.testing.assert_array_equal(scaled[name].data.close, raw[name].data.close)


@pytest.mark.integration
def test_build_blocks_rejects_gaps_and_foreign_timestamps(ppo_source_root: Path) -> None:
    cfg = _smoke_cfg()
    paths = Paths.from_root(ppo_source_root)
    table = load_prediction_table(paths, "dlstm", DATASET)
    blocks = step.build_blocks(table, _meta(paths), cfg.ppo)
    assert blocks["train"].bars[-1] < blocks["val"].bars[0] < blocks["test"].bars[0]
    assert blocks["test"].data.pred_features.shape[1] == 5
    assert blocks["test"].data.price_names == ("norm_price", "change", "volume", "rsi", "macd")

    def without_row(block: str, i: int) -> tuple[pd.DataFrame, int]:
        rows = np.flatnonzero(table["agent_block"] == block)
        out = table.drop(index=rows[i]).reset_index(drop=True)
        out.attrs = table.attrs
        return out, int(table["bar"].iloc[rows[i - 1]])

    # The train block may span several walk-forward folds with purge gaps: one env segment each.
    gap, bar = without_row("train", 10)
    split = step.build_blocks(gap, _meta(paths), cfg.ppo)["train"]
    assert split.data.segment_starts == (0, 10)
    assert split.bars[9] == bar and split.bars[10] == bar + 2
    # Validation and test blocks must be consecutive.
    for block in ("val", "test"):
        gap, bar = without_row(block, 10)
        with pytest.raises(
            agent_blocks.PredictionTableError,
            match=f"{block} is not consecutive: bar {bar} is followed",
        ):
            step.build_blocks(gap, _meta(paths), cfg.ppo)

    meta = _meta(paths)
    with pytest.raises(agent_blocks.PredictionTableError, match="belongs to other data") as info:
        agent_blocks.check_table_dataset(meta, "0" * 64, "t.csv")
    assert str(info.value).startswith("t.csv: written from a dataset with sha256 ")
    assert str(info.value).endswith("rebuild it with train_models.py")


@pytest.mark.integration
def test_step_7_reads_the_table_and_only_hashes_the_csv(
    ppo_source_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's input is self-contained. Step 7 builds its blocks from the prediction table and
    its .json alone (no CSV parse, no classifier features, labels or splits: load_classifier_data
    and load_dataset are never called), with the same prices and price features as the dataset's own
    arrays."""
    import pipeline.classifiers.prepare
    import pipeline.data.load

    root = _fresh_root(ppo_source_root, tmp_path / "root")
    cfg = _smoke_cfg()
    paths = Paths.from_root(root)
    prepared = pipeline.classifiers.prepare.load_classifier_data(
        cfg.training, DATASET, paths, save_scaler=False
    )

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("step 7 parsed the CSV")

    monkeypatch.setattr(pipeline.classifiers.prepare, "load_classifier_data", forbidden)
    monkeypatch.setattr(pipeline.data.load, "load_dataset", forbidden)
    run = step.setup_agent_run(cfg, DATASET, paths)
    assert run.dataset.sha256 == sha256_file(root / "datasets" / f"{DATASET}.csv")
    assert run.dataset.n_bars == prepared.arrays.n_bars
    for block in run.blocks.values():
        arrays = prepared.arrays
        np.testing.assert_array_equal(block.data.open, arrays.open[block.bars])
        np.testing.assert_array_equal(block.data.close, arrays.close[block.bars])
        np.testing.assert_array_equal(block.data.price_features, arrays.price_features[block.bars])
        np.testing.assert_array_equal(block.data.timestamps, arrays.timestamps[block.bars])
    assert run.bars_per_year == annualisation.infer_periods_per_year(prepared.arrays.timestamps)[0]


@pytest.mark.integration
def test_a_table_of_another_csv_is_one_clear_line(
    ppo_source_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _fresh_root(ppo_source_root, tmp_path / "root")
    csv = root / "datasets" / f"{DATASET}.csv"
    csv.write_bytes(csv.read_bytes() + b"\n")  # the same candles, another file: rebuild
    code = step.main(["--dataset", DATASET, "--root", str(root), *SMOKE])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("error: ") and "belongs to other data" in err[-1]
    assert err[-1].endswith("rebuild it with train_models.py"), err[-1]


# ---------------------------------------------------------------- CLI


@pytest.mark.unit
def test_cli_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "datasets").mkdir()
    code = step.main(["--dataset", "NOPE", "--root", str(tmp_path), *SMOKE])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: ") and "NOPE" in err[-1]
    assert "Traceback" not in "\n".join(err)


@pytest.mark.integration
def test_script_runs_directly_from_another_folder(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = PROJECT_ROOT / "ppo_approach" / "train_ppo_agent.py"
    out = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "--resume" in out.stdout and "--dataset" in out.stdout


@pytest.mark.integration
def test_help_imports_no_torch(tmp_path: Path) -> None:
    """``--help`` answers before torch / SB3 / sklearn are imported."""
    script = PROJECT_ROOT / "ppo_approach" / "train_ppo_agent.py"
    probe = (
        "import runpy, sys\n"
        f"sys.argv = [{str(script)!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_path({str(script)!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "heavy = ('torch', 'stable_baselines3', 'sklearn')\n"
        "print('HEAVY=' + ','.join(m for m in heavy if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "--resume" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY=", out.stdout[-500:]


@pytest.mark.unit
def test_usage_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    """Usage errors are bad input (1); 2 is reserved for a failed preflight."""
    for argv in ([], ["--dataset", DATASET, "--preset", "nonexist"]):
        with pytest.raises(SystemExit) as exc:
            step.main(argv)
        assert exc.value.code == 1, argv
    assert "usage:" in capsys.readouterr().err


@pytest.mark.integration
def test_refuses_to_write_while_a_full_run_holds_the_lock(
    ppo_source_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hand-run step 7 on a dataset whose run lock a live process holds writes nothing and
    names the lock."""
    import socket

    from pipeline.run.lock import lock_path

    root = _fresh_root(ppo_source_root, tmp_path / "root")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = lock_path(Paths.from_root(root), DATASET)
        lock.parent.mkdir(parents=True)
        now = time.time()
        lock.write_text(
            json.dumps(
                {
                    "pid": holder.pid,
                    "host": socket.gethostname(),
                    "started": "now",
                    "started_epoch": now,
                    "nonce": "full-run",
                }
            )
        )
        code = step.main(["--dataset", DATASET, "--root", str(root), *SMOKE])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith(f"error: {lock}: another run on this dataset is in progress")
    assert f"pid {holder.pid}" in err[-1]
    assert not (root / "ppo_approach").exists()
    assert json.loads(lock.read_text())["nonce"] == "full-run"  # the holder's lock untouched


@pytest.mark.integration
def test_report_says_whether_each_result_is_luck(trained: dict[str, Any]) -> None:
    """The backtest JSON carries, for the agent, the rule and buy-and-hold, the PSR, 95 %
    block-bootstrap intervals of total return and Sharpe, and a verdict; the console summary prints
    them."""
    report = trained["report"]
    sec = report["significance"]
    assert set(sec) == {"agent", "classifier_rule", "buy_and_hold"}
    verdicts = {"edge", "no edge", "no edge (no trade)", "cannot tell at this sample size"}
    for name, s in sec.items():
        assert s["verdict"] in verdicts
        assert s["psr"] is None or 0.0 <= s["psr"] <= 1.0
        lo, hi = s["total_return_ci95"]
        assert lo <= hi
        if name == "buy_and_hold":  # the point estimate lies inside its own interval
            assert lo <= report["strategies"][name]["total_return"] <= hi
    text = bt.format_summary(report)
    assert "is it luck? agent: " in text and "block bootstrap over" in text


@pytest.mark.integration
def test_configurations_tried_deflate_the_agents_sharpe(
    ppo_source_root: Path, tmp_path: Path
) -> None:
    """``configurations_tried`` (tune.py's trial count) enters the agent's DSR; the baselines are
    single configurations and are not deflated."""
    root = _fresh_root(ppo_source_root, tmp_path / "root")
    cfg = _smoke_cfg("ppo.device=cpu", "vec_env=dummy", "configurations_tried=40",
                     "total_timesteps=1024")  # fmt: skip
    report = step.train_agent(cfg, DATASET, Paths.from_root(root), resume=False)
    luck = report["significance"]
    assert luck["agent"]["n_trials"] == 40 and luck["agent"]["dsr"] is not None
    assert luck["agent"]["dsr"] < luck["agent"]["psr"]
    assert luck["buy_and_hold"]["n_trials"] == 1 and luck["buy_and_hold"]["dsr"] is None
    assert "DSR" in bt.format_summary(bt.json_safe(report))


@pytest.mark.integration
def test_honest_run_raises_no_leak_alarm(trained: dict[str, Any]) -> None:
    """The env probe and the Sharpe check ran on the test block and found nothing on an honest
    random walk."""
    assert trained["report"]["alarms"] == []
