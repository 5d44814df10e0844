"""Step 5's plans: which models it trains, the rule that reuses an up-to-date model file, what one
model is fit on (:class:`FitPlan`: the main model's train block, or a walk-forward fold's past with
its own scaler and threshold) and what its model file holds (:func:`model_payload`).

``train_models.py`` runs the step; torch and the feature code are imported inside the functions
that use them, so that its ``--help`` answers at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.common import PipelineError
from pipeline.config.schema import MODEL_NAMES, Config, TrainingConfig

if TYPE_CHECKING:
    import numpy as np
    import torch

    from pipeline.classifiers.prepare import ClassifierData
    from pipeline.data.splits import Block

# ================================================================ which models, skip rule


def select_models(cfg: Config, requested: list[str] | None) -> list[str]:
    """``requested``, else the ensemble members when the agent uses the ensemble, else all four."""
    if requested:
        unknown = [m for m in requested if m not in MODEL_NAMES]
        if unknown:
            raise PipelineError(
                f"--models: unknown model {unknown[0]!r}; expected names from "
                f"{', '.join(MODEL_NAMES)}"
            )
        return list(dict.fromkeys(requested))
    if cfg.ppo.prediction_model == "ensemble":
        return list(cfg.ppo.ensemble_models)
    return list(cfg.training.models)


def up_to_date(path: Path, dataset_sha: str, config_hash: str) -> tuple[bool, str]:
    """Whether the model file at ``path`` can be reused, and why not (for the log)."""
    from pipeline.classifiers.nets import load_model_file

    if not path.is_file():
        return False, "no model file"
    try:
        payload = load_model_file(path)
    except PipelineError as exc:
        return False, f"model file unusable ({exc})"
    if payload["dataset_sha256"] != dataset_sha:
        return False, "dataset changed"
    if payload["config_hash"] != config_hash:
        return False, f"config changed: hash {payload['config_hash']} -> {config_hash}"
    return True, "up to date (same dataset and config hash)"


# ================================================================ what one model is fit on


@dataclass
class FitPlan:
    """What one model is fit on: scaled features, its train / early-stopping blocks, labels."""

    tag: str  # "dev" for the main model, "fold{i}" for walk-forward models
    fit: Block
    early_stop: Block
    scaled: np.ndarray  # (N, F) float32 scaled with this plan's own scaler
    labels: np.ndarray  # (N,) int8 with this plan's own threshold
    delta: float
    scaler_mean: np.ndarray  # (F,)
    scaler_scale: np.ndarray  # (F,)


MAIN_PLAN_TAG = "dev"
""":attr:`FitPlan.tag` of the main model's plan."""


def main_plan(prep: ClassifierData) -> FitPlan:
    """The main model: train block, early stopping on val, the dataset's train-only scaler."""
    import numpy as np

    a = prep.arrays
    return FitPlan(
        tag=MAIN_PLAN_TAG,
        fit=a.splits.train,
        early_stop=a.splits.val,
        scaled=a.scaled,
        labels=a.labels,
        delta=float(a.delta),
        scaler_mean=np.asarray(a.scaler.mean_, dtype=np.float64),
        scaler_scale=np.asarray(a.scaler.scale_, dtype=np.float64),
    )


def fold_plan(prep: ClassifierData, cfg: TrainingConfig, fold: int) -> FitPlan:
    """Walk-forward model that predicts fold ``fold``: trained on folds ``0..fold-1`` only.

    The training range is split like the main model's: early stopping on its last
    ``val_fraction`` with a purge gap before it. Scaler and auto threshold are fit on the fit part
    only, so nothing at or after the predicted fold (nor the early-stopping rows) shapes them.
    """
    from pipeline.data.splits import MIN_BLOCK_SAMPLES, Block

    a = prep.arrays
    folds, purge = a.splits.folds, a.splits.purge
    start, stop = folds[0].start, folds[fold - 1].stop
    n_es = int(round((stop - start) * cfg.val_fraction))
    early_stop = Block(f"fold{fold}-es", stop - n_es, stop)
    fit = Block(f"fold{fold}-fit", start, early_stop.start - purge)
    for block in (fit, early_stop):
        if len(block) < MIN_BLOCK_SAMPLES:
            raise PipelineError(
                f"walk-forward fold {fold}: block {block.name} has {len(block)} bars (needs "
                f">= {MIN_BLOCK_SAMPLES}); use fewer walk_forward_folds or a longer dataset"
            )
    return past_plan(prep, cfg, f"fold{fold}", fit, early_stop)


