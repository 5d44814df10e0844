"""Step 6 of the driver: every model the PPO config needs loads and predicts.

:func:`validate_models` loads each classifier (and its walk-forward fold models) through the
predictors of :mod:`pipeline.classifiers.predictors`, runs a dummy window, checks shapes and
probability sums, and checks the prediction table the agent will read
(:mod:`pipeline.classifiers.prediction_table`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.classifiers.prediction_table import PROB_TOLERANCE, load_prediction_table
from pipeline.classifiers.predictors import EnsemblePredictionModel, PredictionModel
from pipeline.classifiers.prepare import load_classifier_data
from pipeline.common import Paths, PipelineError, sha256_file
from pipeline.config.schema import Config
from pipeline.device import resolve_device
from pipeline.store.artifacts import Artifacts

log = logging.getLogger(__name__)

REAL_WINDOWS = 64
"""Windows of the dataset, spread evenly over it, each model predicts in step 6."""


def _check_probs(name: str, probs: np.ndarray, n: int) -> None:
    if probs.shape != (n, 3):
        raise PipelineError(f"model {name}: output shape {probs.shape}, expected ({n}, 3)")
    if not np.isfinite(probs).all() or np.abs(probs.sum(axis=1) - 1).max() > PROB_TOLERANCE:
        raise PipelineError(f"model {name}: probabilities do not sum to 1 ({probs.sum(axis=1)})")


@dataclass
class _Checks:
    """What step 6 checks every model against: the dataset (name, file, SHA-256), the config,
    the device, the prepared real windows and the generator of the dummy windows (one stream for
    all models, drawn in the order the models are checked)."""

    cfg: Config
    artifacts: Artifacts
    name: str
    dataset_file: Path
    sha: str
    device: Any
    prep: Any
    real_bars: np.ndarray
    rng: np.random.Generator


def validate_models(cfg: Config, dataset: str, paths: Paths) -> dict[str, Any]:
    """Step 6: load every model the PPO config needs, run dummy windows, check the outputs.

    Checks each model file (and the ensemble) loads, matches the dataset file's SHA-256 and the
    current config hash, maps windows ``(n, lookback, F)`` to probabilities ``(n, 3)`` summing to
    1, scales every row of the dataset to finite numbers with its scaler and predicts finite
    probabilities for real windows (:meth:`PredictionModel.check_finite`),
    that the walk-forward fold models exist when the agent uses them, and that the prediction
    table the agent will read is valid. Returns ``{name: details}``.

    Raises:
        PipelineError: naming the model that failed.
    """
    from pipeline.classifiers.model_choice import resolve_prediction_model

    cfg, choice = resolve_prediction_model(cfg, paths, dataset)  # auto -> the validation-best
    log.info("the agent's classifier: %s", choice)
    checks = _prepare_checks(cfg, dataset, paths)
    ppo_cfg = cfg.ppo
    needed = (
        list(ppo_cfg.ensemble_models)
        if ppo_cfg.prediction_model == "ensemble"
        else [ppo_cfg.prediction_model]
    )
    results: dict[str, Any] = {}
    for m in needed:
        results[m] = _check_model(checks, m, paths)
    table_name = "ensemble" if ppo_cfg.prediction_model == "ensemble" else ppo_cfg.prediction_model
    if ppo_cfg.prediction_model == "ensemble":
        ens = EnsemblePredictionModel(checks.name, needed, paths, checks.device)
        results["ensemble"] = {
            "device": str(ens.device),
            "n_parameters": ens.n_parameters,
            "dummy_probabilities": _dummy_check(checks.rng, "ensemble", ens).tolist(),
        }
        log.info("ensemble of %s ok", ", ".join(needed))
    results["table"] = _check_table(checks, paths, table_name)
    return results


def _prepare_checks(cfg: Config, dataset: str, paths: Paths) -> _Checks:
    """The dataset's file, hash and real windows, the device and the dummy windows' generator."""
    from pipeline.data.load import resolve_dataset_path

    dataset_file = resolve_dataset_path(dataset, paths.datasets)
    artifacts = Artifacts(paths, str(dataset_file))
    name = artifacts.dataset
    sha = sha256_file(dataset_file)
    device = resolve_device(cfg.training.device)
    rng = np.random.default_rng(0)
    # Real windows through each model's own scaler: every row is scaled, the network runs on
    # REAL_WINDOWS windows spread over the dataset.
    prep = load_classifier_data(cfg.training, dataset, paths, save_scaler=False)
    first, n_bars = prep.arrays.splits.first_bar, prep.arrays.n_bars
    real_bars = np.unique(np.linspace(first, n_bars - 1, REAL_WINDOWS).astype(np.int64))
    return _Checks(cfg, artifacts, name, dataset_file, sha, device, prep, real_bars, rng)


def _dummy_check(
    rng: np.random.Generator, label: str, model: PredictionModel | EnsemblePredictionModel
) -> np.ndarray:
    """One random window (and a batch of 4 copies) through ``model``: its probabilities."""
    window = rng.standard_normal((model.lookback, len(model.feature_names)))  # (L, F)
    try:
        cls, conf, probs = model.predict(window, scaled=True)
        batch = model.predict_proba_windows(np.stack([window] * 4), scaled=True)  # (4, 3)
    except PipelineError:
        raise
    except Exception as exc:  # any failure inside the network names the model
        raise PipelineError(
            f"model {label}: prediction failed ({type(exc).__name__}: {exc})"
        ) from None
    _check_probs(label, probs[None], 1)
    _check_probs(label, batch, 4)
    if not (0 <= cls < 3 and abs(conf - probs.max()) < 1e-12):
        raise PipelineError(f"model {label}: class {cls} / confidence {conf} inconsistent")
    return probs


def _check_model(checks: _Checks, m: str, paths: Paths) -> dict[str, Any]:
    """Model ``m``: same dataset and config as now, dummy and real windows, its fold models."""
    model = PredictionModel(m, checks.name, paths, checks.device)
    if model.dataset_sha256 != checks.sha:
        raise PipelineError(
            f"model {m}: trained on dataset sha256 {model.dataset_sha256[:12]}, "
            f"{checks.dataset_file} has {checks.sha[:12]}; rerun train_models.py"
        )
    expected = checks.cfg.training.hash_for_model(m)
    if model.config_hash != expected:
        raise PipelineError(
            f"model {m}: config changed since training (hash {model.config_hash} -> "
            f"{expected}); rerun train_models.py"
        )
    probs = _dummy_check(checks.rng, m, model)
    model.check_finite(checks.prep, checks.real_bars)
    folds = 0
    if checks.cfg.ppo.ppo_prediction_source != "in_sample":
        folds = _check_fold_models(checks, m, paths, expected)
    log.info(
        "model %s ok: %s parameters on %s, input (%d, %d), %d walk-forward models",
        m,
        f"{model.n_parameters:,}",
        model.device,
        model.lookback,
        len(model.feature_names),
        folds,
    )
    return {
        "device": str(model.device),
        "n_parameters": model.n_parameters,
        "lookback": model.lookback,
        "n_features": len(model.feature_names),
        "dummy_probabilities": probs.tolist(),
        "walk_forward_models": folds,
    }


def _check_fold_models(checks: _Checks, m: str, paths: Paths, expected: str) -> int:
    """The walk-forward fold models of ``m`` (folds 1..k-1): fresh, and they predict; how many."""
    folds = 0
    for fold in range(1, checks.cfg.training.walk_forward_folds):
        fpath = checks.artifacts.fold_model(m, fold)
        fm = PredictionModel(m, checks.name, paths, checks.device, path=fpath)
        if fm.dataset_sha256 != checks.sha or fm.config_hash != expected:
            raise PipelineError(f"model {m}: walk-forward model {fpath} is stale")
        _dummy_check(checks.rng, f"{m}/fold{fold}", fm)
        fm.check_finite(checks.prep, checks.real_bars)
        folds += 1
    return folds


def _check_table(checks: _Checks, paths: Paths, table_name: str) -> dict[str, Any]:
    """The prediction table the agent will read: no in-sample rows unless the agent wants them."""
    table = load_prediction_table(paths, table_name, checks.name)
    if checks.cfg.ppo.ppo_prediction_source != "in_sample" and table["in_sample"].any():
        raise PipelineError(
            f"prediction table of {table_name} has in-sample rows but ppo_prediction_source = "
            "walk_forward; rerun train_models.py"
        )
    return {
        "path": str(checks.artifacts.prediction_table(table_name)),
        "rows": len(table),
        "in_sample_rows": int(table["in_sample"].sum()),
    }
