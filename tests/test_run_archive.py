"""Past runs: before a new run writes, the previous one goes to ``runs/{dataset}/{n}/``; ``runs.py``
lists and compares them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import runs
from pipeline.common import Paths, atomic_write_json, atomic_write_text
from pipeline.run.archive import ARCHIVE_INFO, archive_previous_run, archived_runs
from pipeline.store.artifacts import Artifacts
from pipeline.store.manifest import STEP_AGENT, STEP_CLASSIFIERS, STEP_DRIVER

pytestmark = pytest.mark.unit

DS = "ARCH_1H"


def _fake_run(root: Path, started: str, f1: float, ret: float) -> Artifacts:
    """The files one run leaves: a classifier model, a backtest, a checkpoint, a log, the
    summary, all recorded in the manifest as the steps record them."""
    files = Artifacts(Paths.from_root(root), DS)
    model = atomic_write_text(files.classifier_model("logreg"), f"weights {started}")
    report = atomic_write_json(files.backtest_report("logreg"), {"return": ret})
    ck = atomic_write_text(files.ppo_checkpoint("logreg", 512), "resume state")
    log = files.run_log(started.replace(":", ""))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"log of {started}\n")
    summary = {
        "dataset": DS,
        "started": started,
        "pid": 42,
        "status": "ok",
        "config_hash": f"hash-{started}",
        "config_overrides": {"training.epochs": 3},
        "steps_selected": [1, 2, 3, 4, 5, 6, 7, 8],
        "classifiers": {"logreg": {"test_macro_f1": f1}},
        "agent": {"model": "logreg", "agent_total_return": ret, "buy_and_hold_total_return": 0.1},
    }
    atomic_write_json(files.run_summary, summary)
    manifest = files.manifest()
    manifest.record_many([(model, "classifier_model")], STEP_CLASSIFIERS)
    manifest.record_many([(report, "backtest"), (ck, "ppo_checkpoint")], STEP_AGENT)
    manifest.record_many([(log, "log"), (files.run_summary, "run_summary")], STEP_DRIVER)
    return files


def test_no_previous_run_no_archive(tmp_path: Path) -> None:
    assert archive_previous_run(Paths.from_root(tmp_path), DS) is None
    assert not (tmp_path / "runs").exists()


def test_the_previous_runs_files_are_kept_under_a_number(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    files = _fake_run(tmp_path, "2026-12-01T10:00:00+00:00", 0.41, 0.05)
    model, report = files.classifier_model("logreg"), files.backtest_report("logreg")
    before = {p: p.read_bytes() for p in (model, report, files.run_summary)}

    archived = archive_previous_run(paths, DS)
    assert archived is not None and archived.number == 1
    folder = tmp_path / "runs" / DS / "1"
    assert archived.folder == folder
    for path, raw in before.items():
        assert (folder / path.relative_to(tmp_path)).read_bytes() == raw
    assert (folder / files.run_manifest.relative_to(tmp_path)).is_file()
    # Resume-only state stays out.
    assert not (folder / files.ppo_checkpoint("logreg", 512).relative_to(tmp_path)).exists()
    info = json.loads((folder / ARCHIVE_INFO).read_text())
    assert info["started"] == "2026-12-01T10:00:00+00:00" and info["status"] == "ok"
    assert info["config_hash"] == "hash-2026-12-01T10:00:00+00:00" and info["files_missing"] == []
    # The current files are still in place (a --steps 7 rerun needs step 5's).
    assert model.read_bytes() == before[model]

    # A model is hard-linked (no extra disk); the next run's atomic write replaces the current
    # path and the archive keeps the old bytes. Logs are copied (they are appended in place).
    archived_model = folder / model.relative_to(tmp_path)
    assert archived_model.stat().st_ino == model.stat().st_ino
    log = next(folder.glob("logs/*.log"))
    assert log.stat().st_ino != (tmp_path / log.relative_to(folder)).stat().st_ino
    atomic_write_text(model, "weights of the next run")
    assert archived_model.read_text() == "weights 2026-12-01T10:00:00+00:00"


def test_the_same_run_is_archived_once_and_the_next_gets_the_next_number(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    _fake_run(tmp_path, "2026-12-01T10:00:00+00:00", 0.41, 0.05)
    assert archive_previous_run(paths, DS) is not None
    assert archive_previous_run(paths, DS) is None  # e.g. the next run failed before writing
    _fake_run(tmp_path, "2026-12-02T10:00:00+00:00", 0.43, -0.02)
    (tmp_path / "runs" / DS / ".2.partial").mkdir()  # left by a crash while archiving
    second = archive_previous_run(paths, DS)
    assert second is not None and second.number == 2
    assert [r.number for r in archived_runs(paths, DS)] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "runs" / DS).iterdir()) == ["1", "2"]


def test_runs_lists_and_compares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = Paths.from_root(tmp_path)
    _fake_run(tmp_path, "2026-12-01T10:00:00+00:00", 0.41, 0.05)
    archive_previous_run(paths, DS)
    _fake_run(tmp_path, "2026-12-02T10:00:00+00:00", 0.43, -0.02)

    assert runs.main(["--dataset", f"{DS}.csv", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [ln.split() for ln in out[2:]]
    assert [r[0] for r in rows] == ["1", "current"]
    assert rows[0][5:] == ["+5.00%", "+10.00%", "logreg", "0.410"]
    assert rows[1][5:] == ["-2.00%", "+10.00%", "logreg", "0.430"]

    assert runs.main(["--dataset", DS, "--root", str(tmp_path), "--compare", "1", "current"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines()[2:-1]}
    assert lines["test_macro_f1.logreg"] == ["0.4100", "0.4300"]
    assert lines["agent_return"] == ["0.0500", "-0.0200"]
    assert "overrides.training.epochs" not in lines  # the same in both
    assert out.splitlines()[-1].endswith("values the same")


def test_runs_names_a_missing_run_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_run(tmp_path, "2026-12-01T10:00:00+00:00", 0.41, 0.05)
    code = runs.main(["--dataset", DS, "--root", str(tmp_path), "--compare", "3", "current"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"error: run '3' of {DS} not found under {tmp_path / 'runs' / DS}")
    assert err[0].endswith("expected one of: none archived, only current")
    assert runs.main(["--dataset", "NOPE", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: no runs of NOPE")
