"""Shared artifacts are loaded as data, never unpickled.

A scaler file travels through the git remote (step 8), so anyone with write access to that
repository could plant a crafted pickle that runs code on every pod that pulls it. The scaler is
stored as JSON now; these tests plant a booby-trapped ``scaler_*.pkl`` (unpickling it would create
a marker file) where the old scaler lived and check that loading, and step 6, never fire it.
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.classifiers.prepare import apply_scaler, load_classifier_data, load_scaler_file
from pipeline.common import PROJECT_ROOT, Paths, PipelineError
from pipeline.config.schema import Config
from pipeline.store.artifacts import Artifacts
from ppo_approach.prediction_wrapper import validate_models


class _Trap:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears if a pickle loads."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def plant_trap(path: Path, marker: Path) -> Path:
    """Write a booby-trapped pickle at ``path`` shaped like the old scaler dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"scaler": _Trap(marker), "feature_names": ["x"]}))
    return path


@pytest.mark.unit
def test_the_trap_is_armed(tmp_path: Path) -> None:
    """The planted file really runs code when unpickled (so its absence below means something)."""
    marker = tmp_path / "fired"
    trap = plant_trap(tmp_path / "trap.pkl", marker)
    pickle.loads(trap.read_bytes())
    assert marker.exists()


@pytest.fixture(scope="module")
def small_root(
    tmp_path_factory: pytest.TempPathFactory,
    write_dataset: Callable[..., Path],
    signal_config: Callable[..., Config],
) -> Path:
    """A root with one small dataset whose scaler file has been written by load_classifier_data."""
    root = tmp_path_factory.mktemp("scaler")
    write_dataset(root, "SIG", signal=1.0, seed=0, n=1200)
    load_classifier_data(signal_config().training, "SIG", Paths.from_root(root))
    return root


@pytest.mark.unit
def test_scaler_file_is_json_data_and_rebuilds_the_scaler(
    small_root: Path, signal_config: Callable[..., Config]
) -> None:
    paths = Paths.from_root(small_root)
    prepared = load_classifier_data(signal_config().training, "SIG", paths, save_scaler=False)
    path = Artifacts(paths, "SIG").scaler
    assert path.name == "scaler_SIG.json"
    assert not Artifacts(paths, "SIG").legacy_scaler.exists()  # no pickle is written any more
    data = json.loads(path.read_text(encoding="utf-8"))
    fit = prepared.arrays.scaler
    assert data["dataset"] == "SIG" and data["dataset_sha256"] == prepared.info.sha256
    assert data["feature_names"] == prepared.feature_names
    assert data["lookback"] == 16
    assert data["fitted_on"] == [
        prepared.arrays.splits.train.start,
        prepared.arrays.splits.train.stop,
    ]
    assert data["n_samples"] == fit.n_samples_seen_
    assert data["mean"] == fit.mean_.tolist() and data["scale"] == fit.scale_.tolist()
    assert data["var"] == fit.var_.tolist()

    info = load_scaler_file(path)
    rebuilt = info["scaler"]
    np.testing.assert_array_equal(rebuilt.mean_, fit.mean_)  # JSON floats round-trip exactly
    np.testing.assert_array_equal(rebuilt.scale_, fit.scale_)
    rows = prepared.arrays.features[-50:]
    np.testing.assert_array_equal(rebuilt.transform(rows), fit.transform(rows))
    np.testing.assert_array_equal(apply_scaler(rebuilt, rows), apply_scaler(fit, rows))
    assert info["fitted_on"] == tuple(data["fitted_on"])


@pytest.mark.unit
def test_loader_ignores_a_booby_trapped_pkl(small_root: Path, tmp_path: Path) -> None:
    paths = Paths.from_root(small_root)
    marker = tmp_path / "fired"
    trap = plant_trap(Artifacts(paths, "SIG").legacy_scaler, marker)
    try:
        info = load_scaler_file(Artifacts(paths, "SIG").scaler)
        assert info["dataset"] == "SIG"
        assert not marker.exists()
    finally:
        trap.unlink()


