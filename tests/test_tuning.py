"""tune.py and pipeline/tuning/study.py, pipeline/tuning/space.py: search-space files, the
development-only data, the worker loop over a shared storage (two workers, a killed worker's trial
retried, pruning), the outputs and the best-parameter file going through the normal parser."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest

import train_models
import tune
from pipeline.common import Paths, PipelineError
from pipeline.config.files import load_config, passthrough_args, read_config_file
from pipeline.config.schema import ConfigError, TrainingConfig
from pipeline.data.features import DEFAULT_FEATURES, warmup_bars
from pipeline.data.splits import make_splits
from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
from pipeline.store.artifacts import Artifacts
from pipeline.tuning import development, trials
from pipeline.tuning import storage as tuning_storage
from pipeline.tuning import study as tuning
from pipeline.tuning.space import default_space_path, read_search_space

ROOT = Path(__file__).resolve().parent.parent
DATASET = "TUNE-TEST_1H"
PPO_DATASET = "RW-TEST_1H"
"""The dataset of the ``ppo_source_root`` fixture (tests/conftest.py)."""
SMOKE = ["--preset", "smoke", "--set", "num_threads=1", "--set", "training.device=cpu"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _root(tmp: Path, n: int = 2500, signal_strength: float = 1.0) -> Path:
    (tmp / "datasets").mkdir(parents=True, exist_ok=True)
    write_ohlcv_csv(
        generate_ohlcv(n, signal=signal_strength, seed=0), tmp / "datasets" / f"{DATASET}.csv"
    )
    return tmp


def _space(tmp: Path, text: str, name: str = "space.txt") -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


CLASSIFIER_SPACE = """# tiny space for tests
[training]
learning_rate = float 1e-3 1e-2 log
dlstm_units = int 4 12
lookback = int 16 24 step 8
"""


def _study(root: Path, stage: str, name: str, dataset: str = DATASET) -> optuna.Study:
    folder = Artifacts(Paths.from_root(root), dataset).tuning_dir(stage)
    url = f"sqlite:///{folder / 'optuna.db'}"
    return optuna.load_study(study_name=name, storage=url)


# ================================================================ search-space files


@pytest.mark.unit
def test_bundled_spaces_load_and_the_classifier_study_keeps_one_architecture() -> None:
    agent = read_search_space(default_space_path("agent"))
    assert {"ppo.learning_rate", "ppo.n_steps", "ppo.gamma", "ppo.ent_coef"} <= set(agent.names())
    space = tune.stage_space(
        read_search_space(default_space_path("classifier")), "classifier", "gru"
    )
    names = set(space.names())
    assert {"training.learning_rate", "training.batch_size", "training.lookback"} <= names
    assert {"training.gru_units", "training.gru_layers", "training.gru_dropout"} <= names
    assert not any(n.startswith(("training.lstm_", "training.dlstm_")) for n in names)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("learning_rat = float 1e-4 1e-2 log", "unknown key 'learning_rat'"),
        ("gamma = float 0.99 0.9", "empty range"),
        ("ent_coef = float 0 0.1 log", "a log range needs LOW > 0"),
        ("gamma = normal 0.9 0.99", "unknown distribution 'normal'"),
        ("gamma = float 0.9 1.5", "gamma = float 0.9 1.5: 1.5 is out of range; expected <= 1"),
        ("batch_size = choice 64 | 128", "is in both training_config.txt and ppo_config.txt"),
        ("n_epochs = float 1 5", "n_epochs is an integer; use 'int LOW HIGH'"),
        ("net_arch = int 1 5", "net_arch is not a number"),
        ("n_steps = choice 64", "expected at least two non-empty choices"),
        ("n_steps = int 64", "expected 'int LOW HIGH"),
        ("n_steps = int 64 128 step 3", "not a multiple of step 3"),
    ],
)
def test_a_bad_space_line_is_one_error_naming_file_and_line(
    tmp_path: Path, line: str, expected: str
) -> None:
    path = _space(tmp_path, f"# a comment\n[ppo]\nlearning_rate = float 1e-5 1e-3 log\n{line}\n")
    if line.startswith("batch_size"):  # without a section the key is ambiguous
        path = _space(tmp_path, f"# a comment\n\ngamma = float 0.9 0.99\n{line}\n")
    with pytest.raises(ConfigError) as err:
        read_search_space(path)
    assert str(err.value).startswith(f"{path}:4: ")
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.unit
def test_a_key_of_the_other_stage_is_refused_with_its_line(tmp_path: Path) -> None:
    path = _space(tmp_path, "[ppo]\ngamma = float 0.9 0.99\n[training]\nlookback = int 8 16\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: training.lookback is a training key"):
        tune.stage_space(read_search_space(path), "agent", None)
    for line in (
        "price_feature_scaling = choice none | train_zscore",  # the agent's data
        "profit_scale = float 1 100",  # the reward: the measure itself
        "total_timesteps = int 1000 5000",  # the budget
    ):
        path = _space(tmp_path, f"[ppo]\n{line}\n")
        with pytest.raises(ConfigError, match=rf"^{path}:2: .* cannot be tuned in the agent stage"):
            tune.stage_space(read_search_space(path), "agent", None)
    for line in ("test_fraction = float 0.1 0.3", "smoothing_k = int 3 8", "epochs = int 2 9"):
        path = _space(tmp_path, f"[training]\n{line}\n")
        with pytest.raises(ConfigError, match=rf"^{path}:2: .* cannot be tuned in the classifier"):
            tune.stage_space(read_search_space(path), "classifier", "dlstm")


@pytest.mark.unit
def test_sampled_values_are_config_overrides_the_parser_accepts(tmp_path: Path) -> None:
    space = read_search_space(default_space_path("agent"))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    for _ in range(5):
        trial = study.ask()
        cfg = load_config(None, None, "smoke", space.suggest(trial))
        assert cfg.ppo.learning_rate == trial.params["ppo.learning_rate"]
        assert cfg.ppo.net_arch == tuple(int(v) for v in trial.params["ppo.net_arch"].split(","))
        study.tell(trial, 0.0)


# ================================================================ development data only


@pytest.mark.unit
@pytest.mark.parametrize("n_rows", [1500, 2500, 17_520])
def test_development_rows_end_before_every_test_window_of_every_lookback(n_rows: int) -> None:
    cfg = TrainingConfig()
    warm = warmup_bars(list(DEFAULT_FEATURES))
    lookbacks = list(range(16, 65, 8))
    cut = development.development_rows(n_rows, warm, cfg, lookbacks)
    for lookback in lookbacks:
        s = make_splits(n_rows, warm, lookback, cfg.smoothing_k, cfg.test_fraction,
                        cfg.val_fraction, cfg.purge_gap, cfg.walk_forward_folds)  # fmt: skip
        assert cut <= s.test.start - lookback + 1  # no row any test window reads
        d = development.development_splits(
            cut, warm, lookback, cfg.smoothing_k, cfg.val_fraction, None
        )
        assert d.val.stop - 1 + cfg.smoothing_k < cut  # every label inside the cut rows
        assert d.train.stop + d.purge <= d.val.start


def _test_block_start(root: Path, lookbacks: list[int]) -> pd.Timestamp:
    """Timestamp of the first row any test window reads (full pipeline split, any lookback)."""
    df = pd.read_csv(root / "datasets" / f"{DATASET}.csv")
    cfg = load_config(None, None, "smoke").training
    warm = warmup_bars(cfg.resolved_features())
    first = min(
        make_splits(len(df), warm, lb, cfg.smoothing_k, cfg.test_fraction, cfg.val_fraction,
                    cfg.purge_gap, cfg.walk_forward_folds).test.start - lb + 1
        for lb in lookbacks
    )  # fmt: skip
    return pd.Timestamp(df["timestamp"].iloc[first], tz="UTC")


@pytest.mark.integration
def test_no_test_block_row_reaches_a_classifier_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every frame whose features are computed and every window a trial trains or validates on
    is recorded: none reaches the first row of a test window (for any lookback of the space)."""
    import pipeline.classifiers.windows
    import pipeline.data.features

    root = _root(tmp_path)
    space = _space(tmp_path, CLASSIFIER_SPACE)
    seen_frames: list[pd.Timestamp] = []
    seen_windows: list[int] = []
    real_features = pipeline.data.features.compute_features
    real_create = pipeline.classifiers.windows.WindowData.create

    def record_features(df: pd.DataFrame, *a: Any, **k: Any) -> Any:
        seen_frames.append(pd.Timestamp(df["timestamp"].max()))
        return real_features(df, *a, **k)

    def record_windows(scaled: np.ndarray, bars: np.ndarray, *a: Any, **k: Any) -> Any:
        seen_windows.append(len(scaled))  # rows the trial's arrays hold
        assert int(bars.max()) < len(scaled)
        return real_create(scaled, bars, *a, **k)

    monkeypatch.setattr(pipeline.data.features, "compute_features", record_features)
    monkeypatch.setattr(
        pipeline.classifiers.windows.WindowData, "create", staticmethod(record_windows)
    )
    argv = ["--dataset", DATASET, "--root", str(root), "--stage", "classifier", "--model",
            "dlstm", "--trials", "2", "--space", str(space), *SMOKE]  # fmt: skip
    assert tune.main(argv) == 0
    first_test_row = _test_block_start(root, [16, 24])
    assert seen_frames and seen_windows
    assert max(seen_frames) < first_test_row
    df = pd.read_csv(root / "datasets" / f"{DATASET}.csv")
    cut = int((pd.to_datetime(df["timestamp"], utc=True) < first_test_row).sum())
    assert max(seen_windows) <= cut
    study = _study(root, "classifier", f"classifier_dlstm_{DATASET}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


@pytest.mark.integration
def test_no_test_block_bar_reaches_an_agent_trial(
    ppo_source_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every environment an agent trial builds (training and validation) is recorded: none holds
    a bar of the agent's test block, and the trial's run has no test block at all."""
    from ppo_approach import agent_report, train_ppo_agent
    from ppo_approach.trading_env import TradingEnv

    root = tmp_path / "root"
    shutil.copytree(ppo_source_root, root)
    table = pd.read_csv(root / "results" / f"predictions_dlstm_{PPO_DATASET}.csv")
    test_start = pd.to_datetime(table.loc[table["agent_block"] == "test", "timestamp"]).min()
    seen: list[pd.Timestamp] = []
    blocks_seen: list[set[str]] = []
    real_init = TradingEnv.__init__
    real_train = train_ppo_agent.train

    def record_env(self: Any, data: Any, *a: Any, **k: Any) -> None:
        seen.append(pd.Timestamp(data.timestamps.max(), tz="UTC"))
        real_init(self, data, *a, **k)

    def record_train(run: Any, *a: Any, **k: Any) -> Any:
        blocks_seen.append(set(run.blocks))
        return real_train(run, *a, **k)

    monkeypatch.setattr(TradingEnv, "__init__", record_env)
    monkeypatch.setattr(train_ppo_agent, "train", record_train)
    monkeypatch.setattr(agent_report, "run_backtest", _forbidden)
    monkeypatch.setattr(train_ppo_agent, "train_agent", _forbidden)
    space = _space(tmp_path, "[ppo]\nlearning_rate = float 1e-4 1e-3 log\n")
    argv = ["--dataset", PPO_DATASET, "--root", str(root), "--stage", "agent", "--trials", "2",
            "--space", str(space), "--preset", "smoke", "--set", "ppo.device=cpu",
            "--set", "total_timesteps=1024", "--set", "eval_freq=512"]  # fmt: skip
    assert tune.main(argv) == 0
    assert seen and max(seen) < test_start
    assert blocks_seen == [{"train", "val"}, {"train", "val"}]
    study = _study(root, "agent", f"agent_{PPO_DATASET}", PPO_DATASET)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    # Intermediate values at each evaluation (what the pruner sees), the warm-started policy's
    # evaluation before any PPO update included (step 0 is a candidate too)
    assert sorted(study.trials[0].intermediate_values) == [0, 512, 1024]
    assert not any((root / "results" / f"tuning_agent_{PPO_DATASET}" / "trials").iterdir())


def _forbidden(*_a: Any, **_k: Any) -> None:
    raise AssertionError("a trial touched the test block")


# ================================================================ storage and workers


def _fake(values: dict[int, float]) -> Any:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("ppo.learning_rate", 1e-5, 1e-2, log=True)
        values[trial.number] = x
        return -abs(np.log10(x) + 3)

    return objective


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_run_worker_stops_at_the_study_target_and_a_rerun_continues(
    tmp_path: Path, kind: str
) -> None:
    spec = str(tmp_path / "s.db") if kind == "sqlite" else f"journal:{tmp_path / 's.journal'}"
    url = tuning_storage.storage_url(spec, tmp_path / "unused.db")
    study = optuna.create_study(storage=tuning_storage.open_storage(url), direction="maximize")
    seen: dict[int, float] = {}
    res = tuning.run_worker(study, _fake(seen), 3)
    assert (res.trials_run, res.stopped_by) == (3, "trials")
    res = tuning.run_worker(study, _fake(seen), 3)  # nothing left to do
    assert res.trials_run == 0
    res = tuning.run_worker(study, _fake(seen), 5)  # a larger target continues the study
    assert res.trials_run == 2
    assert trials.counts(study) == {"COMPLETE": 5}


@pytest.mark.unit
def test_a_trial_beyond_the_target_is_marked_surplus_and_stops_the_worker(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"ppo.learning_rate": 1e-3})
    running = study.ask()  # another worker holds the only place of a 1-trial study
    assert running.number == 0
    study.enqueue_trial({"ppo.learning_rate": 1e-4})  # queued: this worker must run it
    seen: dict[int, float] = {}
    res = tuning.run_worker(study, _fake(seen), 2)
    assert res.trials_run == 1
    study.tell(running, 0.0)
    assert tuning.is_surplus(study, 99, 2)
    assert not tuning.is_surplus(study, 1, 2)


@pytest.mark.unit
def test_too_many_failures_in_a_row_stop_with_the_last_error() -> None:
    study = optuna.create_study(direction="maximize")

    def bad(trial: optuna.Trial) -> float:
        raise ConfigError(f"trial {trial.number}: n_steps too small")

    with pytest.raises(PipelineError, match=r"3 trials failed in a row .*n_steps too small"):
        tuning.run_worker(study, bad, 10)


@pytest.mark.unit
def test_storage_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="not a storage"):
        tuning_storage.storage_url("results/study.txt", tmp_path / "x.db")
    with pytest.raises(PipelineError, match=r"^--storage nosuchdb://x: cannot open"):
        tuning_storage.open_storage("nosuchdb://x")
    with pytest.raises(PipelineError) as err:
        tuning_storage.open_storage("nosuchdb://user:s3cret@host/db")
    assert "s3cret" not in str(err.value)
    assert str(err.value).startswith("--storage nosuchdb://***@host/db: cannot open")


@pytest.mark.unit
def test_usage_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        tune.main(["--dataset", "X", "--stage", "everything", "--trials", "3"])
    assert exc.value.code == 1
    assert tune.main(["--dataset", "X", "--stage", "agent", "--trials", "0"]) == 1
    assert "error: --trials 0: expected an integer >= 1" in capsys.readouterr().err


# ================================================================ several processes


def _tune_cmd(root: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "tune.py"), "--dataset", DATASET, "--root", str(root),
            "--stage", "classifier", "--model", "dlstm", *SMOKE, *extra]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PIPELINE_PROGRESS": "log"}


@pytest.fixture(scope="module")
def two_worker_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study]:
    """``tune.py --jobs 2`` on one SQLite storage: 4 classifier trials, two of them queued
    before the workers start (both workers race for them: each must run once)."""
    tmp = tmp_path_factory.mktemp("jobs")
    root = _root(tmp)
    space = _space(tmp, CLASSIFIER_SPACE)
    folder = Artifacts(Paths.from_root(root), DATASET).tuning_dir("classifier")
    folder.mkdir(parents=True)
    queued = optuna.create_study(
        study_name=f"classifier_dlstm_{DATASET}",
        storage=f"sqlite:///{folder / 'optuna.db'}",
        direction="maximize",
    )
    for units in (5, 9):
        queued.enqueue_trial(
            {"training.learning_rate": 3e-3, "training.dlstm_units": units, "training.lookback": 16}
        )
    cmd = _tune_cmd(root, "--trials", "4", "--jobs", "2", "--space", str(space))
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, _study(root, "classifier", f"classifier_dlstm_{DATASET}")


@pytest.mark.integration
def test_two_workers_on_one_storage_complete_n_trials_none_twice(
    two_worker_study: tuple[Path, optuna.Study],
) -> None:
    _root_dir, study = two_worker_study
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    others = [t for t in study.trials if t not in finished]
    assert len(finished) == 4
    assert all(t.user_attrs.get("surplus") for t in others)  # a lost race, never a rerun
    assert len({t.number for t in finished}) == 4
    params = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(params)) == 4  # no parameter set ran twice
    workers = {t.user_attrs["worker"] for t in finished}
    assert len(workers) == 2  # both processes ran trials


@pytest.mark.integration
def test_outputs_and_the_best_parameter_file_changes_the_run(
    two_worker_study: tuple[Path, optuna.Study], tmp_path: Path
) -> None:
    root, study = two_worker_study
    out = root / "results" / f"tuning_classifier_{DATASET}" / "dlstm"
    for name in ("best_params.txt", "optimization_history.png", "param_importances.png",
                 "top_trials.md", "command.txt", "summary.json"):  # fmt: skip
        assert (out / name).is_file(), name
    best = study.best_trial
    table = (out / "top_trials.md").read_text()
    assert f"| 1 | {best.number} | {best.value:.5g} |" in table
    command = (out / "command.txt").read_text().strip()
    assert command.startswith(f"python runpod_main.py --dataset {DATASET} --preset smoke")
    assert command.endswith(f"--set-file {out / 'best_params.txt'}")
    # The file loads through the normal parser, with file:line as each value's source ...
    cfg = load_config(None, None, "smoke", [], [out / "best_params.txt"])
    assert cfg.training.dlstm_units == best.params["training.dlstm_units"]
    assert cfg.training.lookback == best.params["training.lookback"]
    assert cfg.training.learning_rate == best.params["training.learning_rate"]
    assert cfg.sources["training.lookback"].startswith(f"{out / 'best_params.txt'}:")
    # The run deflates its agent's Sharpe for every complete trial of the study
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert f"configurations_tried = {complete}" in (out / "best_params.txt").read_text()
    assert cfg.ppo.configurations_tried == complete > 1
    # ... and changes what a step trains (train_models.py --set-file), written beside the model.
    run_root = tmp_path / "run"
    shutil.copytree(root / "datasets", run_root / "datasets")
    best_file = str(out / "best_params.txt")
    argv = ["--dataset", DATASET, "--root", str(run_root), "--models", "dlstm", "--preset",
            "smoke", "--set", "num_threads=1", "--set-file", best_file]  # fmt: skip
    assert train_models.main(argv) == 0
    resolved = read_config_file_training(run_root / "models" / f"dlstm_{DATASET}_config.txt")
    assert resolved["dlstm_units"] == best.params["training.dlstm_units"]
    assert resolved["lookback"] == best.params["training.lookback"]


def read_config_file_training(path: Path) -> dict[str, Any]:
    from pipeline.config.files import load_resolved

    cfg = load_resolved(path)
    return {"dlstm_units": cfg.training.dlstm_units, "lookback": cfg.training.lookback}


def _running_trials(db: Path) -> list[int]:
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as con:
            rows = con.execute("SELECT number FROM trials WHERE state = 'RUNNING'").fetchall()
    except sqlite3.OperationalError:
        return []
    return [r[0] for r in rows]


@pytest.mark.integration
def test_a_worker_killed_mid_trial_leaves_a_trial_the_next_run_retries(tmp_path: Path) -> None:
    root = _root(tmp_path)
    space = _space(tmp_path, CLASSIFIER_SPACE)
    db = root / "results" / f"tuning_classifier_{DATASET}" / "optuna.db"
    # Long trials (many epochs, no early stop): the worker is killed while one runs.
    slow = ["--set", "epochs=500", "--set", "patience=500"]
    proc = subprocess.Popen(
        _tune_cmd(root, "--trials", "1", "--heartbeat", "1", "--space", str(space), *slow),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not _running_trials(db):
            assert proc.poll() is None, "the worker ended before its trial ran"
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    study = _study(root, "classifier", f"classifier_dlstm_{DATASET}")
    (killed,) = study.trials
    assert killed.state.name == "RUNNING"  # nobody told the storage: only the heartbeat stops
    time.sleep(2.5)  # past the grace period (2 heartbeats)
    rerun = _tune_cmd(root, "--trials", "1", "--heartbeat", "1", "--space", str(space))
    done = subprocess.run(rerun, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    study = _study(root, "classifier", f"classifier_dlstm_{DATASET}")
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "COMPLETE"]
    retry = study.trials[1]
    assert tuning_storage.retried_from(retry) == killed.number
    assert retry.params == killed.params


@pytest.mark.integration
def test_pruning_stops_a_deliberately_bad_trial(tmp_path: Path) -> None:
    """Five good trials, then one with learning_rate = 1 (diverges to one class): the median
    pruner stops it after its first epoch; the good ones ran all their epochs. The sampler is
    seeded: the trials also draw the DLSTM's other settings (layers, dropout ...), and with a
    random sampler the bad trial's first epoch sometimes scored above the median of five good
    trials' (0.38 against 0.35), so it was stopped only after its last."""
    root = _root(tmp_path)
    space = _space(tmp_path, "[training]\nlearning_rate = float 1e-4 1 log\n")
    folder = Artifacts(Paths.from_root(root), DATASET).tuning_dir("classifier")
    folder.mkdir(parents=True)
    name = f"classifier_dlstm_{DATASET}"
    study = optuna.create_study(
        study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}", direction="maximize"
    )
    for _ in range(5):
        study.enqueue_trial({"training.learning_rate": 3e-3})
    study.enqueue_trial({"training.learning_rate": 1.0})
    argv = ["--dataset", DATASET, "--root", str(root), "--stage", "classifier", "--model",
            "dlstm", "--trials", "6", "--space", str(space), *SMOKE, "--set", "epochs=4",
            "--set", "patience=4", "--seed", "1"]  # fmt: skip
    assert tune.main(argv) == 0
    study = _study(root, "classifier", name)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE"] * 5 + ["PRUNED"]
    assert all(len(t.intermediate_values) == 4 for t in study.trials[:5])
    assert len(study.trials[5].intermediate_values) < 4


@pytest.mark.unit
def test_set_file_passes_through_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """runpod_main.py starts the driver in the project folder: a relative --set-file given in
    another folder reaches it as an absolute path (passthrough_args)."""
    (tmp_path / "best.txt").write_text("[training]\nlookback = 24\n")
    monkeypatch.chdir(tmp_path)
    args = train_models.build_parser().parse_args(["--dataset", "X", "--set-file", "best.txt"])
    out = passthrough_args(args)
    i = out.index("--set-file")
    assert out[i + 1] == str(tmp_path / "best.txt")
    assert read_config_file(tmp_path / "best.txt", TrainingConfig)["lookback"][0] == 24


@pytest.mark.integration
def test_sigterm_fails_the_running_trial_queues_it_again_and_exits_130(tmp_path: Path) -> None:
    root = _root(tmp_path)
    space = _space(tmp_path, CLASSIFIER_SPACE)
    db = root / "results" / f"tuning_classifier_{DATASET}" / "optuna.db"
    slow = ["--set", "epochs=500", "--set", "patience=500"]
    proc = subprocess.Popen(
        _tune_cmd(root, "--trials", "1", "--space", str(space), *slow),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not _running_trials(db):
        assert proc.poll() is None, "the worker ended before its trial ran"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "trial 0 interrupted: marked failed and queued again" in err
    study = _study(root, "classifier", f"classifier_dlstm_{DATASET}")
    assert [t.state.name for t in study.trials] == ["FAIL", "WAITING"]
    assert study.trials[1].user_attrs["retry_of"] == 0
