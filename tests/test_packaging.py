"""The project is an installable package: ``pip install -e .`` (the Makefile's install target) makes
``pipeline``, ``ppo_approach`` and the top-level scripts importable from any folder, so no script
patches ``sys.path``; a script run without the install says how to install.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_INSTALLED = "error: the project is not installed in this Python"
# Files whose sys.path patch their owner has still to remove (the packaging redesign).
PATCH_PENDING: set[str] = set()


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _source_files() -> list[Path]:
    """The project's own Python files (not tests, not virtual environments or caches)."""
    skip = {"tests", ".venv", ".git", "build"}
    return sorted(
        p
        for p in ROOT.rglob("*.py")
        if not skip.intersection(p.relative_to(ROOT).parts[:1])
        and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
    )


@pytest.mark.unit
def test_project_dependencies_mirror_requirements_txt() -> None:
    """requirements.txt is what users install; [project] must not drift from it."""
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    required = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    assert _pyproject()["project"]["dependencies"] == required


@pytest.mark.unit
def test_every_package_and_top_level_script_is_listed() -> None:
    """A package or script left out of the list is not importable once installed."""
    tool = _pyproject()["tool"]["setuptools"]
    packages = sorted(
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in ROOT.glob("*/**/__init__.py")
        if p.parent.relative_to(ROOT).parts[0] in ("pipeline", "ppo_approach")
    )
    scripts = sorted(p.stem for p in ROOT.glob("*.py"))
    assert sorted(tool["packages"]) == packages
    assert {"pipeline", "pipeline.data", "pipeline.run", "ppo_approach"} <= set(packages)
    assert sorted(tool["py-modules"]) == scripts


@pytest.mark.unit
def test_presets_are_package_data() -> None:
    """The presets are read from pipeline/config/presets/ beside the code (``--preset NAME``)."""
    data = _pyproject()["tool"]["setuptools"]["package-data"]
    for package, folder, must in (
        ("pipeline.config", "presets", {"demo.txt", "smoke.txt"}),
        ("pipeline.tuning", "search_spaces", {"agent.txt", "classifier.txt"}),
    ):
        base = ROOT.joinpath(*package.split("."))
        files = sorted((base / folder).glob("*.txt"))
        assert must <= {p.name for p in files}
        for f in files:
            rel = f.relative_to(base)
            assert any(rel.match(g) for g in data[package]), f"{rel} is not package data"


@pytest.mark.unit
def test_no_sys_path_patches_or_e402_exemptions() -> None:
    offenders = []
    for path in _source_files():
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        if rel not in PATCH_PENDING and re.search(r"sys\.path\.(insert|append)|noqa: E402", text):
            offenders.append(rel)
    assert offenders == []


def _run_uninstalled(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as ``python script args`` would on a machine where ``make install`` has
    not run: without the editable install's import hook and without the project folder on
    ``sys.path`` (where the test's Python has them)."""
    code = (
        "import pathlib, runpy, sys\n"
        "root, script = sys.argv[1], sys.argv[2]\n"
        "sys.meta_path[:] = [f for f in sys.meta_path\n"
        "                    if not getattr(f, '__module__', '').startswith('__editable__')]\n"
        "sys.path[:] = [str(pathlib.Path(script).parent)] + [\n"
        "    p for p in sys.path if p and pathlib.Path(p).resolve() != pathlib.Path(root)]\n"
        "sys.argv = sys.argv[2:]\n"
        "runpy.run_path(script, run_name='__main__')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code, str(ROOT), str(ROOT / script), *args],
        cwd=ROOT.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.integration
@pytest.mark.parametrize("script", ["bench/bench_env.py", "datasets/make_synthetic.py"])
def test_a_script_without_the_installed_project_says_how_to_install(script: str) -> None:
    proc = _run_uninstalled(script, "--help")
    assert proc.returncode == 1
    assert proc.stderr.startswith(NOT_INSTALLED), proc.stderr
    assert "`make install` or `pip install -e .`" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.integration
@pytest.mark.parametrize("script", ["bench/bench_env.py", "datasets/make_synthetic.py"])
def test_a_script_with_the_installed_project_runs(script: str) -> None:
    # PYTHONPATH stands in for the install where the test's Python has not run `make install`.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), "--help"],
        cwd=ROOT.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:")


def _setuptools_for_builds() -> None:
    """Builds here run without build isolation (offline): they need this Python's setuptools."""
    setuptools = pytest.importorskip("setuptools")
    version = tuple(int(n) for n in re.findall(r"\d+", setuptools.__version__)[:2])
    if version < (64, 0):
        pytest.skip("setuptools >= 64 needed (editable installs, PEP 660)")
    if version < (70, 1) and importlib.util.find_spec("wheel") is None:
        pytest.skip("setuptools < 70.1 builds wheels only with the wheel package")
    pytest.importorskip("pip")


@pytest.mark.integration
def test_the_wheel_holds_the_packages_the_scripts_and_the_presets(tmp_path: Path) -> None:
    """A wheel built from a copy of the sources (setuptools writes build/ beside the sources)."""
    _setuptools_for_builds()
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    for script in ROOT.glob("*.py"):
        shutil.copy(script, src)
    code_only = shutil.ignore_patterns("__pycache__", "checkpoints", "logs", "models")
    for package in ("pipeline", "ppo_approach"):
        shutil.copytree(ROOT / package, src / package, ignore=code_only)
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run(
        [*build, "-w", tmp_path / "dist", src], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"pipeline/config/presets/demo.txt", "pipeline/config/presets/smoke.txt"} <= names
    assert "pipeline/tuning/search_spaces/agent.txt" in names
    assert {"pipeline/config/files.py", "ppo_approach/trading_env.py", "runpod_main.py"} <= names
    assert {f"{p.stem}.py" for p in ROOT.glob("*.py")} <= names


@pytest.mark.integration
def test_editable_install_makes_the_project_importable_from_anywhere(tmp_path: Path) -> None:
    """`pip install -e . --no-deps` as in the Makefile, into a throwaway venv that sees this
    Python's packages (a .pth file), then the imports from a folder outside the project."""
    _setuptools_for_builds()
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    if not python.exists():
        pytest.skip("not a POSIX venv layout")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", ROOT]
    proc = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    check = (
        "import importlib.util, pipeline, ppo_approach\n"
        "from pipeline.config.files import available_presets\n"
        "names = ['runpod_main', 'runpod_train', 'runpod_github', 'train_models',\n"
        "         'pytorch_train']\n"
        "assert all(importlib.util.find_spec(n) for n in names), names\n"
        "print(pipeline.__file__, sorted(available_presets()))\n"
    )
    out = subprocess.run(
        [python, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == str(ROOT / "pipeline" / "__init__.py")
    assert "'demo'" in out.stdout and "'smoke'" in out.stdout
