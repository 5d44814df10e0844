"""A LightGBM classifier as ONNX (ppo_approach/export_lightgbm.py): on every test-block window of
raw features the probabilities of the pipeline's predictor (|difference| < 1e-5, same argmax);
the trees split like LightGBM's float64 thresholds even at a threshold's float32 neighbours; a
payload that cannot be exported is one error line."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.common import Paths
from pipeline.config.schema import Config
from ppo_approach import export, export_lightgbm

DATASET = "SIG"
TOLERANCE = 1e-5
SETTINGS = ("ppo_prediction_source=in_sample",)
"""The smoke preset, and no walk-forward fold models: the test needs the main model only."""


@pytest.fixture(scope="module")
def lightgbm_root(
    tmp_path_factory: pytest.TempPathFactory,
    write_dataset: Callable[..., Path],
    smoke_config: Callable[..., Config],
) -> Path:
    """A root with a LightGBM classifier trained by train_models on a planted-signal dataset
    (smoke preset): a genuine model file. Read only."""
    import train_models

    root = tmp_path_factory.mktemp("lightgbm")
    write_dataset(root, DATASET, signal=1.0, seed=0)
    cfg = smoke_config(*SETTINGS)
    summary = train_models.train_classifiers(cfg, DATASET, Paths.from_root(root), ["lightgbm"])
    assert summary["models"]["lightgbm"]["status"] == "trained"
    return root


@pytest.mark.integration
def test_an_exported_lightgbm_classifier_gives_the_predictors_probabilities(
    lightgbm_root: Path,
    smoke_config: Callable[..., Config],
    tmp_path: Path,
) -> None:
    """The scaler, the window summary and the trees in one graph: on every test-block window of
    raw features, ONNX Runtime's probabilities are within 1e-5 of the pipeline's predictor."""
    import onnx
    from test_export import export_reference

    paths = Paths.from_root(lightgbm_root)
    cfg = smoke_config(*SETTINGS)
    predictor, windows, want = export_reference(cfg, "lightgbm", DATASET, paths)
    path = export_lightgbm.lightgbm_classifier_onnx(predictor.payload, tmp_path / "lgb.onnx")
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["windows"]
    assert [o.name for o in graph.output] == ["probabilities"]
    got = export.onnx_classifier_probabilities(path, windows)
    assert got.shape == want.shape == (len(windows), 3)
    assert float(np.abs(got - want).max()) < TOLERANCE
    np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1))


@pytest.mark.integration
def test_the_trees_split_at_lightgbms_float64_thresholds(lightgbm_root: Path) -> None:
    """Summaries whose features sit on a threshold's float32 neighbours (the float32 nearest
    the threshold and the floats either side): the trees' graph gives LightGBM's probabilities.
    With float32 thresholds (rounded to nearest) about half of the thresholds round up, and a
    feature equal to such a rounding goes the other way."""
    import lightgbm
    import onnxruntime

    from pipeline.classifiers.nets import load_model_file

    payload = load_model_file(lightgbm_root / "models" / f"lightgbm_{DATASET}_classification.pth")
    booster = lightgbm.Booster(model_str=payload["booster"])
    splits = booster.trees_to_dataframe().dropna(subset=["split_feature"])
    columns = np.array([booster.feature_name().index(f) for f in splits["split_feature"]])
    exact = np.asarray(splits["threshold"], dtype=np.float64)  # (n_splits,) LightGBM's
    near = exact.astype(np.float32)  # (n_splits,) the float32 nearest each
    assert (near.astype(np.float64) > exact).any()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, booster.num_feature())).astype(np.float32)  # (n, 3F)
    for row in x:
        picked = rng.integers(0, len(near), size=20)  # 20 splits' features of this row
        toward = rng.choice(np.array([-np.inf, np.nan, np.inf], dtype=np.float32), size=20)
        at = near[picked]
        row[columns[picked]] = np.where(np.isnan(toward), at, np.nextafter(at, toward))
    trees = export_lightgbm._tree_model(booster, booster.num_feature())
    session = onnxruntime.InferenceSession(
        trees.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (probs,) = session.run([export_lightgbm.TREES_OUTPUT], {"summary": x.astype(np.float64)})
    got = np.asarray(probs)  # (n, 3) float32
    want = np.asarray(booster.predict(x.astype(np.float64)))  # (n, 3) float64
    assert float(np.abs(got - want).max()) < TOLERANCE
    np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1))


def _payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "arch": {"name": "lightgbm"},
        "booster": "tree\nversion=v4\n",
        "scaler": {"mean": [0.0, 0.0], "scale": [1.0, 1.0]},
        "lookback": 4,
        "feature_names": ["a", "b"],
    }
    return {**payload, **changes}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "the model file's booster is not a LightGBM model text (LightGBM: "),
        ({"booster": "not a model"}, "the model file's booster is not a LightGBM model text"),
        ({"booster": None}, "the model file has no LightGBM model text (its booster is NoneType)"),
        ({"arch": {"name": "dlstm"}}, "not a LightGBM model file (its arch is 'dlstm')"),
    ],
)
def test_a_payload_that_is_not_a_lightgbm_model_is_one_line(
    changes: dict[str, Any], message: str, tmp_path: Path
) -> None:
    target = tmp_path / "lgb.onnx"
    with pytest.raises(export.ExportError) as info:
        export_lightgbm.lightgbm_classifier_onnx(_payload(**changes), target)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert not target.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.unit
def test_without_onnxmltools_the_export_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec

    def no_onnxmltools(name: str, *args: Any) -> Any:
        return None if name == "onnxmltools" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", no_onnxmltools)
    with pytest.raises(export.ExportError) as info:
        export_lightgbm.lightgbm_classifier_onnx(_payload(), tmp_path / "lgb.onnx")
    assert str(info.value) == (
        "exporting a LightGBM model needs onnxmltools (pip install onnxmltools)"
    )
