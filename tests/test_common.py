"""Atomic writes and the one-line CLI error wrapper."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.common import (
    EXIT_PUSH,
    Paths,
    PipelineError,
    atomic_path,
    atomic_write_json,
    run_cli,
    sha256_json,
)

pytestmark = pytest.mark.unit  # every test here (tiers: tests/conftest.py)


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "a" / "model.bin"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("crash while writing")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in target.parent.iterdir()] == ["model.bin"], "temp file removed"


def test_run_cli_prints_one_line_and_returns_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    def fail() -> int:
        raise PipelineError("push to 'origin' failed", exit_code=EXIT_PUSH)

    assert run_cli(fail) == 3
    assert capsys.readouterr().err == "error: push to 'origin' failed\n"

    def interrupted() -> int:
        raise KeyboardInterrupt

    assert run_cli(interrupted) == 130


def test_paths_follow_root_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_HOME", str(tmp_path))
    paths = Paths.from_root().ensure()
    assert paths.models == tmp_path / "models"
    assert paths.ppo_checkpoints == tmp_path / "ppo_approach" / "checkpoints"
    assert all(d.is_dir() for d in paths.output_dirs())


def test_sha256_json_is_order_independent() -> None:
    assert sha256_json({"a": 1, "b": [1, 2]}) == sha256_json({"b": [1, 2], "a": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})


def test_usage_error_exits_1_not_preflight_code(capsys):
    """argparse's usage errors exit 2, which the README reserves for preflight; CliParser's usage
    errors exit 1."""
    from pipeline.common import EXIT_ERROR, CliParser

    p = CliParser(prog="x")
    p.add_argument("--dataset", required=True)
    with pytest.raises(SystemExit) as e:
        p.parse_args([])
    assert e.value.code == EXIT_ERROR == 1
    assert "the following arguments are required: --dataset" in capsys.readouterr().err


def test_run_cli_disk_full_is_one_line_naming_the_path(capsys, tmp_path):
    """ENOSPC becomes one error line with the path, the free space and what a run needs, not a
    traceback."""
    import errno

    from pipeline.common import run_cli

    target = tmp_path / "models" / "lstm.pt"

    def body() -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    assert run_cli(body) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: no space left on the device writing {target} (")
    assert "GB free there); a run needs about min_disk_gb" in err[0]


def test_run_cli_permission_error_names_the_path(capsys):
    """A PermissionError becomes one line naming the path."""
    from pipeline.common import run_cli

    def body() -> int:
        raise PermissionError(13, "Permission denied", "/ro/logs/run_x.lock")

    assert run_cli(body) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: cannot write /ro/logs/run_x.lock: Permission denied; check the folder's "
        "permissions or use --root"
    ]


def test_atomic_write_fsyncs_file_and_folder(tmp_path, monkeypatch):
    """The data is fsynced before the rename and the folder after it."""
    import os

    from pipeline import common

    calls: list[str] = []
    real_fsync = os.fsync
    real_replace = os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def replace(a, b) -> None:
        calls.append("replace")
        real_replace(a, b)

    monkeypatch.setattr(common.os, "fsync", fsync)
    monkeypatch.setattr(common.os, "replace", replace)
    common.atomic_write_text(tmp_path / "m.txt", "x")
    assert calls == ["fsync", "replace", "fsync"]
    assert (tmp_path / "m.txt").read_text() == "x"


def test_progress_log_logs_at_most_every_interval_with_eta(caplog):
    """Without a terminal, a line with progress and ETA at least every 30 s."""
    import logging

    from pipeline.common import ProgressLog

    now = [0.0]
    p = ProgressLog("lstm", 100, "epochs", interval_s=30.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO):
        assert p.update(0) is False  # starts the clock
        now[0] = 10.0
        assert p.update(10) is False  # 10 s: too soon
        now[0] = 31.0
        assert p.update(31) is True
    assert caplog.messages == ["lstm: 31/100 epochs (31%), 31 s elapsed, ETA 69 s"]


def test_progress_bars_follow_the_forwarded_terminal(monkeypatch):
    from pipeline.common import PROGRESS_ENV, progress_bars_wanted

    monkeypatch.setenv(PROGRESS_ENV, "bar")
    assert progress_bars_wanted() is True
    monkeypatch.setenv(PROGRESS_ENV, "log")
    assert progress_bars_wanted() is False
