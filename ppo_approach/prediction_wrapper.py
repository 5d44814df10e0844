"""Step 6 of the driver: every model the PPO config needs loads and predicts.

:func:`validate_models` loads each classifier (and its walk-forward fold models) through the
predictors of :mod:`pipeline.classifiers.predictors`, runs a dummy window, checks shapes and
probability sums, and checks the prediction table the agent will read
(:mod:`pipeline.classifiers.prediction_table`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pipeline.classifiers.prediction_table import PROB_TOLERANCE, load_prediction_table
from pipeline.classifiers.predictors import EnsemblePredictionModel, PredictionModel
from pipeline.classifiers.prepare import prepare_dataset
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
    from pipeline.data.load import resolve_dataset_path

    cfg, choice = resolve_prediction_model(cfg, paths, dataset)  # auto -> the validation-best
    log.info("the agent's classifier: %s", choice)
    dataset_file = resolve_dataset_path(dataset, paths.datasets)
    artifacts = Artifacts(paths, str(dataset_file))
    name = artifacts.dataset
    sha = sha256_file(dataset_file)
    device = resolve_device(cfg.training.device)
    ppo_cfg = cfg.ppo
    needed = (
        list(ppo_cfg.ensemble_models)
        if ppo_cfg.prediction_model == "ensemble"
        else [ppo_cfg.prediction_model]
    )
    results: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    # Real windows through each model's own scaler: every row is scaled, the network runs on
    # REAL_WINDOWS windows spread over the dataset.
    prep = prepare_dataset(cfg.training, dataset, paths, save_scaler=False)
    first, n_bars = prep.arrays.splits.first_bar, prep.arrays.n_bars
    real_bars = np.unique(np.linspace(first, n_bars - 1, REAL_WINDOWS).astype(np.int64))

    def dummy_check(label: str, model: PredictionModel | EnsemblePredictionModel) -> np.ndarray:
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

    for m in needed:
        model = PredictionModel(m, name, paths, device)
        if model.dataset_sha256 != sha:
            raise PipelineError(
                f"model {m}: trained on dataset sha256 {model.dataset_sha256[:12]}, "
                f"{dataset_file} has {sha[:12]}; rerun train_models.py"
            )
        expected = cfg.training.hash_for_model(m)
        if model.config_hash != expected:
            raise PipelineError(
                f"model {m}: config changed since training (hash {model.config_hash} -> "
                f"{expected}); rerun train_models.py"
            )
        probs = dummy_check(m, model)
        model.check_finite(prep, real_bars)
        folds = 0
        if ppo_cfg.ppo_prediction_source != "in_sample":
            for fold in range(1, cfg.training.walk_forward_folds):
                fpath = artifacts.fold_model(m, fold)
                fm = PredictionModel(m, name, paths, device, path=fpath)
                if fm.dataset_sha256 != sha or fm.config_hash != expected:
                    raise PipelineError(f"model {m}: walk-forward model {fpath} is stale")
                dummy_check(f"{m}/fold{fold}", fm)
                fm.check_finite(prep, real_bars)
                folds += 1
        results[m] = {
            "device": str(model.device),
            "n_parameters": model.n_parameters,
            "lookback": model.lookback,
            "n_features": len(model.feature_names),
            "dummy_probabilities": probs.tolist(),
            "walk_forward_models": folds,
        }
        log.info(
            "model %s ok: %s parameters on %s, input (%d, %d), %d walk-forward models",
            m,
            f"{model.n_parameters:,}",
            model.device,
            model.lookback,
            len(model.feature_names),
            folds,
        )
    table_name = "ensemble" if ppo_cfg.prediction_model == "ensemble" else ppo_cfg.prediction_model
    if ppo_cfg.prediction_model == "ensemble":
        ens = EnsemblePredictionModel(name, needed, paths, device)
        results["ensemble"] = {
            "device": str(ens.device),
            "n_parameters": ens.n_parameters,
            "dummy_probabilities": dummy_check("ensemble", ens).tolist(),
        }
        log.info("ensemble of %s ok", ", ".join(needed))
    table = load_prediction_table(paths, table_name, name)
    if ppo_cfg.ppo_prediction_source != "in_sample" and table["in_sample"].any():
        raise PipelineError(
            f"prediction table of {table_name} has in-sample rows but ppo_prediction_source = "
            "walk_forward; rerun train_models.py"
        )
    results["table"] = {
        "path": str(artifacts.prediction_table(table_name)),
        "rows": len(table),
        "in_sample_rows": int(table["in_sample"].sum()),
    }
    return results
