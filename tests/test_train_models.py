"""Step 5 end to end on small generated datasets: artifacts, metrics, honesty checks, smart skip.

Two trained roots are built once per session (``trained_signal`` / ``trained_random_walk``) and
shared with tests/test_prediction_wrapper.py; tests that change files work on a copy.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.common import Paths, PipelineError, sha256_file
from pipeline.config import MODEL_NAMES, Config, load_config, load_resolved
from pipeline.synthetic import generate_ohlcv, write_ohlcv_csv
from pytorch_train import TrainingInterrupted
from train_models import main, select_models, train_all

N_BARS = 3000
SETTINGS = ["epochs=3", "patience=3", "num_threads=1", "training.device=cpu"]
_CACHE: dict[str, tuple[Path, dict[str, Any], Config]] = {}


def write_dataset(root: Path, name: str, signal: float, seed: int, n: int = N_BARS) -> Path:
    """A generated OHLCV CSV at ``root/datasets/{name}.csv``."""
    return write_ohlcv_csv(
        generate_ohlcv(n, signal=signal, seed=seed), root / "datasets" / f"{name}.csv"
    )


def signal_config(*extra: str) -> Config:
    """Smoke sizes, 3 epochs; the agent uses the dlstm+bilstm ensemble (walk-forward)."""
    return load_config(None, None, "smoke", [*SETTINGS, "ppo.prediction_model=ensemble", *extra])


def trained_signal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Config]:
    """All four models trained on a planted-signal dataset (signal 1.0), walk-forward tables."""
    if "signal" not in _CACHE:
        root = tmp_path_factory.mktemp("signal")
        write_dataset(root, "SIG", signal=1.0, seed=0)
        cfg = signal_config()
        summary = train_all(cfg, "SIG", Paths.from_root(root), list(MODEL_NAMES))
        _CACHE["signal"] = (root, summary, cfg)
    return _CACHE["signal"]


def trained_random_walk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Config]:
    """All four models on a pure random walk (signal 0), in-sample prediction tables."""
    if "rw" not in _CACHE:
        root = tmp_path_factory.mktemp("rw")
        write_dataset(root, "RW", signal=0.0, seed=0)
        cfg = load_config(None, None, "smoke", [*SETTINGS, "ppo_prediction_source=in_sample"])
        summary = train_all(cfg, "RW", Paths.from_root(root), list(MODEL_NAMES))
        _CACHE["rw"] = (root, summary, cfg)
    return _CACHE["rw"]


@pytest.fixture(scope="module")
def signal_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Config]:
    return trained_signal(tmp_path_factory)


@pytest.fixture(scope="module")
def rw_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Config]:
    return trained_random_walk(tmp_path_factory)


METRICS_KEYS = {
    "model",
    "dataset",
    "dataset_sha256",
    "config_hash",
    "device",
    "best_epoch",
    "epochs_run",
    "train_seconds",
    "delta",
    "val",
    "test",
    "baselines",
    "beats_majority_on_val",
    "blocks",
    "dataset_info",
}


def _check_split_metrics(m: dict[str, Any]) -> None:
    assert set(m) >= {"accuracy", "macro_f1", "per_class", "confusion"}
    assert set(m["per_class"]) == {"Fall", "Stationary", "Rise"}
    cm = np.array(m["confusion"])
    assert cm.shape == (3, 3)
    supports = [m["per_class"][c]["support"] for c in ("Fall", "Stationary", "Rise")]
    assert cm.sum(axis=1).tolist() == supports
    assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    f1s = [m["per_class"][c]["f1"] for c in ("Fall", "Stationary", "Rise")]
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_file_metrics_history_and_plot(signal_run, name: str) -> None:
    root, summary, cfg = signal_run
    sha = sha256_file(root / "datasets" / "SIG.csv")
    payload = torch.load(
        root / "models" / f"{name}_SIG_classification.pth", map_location="cpu", weights_only=True
    )
    assert payload["model"] == name and payload["arch"]["name"] == name
    assert payload["arch"]["units"] == cfg.training.model_params(name)["units"]
    assert len(payload["feature_names"]) == 26 and payload["lookback"] == 16
    assert payload["dataset_sha256"] == sha
    assert payload["config_hash"] == cfg.training.hash_for_model(name)
    assert payload["label"]["k"] == 5 and payload["label"]["delta"] > 0
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
    resolved = load_resolved(root / "models" / f"{name}_SIG_config.txt")
    assert resolved.training.lookback == 16 and resolved.training.epochs == 3

    metrics = json.loads((root / "results" / f"metrics_{name}_SIG.json").read_text())
    assert set(metrics) >= METRICS_KEYS
    assert metrics["dataset_sha256"] == sha and metrics["device"] == "cpu"
    assert metrics["delta"] == pytest.approx(payload["label"]["delta"])
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 3
    for split in ("val", "test"):
        _check_split_metrics(metrics[split])
        for base in ("majority", "logreg"):
            _check_split_metrics(metrics["baselines"][base][split])
            # Baselines are scored on exactly the model's rows.
            # Same rows and labels: identical true-class counts (row sums of the confusion).
            base_cm = np.array(metrics["baselines"][base][split]["confusion"])
            assert (
                base_cm.sum(axis=1).tolist() == np.sum(metrics[split]["confusion"], axis=1).tolist()
            )
            assert base_cm.sum() > 0
    majority = metrics["baselines"]["majority"]["val"]
    assert sum(v > 0 for v in np.sum(majority["confusion"], axis=0)) == 1  # one class only
    assert metrics["beats_majority_on_val"] == (metrics["val"]["macro_f1"] > majority["macro_f1"])
    b = metrics["blocks"]
    purge = 5 + 16
    assert b["train"]["stop_bar"] + purge <= b["val"]["start_bar"]
    assert b["val"]["stop_bar"] + purge <= b["test"]["start_bar"]
    assert b["train"]["start_time"] < b["val"]["start_time"] < b["test"]["start_time"]
    assert metrics["dataset_info"]["rows"] == N_BARS

    history = json.loads((root / "results" / f"history_{name}_SIG.json").read_text())
    assert len(history["epochs"]) == metrics["epochs_run"]
    assert {"train_loss", "val_loss", "val_accuracy", "lr", "epoch_seconds"} <= set(
        history["epochs"][0]
    )
    png = (root / "results" / f"training_{name}_SIG.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    entry = summary["models"][name]
    assert entry["status"] == "trained" and entry["reason"] == "no model file"
    assert entry["test_macro_f1"] == pytest.approx(metrics["test"]["macro_f1"])
    assert set(entry["walk_forward"]) == {"fold1", "fold2"}


def test_summary_file_and_scaler(signal_run) -> None:
    root, summary, _ = signal_run
    on_disk = json.loads((root / "results" / "training_summary_SIG.json").read_text())
    assert on_disk["dataset"] == "SIG" and set(on_disk["models"]) == set(MODEL_NAMES)
    for entry in on_disk["models"].values():
        assert {
            "status",
            "reason",
            "val_macro_f1",
            "test_macro_f1",
            "majority_val_macro_f1",
            "majority_test_macro_f1",
            "logreg_test_macro_f1",
            "beats_majority_on_val",
        } <= set(entry)
    assert (root / "scalers" / "scaler_SIG.pkl").is_file()
    assert not list((root / "models" / "checkpoints").glob("*.pt"))  # removed once saved


def test_planted_signal_is_learned(signal_run) -> None:
    """On signal = 1.0 some model beats the majority baseline on test, and chance clearly.

    Chance macro-F1 with three balanced classes is about 1/3; its standard error on n test rows is
    about sqrt(p (1 - p) / n) with p = 1/3 (~0.02 for the ~590 test rows here). The best model must
    clear chance by 2 standard errors, besides beating the majority class.
    """
    root, summary, _ = signal_run
    entries = summary["models"]
    best = max(e["test_macro_f1"] for e in entries.values())
    assert any(e["test_macro_f1"] > e["majority_test_macro_f1"] for e in entries.values())
    n_test = sum(
        json.loads((root / "results" / "metrics_lstm_SIG.json").read_text())["test"]["per_class"][
            c
        ]["support"]
        for c in ("Fall", "Stationary", "Rise")
    )
    se = math.sqrt((1 / 3) * (2 / 3) / n_test)
    assert best > 1 / 3 + 2 * se, (best, se)


def test_random_walk_shows_no_leakage(rw_run) -> None:
    """On a pure random walk no model's test macro-F1 may be far above chance (leakage alarm).

    Nothing about the direction of a random walk is predictable from the past, so an honest
    pipeline scores about 1/3 (or less, when predictions pile onto one class). The standard error
    of macro-F1 on n test rows is about sqrt(p (1 - p) / n) with p = 1/3: about 0.02 for the ~590
    rows here. Tolerance: 3 standard errors (~0.06) above 1/3, wide enough for four models
    compared at once and for the little that GARCH volatility clustering makes the Stationary
    class predictable, tight enough that a leak (a label or a future bar in the window) would
    push scores well past it (the planted-signal dataset reaches ~0.4-0.5 with these sizes).
    """
    root, summary, _ = rw_run
    metrics = json.loads((root / "results" / "metrics_lstm_RW.json").read_text())
    n_test = sum(metrics["test"]["per_class"][c]["support"] for c in ("Fall", "Stationary", "Rise"))
    tolerance = 3 * math.sqrt((1 / 3) * (2 / 3) / n_test)
    for name, entry in summary["models"].items():
        assert entry["test_macro_f1"] < 1 / 3 + tolerance, (name, entry["test_macro_f1"])
    assert summary["prediction_source"] == "in_sample"


def test_smart_skip_retrains_only_what_changed(signal_run, tmp_path, caplog) -> None:
    src, _, _ = signal_run
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    paths = Paths.from_root(root)
    lstm_file = root / "models" / "lstm_SIG_classification.pth"
    before = lstm_file.stat().st_mtime_ns

    caplog.set_level("INFO")
    s = train_all(signal_config(), "SIG", paths, ["lstm", "gru"])
    assert {m: e["status"] for m, e in s["models"].items() if m in ("lstm", "gru")} == {
        "lstm": "skipped",
        "gru": "skipped",
    }
    assert s["models"]["gru"]["walk_forward"] == {"fold1": "skipped", "fold2": "skipped"}
    assert set(s["models"]) == set(MODEL_NAMES)  # earlier entries are kept in the summary

    caplog.clear()
    cfg = signal_config("gru_units=12")
    s = train_all(cfg, "SIG", paths, ["lstm", "gru"])
    assert s["models"]["gru"]["status"] == "trained"
    assert s["models"]["gru"]["reason"].startswith("config changed: hash ")
    assert s["models"]["lstm"]["status"] == "skipped"  # gru_units is not in lstm's hash
    assert lstm_file.stat().st_mtime_ns == before
    assert "gru: training (config changed: hash" in caplog.text
    gru = torch.load(root / "models" / "gru_SIG_classification.pth", weights_only=True)
    assert gru["arch"]["units"] == 12

    s = train_all(cfg, "SIG", paths, ["lstm"], force=True)
    assert (s["models"]["lstm"]["status"], s["models"]["lstm"]["reason"]) == ("trained", "--force")

    write_dataset(root, "SIG", signal=1.0, seed=5)
    s = train_all(cfg, "SIG", paths, ["gru"])
    assert (s["models"]["gru"]["status"], s["models"]["gru"]["reason"]) == (
        "trained",
        "dataset changed",
    )


def test_select_models() -> None:
    cfg = load_config(None, None, None, ["ppo.prediction_model=ensemble"])
    assert select_models(cfg, None) == ["dlstm", "bilstm"]
    assert select_models(load_config(None, None), None) == list(MODEL_NAMES)
    assert select_models(cfg, ["gru", "gru", "lstm"]) == ["gru", "lstm"]
    with pytest.raises(PipelineError, match="unknown model 'cnn'"):
        select_models(cfg, ["cnn"])


def test_cli_help_explains_every_flag(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--dataset", "--models", "--force", "--resume", "--root", "--set", "--preset"):
        assert flag in out


def test_cli_missing_dataset_is_one_error_line(tmp_path, capsys) -> None:
    (tmp_path / "datasets").mkdir()
    code = main(["--dataset", "NOPE", "--root", str(tmp_path), "--preset", "smoke"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: dataset 'NOPE' not found")
    assert "Traceback" not in "\n".join(err)


def test_cli_interrupt_exits_130_with_resume_hint(tmp_path, capsys, monkeypatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise TrainingInterrupted("gru interrupted; checkpoint of epoch 2 kept at x", None, 2)

    monkeypatch.setattr("train_models.train_all", interrupted)
    code = main(["--dataset", "SIG", "--root", str(tmp_path), "--models", "gru"])
    err = capsys.readouterr().err
    assert code == 130
    assert "checkpoint of epoch 2" in err
    assert "resume with: python train_models.py --dataset SIG --root" in err
    assert err.strip().endswith("--models gru --resume")


def test_cli_trains_with_preset(tmp_path, capsys) -> None:
    write_dataset(tmp_path, "TINY", signal=0.5, seed=3, n=1500)
    args = ["--dataset", "TINY", "--root", str(tmp_path), "--preset", "smoke", "--models", "gru"]
    code = main([*args, "--set", "num_threads=1", "--set", "ppo_prediction_source=in_sample"])
    assert code == 0
    out = capsys.readouterr().out
    assert "gru" in out and "trained" in out
    assert (tmp_path / "results" / "predictions_gru_TINY.csv").is_file()
