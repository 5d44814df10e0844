"""The README's two commands on a fresh machine: where `make` installs.

`make -n` prints the commands without running them, so these tests check the Makefile's
decisions (project .venv vs the active environment, the CPU-only torch index) in milliseconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def _dry_run(target: str, **env: str) -> str:
    # Under `make test` (CI) the outer make's variables would make this one print
    # "Entering/Leaving directory" lines: run it as a top-level make.
    outer = ("VIRTUAL_ENV", "CONDA_PREFIX", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    clean = {k: v for k, v in os.environ.items() if k not in outer}
    clean.update(env)
    out = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


@pytest.mark.integration
def test_without_an_active_env_make_creates_and_uses_a_project_venv() -> None:
    """Debian's system Python refuses `pip install` (PEP 668): never install into it."""
    cmds = _dry_run("test")
    assert "-m venv --system-site-packages .venv" in cmds
    assert ".venv/bin/python -m pip install -q -r requirements-dev.txt" in cmds
    assert ".venv/bin/python -m pytest" in cmds
    assert "apt-get install python3-venv" in cmds  # the one line shown when venv is missing


@pytest.mark.integration
def test_an_active_virtualenv_is_used_as_it_is() -> None:
    cmds = _dry_run("test", VIRTUAL_ENV="/opt/myenv")
    assert ".venv" not in cmds
    assert "python3 -m pip install -q -r requirements-dev.txt" in cmds


@pytest.mark.integration
def test_test_fast_runs_the_unit_tier_only() -> None:
    """`make test-fast`: the unit tier; `make test` stays the default run."""
    cmds = _dry_run("test-fast", VIRTUAL_ENV="/opt/myenv")
    assert 'python3 -m pytest -m "unit and not slow"' in cmds
    assert _dry_run("test", VIRTUAL_ENV="/opt/myenv").splitlines()[-1] == "python3 -m pytest"


@pytest.mark.integration
def test_cpu_machines_get_torch_from_the_cpu_only_index() -> None:
    """A bare `pip install torch` on a CPU-only Linux machine pulls the ~2.5 GB CUDA build."""
    cmds = _dry_run("install")
    assert "torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu" in cmds
    assert 'import torch" 2>/dev/null ||' in cmds  # only when torch is missing


@pytest.mark.unit
def test_ci_runs_the_readme_test_command_then_lint_and_types() -> None:
    lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.startswith("make")]
    assert lines == ["make test", "make lint", "make typecheck"]
