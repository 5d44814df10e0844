"""Prediction wrappers, walk-forward prediction tables and step 6 (validate_models).

Uses the trained roots of tests/conftest.py (built once per session).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.classifiers.prediction_table import (
    AGENT_COLUMNS,
    TABLE_COLUMNS,
    load_prediction_table,
    load_table_meta,
)
from pipeline.classifiers.predictors import EnsemblePredictionModel, PredictionModel
from pipeline.classifiers.prepare import fit_scaler, load_classifier_data
from pipeline.common import Paths, PipelineError
from pipeline.config.schema import MODEL_NAMES
from pipeline.data.features import AGENT_PRICE_FEATURE_NAMES
from pipeline.data.labels import auto_threshold
from pipeline.data.splits import Block
from pipeline.store.artifacts import Artifacts
from ppo_approach.prediction_wrapper import validate_models

pytestmark = pytest.mark.integration

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def prep(signal_run):
    root, _, cfg = signal_run
    return load_classifier_data(cfg.training, "SIG", Paths.from_root(root), save_scaler=False)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_walk_forward_table_layout(signal_run, prep, name: str) -> None:
    root, _, _ = signal_run
    table = load_prediction_table(Paths.from_root(root), name, "SIG")
    assert list(table.columns) == [*TABLE_COLUMNS, *AGENT_COLUMNS]
    splits = prep.arrays.splits
    f1, f2 = splits.folds[1], splits.folds[2]  # 3 folds: fold 0 is never predicted
    expected = np.concatenate(
        [
            np.arange(f1.start, f1.stop),
            np.arange(f2.start, f2.stop),
            np.arange(splits.test.start, 3000),
        ]
    )
    assert table["bar"].tolist() == expected.tolist()
    blocks = table.groupby("agent_block")["bar"].agg(["min", "max", "count"])
    assert blocks.loc["train"].tolist() == [f1.start, f1.stop - 1, len(f1)]
    assert blocks.loc["val"].tolist() == [f2.start, f2.stop - 1, len(f2)]
    assert blocks.loc["test"].tolist() == [splits.test.start, 2999, 3000 - splits.test.start]
    sources = table.groupby("agent_block")["source"].unique()
    assert sources["train"].tolist() == [f"{name}/fold1"]
    assert sources["val"].tolist() == [f"{name}/fold2"]
    assert sources["test"].tolist() == [f"{name}/dev"]
    assert not table["in_sample"].any()
    probs = table[["p_fall", "p_stationary", "p_rise"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (table["pred_class"].to_numpy() == probs.argmax(axis=1)).all()
    assert np.allclose(table["confidence"], probs.max(axis=1))
    ts = prep.df["timestamp"].iloc[table["bar"]].reset_index(drop=True)
    assert (table["timestamp"] == ts).all()
    # What the agent reads of each bar, exact to the last digit.
    bars = table["bar"].to_numpy()
    np.testing.assert_array_equal(table["open"].to_numpy(), prep.arrays.open[bars])
    np.testing.assert_array_equal(table["close"].to_numpy(), prep.arrays.close[bars])
    price = table[list(AGENT_PRICE_FEATURE_NAMES)].to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(price, prep.arrays.price_features[bars])
    np.testing.assert_array_equal(table["label"].to_numpy(), prep.arrays.labels[bars])
    meta = load_table_meta(Paths.from_root(root), name, "SIG")
    assert meta["dataset_sha256"] == prep.info.sha256 and meta["n_bars"] == 3000
    assert meta["classifier_settings"]["lookback"] == prep.arrays.lookback


def test_fold_models_never_saw_the_bars_they_predict(signal_run, prep) -> None:
    """Fold i's model: trained (and early-stopped) on folds < i only, with its own scaler."""
    root, _, _ = signal_run
    splits = prep.arrays.splits
    main = torch.load(root / "models" / "dlstm_SIG_classification.pth", weights_only=True)
    for i in (1, 2):
        p = torch.load(
            root / "models" / "walkforward" / f"dlstm_SIG_fold{i}.pth", weights_only=True
        )
        fit, es = p["trained_on"]["fit"], p["trained_on"]["early_stop"]
        assert fit[0] == splits.folds[0].start
        assert fit[1] + splits.purge <= es[0]  # purge gap before its early-stopping rows
        assert es[1] == splits.folds[i - 1].stop
        assert es[1] + splits.purge <= splits.folds[i].start
        assert p["scaler"]["mean"] != main["scaler"]["mean"]  # fit on its own rows
        # Its own scaler and auto threshold come from its fit rows, not from later bars.
        scaler = fit_scaler(prep.arrays.features, Block("fit", fit[0], fit[1]), 16)
        assert np.allclose(p["scaler"]["mean"], scaler.mean_)
        assert np.allclose(p["scaler"]["scale"], scaler.scale_)
        r_fit = prep.arrays.r[fit[0] : fit[1]]
        assert p["label"]["delta"] == pytest.approx(auto_threshold(r_fit))
        assert p["label"]["delta"] != pytest.approx(main["label"]["delta"])
        assert p["source"] == f"dlstm/fold{i}"


