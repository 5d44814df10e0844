"""The policy as ONNX: the same logits (|difference| < 1e-5) and the same action as PyTorch, on
random observations and bar by bar over a trained agent's whole test block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from test_ppo_agent import DATASET, _smoke_cfg, trained  # noqa: F401  (fixtures used by name)

from pipeline.classifiers.prediction_table import load_prediction_table, load_table_meta
from pipeline.common import Paths
from pipeline.config.schema import PPOConfig
from ppo_approach import backtest, evaluation, export, model_files
from ppo_approach import ppo_trading_agent as agent
from ppo_approach.agent_blocks import build_blocks
from ppo_approach.reward_functions import RewardConfig
from ppo_approach.trading_env import EnvConfig

OBS = spaces.Box(low=-10.0, high=10.0, shape=(9,), dtype=np.float32)
ACT = spaces.Discrete(5)
TOLERANCE = 1e-5


def _torch_logits(model: Any, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        dist = model.policy.get_distribution(torch.as_tensor(obs, dtype=torch.float32))
    return dist.distribution.logits.numpy()  # (B, n_actions), normalised by torch


def _same_up_to_a_constant(a: np.ndarray, b: np.ndarray) -> float:
    """Max |difference| of two logit tables after removing each row's log-sum-exp (the
    categorical distribution normalises its logits; the export returns them raw)."""

    def norm(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return (
            x
            - np.log(np.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True))
            - (x.max(axis=1, keepdims=True))
        )

    return float(np.abs(norm(a) - norm(b)).max())


@pytest.mark.unit
@pytest.mark.parametrize("algorithm", ["ppo", "maskable_ppo"])
def test_exported_policy_gives_the_same_logits_and_actions(algorithm: str, tmp_path: Path) -> None:
    cfg = PPOConfig(algorithm=algorithm, n_steps=64, batch_size=32, net_arch=(16, 16), seed=1)
    model = model_files.new_model(algorithm, agent.ppo_kwargs(cfg), None, "cpu", spaces_=(OBS, ACT))
    path = export.export_policy_onnx(model, tmp_path / "policy.onnx")
    obs = np.random.default_rng(0).uniform(-3, 3, (500, 9)).astype(np.float32)  # (B, n_obs)
    logits = export.onnx_policy_logits(path, obs)
    assert logits.shape == (500, 5)
    assert _same_up_to_a_constant(logits, _torch_logits(model, obs)) < TOLERANCE
    np.testing.assert_array_equal(export.decide(logits), model.predict(obs, deterministic=True)[0])
    if algorithm == "maskable_ppo":
        mask = np.random.default_rng(1).random((500, 5)) < 0.6
        mask[:, 0] = True  # HOLD-like action always valid
        got = export.decide(logits, mask)
        want = np.array(
            [
                model.predict(o, deterministic=True, action_masks=m)[0]
                for o, m in zip(obs, mask, strict=True)
            ]
        )
        np.testing.assert_array_equal(got, want)


@pytest.mark.unit
def test_a_file_that_is_not_onnx_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "policy.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(export.ExportError) as info:
        export.onnx_policy_logits(bad, np.zeros((1, 9), dtype=np.float32))
    assert str(info.value).startswith(f"{bad}: not a runnable ONNX graph")


@pytest.mark.integration
def test_the_exported_agent_takes_the_backtests_action_on_every_test_bar(
    trained: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The smoke run's final agent over its whole test block: at every bar the ONNX logits match
    PyTorch's and the action is the one the backtest's policy takes."""
    paths = Paths.from_root(trained["root"])
    cfg = _smoke_cfg()
    final = paths.ppo_models / f"ppo_dlstm_{DATASET}.zip"
    model = model_files.load_model(final, None, "cpu")
    blocks = build_blocks(
        load_prediction_table(paths, "dlstm", DATASET),
        load_table_meta(paths, "dlstm", DATASET),
        cfg.ppo,
    )
    test = blocks["test"]
    env = backtest.block_env(
        test.data,
        backtest.backtest_env_config(EnvConfig.from_ppo_config(cfg.ppo)),
        RewardConfig.from_ppo_config(cfg.ppo),
    )
    policy = evaluation.policy_for(model)
    observations, actions = [], []
    obs, info = env.reset()
    done = False
    while not done:
        action = policy(obs, info)
        observations.append(obs)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    batch = np.stack(observations)  # (n_bars - 1, n_obs)
    assert len(batch) == test.bars.size - 1
    path = export.export_policy_onnx(model, tmp_path / "policy.onnx")
    logits = export.onnx_policy_logits(path, batch)
    assert _same_up_to_a_constant(logits, _torch_logits(model, batch)) < TOLERANCE
    np.testing.assert_array_equal(export.decide(logits), np.asarray(actions))
    assert len(set(actions)) > 1 or actions  # the whole block, whatever the agent chose


