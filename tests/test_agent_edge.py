"""End to end: the agent uses a classifier's edge when it has one, a diagnostic run never overwrites
a real one, and (slow) one realistic-prediction row of the ladder meets its target."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.common import Paths
from pipeline.config.files import load_config
from pipeline.store.artifacts import Artifacts
from ppo_approach import train_ppo_agent

pytestmark = pytest.mark.integration

DATASET = "RW-TEST_1H"  # tests/conftest.py's ppo_source_root


def _root(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "datasets", dst / "datasets")
    (dst / "results").mkdir(parents=True)
    for p in (src / "results").glob("predictions_*"):  # each table (.csv) and its .json
        shutil.copy(p, dst / "results" / p.name)
    return dst


def test_an_oracle_run_writes_under_its_own_name(ppo_source_root: Path, tmp_path: Path) -> None:
    """An oracle run replaced results/backtest_dlstm_{dataset}.json and the agent zip of the real
    run; now it writes ...dlstm-oracle100... beside them."""
    torch.set_num_threads(1)
    root = _root(ppo_source_root, tmp_path / "r")
    paths = Paths.from_root(root)
    files = Artifacts(paths, DATASET)
    train_ppo_agent.train_agent(load_config(preset="smoke"), DATASET, paths, False)
    real_report = files.backtest_report("dlstm").read_bytes()
    real_zip = files.ppo_model("dlstm").read_bytes()
    oracle = load_config(preset="smoke", overrides=["ppo_prediction_source=oracle"])
    rep = train_ppo_agent.train_agent(oracle, DATASET, paths, False)
    assert rep["model"] == "dlstm-oracle100" and rep["oracle"] is not None
    assert files.backtest_report("dlstm-oracle100").is_file()
    assert files.ppo_model("dlstm-oracle100").is_file()
    assert files.backtest_report("dlstm").read_bytes() == real_report
    assert files.ppo_model("dlstm").read_bytes() == real_zip


@pytest.mark.slow
def test_realistic_predictions_row_the_agent_keeps_at_least_half_the_rule(
    ppo_source_root: Path, tmp_path: Path
) -> None:
    """One realistic-prediction row of the ladder (bench/bench_agent_ladder.py): calibrated soft
    probabilities right on 55 % of the bars (noisy_oracle), target actions, a short PPO budget.
    Where the rule makes money on validation, the agent's test log return is at least half of
    the rule's (or no worse where the rule loses), and the report says what happened."""
    torch.set_num_threads(1)
    root = _root(ppo_source_root, tmp_path / "r")
    cfg = load_config(
        preset="smoke",
        overrides=[
            "ppo_prediction_source=noisy_oracle",
            "oracle_accuracy=0.55",
            "action_set=target",
            "total_timesteps=30000",
            "n_envs=4",
            "eval_freq=2048",
            "eval_episodes=3",
            "episode_length=500",
        ],
    )
    rep = train_ppo_agent.train_agent(cfg, DATASET, Paths.from_root(root), False)
    info = rep["agent"]
    assert info is not None
    rule_val = info["validation"]["rule_return"]
    assert rule_val > 0, "the row needs a rule that makes money on validation"
    assert info["warm_start"]["behaviour"] == "rule" and info["warm_start"]["agreement"] > 0.9
    agent = rep["strategies"]["agent"]["total_return"]
    rule = rep["strategies"]["classifier_rule"]["total_return"]
    a, r = math.log1p(agent), math.log1p(rule)
    assert (a >= 0.5 * r) if r > 0 else (a >= r), (agent, rule)
    assert rep["strategies"]["agent"]["n_trades"] > 0
    assert rep["verdict"].startswith("the agent traded")
    written = json.loads(
        Artifacts(Paths.from_root(root), DATASET).backtest_report(rep["model"]).read_text()
    )
    assert written["verdict"] == rep["verdict"]
