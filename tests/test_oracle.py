"""The oracle prediction source: the true future class in place of the classifier's output, a
diagnostic of the RL setup that every report flags and the push step refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.classifiers.prediction_table import load_prediction_table, load_table_meta
from pipeline.classifiers.prepare import load_classifier_data
from pipeline.common import Paths
from pipeline.config.files import load_config
from pipeline.config.schema import ConfigError
from pipeline.publish.push import PushError, collect_artifacts
from pipeline.run.summary import agent_line
from pipeline.store.artifacts import Artifacts
from pipeline.store.manifest import STEP_AGENT
from ppo_approach import backtest
from ppo_approach.agent_blocks import ORACLE_LABEL, build_blocks, oracle_table


def _table(n: int, members: tuple[str, ...] = ()) -> pd.DataFrame:
    cols: dict[str, object] = {
        "bar": np.arange(n),
        "p_fall": 0.2,
        "p_stationary": 0.5,
        "p_rise": 0.3,
        "pred_class": 1,
        "confidence": 0.5,
        "source": "dlstm/fold1",
    }
    for m in members:
        cols.update({f"p_fall_{m}": 0.1, f"p_stationary_{m}": 0.8, f"p_rise_{m}": 0.1})
    return pd.DataFrame(cols)


@pytest.mark.unit
def test_full_accuracy_is_the_true_future_class_one_hot() -> None:
    labels = np.array([0, 2, 1, 2, -1], dtype=np.int8)  # -1: no label (end of the data)
    out = oracle_table(_table(5, ("dlstm",)), labels, accuracy=1.0, seed=0)
    assert out["pred_class"].tolist() == [0, 2, 1, 2, 1]  # no label -> Stationary
    assert out[["p_fall", "p_stationary", "p_rise"]].to_numpy().tolist()[:2] == [
        [1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0],
    ]
    # the ensemble members see the same class
    assert out["p_rise_dlstm"].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert (out["confidence"] == 1.0).all() and (out["source"] == "oracle").all()


@pytest.mark.unit
def test_degraded_oracle_keeps_the_share_asked_for_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 6000).astype(np.int8)
    out = oracle_table(_table(6000), labels, accuracy=0.7, seed=5)
    right = float((out["pred_class"].to_numpy() == labels).mean())
    # kept 70 %, and a uniform draw is right a third of the time: 0.7 + 0.3 / 3 = 0.8
    assert abs(right - 0.8) < 0.02
    again = oracle_table(_table(6000), labels, accuracy=0.7, seed=5)
    assert again["pred_class"].tolist() == out["pred_class"].tolist()
    chance = oracle_table(_table(6000), labels, accuracy=0.0, seed=5)
    assert abs(float((chance["pred_class"].to_numpy() == labels).mean()) - 1 / 3) < 0.03


@pytest.mark.unit
def test_config_accepts_the_oracle_and_checks_its_accuracy() -> None:
    cfg = load_config(None, None, "smoke", ["ppo_prediction_source=oracle", "oracle_accuracy=0.5"])
    assert cfg.ppo.ppo_prediction_source == "oracle" and cfg.ppo.oracle_accuracy == 0.5
    with pytest.raises(ConfigError, match="oracle_accuracy"):
        load_config(None, None, "smoke", ["oracle_accuracy=1.5"])


@pytest.mark.unit
def test_reports_say_oracle() -> None:
    report = {
        "model": "dlstm",
        "dataset": "X",
        "chosen_model": "best",
        "prediction_source": "oracle",
        "oracle": {"label": ORACLE_LABEL, "accuracy": 1.0},
        "strategies": {},
    }
    assert ORACLE_LABEL in backtest.format_summary(report).splitlines()[0]
    line = agent_line({"agent_total_return": 0.1, "oracle": ORACLE_LABEL})
    assert f"[{ORACLE_LABEL}]" in line


@pytest.mark.unit
def test_the_push_refuses_an_oracle_agent(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    files = Artifacts(paths, "X")
    meta = files.ppo_meta("dlstm")
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"model": "dlstm", "prediction_source": "oracle"}))
    files.manifest().record(meta, "ppo_meta", STEP_AGENT)
    with pytest.raises(PushError, match=r"refusing to push ppo_dlstm_X_meta\.json: .*ORACLE"):
        collect_artifacts(tmp_path, "X")
    meta.write_text(json.dumps({"model": "dlstm", "prediction_source": "walk_forward"}))
    files.manifest().record(meta, "ppo_meta", STEP_AGENT)
    assert meta in collect_artifacts(tmp_path, "X")


@pytest.mark.integration
def test_the_agent_blocks_carry_the_true_class(ppo_source_root: Path) -> None:
    cfg = load_config(None, None, "smoke", ["ppo_prediction_source=oracle"])
    paths = Paths.from_root(ppo_source_root)
    dataset = next((ppo_source_root / "datasets").glob("*.csv")).stem
    prepared = load_classifier_data(cfg.training, dataset, paths, save_scaler=False)
    blocks = build_blocks(
        load_prediction_table(paths, "dlstm", dataset),
        load_table_meta(paths, "dlstm", dataset),
        cfg.ppo,
    )
    for block in blocks.values():
        true = prepared.arrays.labels[block.bars].astype(np.int64)
        true[true < 0] = 1
        np.testing.assert_array_equal(block.probs.argmax(axis=1), true)
        assert (block.probs.max(axis=1) == 1.0).all()