def export_reference(
    cfg: Any, model: str, dataset: str, paths: Paths
) -> tuple[Any, np.ndarray, np.ndarray]:
    """``(predictor, windows (n, L, F) of raw features, the predictor's probabilities (n, 3))``
    for every test-block bar of ``model`` trained on ``dataset``: what an export must reproduce."""
    from pipeline.classifiers.predictors import PredictionModel
    from pipeline.classifiers.prepare import load_classifier_data

    data = load_classifier_data(cfg.training, dataset, paths, save_scaler=False)
    predictor = PredictionModel(model, dataset, paths, "cpu")
    test = data.arrays.splits.test
    bars = np.arange(test.start, test.stop)
    lookback = predictor.lookback
    features = data.arrays.features  # (N, F) raw
    windows = np.stack([features[b - lookback + 1 : b + 1] for b in bars])  # (n, L, F)
    return predictor, windows, predictor.predict_bars(features, bars)


@pytest.mark.integration
def test_an_exported_classifier_gives_the_predictors_probabilities(
    ppo_source_root: Path,
    tmp_path: Path,
) -> None:
    """The DLSTM of ppo_source_root, its scaler inside the graph: on every test-block window of
    raw features, ONNX Runtime's probabilities are within 1e-5 of the pipeline's predictor."""
    paths = Paths.from_root(ppo_source_root)
    predictor, windows, want = export_reference(_smoke_cfg(), "dlstm", DATASET, paths)
    path = export.export_classifier_onnx(predictor.path, tmp_path / "dlstm.onnx")
    got = export.onnx_classifier_probabilities(path, windows)
    assert got.shape == want.shape == (len(windows), 3)
    assert float(np.abs(got - want).max()) < TOLERANCE
    np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1))


@pytest.mark.integration
def test_an_exported_window_logreg_gives_the_predictors_probabilities(tmp_path: Path) -> None:
    """window_logreg (one weight per bar and per-bar feature; issue 17) exports like the other
    torch classifiers: ONNX Runtime's probabilities on every test-block window of raw features are
    within 1e-5 of the pipeline's predictor."""
    import train_models
    from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv

    (tmp_path / "datasets").mkdir()
    write_ohlcv_csv(
        generate_ohlcv(3000, signal=1.0, seed=2, kind="echo"), tmp_path / "datasets" / "W.csv"
    )
    args = ["--dataset", "W", "--root", str(tmp_path), "--preset", "smoke"]
    assert train_models.main([*args, "--set", "num_threads=1", "--models", "window_logreg"]) == 0
    torch.set_num_threads(1)
    paths = Paths.from_root(tmp_path)
    predictor, windows, want = export_reference(_smoke_cfg(), "window_logreg", "W", paths)
    path = export.export_classifier_onnx(predictor.path, tmp_path / "window_logreg.onnx")
    got = export.onnx_classifier_probabilities(path, windows)
    assert got.shape == want.shape == (len(windows), 3)
    assert float(np.abs(got - want).max()) < TOLERANCE
    assert len(set(want.argmax(axis=1))) > 1  # it predicts more than one class: not vacuous


# ---------------------------------------------------------------- the export folder and runtime


