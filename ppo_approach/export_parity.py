"""How closely an export's ONNX graphs follow the PyTorch models they came from, measured over
the whole test block when the export is written (recorded in ``export.json``'s ``parity``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common import Paths
from pipeline.config.schema import Config
from pipeline.store.artifacts import dataset_name
from ppo_approach import export
from ppo_approach.runtime import BACKTEST_CURVE_NAME, POLICY_NAME, classifier_file


def classifier_parity(
    agent_cfg: Config, dataset: str, paths: Paths, folder: Path
) -> dict[str, Any]:
    """Per member: max |ONNX - PyTorch| of the probabilities on every test-block window, and on
    how many windows the class is the same."""
    from pipeline.classifiers.predictors import PredictionModel
    from pipeline.classifiers.prepare import load_classifier_data

    data = load_classifier_data(agent_cfg.training, dataset, paths, save_scaler=False)
    test = data.arrays.splits.test
    bars = np.arange(test.start, data.arrays.n_bars)  # (n,) every bar the agent's test block has
    features = data.arrays.features  # (N, F) raw
    out: dict[str, Any] = {}
    for m in ([*agent_cfg.ppo.ensemble_models] if agent_cfg.ppo.prediction_model == "ensemble"
              else [agent_cfg.ppo.prediction_model]):  # fmt: skip
        predictor = PredictionModel(m, dataset_name(dataset), paths, "cpu")
        lookback = predictor.lookback
        windows = np.stack([features[b - lookback + 1 : b + 1] for b in bars])  # (n, L, F)
        got = export.onnx_classifier_probabilities(folder / classifier_file(m), windows)
        want = predictor.predict_bars(features, bars)  # (n, 3)
        out[m] = {
            "windows": int(bars.size),
            "max_abs_diff": float(np.abs(got - want).max()),
            "same_class": int((got.argmax(axis=1) == want.argmax(axis=1)).sum()),
        }
    return out


def policy_parity(
    agent_cfg: Config, agent: Any, dataset: str, paths: Paths, folder: Path
) -> dict[str, Any]:
    """The backtest's run over the test block with the PyTorch policy; the ONNX policy's logits
    (max |difference| after normalisation) and actions on the same observations."""
    import torch

    from ppo_approach import backtest, evaluation
    from ppo_approach.export_bundle import agent_blocks
    from ppo_approach.reward_functions import RewardConfig
    from ppo_approach.trading_env import EnvConfig

    p = agent_cfg.ppo
    test = agent_blocks(agent_cfg, dataset, paths, scaled=True)["test"]
    env = backtest.block_env(
        test.data,
        backtest.backtest_env_config(EnvConfig.from_ppo_config(p)),
        RewardConfig.from_ppo_config(p),
    )
    policy = evaluation.policy_for(agent)
    observations, masks, actions = [], [], []
    obs, info = env.reset()
    equity = [info["equity"]]
    done = False
    while not done:
        action = policy(obs, info)
        observations.append(obs)
        masks.append(info["action_mask"])
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        equity.append(info["equity"])
        done = terminated or truncated
    _write_backtest_curve(folder, test, actions, equity, info["liquidation_equity"])
    batch = np.stack(observations)  # (n, n_obs)
    logits = export.onnx_policy_logits(folder / POLICY_NAME, batch)  # (n, A)
    with torch.no_grad():
        dist = agent.policy.get_distribution(torch.as_tensor(batch))
    want = dist.distribution.logits.numpy()  # (n, A) normalised
    got = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
    got -= logits.max(1, keepdims=True)
    mask = np.stack(masks) if agent_cfg.ppo.algorithm == "maskable_ppo" else None
    return {
        "bars": int(len(actions)),
        "max_abs_logit_diff": float(np.abs(got - want).max()),
        "same_action": int((export.decide(logits, mask) == np.asarray(actions)).sum()),
    }


def _write_backtest_curve(
    folder: Path, test: Any, actions: list[int], equity: list[float], liquidation: float
) -> None:
    """``backtest.csv``: per test-block candle its timestamp, the equity marked at its close
    (every digit) and the action decided there (none at the last candle); the runtime's replay
    compares itself with it. The last row's ``liquidation_equity`` is the backtest's final value
    with the open position closed."""
    import pandas as pd

    from pipeline.common import atomic_path

    stamps = pd.to_datetime(test.data.timestamps, utc=True)
    frame = pd.DataFrame(
        {
            "timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "equity": [repr(float(e)) for e in equity],
            "action": [*(str(a) for a in actions), ""],
            "liquidation_equity": [*([""] * (len(equity) - 1)), repr(float(liquidation))],
        }
    )
    with atomic_path(folder / BACKTEST_CURVE_NAME) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def measure_parity(
    agent_cfg: Config, agent: Any, dataset: str, paths: Paths, folder: Path
) -> dict[str, Any]:
    """``{"classifiers": ..., "policy": ...}`` (see the two functions above)."""
    return {
        "classifiers": classifier_parity(agent_cfg, dataset, paths, folder),
        "policy": policy_parity(agent_cfg, agent, dataset, paths, folder),
    }