@pytest.mark.unit
def test_only_an_old_pkl_is_an_error_that_says_rerun_and_loads_nothing(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    marker = tmp_path / "fired"
    plant_trap(Artifacts(paths, "SIG").legacy_scaler, marker)
    with pytest.raises(PipelineError) as info:
        load_scaler_file(Artifacts(paths, "SIG").scaler)
    text = str(info.value)
    assert "scaler_SIG.json: scaler file not found" in text
    assert "scaler_SIG.pkl" in text and "never loaded" in text
    assert "rerun train_models.py" in text and "\n" not in text
    assert not marker.exists()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: "{not json", "not JSON"),
        (lambda d: {**d, "format": "pickle"}, '"format"'),
        (lambda d: {k: v for k, v in d.items() if k != "mean"}, "'mean'"),
        (lambda d: {**d, "scale": d["scale"][:-1]}, "'scale' must be a list of"),
        (lambda d: {**d, "scale": [0.0] * len(d["scale"])}, "'scale' must be > 0"),
        (lambda d: {**d, "var": ["x"] * len(d["var"])}, "'var' must hold numbers"),
        (lambda d: {**d, "mean": [float("nan")] * len(d["mean"])}, "'mean' holds a non-finite"),
        (lambda d: {**d, "n_samples": 0}, "'n_samples' must be an integer >= 1"),
        (lambda d: {**d, "feature_names": []}, "'feature_names'"),
    ],
)
def test_bad_scaler_files_are_one_clear_error(
    small_root: Path, tmp_path: Path, edit: object, message: str
) -> None:
    good = json.loads(
        Artifacts(Paths.from_root(small_root), "SIG").scaler.read_text(encoding="utf-8")
    )
    bad = edit(good)  # type: ignore[operator]
    path = tmp_path / "scaler_SIG.json"
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad), encoding="utf-8")
    with pytest.raises(PipelineError, match="not a valid scaler file") as info:
        load_scaler_file(path)
    text = str(info.value)
    assert str(path) in text and message in text and "rerun train_models.py" in text


@pytest.mark.integration
def test_step6_never_loads_a_booby_trapped_pkl(
    signal_run: tuple[Path, Any, Config], tmp_path: Path
) -> None:
    src, _, cfg = signal_run
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    paths = Paths.from_root(root)
    marker = tmp_path / "fired"
    plant_trap(Artifacts(paths, "SIG").legacy_scaler, marker)

    result = validate_models(cfg, "SIG", paths)  # the JSON scaler is read, the .pkl ignored
    assert {"dlstm", "bilstm", "ensemble"} <= set(result)
    assert not marker.exists()

    Artifacts(paths, "SIG").scaler.unlink()  # only the old pickle is left
    with pytest.raises(PipelineError, match=r"scaler_SIG\.pkl.*rerun train_models\.py"):
        validate_models(cfg, "SIG", paths)
    assert not marker.exists()


# ---------------------------------------------------------------- no pickle loads in the code

_PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve"}
_LOADERS = {"load", "loads", "Unpickler", "open"}


def _problems(tree: ast.AST) -> list[str]:
    """Calls that would unpickle a file: pickle-family loads, read_pickle, unsafe np/torch.load."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
            _PICKLE_MODULES
        ):
            found += [
                f"from {node.module} import {a.name}" for a in node.names if a.name in _LOADERS
            ]
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        attr, owner = node.func.attr, node.func.value
        base = owner.id if isinstance(owner, ast.Name) else None
        keywords = {k.arg: k.value for k in node.keywords}
        if base in _PICKLE_MODULES and attr in _LOADERS:
            found.append(f"{base}.{attr}")
        elif attr == "read_pickle":
            found.append(f"{base}.read_pickle")
        elif base in {"np", "numpy"} and attr == "load":
            allow = keywords.get("allow_pickle")
            if isinstance(allow, ast.Constant) and allow.value is True:
                found.append("np.load(allow_pickle=True)")
        elif base == "torch" and attr == "load":
            safe = keywords.get("weights_only")
            if not (isinstance(safe, ast.Constant) and safe.value is True):
                found.append("torch.load without weights_only=True")
    return found


def _project_sources() -> list[Path]:
    skip = {"tests", ".venv", "venv", ".git", "shared"}
    return sorted(
        p
        for p in PROJECT_ROOT.rglob("*.py")
        if not skip & set(p.relative_to(PROJECT_ROOT).parts[:-1])
    )


@pytest.mark.unit
def test_the_scan_catches_pickle_loads() -> None:
    code = (
        "import pickle, torch, numpy as np\nfrom joblib import load\n"
        "pickle.load(f)\ntorch.load(p)\ntorch.load(p, weights_only=True)\n"
        "np.load(p, allow_pickle=True)\npd.read_pickle(p)\n"
    )
    assert _problems(ast.parse(code)) == [
        "from joblib import load",
        "pickle.load",
        "torch.load without weights_only=True",
        "np.load(allow_pickle=True)",
        "pd.read_pickle",
    ]


@pytest.mark.unit
def test_no_project_code_loads_a_pickle() -> None:
    sources = _project_sources()
    assert any(p.name == "prepare.py" for p in sources)
    bad = {
        p.relative_to(PROJECT_ROOT).as_posix(): probs
        for p in sources
        if (probs := _problems(ast.parse(p.read_text(encoding="utf-8"))))
    }
    assert bad == {}