@pytest.fixture(scope="module")
def exported(trained: dict[str, Any], ppo_source_root: Path) -> dict[str, Any]:  # noqa: F811
    """The smoke run's agent exported to ``exports/{DATASET}/`` of its root (with the classifier
    files of the run that wrote its prediction table: the export carries the classifier)."""
    import shutil

    from ppo_approach.export_bundle import export_agent

    for folder in ("models", "scalers"):
        shutil.copytree(ppo_source_root / folder, trained["root"] / folder, dirs_exist_ok=True)
    paths = Paths.from_root(trained["root"])
    result = export_agent(_smoke_cfg(), DATASET, paths)
    return {"root": trained["root"], "result": result, "report": trained["report"]}


def _candles(root: Path) -> Any:
    """The one dataset of ``root`` as the pipeline loads it."""
    from pipeline.data.load import load_dataset

    (csv,) = (root / "datasets").glob("*.csv")
    df, _ = load_dataset(str(csv), root / "datasets")
    return df


@pytest.mark.integration
def test_the_export_folder_holds_the_graphs_the_manifest_and_the_backtest(
    exported: dict[str, Any],
) -> None:
    import json

    from ppo_approach import runtime

    folder = exported["result"].folder
    assert folder == Path(exported["root"]) / "exports" / DATASET
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["backtest.csv", "classifier_dlstm.onnx", "export.json", "policy.onnx"]
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["format"] == runtime.EXPORT_FORMAT
    for name, digest in manifest["files"].items():  # every file but the manifest, hashed
        assert runtime.sha256_bytes(folder / name) == digest
    assert set(manifest["files"]) == set(names) - {"export.json"}
    assert manifest["classifier"]["members"] == ["dlstm"]
    assert manifest["agent"]["action_names"] == ["FLAT", "LONG_50", "LONG_100"]
    assert manifest["agent"]["env"]["episode_length"] == 0  # the backtest's settings
    assert manifest["dataset"]["dataset"] == DATASET
    parity = manifest["parity"]
    assert parity["classifiers"]["dlstm"]["max_abs_diff"] < TOLERANCE
    assert parity["policy"]["same_action"] == parity["policy"]["bars"] > 0
    # backtest.csv ends at the backtest report's final value (the open position liquidated)
    import pandas as pd

    curve = pd.read_csv(folder / "backtest.csv")
    agent = exported["report"]["strategies"]["agent"]
    final = manifest["agent"]["env"]["initial_capital"] * (1.0 + agent["total_return"])
    assert curve["liquidation_equity"].iloc[-1] == pytest.approx(final, abs=0.005)
    assert len(curve) == manifest["backtest"]["bars"]


def _runtime_over_the_test_block(root: Path, folder: Path, manifest: dict[str, Any]) -> list[int]:
    """The Decider fed the raw candles one bar at a time over the test block (the last
    history_bars of them): it takes the backtest's action at every bar and its paper account's
    equity equals the backtest's at every close, to the cent. Returns its actions."""
    import pandas as pd

    from ppo_approach.runtime import Decider

    curve = pd.read_csv(folder / "backtest.csv")
    decider = Decider.load(folder)
    candles = _candles(root)
    first = int(manifest["backtest"]["first_bar"])
    actions, equity = [], []
    for t in range(first, first + len(curve)):
        decision = decider.decide(candles.iloc[max(0, t + 1 - decider.history_bars) : t + 1])
        actions.append(decision.action)
        equity.append(decider.account.equity)
        assert str(decision.timestamp) == str(pd.Timestamp(candles["timestamp"].iloc[t]))
    np.testing.assert_array_equal(actions[:-1], curve["action"].iloc[:-1].astype(int))
    assert np.abs(np.asarray(equity) - curve["equity"].to_numpy()).max() < 0.005
    assert decider.account.liquidation()["liquidation_equity"] == pytest.approx(
        curve["liquidation_equity"].iloc[-1], abs=0.005
    )
    return actions


@pytest.mark.integration
def test_the_runtime_decides_as_the_backtest_bar_by_bar_from_raw_candles(
    exported: dict[str, Any],
) -> None:
    """The smoke DLSTM agent, its whole test block (in fact the equity is exactly equal)."""
    result = exported["result"]
    actions = _runtime_over_the_test_block(exported["root"], result.folder, result.manifest)
    assert len(set(actions)) > 1  # the agent trades in this block: the parity is not vacuous


