"""pipeline.artifacts: every artifact name as it is today, the dataset-name rule, the run manifest
(issue 9 item 2)."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime
from pathlib import Path

import pytest

from pipeline import artifacts as art
from pipeline.artifacts import (
    KINDS,
    STEP_AGENT,
    STEP_CLASSIFIERS,
    STEP_DRIVER,
    UP_TO_DATE,
    WRITTEN,
    Artifacts,
    Manifest,
    ManifestError,
    dataset_name,
)
from pipeline.common import Paths, PipelineError


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


def test_dataset_name_agrees_with_the_run_lock() -> None:
    """Until runlock imports it from here, its copy must give the same names."""
    from pipeline import runlock

    for given in ("BTC_1h", "/x/y/ETH.csv", "x/SOL.CSV", "datasets/my.data.csv", "raw"):
        assert dataset_name(given) == runlock.dataset_name(given)
    paths = Paths(Path("/r"))
    assert Artifacts(paths, "/x/y/ETH.csv").lock == runlock.lock_path(paths, "/x/y/ETH.csv")


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


# ---------------------------------------------------------------- the manifest


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_manifest_round_trip_with_sha256_and_size(a: Artifacts) -> None:
    model = _write(a.classifier_model("lstm"), b"weights")
    scaler = _write(a.scaler, b'{"mean": [0]}')
    m = a.manifest(run="2025-01-02T03:04:05+00:00")
    entry = m.record(model, "classifier_model", STEP_CLASSIFIERS)
    assert entry.path == "models/lstm_BTC_1h_classification.pth"
    assert entry.sha256 == hashlib.sha256(b"weights").hexdigest()
    assert entry.size == len(b"weights")
    assert entry.status == WRITTEN and entry.run == "2025-01-02T03:04:05+00:00"
    # relative to the root works as well; a skipped artifact is recorded as up to date
    m.record("scalers/scaler_BTC_1h.json", "scaler", STEP_CLASSIFIERS, status=UP_TO_DATE)

    again = Manifest.load(a.run_manifest, a.paths.root)
    assert again.entries() == m.entries()
    assert again.dataset == "BTC_1h"
    assert [e.path for e in again.entries()] == [
        "models/lstm_BTC_1h_classification.pth",
        "scalers/scaler_BTC_1h.json",
    ]
    (sc,) = again.entries(kind="scaler")
    assert sc.status == UP_TO_DATE and sc.size == scaler.stat().st_size
    assert again.entries(step=STEP_AGENT) == []

    doc = json.loads(a.run_manifest.read_text(encoding="utf-8"))
    assert doc["format"] == 1 and doc["dataset"] == "BTC_1h"
    first = doc["entries"][0]
    assert {k: first[k] for k in ("path", "kind", "step", "sha256", "size")} == {
        "path": "models/lstm_BTC_1h_classification.pth",
        "kind": "classifier_model",
        "step": "train_models",
        "sha256": hashlib.sha256(b"weights").hexdigest(),
        "size": 7,
    }


def test_recording_again_replaces_the_entry_and_keeps_the_others(a: Artifacts) -> None:
    model = _write(a.classifier_model("lstm"), b"v1")
    _write(a.metrics("lstm"), b"{}")
    m = a.manifest()
    m.record_many([(model, "classifier_model"), (a.metrics("lstm"), "metrics")], STEP_CLASSIFIERS)
    model.write_bytes(b"version 2")
    m.record(model, "classifier_model", STEP_CLASSIFIERS)
    entries = {e.path: e for e in m.entries()}
    assert len(entries) == 2
    assert entries[rel(a, model)].size == len(b"version 2")


def test_manifest_rewrite_is_atomic(a: Artifacts, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _write(a.classifier_model("lstm"), b"w")
    m = a.manifest()
    m.record(model, "classifier_model", STEP_CLASSIFIERS)
    before = a.run_manifest.read_bytes()

    def crash(*_args: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr("pipeline.common.os.replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        m.record(_write(a.scaler, b"s"), "scaler", STEP_CLASSIFIERS)
    monkeypatch.undo()
    assert a.run_manifest.read_bytes() == before, "the old manifest is untouched"
    assert [p.name for p in a.run_manifest.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert [e.kind for e in a.manifest().entries()] == ["classifier_model"]


def test_two_writers_in_one_process_lose_nothing(a: Artifacts) -> None:
    files = [_write(a.metrics(f"m{i}"), str(i).encode()) for i in range(24)]
    driver, step = a.manifest(run="r"), a.manifest(run="r")

    def work(writer: Manifest, chunk: list[Path]) -> None:
        for f in chunk:
            writer.record(f, "metrics", STEP_CLASSIFIERS)

    threads = [
        threading.Thread(target=work, args=(w, files[i::4]))
        for i, w in enumerate([driver, step, driver, step])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e.path for e in driver.entries()) == sorted(rel(a, f) for f in files)


def test_push_files_missing_and_changed(a: Artifacts) -> None:
    model = _write(a.ppo_model("lstm"), b"agent")
    ckpt = _write(a.ppo_checkpoint("lstm", 100), b"ckpt")
    log = _write(a.run_log("20250101-000000"), b"line 1\n")
    summary = _write(a.training_summary, b"{}")
    m = a.manifest()
    m.record(model, "ppo_model", STEP_AGENT)
    m.record(ckpt, "ppo_checkpoint", STEP_AGENT)
    m.record(log, "log", STEP_DRIVER)
    m.record(summary, "training_summary", STEP_CLASSIFIERS)
    assert m.push_files() == sorted([model, log, summary, a.run_manifest])

    log.write_bytes(b"line 1\nline 2\n")  # a live kind: growing is not a change
    summary.write_bytes(b'{"edited": true}')
    assert [e.path for e in m.changed()] == [rel(a, summary)]

    ckpt.unlink()  # pruned
    assert [e.path for e in m.missing()] == [rel(a, ckpt)]
    assert [e.path for e in m.prune_missing()] == [rel(a, ckpt)]
    assert m.missing() == [] and len(m.entries()) == 3
    assert [e.path for e in m.forget(model)] == [rel(a, model)]
    assert m.forget(model) == []


def test_record_tree_takes_the_event_files(a: Artifacts) -> None:
    run = a.tensorboard_dir / "ppo_lstm_BTC_1h_1"
    ev = _write(run / "events.out.tfevents.1.host", b"ev")
    _write(run / ".hidden", b"h")
    _write(run / "x.tmp", b"t")
    entries = a.manifest().record_tree(
        run, "tensorboard", STEP_AGENT, pattern=art.TENSORBOARD_EVENTS_GLOB
    )
    assert [e.path for e in entries] == [rel(a, ev)]
    assert KINDS["tensorboard"].pushed


def test_record_refuses_what_it_cannot_vouch_for(a: Artifacts, tmp_path: Path) -> None:
    m = a.manifest()
    with pytest.raises(ManifestError, match="file not found"):
        m.record(a.scaler, "scaler", STEP_CLASSIFIERS)
    outside = _write(tmp_path.parent / f"{tmp_path.name}-other" / "x.json", b"{}")
    with pytest.raises(ManifestError, match="not under the artifact root"):
        m.record(outside, "metrics", STEP_CLASSIFIERS)
    with pytest.raises(ManifestError, match="not under the artifact root"):
        m.record("../escape.json", "metrics", STEP_CLASSIFIERS)
    a.ppo_checkpoint_dir("lstm").mkdir(parents=True)
    with pytest.raises(ManifestError, match="is a folder"):
        m.record(a.ppo_checkpoint_dir("lstm"), "ppo_checkpoint", STEP_AGENT)
    f = _write(a.scaler, b"s")
    with pytest.raises(ValueError, match="kind 'weights'"):
        m.record(f, "weights", STEP_CLASSIFIERS)
    with pytest.raises(ValueError, match="step 'step5'"):
        m.record(f, "scaler", "step5")
    with pytest.raises(ValueError, match="status 'fresh'"):
        m.record(f, "scaler", STEP_CLASSIFIERS, status="fresh")
    assert not a.run_manifest.exists(), "nothing was written"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "not valid JSON"),
        ('{"entries": {}}', 'list "entries"'),
        ('{"entries": [{"path": "a"}]}', "has no valid kind"),
        (
            '{"entries": [{"path": "a", "kind": "weights", "step": "s", "status": "written", '
            '"sha256": "x", "size": 1, "recorded_utc": "t"}]}',
            "kind 'weights'",
        ),
        (
            '{"entries": [{"path": "../a", "kind": "log", "step": "s", "status": "written", '
            '"sha256": "x", "size": 1, "recorded_utc": "t"}]}',
            "not inside the artifact root",
        ),
    ],
)
def test_a_damaged_manifest_is_one_line_naming_it(a: Artifacts, text: str, why: str) -> None:
    _write(a.run_manifest, text.encode())
    with pytest.raises(ManifestError) as info:
        Manifest.load(a.run_manifest, a.paths.root)
    msg = str(info.value)
    assert "\n" not in msg and str(a.run_manifest) in msg and why in msg
    assert a.run_manifest.read_text() == text, "left as it was"