def test_test_rows_come_from_the_main_model(signal_run, prep) -> None:
    root, _, _ = signal_run
    paths = Paths.from_root(root)
    model = PredictionModel("gru", "SIG", paths, CPU)
    bars = np.arange(prep.arrays.splits.test.start, 3000)
    direct = model.predict_dataset(prep, bars)
    table = load_prediction_table(paths, "gru", "SIG")
    test_rows = table[table["agent_block"] == "test"]
    assert np.allclose(
        direct[["p_fall", "p_stationary", "p_rise"]].to_numpy(),
        test_rows[["p_fall", "p_stationary", "p_rise"]].to_numpy(),
        atol=1e-5,
    )


def test_predict_one_window_and_batch(signal_run, prep) -> None:
    root, _, _ = signal_run
    model = PredictionModel("bilstm", "SIG", Paths.from_root(root), CPU)
    assert model.lookback == 16 and len(model.feature_names) == 26 and model.n_parameters > 0
    bar = 2500
    window = prep.arrays.features[bar - 15 : bar + 1]  # (16, 26) raw features
    cls, conf, probs = model.predict(window)
    assert probs.shape == (3,) and probs.sum() == pytest.approx(1.0)
    assert cls == int(probs.argmax()) and conf == pytest.approx(probs.max())
    # Same as the scaled path and as the whole-dataset path.
    _, _, probs_scaled = model.predict(prep.arrays.scaled[bar - 15 : bar + 1], scaled=True)
    assert np.allclose(probs, probs_scaled, atol=1e-6)
    row = model.predict_dataset(prep, np.array([bar]))
    assert np.allclose(row[["p_fall", "p_stationary", "p_rise"]].to_numpy()[0], probs, atol=1e-6)
    with pytest.raises(PipelineError, match=r"expected \(n, 16, 26\)"):
        model.predict_proba_windows(np.zeros((2, 10, 26)))


def test_ensemble_is_the_mean_of_its_members(signal_run, prep) -> None:
    root, _, _ = signal_run
    paths = Paths.from_root(root)
    ens = EnsemblePredictionModel("SIG", ["dlstm", "bilstm"], paths, CPU)
    window = prep.arrays.features[1000:1016]
    _, _, p = ens.predict(window)
    members = [
        PredictionModel(m, "SIG", paths, CPU).predict(window)[2] for m in ("dlstm", "bilstm")
    ]
    assert np.allclose(p, np.mean(members, axis=0))

    table = pd.read_csv(Artifacts(paths, "SIG").prediction_table("ensemble"))
    d = load_prediction_table(paths, "dlstm", "SIG")
    b = load_prediction_table(paths, "bilstm", "SIG")
    for c in ("p_fall", "p_stationary", "p_rise"):
        assert np.allclose(table[c], (d[c] + b[c]) / 2, atol=1e-5)
        assert np.allclose(table[f"{c}_dlstm"], d[c], atol=1e-6)
        assert np.allclose(table[f"{c}_bilstm"], b[c], atol=1e-6)
    assert table["source"].iloc[0] == "dlstm/fold1+bilstm/fold1"
    assert set(TABLE_COLUMNS) <= set(table.columns)