@pytest.mark.integration
def test_an_ensemble_of_logreg_and_lightgbm_exports_and_decides_as_the_backtest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent fed the weighted ensemble of logreg and LightGBM (each member's probabilities
    and the edge in its observation, z-scored): the export holds both graphs and the weights, and
    the runtime takes the backtest's action on every test bar with the same equity. The bundle
    reads each member's model file once (its graph and its manifest entry come from one read)."""
    import train_models
    from pipeline.config.files import load_config
    from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
    from ppo_approach import train_ppo_agent
    from ppo_approach.export_bundle import export_agent

    (tmp_path / "datasets").mkdir()
    write_ohlcv_csv(generate_ohlcv(4000, signal=0.3, seed=5), tmp_path / "datasets" / "E.csv")
    sets = ["ppo.prediction_model=ensemble", "ppo.ensemble_models=logreg,lightgbm",
            "ppo.ensemble_method=weighted", "ppo.edge_feature=true", "ppo.agent_init=random",
            "ppo.prediction_feature_scaling=train_zscore", "num_threads=1"]  # fmt: skip
    args = ["--dataset", "E", "--root", str(tmp_path), "--preset", "smoke"]
    args += [a for s in sets for a in ("--set", s)]
    assert train_models.main([*args, "--models", "logreg,lightgbm"]) == 0
    torch.set_num_threads(1)
    assert train_ppo_agent.main(args) == 0
    from pipeline.classifiers import nets

    reads: list[str] = []
    real_load = nets.load_model_file

    def counted(path: Path) -> dict[str, Any]:
        reads.append(Path(path).name)
        return real_load(path)

    monkeypatch.setattr(nets, "load_model_file", counted)
    result = export_agent(load_config(None, None, "smoke", sets), "E", Paths.from_root(tmp_path))
    assert sorted(reads) == ["lightgbm_E_classification.pth", "logreg_E_classification.pth"]
    c = result.manifest["classifier"]
    assert c["members"] == ["logreg", "lightgbm"] and c["ensemble"]["kind"] in {"weights"}
    assert result.manifest["agent"]["prediction_zscore"] is not None
    names = sorted(p.name for p in result.folder.iterdir())
    assert {"classifier_logreg.onnx", "classifier_lightgbm.onnx"} <= set(names)
    actions = _runtime_over_the_test_block(tmp_path, result.folder, result.manifest)
    assert len(set(actions)) > 1


@pytest.mark.integration
def test_a_changed_export_file_is_refused_in_one_line(
    exported: dict[str, Any], tmp_path: Path
) -> None:
    import shutil

    from ppo_approach.runtime import Decider, DeciderError

    copy = tmp_path / "export"
    shutil.copytree(exported["result"].folder, copy)
    data = bytearray((copy / "policy.onnx").read_bytes())
    data[-1] ^= 1
    (copy / "policy.onnx").write_bytes(bytes(data))
    with pytest.raises(DeciderError) as info:
        Decider.load(copy)
    assert str(info.value) == (
        f"{copy / 'policy.onnx'}: SHA-256 differs from export.json's (changed after export)"
    )


@pytest.mark.integration
def test_the_runtime_runs_without_torch_sb3_sklearn_or_ta(exported: dict[str, Any]) -> None:
    """A child process that cannot import torch, SB3, sb3-contrib, gymnasium, scikit-learn, ta,
    LightGBM, onnx or matplotlib loads the export and decides."""
    import subprocess
    import sys

    code = f"""
import importlib.abc, sys
BLOCKED = {{"torch", "stable_baselines3", "sb3_contrib", "gymnasium", "sklearn", "ta",
            "lightgbm", "onnx", "matplotlib", "scipy"}}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import pandas as pd
from ppo_approach.runtime import Decider
d = Decider.load({str(exported["result"].folder)!r})
candles = pd.read_csv({str(Path(exported["root"]) / "datasets" / f"{DATASET}.csv")!r})
print(d.decide(candles.iloc[-d.history_bars:]).action_name)
"""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in {"FLAT", "LONG_50", "LONG_100"}


@pytest.mark.integration
def test_export_py_without_a_trained_agent_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "export.py", "--dataset", "NOPE", "--root", str(tmp_path),
         "--set", "ppo.prediction_model=dlstm"],
        cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ") and "no trained agent" in lines[0]
