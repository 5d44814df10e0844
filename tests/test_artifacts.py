"""pipeline.store.artifacts: every artifact name as it is today and the dataset-name rule; the run
manifest is tests/test_manifest.py."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from pipeline.common import Paths, PipelineError
from pipeline.store import artifacts as art
from pipeline.store.artifacts import Artifacts, dataset_name

pytestmark = pytest.mark.unit


@pytest.fixture
def a(tmp_path: Path) -> Artifacts:
    return Artifacts(Paths(tmp_path), "BTC_1h")


def rel(a: Artifacts, path: Path) -> str:
    return path.relative_to(a.paths.root).as_posix()


def test_every_path_keeps_todays_name(a: Artifacts) -> None:
    expected = {
        a.classifier_model("lstm"): "models/lstm_BTC_1h_classification.pth",
        a.classifier_config("lstm"): "models/lstm_BTC_1h_config.txt",
        a.fold_model("gru", 2): "models/walkforward/gru_BTC_1h_fold2.pth",
        a.classifier_checkpoint("cnn"): "models/checkpoints/cnn_BTC_1h_main.ckpt.pt",
        a.classifier_checkpoint("cnn", "fold3"): "models/checkpoints/cnn_BTC_1h_fold3.ckpt.pt",
        a.scaler: "scalers/scaler_BTC_1h.json",
        a.legacy_scaler: "scalers/scaler_BTC_1h.pkl",
        a.metrics("dlstm"): "results/metrics_dlstm_BTC_1h.json",
        a.history("dlstm"): "results/history_dlstm_BTC_1h.json",
        a.training_plot("dlstm"): "results/training_dlstm_BTC_1h.png",
        a.training_summary: "results/training_summary_BTC_1h.json",
        a.prediction_table("lstm"): "results/predictions_lstm_BTC_1h.csv",
        a.prediction_table("ensemble"): "results/predictions_ensemble_BTC_1h.csv",
        a.ppo_model("lstm"): "ppo_approach/models/ppo_lstm_BTC_1h.zip",
        a.ppo_meta("lstm"): "ppo_approach/models/ppo_lstm_BTC_1h_meta.json",
        a.ppo_config("lstm"): "ppo_approach/models/ppo_lstm_BTC_1h_config.txt",
        a.ppo_checkpoint_dir("lstm"): "ppo_approach/checkpoints/lstm_BTC_1h",
        a.ppo_checkpoint("lstm", 4096): "ppo_approach/checkpoints/lstm_BTC_1h/checkpoint_4096.zip",
        a.ppo_best_model("lstm"): "ppo_approach/checkpoints/lstm_BTC_1h/best_model.zip",
        a.ppo_best_meta("lstm"): "ppo_approach/checkpoints/lstm_BTC_1h/best_model.json",
        a.ppo_checksums("lstm"): "ppo_approach/checkpoints/lstm_BTC_1h/checksums.json",
        a.ppo_run_config("lstm"): "ppo_approach/checkpoints/lstm_BTC_1h/run_config.json",
        a.ppo_previous_run_dir("lstm"): "ppo_approach/checkpoints/lstm_BTC_1h/.previous_run",
        a.tensorboard_dir: "ppo_approach/logs",
        a.backtest_report("ensemble"): "results/backtest_ensemble_BTC_1h.json",
        a.backtest_plot("ensemble"): "results/backtest_ensemble_BTC_1h.png",
        a.run_summary: "results/run_summary_BTC_1h.json",
        a.run_manifest: "results/run_manifest_BTC_1h.json",
        a.lock: "logs/run_BTC_1h.lock",
        a.run_log("20250102-030405"): "logs/run_BTC_1h_20250102-030405.log",
        a.train_log("20250102-030405"): "logs/train_BTC_1h_20250102-030405.log",
        a.orphan_log("20250102-030405"): "logs/train_BTC_1h_20250102-030405_parent_gone.log",
    }
    assert {rel(a, p): want for p, want in expected.items()} == {
        want: want for want in expected.values()
    }
    assert a.ppo_run_name("lstm") == "lstm_BTC_1h"
    assert a.tensorboard_name("lstm") == "ppo_lstm_BTC_1h"
    assert a.plot_glob == "*BTC_1h*.png"


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("BTC_1h", "BTC_1h"),
        ("/x/y/ETH.csv", "ETH"),
        ("x/SOL.CSV", "SOL"),
        ("datasets/my.data.csv", "my.data"),
        ("/x/y/raw_file", "raw_file"),
        ("  ADA  ", "ADA"),
    ],
)
def test_dataset_name_is_the_stem(given: str, name: str) -> None:
    assert dataset_name(given) == name
    assert Artifacts(Paths(Path("/r")), given).dataset == name


def test_the_run_lock_lives_where_artifacts_says() -> None:
    from pipeline.run import lock as runlock

    paths = Paths(Path("/r"))
    assert Artifacts(paths, "/x/y/ETH.csv").lock == runlock.lock_path(paths, "/x/y/ETH.csv")
    assert not hasattr(runlock, "dataset_name"), "one naming rule: pipeline.store.artifacts'"


def test_dataset_file_is_the_inverse_of_the_name_rule() -> None:
    path = art.dataset_file(Path("/r/datasets"), "BTC_1h")
    assert path == Path("/r/datasets/BTC_1h.csv")
    assert dataset_name(str(path)) == "BTC_1h"


def test_artifacts_from_a_path_name_files_after_the_stem(tmp_path: Path) -> None:
    a = Artifacts(Paths(tmp_path), str(tmp_path / "elsewhere" / "ETH.csv"))
    assert rel(a, a.classifier_model("lstm")) == "models/lstm_ETH_classification.pth"


@pytest.mark.parametrize("given", ["", "   ", ".csv", "/"])
def test_a_dataset_without_a_name_is_one_clear_error(given: str) -> None:
    with pytest.raises(PipelineError, match="expected a dataset name or a CSV path"):
        Artifacts(Paths(Path("/r")), given)


def test_checkpoint_names_parse_back() -> None:
    assert art.ppo_checkpoint_timesteps("checkpoint_2048.zip") == 2048
    for other in ("best_model.zip", "checkpoint_x.zip", "checkpoint_12.zip.tmp", "checksums.json"):
        assert art.ppo_checkpoint_timesteps(other) is None
    assert art.ppo_checkpoint_file(Path("d"), 7) == Path("d/checkpoint_7.zip")
    with pytest.raises(ValueError):
        art.ppo_checkpoint_file(Path("d"), -1)
    with pytest.raises(ValueError):
        Artifacts(Paths(Path("/r")), "BTC").classifier_checkpoint("lstm", "a_b")


def test_pending_checkpoints_match_the_whole_name(a: Artifacts, tmp_path: Path) -> None:
    folder = a.classifier_checkpoints_dir
    assert a.pending_classifier_checkpoints(["lstm"]) == []
    folder.mkdir(parents=True)
    for name in (
        "lstm_BTC_1h_main.ckpt.pt",
        "gru_BTC_1h_fold2.ckpt.pt",
        "lstm_BTC_1h_USDT_main.ckpt.pt",  # another dataset whose name starts with ours
        "cnn_BTC_1h_main.ckpt.pt",  # a model not asked for
    ):
        (folder / name).write_bytes(b"x")
    found = [p.name for p in a.pending_classifier_checkpoints(["lstm", "gru"])]
    assert found == ["gru_BTC_1h_fold2.ckpt.pt", "lstm_BTC_1h_main.ckpt.pt"]
    assert a.pending_classifier_checkpoints([]) == []


def test_tensorboard_runs_in_run_order(a: Artifacts) -> None:
    for name in ("ppo_lstm_BTC_1h_10", "ppo_lstm_BTC_1h_2", "ppo_lstm_BTC_1h_USDT_1"):
        (a.tensorboard_dir / name).mkdir(parents=True)
    assert [p.name for p in a.tensorboard_runs("lstm")] == [
        "ppo_lstm_BTC_1h_2",
        "ppo_lstm_BTC_1h_10",
    ]
    assert a.tensorboard_runs("gru") == []


def test_plots_lists_the_datasets_pngs(a: Artifacts) -> None:
    assert a.plots() == []
    for p in (a.training_plot("lstm"), a.backtest_plot("lstm"), a.metrics("lstm")):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"png")
    assert a.plots() == sorted([a.backtest_plot("lstm"), a.training_plot("lstm")])


def test_log_stamp_format() -> None:
    assert art.log_stamp(datetime(2025, 1, 2, 3, 4, 5)) == "20250102-030405"
