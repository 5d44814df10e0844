"""Imports only go down the layers: pipeline/ (library) <- classifier side (pytorch_train.py,
train_models.py) <- agent side (ppo_approach/) <- driver and entry points (runpod_*.py). Scripts are
leaves: only the driver imports other scripts. Every import counts, also one inside a function, so a
back-climbing import cannot hide in a lazy import.

Inside pipeline/ the subpackages are layers too (:data:`SUBPACKAGES`): the base modules (common,
tables, secrets, device) import no subpackage; store <- data <- config <- classifiers <- checks,
tuning; store <- publish; run on top."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent

PROJECT = {
    "pipeline",
    "ppo_approach",
    "pytorch_train",
    "train_models",
    "runpod_github",
    "runpod_train",
    "runpod_main",
    "tune",
    "rolling_eval",
    "runs",
    "export",
    "paper_trade",
    "bench",
    "tests",
}
ALLOWED: dict[str, set[str]] = {
    "pipeline": {"pipeline"},
    "pytorch_train": {"pipeline"},
    "train_models": {"pipeline", "pytorch_train"},
    "ppo_approach": {"pipeline", "ppo_approach"},
    "runpod_github": {"pipeline"},
    "runpod_main": {"pipeline"},  # starts runpod_train.py as a subprocess, never imports it
    "runpod_train": PROJECT - {"bench", "tests", "runpod_main", "tune"},
    # tune.py runs the objectives: the classifier training loop and the agent's phases
    "tune": {"pipeline", "pytorch_train", "ppo_approach"},
    "download_data": {"pipeline"},  # a thin CLI over pipeline.data.download
    "runs": {"pipeline"},  # lists and compares archived runs (pipeline.run.archive)
    "export": {"pipeline", "ppo_approach"},  # a thin CLI over ppo_approach.export_bundle
    "paper_trade": {"pipeline", "ppo_approach"},  # a thin CLI over ppo_approach.paper
    # rolling-origin evaluation: reruns steps 5 and 7 on each fold
    "rolling_eval": {"pipeline", "train_models", "pytorch_train", "ppo_approach"},
}


BASE_MODULES = {"common", "tables", "secrets", "device"}
"""pipeline/'s own modules outside the subpackages: every subpackage may import them."""
SUBPACKAGES: dict[str, set[str]] = {
    "store": set(),
    "data": {"store"},
    "config": {"store", "data"},
    "classifiers": {"store", "data", "config"},
    "checks": {"store", "data", "config", "classifiers"},
    "tuning": {"store", "data", "config", "classifiers"},
    "publish": {"store"},
    "run": {"store", "data", "config", "classifiers", "checks", "publish"},
}
"""pipeline subpackage -> the other subpackages it may import (the architecture, bottom up)."""


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def forbidden_imports(path: Path, owner: str) -> list[str]:
    """``file:line imports X`` for every project import that ``owner``'s layer may not make."""
    bad = []
    for line, module in _imports(path):
        top = module.split(".")[0]
        if top in PROJECT and top not in ALLOWED[owner]:
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            bad.append(f"{shown}:{line} imports {module}")
    return bad


def _sources() -> list[tuple[Path, str]]:
    files = [(p, "pipeline") for p in sorted((ROOT / "pipeline").rglob("*.py"))]
    files += [(p, "ppo_approach") for p in sorted((ROOT / "ppo_approach").rglob("*.py"))]
    scripts = [n for n in ALLOWED if (ROOT / f"{n}.py").is_file()]
    return files + [(ROOT / f"{n}.py", n) for n in scripts]


@pytest.mark.parametrize(("path", "owner"), _sources(), ids=lambda v: getattr(v, "name", v))
def test_no_import_climbs_back_up(path: Path, owner: str) -> None:
    assert forbidden_imports(path, owner) == []


