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