def past_plan(
    prep: ClassifierData, cfg: TrainingConfig, tag: str, fit: Block, early_stop: Block
) -> FitPlan:
    """A model fit on the ``fit`` block alone, with its own scaler and auto threshold fit on that
    block only, so that nothing after it (its early-stopping block, the bars it predicts) shapes
    them: the walk-forward fold models (:func:`fold_plan`) and the tabular models' out-of-fold
    refits (:func:`pipeline.classifiers.tabular.training_block_cv`)."""
    import numpy as np

    from pipeline.classifiers.prepare import apply_scaler, fit_scaler
    from pipeline.data.labels import auto_threshold, make_labels

    a = prep.arrays
    scaler = fit_scaler(a.features, fit, a.lookback)
    delta = auto_threshold(a.r[fit.bars()]) if cfg.threshold_delta is None else cfg.threshold_delta
    return FitPlan(
        tag=tag,
        fit=fit,
        early_stop=early_stop,
        scaled=apply_scaler(scaler, a.features),
        labels=make_labels(a.r, delta),
        delta=float(delta),
        scaler_mean=np.asarray(scaler.mean_, dtype=np.float64),
        scaler_scale=np.asarray(scaler.scale_, dtype=np.float64),
    )


# ================================================================ what its model file holds


class TrainedModel(Protocol):
    """What step 5 reads of a finished training (``pytorch_train.TrainResult``, which the library
    may not import): the best weights and how the training went."""

    model: torch.nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    train_seconds: float
    device: str
    batch_size: int
    amp: str
    resumed_from_epoch: int
    stopped_early: bool
    extra: dict[str, Any]  # what a tabular model chose; ``cv_rows`` (tabular.training_block_cv)


def model_payload(
    cfg: TrainingConfig, prep: ClassifierData, name: str, plan: FitPlan, result: TrainedModel
) -> dict[str, Any]:
    """Everything needed to rebuild and use the model; only weights-only-safe types inside."""
    import torch

    from pipeline.classifiers.nets import (
        MODEL_FILE_FORMAT,
        BoosterClassifier,
        arch_config,
        count_parameters,
    )

    booster = result.model.model_text if isinstance(result.model, BoosterClassifier) else None
    return {
        "format": MODEL_FILE_FORMAT,
        "model": name,
        "dataset": prep.info.name,
        "source": f"{name}/{plan.tag}",
        "arch": arch_config(name, len(prep.feature_names), cfg),
        "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
        # LightGBM's own text format, as a string: loads with weights_only, never unpickled
        **({"booster": booster} if booster is not None else {}),
        "feature_names": list(prep.feature_names),
        "lookback": int(prep.arrays.lookback),
        "label": {
            "k": int(prep.arrays.k),
            "delta": float(plan.delta),
            "delta_auto": cfg.threshold_delta is None,
        },
        "scaler": {
            "mean": [float(v) for v in plan.scaler_mean],
            "scale": [float(v) for v in plan.scaler_scale],
        },
        "dataset_sha256": prep.info.sha256,
        "config_hash": cfg.hash_for_model(name),
        "trained_on": {
            "fit": [int(plan.fit.start), int(plan.fit.stop)],
            "early_stop": [int(plan.early_stop.start), int(plan.early_stop.stop)],
        },
        "best_epoch": int(result.best_epoch),
        "epochs_run": int(result.epochs_run),
        "device": result.device,
        "n_parameters": int(count_parameters(result.model)),
        "torch_version": str(torch.__version__),
    }