@pytest.mark.parametrize(
    ("source", "owner", "expected"),
    [
        ("from ppo_approach.prediction_wrapper import w\n", "train_models", "ppo_approach"),
        ("def f():\n    from pytorch_train import WindowData\n", "ppo_approach", "pytorch_train"),
        ("def check():\n    import runpod_github\n", "pipeline", "runpod_github"),
        ("from ppo_approach import backtest\n", "pipeline", "ppo_approach"),
    ],
)
def test_the_check_catches_the_old_back_climbing_imports(
    tmp_path: Path, source: str, owner: str, expected: str
) -> None:
    """Today's three fixed imports (train_models -> ppo_approach.prediction_wrapper,
    ppo_approach/prediction_wrapper -> pytorch_train, pipeline/preflight -> runpod_github) and
    pipeline/backtest -> the env would each fail the test above."""
    probe = tmp_path / "pipeline" / "probe.py"  # never inside the project: a crash leaves nothing
    probe.parent.mkdir()
    probe.write_text(source)
    (bad,) = forbidden_imports(probe, owner)
    assert bad.endswith(f"imports {expected}") or f"imports {expected}." in bad


def subpackage_violations(path: Path, owner: str) -> list[str]:
    """``file:line imports X`` for every import of a pipeline subpackage that ``owner`` (a
    subpackage, or ``base`` for pipeline/'s own modules) may not make."""
    allowed = SUBPACKAGES.get(owner, set()) | {owner}
    bad = []
    for line, module in _imports(path):
        parts = module.split(".")
        if parts[0] != "pipeline" or len(parts) < 2 or parts[1] in BASE_MODULES:
            continue
        if parts[1] not in allowed:
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            bad.append(f"{shown}:{line} imports {module}")
    return bad


def _pipeline_files() -> list[tuple[Path, str]]:
    out = []
    for p in sorted((ROOT / "pipeline").rglob("*.py")):
        rel = p.relative_to(ROOT / "pipeline")
        out.append((p, rel.parts[0] if len(rel.parts) > 1 else "base"))
    return out


def test_every_pipeline_module_is_in_a_known_layer() -> None:
    owners = {owner for _, owner in _pipeline_files()}
    assert owners == {"base", *SUBPACKAGES}
    base = {p.stem for p, owner in _pipeline_files() if owner == "base"}
    assert base == {"__init__", *BASE_MODULES}


@pytest.mark.parametrize(("path", "owner"), _pipeline_files(), ids=lambda v: getattr(v, "name", v))
def test_pipeline_subpackages_import_only_down(path: Path, owner: str) -> None:
    assert subpackage_violations(path, owner) == []


@pytest.mark.parametrize(
    ("source", "owner", "expected"),
    [
        ("from pipeline.run.summary import read_json\n", "classifiers", "pipeline.run.summary"),
        ("def f():\n    from pipeline.classifiers import nets\n", "data", "pipeline.classifiers"),
        ("import pipeline.tuning.study\n", "checks", "pipeline.tuning.study"),
        ("from pipeline.store.artifacts import Artifacts\n", "base", "pipeline.store.artifacts"),
    ],
)
def test_the_subpackage_check_catches_an_upward_import(
    tmp_path: Path, source: str, owner: str, expected: str
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    (bad,) = subpackage_violations(probe, owner)
    assert bad.endswith(f"imports {expected}")


def test_the_design_module_map_names_every_module() -> None:
    """docs/DESIGN.md section 2 lists every module of pipeline/ and ppo_approach/ and every
    top-level script, so the map cannot fall behind the code."""
    design = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    module_map = design.split("## 2. Module map", 1)[1].split("## 3.", 1)[0]
    files = [p for pkg in ("pipeline", "ppo_approach") for p in (ROOT / pkg).rglob("*.py")]
    files += list(ROOT.glob("*.py"))
    missing = [
        str(p.relative_to(ROOT))
        for p in sorted(files)
        if p.name != "__init__.py"
        and not re.search(rf"^\s*{re.escape(p.name)}\s", module_map, re.M)
    ]
    assert missing == []
