"""Run-time leak alarms. Each planted leak must raise its alarm in step 5's summary (JSON and
console rows); honest GARCH random walks must raise none and be judged chance.

The leaks are planted the way a bad change would bring them in: by replacing one function the
pipeline calls (features, labels, scaler, split, plan), never by editing the alarm's inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import train_models
from pipeline.checks.leak_alarms import (
    Alarm,
    alarm_lines,
    lookahead_alarms,
    scaler_alarms,
    sharpe_alarms,
    split_alarms,
    val_gap_alarms,
)
from pipeline.common import Paths
from ppo_approach import evaluation

MODELS = ["gru"]


def run_step5(
    root: Path, write_dataset: Any, smoke_config: Any, *settings: str, seed: int = 0
) -> dict[str, Any]:
    """Step 5 on a 3,000-bar GARCH random walk (no signal): the summary it returns."""
    write_dataset(root, "RW", signal=0.0, seed=seed)
    cfg = smoke_config("ppo_prediction_source=in_sample", *settings)
    return dict(train_models.train_classifiers(cfg, "RW", Paths.from_root(root), MODELS))


def checks(summary: dict[str, Any]) -> set[str]:
    return {a["check"] for a in summary["alarms"]}


# ---------------------------------------------------------------- honest data: no alarm


@pytest.mark.integration
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_honest_random_walks_raise_no_alarm_and_are_chance(
    seed: int, tmp_path: Path, write_dataset: Any, smoke_config: Any, capsys: Any
) -> None:
    """On 5 honest random walks no alarm fires and the chance test says chance, for every model, the
    logistic regression and the permuted-label control."""
    write_dataset(tmp_path, "RW", signal=0.0, seed=seed)
    cfg = smoke_config("ppo_prediction_source=in_sample")
    names = list(train_models.MODEL_NAMES)
    summary = train_models.train_classifiers(cfg, "RW", Paths.from_root(tmp_path), names)
    assert summary["alarms"] == []
    assert "leak alarms: none" in capsys.readouterr().out
    for name, entry in summary["models"].items():
        assert not entry["beats_chance_on_test"], (name, entry["headline"])
        assert entry["verdict"].startswith("no better than chance"), entry["headline"]
    control = summary["permutation_control"]
    assert control is not None and not control["beats_chance_on_test"]
    assert control["headline"].endswith("at chance, as it must be")


# ---------------------------------------------------------------- planted leaks


@pytest.mark.integration
def test_label_shift_raises_the_direction_alarm(
    tmp_path: Path, write_dataset: Any, smoke_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labels one bar early: r'(t) = r(t - 1) includes bar t's own return, which the features
    see. The logistic regression gets the direction right far too often."""
    import pipeline.classifiers.prepare

    real = pipeline.classifiers.prepare.smoothed_future_return

    def shifted(close: np.ndarray, k: int) -> np.ndarray:
        return np.concatenate([[np.nan], real(close, k)[:-1]])

    monkeypatch.setattr(pipeline.classifiers.prepare, "smoothed_future_return", shifted)
    summary = run_step5(tmp_path, write_dataset, smoke_config)
    direction = [a for a in summary["alarms"] if a["check"] == "direction"]
    assert any(a["subject"] == "logreg baseline" for a in direction), summary["alarms"]
    assert "above the plausible 65% (alarm_direction_accuracy)" in direction[0]["message"]