def test_in_sample_tables_are_flagged(rw_run) -> None:
    root, _, _ = rw_run
    table = load_prediction_table(Paths.from_root(root), "lstm", "RW")
    assert (table["source"] == "lstm/dev").all()
    # The main model fit the train block and early-stopped on val: the agent's train and val
    # blocks (folds 1..F-1, inside dev) were both seen; only the test block was not.
    assert table.loc[table["agent_block"] == "train", "in_sample"].all()
    assert table.loc[table["agent_block"] == "val", "in_sample"].all()
    assert not table.loc[table["agent_block"] == "test", "in_sample"].any()


def test_mismatched_scaler_or_features_are_clear_errors(
    signal_run, prep, tmp_path, signal_config
) -> None:
    src, _, _ = signal_run
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    paths = Paths.from_root(root)
    model = PredictionModel("gru", "SIG", paths, CPU)
    prep.feature_names.reverse()
    try:
        with pytest.raises(PipelineError, match="trained on features"):
            model.predict_dataset(prep)
    finally:
        prep.feature_names.reverse()

    # The scaler is JSON data now, not a pickle.
    spath = root / "scalers" / "scaler_SIG.json"
    info = json.loads(spath.read_text(encoding="utf-8"))
    info["dataset_sha256"] = "0" * 64
    spath.write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(PipelineError, match="scaler_SIG.json: fit on dataset sha256 000000000000"):
        PredictionModel("gru", "SIG", paths, CPU)
    with pytest.raises(PipelineError, match="model file not found"):
        PredictionModel("gru", "OTHER", paths, CPU)

    # Another lookback rewrote the per-dataset scaler file: the error says so and how to fix it.
    rewritten = load_classifier_data(signal_config("lookback=20").training, "SIG", paths)
    assert rewritten.arrays.lookback == 20
    with pytest.raises(PipelineError, match="written for lookback 20, gru_SIG_classification"):
        PredictionModel("gru", "SIG", paths, CPU)
    load_classifier_data(signal_config().training, "SIG", paths)  # the model's config restores it
    assert PredictionModel("gru", "SIG", paths, CPU).lookback == 16


def test_load_prediction_table_rejects_bad_tables(signal_run, tmp_path) -> None:
    src, _, _ = signal_run
    paths = Paths.from_root(tmp_path)
    good = pd.read_csv(Artifacts(Paths.from_root(src), "SIG").prediction_table("lstm"))
    target = Artifacts(paths, "SIG").prediction_table("lstm")
    target.parent.mkdir(parents=True)

    good.drop(columns=["confidence"]).to_csv(target, index=False)
    with pytest.raises(PipelineError, match="missing column"):
        load_prediction_table(paths, "lstm", "SIG")
    bad = good.copy()
    bad.loc[5, "p_rise"] = 0.9
    bad.to_csv(target, index=False)
    with pytest.raises(PipelineError, match=r"row 7 \(bar \d+\): probabilities"):
        load_prediction_table(paths, "lstm", "SIG")
    with pytest.raises(PipelineError, match="prediction table not found"):
        load_prediction_table(paths, "gru", "SIG")


def test_validate_models_step6(signal_run, tmp_path, signal_config) -> None:
    src, _, cfg = signal_run
    result = validate_models(cfg, "SIG", Paths.from_root(src))
    assert set(result) == {"dlstm", "bilstm", "ensemble", "table"}
    for m in ("dlstm", "bilstm"):
        assert result[m]["walk_forward_models"] == 2
        assert result[m]["device"] == "cpu" and result[m]["n_parameters"] > 0
        assert sum(result[m]["dummy_probabilities"]) == pytest.approx(1.0)
    assert result["table"]["in_sample_rows"] == 0
    assert result["table"]["path"].endswith("predictions_ensemble_SIG.csv")

    with pytest.raises(PipelineError, match=r"model dlstm: config changed since training"):
        validate_models(signal_config("dlstm_units=4"), "SIG", Paths.from_root(src))

    root = tmp_path / "copy"
    shutil.copytree(src, root)
    Path(root / "models" / "walkforward" / "bilstm_SIG_fold2.pth").unlink()
    with pytest.raises(PipelineError, match="bilstm_SIG_fold2.pth: model file not found"):
        validate_models(cfg, "SIG", Paths.from_root(root))
    Path(root / "models" / "bilstm_SIG_classification.pth").write_bytes(b"not a model")
    with pytest.raises(PipelineError, match="bilstm_SIG_classification.pth: unreadable model"):
        validate_models(cfg, "SIG", Paths.from_root(root))
