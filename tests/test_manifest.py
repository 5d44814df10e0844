"""pipeline.store.manifest: the per-dataset run manifest the steps record into and the push step
reads."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from pipeline.common import Paths
from pipeline.store import artifacts as art
from pipeline.store.artifacts import Artifacts
from pipeline.store.manifest import (
    KINDS,
    STEP_AGENT,
    STEP_CLASSIFIERS,
    STEP_DRIVER,
    STEP_ENTRY,
    UP_TO_DATE,
    WRITTEN,
    Manifest,
    ManifestError,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def a(tmp_path: Path) -> Artifacts:
    return Artifacts(Paths(tmp_path), "BTC_1h")


def rel(a: Artifacts, path: Path) -> str:
    return path.relative_to(a.paths.root).as_posix()


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


def test_the_manifest_module_does_not_import_the_artifacts_module() -> None:
    """artifacts -> manifest only (Artifacts.manifest opens it), so the two never form a cycle."""
    import ast

    import pipeline.store.manifest

    tree = ast.parse(Path(pipeline.store.manifest.__file__).read_text(encoding="utf-8"))
    imported = {
        n.module if isinstance(n, ast.ImportFrom) else alias.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for alias in n.names
    }
    assert "pipeline.store.artifacts" not in imported


def test_push_files_refuses_a_dataset_no_step_recorded(a: Artifacts) -> None:
    """No manifest (artifacts from before it existed) or only the logs of the driver / entry
    point: one line saying how to get a manifest, not an empty push."""
    for _ in range(2):
        with pytest.raises(ManifestError) as info:
            a.manifest().push_files()
        msg = str(info.value)
        assert "\n" not in msg and str(a.run_manifest) in msg
        assert "nothing to push for dataset BTC_1h" in msg
        assert "python runpod_train.py --dataset BTC_1h --resume" in msg
        log = _write(a.run_log("20250101-000000"), b"started\n")
        a.manifest().record(log, "log", STEP_ENTRY)
    assert "lists no artifact of a step" in msg
    a.manifest().record(_write(a.scaler, b"{}"), "scaler", STEP_CLASSIFIERS, status=UP_TO_DATE)
    assert a.manifest().push_files() == sorted([log, a.scaler, a.run_manifest])