@pytest.mark.integration
def test_scaler_fit_on_the_whole_series_raises_the_scaler_alarm(
    tmp_path: Path, write_dataset: Any, smoke_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plant_whole_series_scaler(monkeypatch)
    summary = run_step5(tmp_path, write_dataset, smoke_config)
    assert checks(summary) == {"scaler"}, summary["alarms"]
    assert "fit on rows outside the train block" in summary["alarms"][0]["message"]


@pytest.mark.integration
def test_centred_window_raises_the_lookahead_alarm(
    tmp_path: Path, write_dataset: Any, smoke_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A centred 5-bar mean of returns as the first feature: its value at t needs t+1, t+2."""
    import pandas as pd

    import pipeline.classifiers.prepare

    real = pipeline.classifiers.prepare.compute_features

    def centred(df: pd.DataFrame, names: Any = None) -> pd.DataFrame:
        feats = real(df, names)
        ret = df["close"].pct_change()
        feats.iloc[:, 0] = ret.rolling(5, center=True, min_periods=1).mean().to_numpy()
        return feats

    monkeypatch.setattr(pipeline.classifiers.prepare, "compute_features", centred)
    summary = run_step5(tmp_path, write_dataset, smoke_config)
    assert "lookahead" in checks(summary), summary["alarms"]
    lookahead = next(a for a in summary["alarms"] if a["check"] == "lookahead")
    assert "features read bars after t" in lookahead["message"]
    assert "direction" in checks(summary)  # and its effect is implausible too


@pytest.mark.integration
def test_next_bar_in_the_scaled_inputs_raises_the_lookahead_alarm(
    tmp_path: Path, write_dataset: Any, smoke_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``plant_next_bar_leak``: half the next bar's return added to a scaled feature."""
    from tests.test_train_models import plant_next_bar_leak

    plant_next_bar_leak(monkeypatch)
    summary = run_step5(tmp_path, write_dataset, smoke_config)
    assert {"lookahead", "direction"} <= checks(summary), summary["alarms"]


@pytest.mark.integration
def test_model_trained_on_the_test_block_raises_split_and_control_alarms(
    tmp_path: Path, write_dataset: Any, smoke_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main model is fit and early-stopped on the test block. The split check sees it; the
    model scores far
    above its early-stopping block; and the permuted-label control (which permutes the TRAIN
    block's labels only) still learns the test labels through the same path."""
    from pipeline.data.splits import Block

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


@pytest.mark.integration
def test_no_purge_gap_raises_the_split_alarm(
    tmp_path: Path, write_dataset: Any, smoke_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.data.splits

    monkeypatch.setattr(pipeline.data.splits, "resolve_purge", lambda gap, k, lookback: 0)
    summary = run_step5(tmp_path, write_dataset, smoke_config)
    assert checks(summary) == {"split"}, summary["alarms"]
    messages = " ".join(a["message"] for a in summary["alarms"])
    assert "needs a purge gap of 21 bars" in messages  # smoothing_k 5 + lookback 16


@pytest.mark.integration
def test_shuffled_split_raises_the_split_alarm(
    tmp_path: Path, write_dataset: Any, smoke_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Train rows drawn at random from the train, val and test bars once passed every test. The bars
    the model is fit on reach into the test block."""
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


@pytest.mark.unit
def test_alarm_rows_and_dicts() -> None:
    a = Alarm("split", "gru", "fit bars reach bar 10")
    assert a.line() == "LEAK ALARM [split] gru: fit bars reach bar 10"
    assert alarm_lines([a.to_dict()]) == [a.line()]


@pytest.mark.unit
def test_split_check_passes_a_purged_chronological_split() -> None:
    fit, es, test = np.arange(0, 100), np.arange(121, 200), np.arange(221, 300)
    assert split_alarms("m", fit, es, test, 21) == []
    assert len(split_alarms("m", fit, es, np.arange(210, 300), 21)) == 1  # gap 10 < 21


@pytest.mark.unit
def test_scaler_check_matches_sklearn_on_the_fit_rows() -> None:
    from sklearn.preprocessing import StandardScaler

    x = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    good = StandardScaler().fit(x[:300].astype(np.float64))
    assert scaler_alarms(x, slice(0, 300), good.mean_, good.scale_) == []
    whole = StandardScaler().fit(x.astype(np.float64))
    assert len(scaler_alarms(x, slice(0, 300), whole.mean_, whole.scale_)) == 1


@pytest.mark.unit
def test_lookahead_check_names_bar_and_feature() -> None:
    inputs = np.zeros((10, 2))
    inputs[7, 1] = 0.5
    alarms = lookahead_alarms(lambda t: np.zeros(2), inputs, [3, 7], ["a", "b"])
    assert len(alarms) == 1 and "at 1 of 2 bars checked (bar 7, feature 'b'" in alarms[0].message


@pytest.mark.unit
def test_test_far_above_validation_and_implausible_sharpe() -> None:
    assert val_gap_alarms("m", 0.40, 0.38, 2000, 2000, 5) == []
    assert len(val_gap_alarms("m", 0.60, 0.38, 2000, 2000, 5)) == 1
    assert sharpe_alarms("agent", 1.2, 5.0) == []
    assert "Sharpe ratio 41.30" in sharpe_alarms("agent", 41.3, 5.0)[0].message


# ---------------------------------------------------------------- step 7: the env probe


def _block() -> Any:
    from pipeline.data.synthetic import generate_ohlcv
    from ppo_approach.trading_env import MarketData

    df = generate_ohlcv(600, signal=0.0, seed=5)
    n = len(df)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=n)  # (n, 3)
    return MarketData(df["open"].to_numpy(), df["close"].to_numpy(), probs, rng.normal(size=(n, 5)))


def _probe(action_set: str = "target") -> list[Alarm]:
    from ppo_approach import backtest
    from ppo_approach.leak_probe import env_probe_alarms
    from ppo_approach.reward_functions import RewardConfig
    from ppo_approach.trading_env import EnvConfig

    config = backtest.backtest_env_config(EnvConfig(action_set=action_set))
    n_actions = 3 if action_set == "target" else 9
    return env_probe_alarms(
        lambda d: backtest.block_env(d, config, RewardConfig()), _block(), n_actions
    )


@pytest.mark.unit
@pytest.mark.parametrize("action_set", ["target", "orders"])
def test_honest_env_passes_the_probe(action_set: str) -> None:
    assert _probe(action_set) == []


@pytest.mark.unit
def test_observation_of_the_next_bar_raises_the_observation_alarm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ppo_approach.trading_env import TradingEnv

    real = TradingEnv._observation
    monkeypatch.setattr(
        TradingEnv, "_observation", lambda self, t: real(self, min(t + 1, self._last))
    )
    alarms = _probe()
    assert [a.check for a in alarms] == ["observation"], alarms
    assert "the observation reads the future" in alarms[0].message


@pytest.mark.unit
def test_fill_before_the_decision_bar_raises_the_fill_alarm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Orders filled at the close of the bar they were decided on (a price already known)."""
    from ppo_approach.trading_env import TradingEnv

    real = TradingEnv._execute
    monkeypatch.setattr(
        TradingEnv, "_execute", lambda self, a, price: real(self, a, self._close[self._t])
    )
    alarms = _probe()
    assert [a.check for a in alarms] == ["fill"], alarms
    assert "filled at a price known before the decision" in alarms[0].message


@pytest.mark.unit
def test_leaky_rule_raises_the_sharpe_alarm() -> None:
    """A classifier rule that knows the next bar reaches a Sharpe ratio no honest rule does."""
    from ppo_approach import backtest
    from ppo_approach.leak_probe import agent_alarms
    from ppo_approach.reward_functions import RewardConfig
    from ppo_approach.trading_env import EnvConfig

    data = _block()
    up = np.append(data.close[1:] > data.open[1:], False)  # (n,) the next bar rises
    leaky = np.where(up[:, None], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1])
    config = backtest.backtest_env_config(EnvConfig(action_set="orders"))
    env = backtest.block_env(data, config, RewardConfig())
    runs = {
        "classifier_rule": [evaluation.run_episode(env, evaluation.ClassifierRulePolicy(leaky))]
    }
    report = {"strategies": backtest.summarise_runs(runs, 8760.0)}
    alarms = agent_alarms(report, 5.0)
    assert [a.subject for a in alarms] == ["classifier rule"], report
    assert report["strategies"]["classifier_rule"]["sharpe"] > 5.0


# ---------------------------------------------------------------- the driver: rows and --strict


def _plant_whole_series_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.preprocessing import StandardScaler

    import pipeline.classifiers.prepare

    def whole_series(features: np.ndarray, block: Any, lookback: int) -> StandardScaler:
        rows = np.asarray(features, dtype=np.float64)
        return StandardScaler().fit(rows[np.isfinite(rows).all(axis=1)])

    monkeypatch.setattr(pipeline.classifiers.prepare, "fit_scaler", whole_series)


@pytest.mark.integration
def test_driver_shows_alarm_rows_and_strict_exits_4(
    tmp_path: Path,
    write_dataset: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A warning row in step 5's table and the run summary; ``--strict`` makes it exit code 4
    with one line naming the alarm. The second run reuses the models: the checks still run."""
    import json

    import runpod_train

    _plant_whole_series_scaler(monkeypatch)
    write_dataset(tmp_path, "RW", signal=0.0, seed=0)
    args = ["--dataset", "RW", "--root", str(tmp_path), "--no-log-file", "--steps", "5"]
    args += ["--preset", "smoke", "--set", "num_threads=1", "--set", "leak_controls=false"]
    args += ["--set", "ppo_prediction_source=in_sample"]
    assert runpod_train.main(args) == 0
    summary_file = tmp_path / "results" / "run_summary_RW.json"
    summary = json.loads(summary_file.read_text())
    step5 = next(s for s in summary["steps"] if s["number"] == 5)
    assert step5["status"] == "warn"
    assert step5["result"].startswith("1 LEAK ALARM(S), see below; ")
    assert [a["check"] for a in summary["alarms"]] == ["scaler"]
    captured = capsys.readouterr()
    assert "LEAK ALARM [scaler] dataset: the scaler's statistics" in captured.out  # step 5 table
    table = captured.err.split("run summary (", 1)[1].split("runpod_train: plots:")[0]
    rows = table.strip().splitlines()
    assert rows[-2].startswith("LEAK ALARM [scaler] dataset:"), rows  # under the summary table

    assert runpod_train.main([*args, "--strict"]) == 4
    summary = json.loads(summary_file.read_text())
    step5 = next(s for s in summary["steps"] if s["number"] == 5)
    assert step5["status"] == "failed" and summary["exit_code"] == 4
    assert step5["result"].startswith("LEAK ALARM [scaler] dataset:")
    assert step5["result"].endswith(
        "stopped by --strict (strict_alarms), see "
        + str(tmp_path / "results" / "training_summary_RW.json")
    )
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: step 5 (train classifiers) failed: ")
    assert "LEAK ALARM [scaler]" in errors[0]


@pytest.mark.integration
def test_train_models_strict_is_one_line_and_exit_4(
    tmp_path: Path,
    write_dataset: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _plant_whole_series_scaler(monkeypatch)
    write_dataset(tmp_path, "RW", signal=0.0, seed=0)
    argv = ["--dataset", "RW", "--root", str(tmp_path), "--models", "gru", "--preset", "smoke"]
    argv += ["--set", "num_threads=1", "--set", "leak_controls=false", "--strict"]
    assert train_models.main(argv) == 4
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert errors == [err[-1]] and err[-1].startswith("error: LEAK ALARM [scaler] dataset:"), err
    assert (tmp_path / "results" / "training_summary_RW.json").is_file()  # kept for reading
