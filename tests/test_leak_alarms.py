"""Issue 18 item 1: run-time leak alarms. Each planted leak must raise its alarm in step 5's
summary (JSON and console rows); honest GARCH random walks must raise none and be judged chance.

The leaks are planted the way a bad change would bring them in: by replacing one function the
pipeline calls (features, labels, scaler, split, plan), never by editing the alarm's inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import train_models
from pipeline.common import Paths
from pipeline.leak_alarms import (
    Alarm,
    alarm_lines,
    lookahead_alarms,
    scaler_alarms,
    sharpe_alarms,
    split_alarms,
    val_gap_alarms,
)

MODELS = ["gru"]


def run_step5(
    root: Path, write_dataset: Any, smoke_config: Any, *settings: str, seed: int = 0
) -> dict[str, Any]:
    """Step 5 on a 3,000-bar GARCH random walk (no signal): the summary it returns."""
    write_dataset(root, "RW", signal=0.0, seed=seed)
    cfg = smoke_config("ppo_prediction_source=in_sample", *settings)
    return dict(train_models.train_all(cfg, "RW", Paths.from_root(root), MODELS))


def checks(summary: dict[str, Any]) -> set[str]:
    return {a["check"] for a in summary["alarms"]}


# ---------------------------------------------------------------- honest data: no alarm


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_honest_random_walks_raise_no_alarm_and_are_chance(
    seed: int, tmp_path: Path, write_dataset: Any, smoke_config: Any, capsys: Any
) -> None:
    """Done-when of issue 18: on 5 honest random walks no alarm fires and the chance test says
    chance, for every model, the logistic regression and the permuted-label control."""
    write_dataset(tmp_path, "RW", signal=0.0, seed=seed)
    cfg = smoke_config("ppo_prediction_source=in_sample")
    names = list(train_models.MODEL_NAMES)
    summary = train_models.train_all(cfg, "RW", Paths.from_root(tmp_path), names)
    assert summary["alarms"] == []
    assert "leak alarms: none" in capsys.readouterr().out
    for name, entry in summary["models"].items():
        assert not entry["beats_chance_on_test"], (name, entry["headline"])
        assert entry["verdict"].startswith("no better than chance"), entry["headline"]
    control = summary["permutation_control"]
    assert control is not None and not control["beats_chance_on_test"]
    assert control["headline"].endswith("at chance, as it must be")


# ---------------------------------------------------------------- planted leaks


def test_label_shift_raises_the_direction_alarm(
    tmp_path: Path, write_dataset: Any, smoke_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labels one bar early: r'(t) = r(t - 1) includes bar t's own return, which the features
    see. The logistic regression gets the direction right far too often."""
    import pipeline.prepare

    real = pipeline.prepare.smoothed_future_return

    def shifted(close: np.ndarray, k: int) -> np.ndarray:
        return np.concatenate([[np.nan], real(close, k)[:-1]])

    monkeypatch.setattr(pipeline.prepare, "smoothed_future_return", shifted)
    summary = run_step5(tmp_path, write_dataset, smoke_config)
    direction = [a for a in summary["alarms"] if a["check"] == "direction"]
    assert any(a["subject"] == "logreg" for a in direction), summary["alarms"]
    assert "above the plausible 60% (alarm_direction_accuracy)" in direction[0]["message"]


def test_scaler_fit_on_the_whole_series_raises_the_scaler_alarm(
    tmp_path: Path, write_dataset: Any, smoke_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.preprocessing import StandardScaler

    import pipeline.prepare

    def whole_series(features: np.ndarray, block: Any, lookback: int) -> StandardScaler:
        rows = np.asarray(features, dtype=np.float64)
        return StandardScaler().fit(rows[np.isfinite(rows).all(axis=1)])

    monkeypatch.setattr(pipeline.prepare, "fit_scaler", whole_series)
    summary = run_step5(tmp_path, write_dataset, smoke_config)
    assert checks(summary) == {"scaler"}, summary["alarms"]
    assert "fit on rows outside the train block" in summary["alarms"][0]["message"]


def test_centred_window_raises_the_lookahead_alarm(
    tmp_path: Path, write_dataset: Any, smoke_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A centred 5-bar mean of returns as the first feature: its value at t needs t+1, t+2."""
    import pandas as pd

    import pipeline.prepare

    real = pipeline.prepare.compute_features

    def centred(df: pd.DataFrame, names: Any = None) -> pd.DataFrame:
        feats = real(df, names)
        ret = df["close"].pct_change()
        feats.iloc[:, 0] = ret.rolling(5, center=True, min_periods=1).mean().to_numpy()
        return feats

    monkeypatch.setattr(pipeline.prepare, "compute_features", centred)
    summary = run_step5(tmp_path, write_dataset, smoke_config)
    assert "lookahead" in checks(summary), summary["alarms"]
    lookahead = next(a for a in summary["alarms"] if a["check"] == "lookahead")
    assert "features read bars after t" in lookahead["message"]
    assert "direction" in checks(summary)  # and its effect is implausible too


def test_next_bar_in_the_scaled_inputs_raises_the_lookahead_alarm(
    tmp_path: Path, write_dataset: Any, smoke_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leak issue 8 planted (half the next bar's return added to a scaled feature)."""
    from tests.test_train_models import plant_next_bar_leak

    plant_next_bar_leak(monkeypatch)
    summary = run_step5(tmp_path, write_dataset, smoke_config)
    assert {"lookahead", "direction"} <= checks(summary), summary["alarms"]


def test_model_trained_on_the_test_block_raises_split_and_control_alarms(
    tmp_path: Path, write_dataset: Any, smoke_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main model is fit and early-stopped on the test block. The split check sees it; the
    model scores far
    above its early-stopping block; and the permuted-label control (which permutes the TRAIN
    block's labels only) still learns the test labels through the same path."""
    from pipeline.splits import Block

    real = train_models.main_plan

    def on_test(prep: Any) -> Any:
        plan = real(prep)
        s = prep.arrays.splits
        plan.fit = plan.early_stop = Block("test", s.test.start, s.test.stop)
        return plan

    monkeypatch.setattr(train_models, "main_plan", on_test)
    summary = run_step5(
        tmp_path,
        write_dataset,
        smoke_config,
        "epochs=40",
        "patience=40",
        "gru_units=64",
        "training.batch_size=32",
        "training.learning_rate=0.005",
    )
    found = checks(summary)
    assert summary["models"]["gru"]["test_macro_f1"] > 0.9  # it learned the test labels
    assert {"split", "permutation", "test_vs_val"} <= found, summary["alarms"]
    split = next(a for a in summary["alarms"] if a["check"] == "split")
    assert "lie inside or after the test block" in split["message"]


def test_no_purge_gap_raises_the_split_alarm(
    tmp_path: Path, write_dataset: Any, smoke_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.splits

    monkeypatch.setattr(pipeline.splits, "resolve_purge", lambda gap, k, lookback: 0)
    summary = run_step5(tmp_path, write_dataset, smoke_config)
    assert checks(summary) == {"split"}, summary["alarms"]
    messages = " ".join(a["message"] for a in summary["alarms"])
    assert "needs a purge gap of 21 bars" in messages  # smoothing_k 5 + lookback 16


def test_shuffled_split_raises_the_split_alarm(
    tmp_path: Path, write_dataset: Any, smoke_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: train rows drawn at random from the train, val and test bars passed every
    test before. The bars the model is fit on reach into the test block."""
    real = train_models.labelled_bars
    rng = np.random.default_rng(0)

    def shuffled(block: Any, labels: np.ndarray) -> np.ndarray:
        bars = real(block, labels)
        if block.name != "train":
            return bars
        everything = np.flatnonzero(labels >= 0)
        everything = everything[everything >= block.start]  # after the warm-up, like the block
        return np.sort(rng.choice(everything, size=len(bars), replace=False))

    monkeypatch.setattr(train_models, "labelled_bars", shuffled)
    summary = run_step5(tmp_path, write_dataset, smoke_config)
    assert "split" in checks(summary), summary["alarms"]


# ---------------------------------------------------------------- the checks on their own


def test_alarm_rows_and_dicts() -> None:
    a = Alarm("split", "gru", "fit bars reach bar 10")
    assert a.line() == "LEAK ALARM [split] gru: fit bars reach bar 10"
    assert alarm_lines([a.to_dict()]) == [a.line()]


def test_split_check_passes_a_purged_chronological_split() -> None:
    fit, es, test = np.arange(0, 100), np.arange(121, 200), np.arange(221, 300)
    assert split_alarms("m", fit, es, test, 21) == []
    assert len(split_alarms("m", fit, es, np.arange(210, 300), 21)) == 1  # gap 10 < 21


def test_scaler_check_matches_sklearn_on_the_fit_rows() -> None:
    from sklearn.preprocessing import StandardScaler

    x = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    good = StandardScaler().fit(x[:300].astype(np.float64))
    assert scaler_alarms(x, slice(0, 300), good.mean_, good.scale_) == []
    whole = StandardScaler().fit(x.astype(np.float64))
    assert len(scaler_alarms(x, slice(0, 300), whole.mean_, whole.scale_)) == 1


def test_lookahead_check_names_bar_and_feature() -> None:
    inputs = np.zeros((10, 2))
    inputs[7, 1] = 0.5
    alarms = lookahead_alarms(lambda t: np.zeros(2), inputs, [3, 7], ["a", "b"])
    assert len(alarms) == 1 and "at 1 of 2 bars checked (bar 7, feature 'b'" in alarms[0].message


def test_test_far_above_validation_and_implausible_sharpe() -> None:
    assert val_gap_alarms("m", 0.40, 0.38, 2000, 2000, 5) == []
    assert len(val_gap_alarms("m", 0.60, 0.38, 2000, 2000, 5)) == 1
    assert sharpe_alarms("agent", 1.2, 5.0) == []
    assert "Sharpe ratio 41.30" in sharpe_alarms("agent", 41.3, 5.0)[0].message
