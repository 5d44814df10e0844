"""Step 5: train the classifiers, report honest metrics, write the agent's prediction tables.

For each selected model (``--models``, else the PPO config's ensemble members when
``prediction_model = ensemble``, else all four):

* the main model is trained on the train block with early stopping on the val block and saved to
  ``models/{model}_{dataset}_classification.pth`` (with the resolved config beside it);
* metrics on val and on the test block (touched once, for the report) sit next to two baselines
  computed on the same rows: the train block's majority class and a logistic regression on the last
  bar's features; history, curves and a confusion-matrix plot go to ``results/``;
* with ``ppo_prediction_source = walk_forward`` the walk-forward fold models are trained
  (``models/walkforward/``), and the prediction tables for the agent are written
  (``results/predictions_{model}_{dataset}.csv``, plus the ensemble table).

A model is skipped when its file loads and records the same dataset SHA-256 and config hash as now
(``TrainingConfig.hash_for_model``); ``--force`` always retrains.

The headline of each model (``training_summary_{dataset}.json``, ``models[name]["headline"]``)
compares its test macro-F1 with chance (1/3) and with the logistic regression on the same rows,
and adds the directional hit rate (see :func:`test_comparison`).

torch, sklearn and the feature code are imported inside the functions that use them, so that
``--help`` and usage errors answer at once (issue 8 item 29).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.checks.leak_alarms import Alarm, alarm_lines, permutation_alarms, raise_if_strict
from pipeline.classifiers.report import (
    VAL_BLOCK_NOTE,
    baseline_metrics,
    format_summary_table,
    headline_comparison,
    labelled_bars,
    plot_training,
)
from pipeline.common import (
    CliParser,
    Paths,
    PipelineError,
    atomic_write_json,
    run_cli,
    setup_logging,
)
from pipeline.config.files import (
    Config,
    TrainingConfig,
    add_config_args,
    config_from_args,
    write_resolved,
)
from pipeline.config.schema import MODEL_NAMES
from pipeline.run.step_results import TrainingSummary
from pipeline.store.artifacts import Artifacts

if TYPE_CHECKING:
    import numpy as np
    import torch

    from pipeline.classifiers.prepare import Prepared
    from pipeline.data.splits import Block
    from pytorch_train import TrainResult

log = logging.getLogger("train_models")

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


# ================================================================ fitting one model


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


def main_plan(prep: Prepared) -> FitPlan:
    """The main model: train block, early stopping on val, the dataset's train-only scaler."""
    import numpy as np

    a = prep.arrays
    return FitPlan(
        tag="dev",
        fit=a.splits.train,
        early_stop=a.splits.val,
        scaled=a.scaled,
        labels=a.labels,
        delta=float(a.delta),
        scaler_mean=np.asarray(a.scaler.mean_, dtype=np.float64),
        scaler_scale=np.asarray(a.scaler.scale_, dtype=np.float64),
    )


def fold_plan(prep: Prepared, cfg: TrainingConfig, fold: int) -> FitPlan:
    """Walk-forward model that predicts fold ``fold``: trained on folds ``0..fold-1`` only.

    The training range is split like the main model's: early stopping on its last
    ``val_fraction`` with a purge gap before it. Scaler and auto threshold are fit on the fit part
    only, so nothing at or after the predicted fold (nor the early-stopping rows) shapes them.
    """
    import numpy as np

    from pipeline.classifiers.prepare import apply_scaler, fit_scaler
    from pipeline.data.labels import auto_threshold, make_labels
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
    scaler = fit_scaler(a.features, fit, a.lookback)
    delta = auto_threshold(a.r[fit.bars()]) if cfg.threshold_delta is None else cfg.threshold_delta
    return FitPlan(
        tag=f"fold{fold}",
        fit=fit,
        early_stop=early_stop,
        scaled=apply_scaler(scaler, a.features),
        labels=make_labels(a.r, delta),
        delta=float(delta),
        scaler_mean=np.asarray(scaler.mean_, dtype=np.float64),
        scaler_scale=np.asarray(scaler.scale_, dtype=np.float64),
    )


def fit_model(
    cfg: TrainingConfig,
    prep: Prepared,
    name: str,
    plan: FitPlan,
    device: torch.device,
    ckpt: Path,
    resume: bool,
    desc: str,
) -> TrainResult:
    """Build ``name`` (seeded) and train it on ``plan``; checkpoints go to ``ckpt``."""
    from pipeline.classifiers.nets import arch_config, build_classifier
    from pipeline.classifiers.windows import WindowData
    from pipeline.device import seed_everything
    from pytorch_train import train_classifier

    if name == "logreg":
        return fit_logreg(cfg, prep, plan, device)
    if name == "lightgbm":
        return fit_lightgbm(cfg, prep, plan, device)
    lookback = prep.arrays.lookback
    fit_bars = labelled_bars(plan.fit, plan.labels)
    es_bars = labelled_bars(plan.early_stop, plan.labels)
    train = WindowData.create(plan.scaled, fit_bars, plan.labels[fit_bars], lookback, device)
    val = WindowData.create(plan.scaled, es_bars, plan.labels[es_bars], lookback, device)
    seed_everything(cfg.seed)
    model = build_classifier(arch_config(name, len(prep.feature_names), cfg))
    fingerprint = f"{cfg.hash_for_model(name)}:{prep.info.sha256}:{plan.tag}"
    return train_classifier(
        model,
        train,
        val,
        cfg,
        checkpoint_path=ckpt,
        resume=resume,
        fingerprint=fingerprint,
        desc=desc,
    )


def window_summary(
    scaled: np.ndarray, bars: np.ndarray, lookback: int, spread: bool = False
) -> np.ndarray:
    """The tabular models' summary of the windows ending at ``bars``, with numpy: the last bar's
    features and their mean over ``lookback`` bars ``(n, 2F)`` (``LogRegClassifier.summary``),
    with ``spread`` also their standard deviation ``(n, 3F)`` (``BoosterClassifier.summary``)."""
    import numpy as np

    x = np.asarray(scaled, dtype=np.float64)  # (N, F); NaN only in warm-up rows no window reads
    x0 = np.nan_to_num(x)
    zero = np.zeros((1, x.shape[1]))
    cum = np.vstack([zero, np.cumsum(x0, axis=0)])  # (N+1, F)
    mean = (cum[bars + 1] - cum[bars + 1 - lookback]) / lookback  # (n, F)
    parts = [x[bars], mean]
    if spread:
        cum2 = np.vstack([zero, np.cumsum(x0 * x0, axis=0)])  # (N+1, F)
        var = (cum2[bars + 1] - cum2[bars + 1 - lookback]) / lookback - mean * mean
        parts.append(np.sqrt(np.clip(var, 0.0, None)))
    return np.hstack(parts)


def _tabular_data(
    prep: Prepared, plan: FitPlan, spread: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_fit, y_fit, x_es, y_es)``: summaries and labels of the fit and early-stopping bars."""
    import numpy as np

    out = []
    for block in (plan.fit, plan.early_stop):
        bars = labelled_bars(block, plan.labels)
        out += [
            window_summary(plan.scaled, bars, prep.arrays.lookback, spread),
            plan.labels[bars].astype(np.int64),
        ]
    if len(np.unique(out[1])) < 3:
        raise PipelineError(
            f"{plan.tag}: the fit block's labels have {len(np.unique(out[1]))} of the 3 classes; "
            "use a longer dataset or another threshold_delta"
        )
    return out[0], out[1], out[2], out[3]


def _tabular_result(
    model: torch.nn.Module, prep: Prepared, plan: FitPlan, device: torch.device, t0: float
) -> TrainResult:
    """A fitted tabular model as a one-"epoch" :class:`TrainResult`: its history row scores the
    fit and early-stopping blocks through the same windows and predictor as the networks."""
    import numpy as np

    from pipeline.classifiers.metrics import classification_metrics
    from pipeline.classifiers.windows import WindowData, predict_proba
    from pytorch_train import TrainResult

    model = model.to(device).eval()
    # The networks' history columns; lr is 0: there is no gradient step to size.
    row: dict[str, float] = {"epoch": 1, "lr": 0.0, "epoch_seconds": time.perf_counter() - t0}
    for split, block in (("train", plan.fit), ("val", plan.early_stop)):
        bars = labelled_bars(block, plan.labels)
        y = plan.labels[bars].astype(np.int64)
        data = WindowData.create(plan.scaled, bars, None, prep.arrays.lookback, device)
        proba = predict_proba(model, data)  # (n, 3)
        picked = np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0)  # (n,) p of the true class
        row[f"{split}_loss"] = float(-np.mean(np.log(picked)))
        m = classification_metrics(y, proba.argmax(axis=1))
        row[f"{split}_accuracy"], row[f"{split}_macro_f1"] = m["accuracy"], m["macro_f1"]
    return TrainResult(
        model=model,
        history=[row],
        best_epoch=1,
        epochs_run=1,
        best_val_loss=row["val_loss"],
        train_seconds=time.perf_counter() - t0,
        device="cpu",  # scikit-learn and LightGBM fit on the CPU; predictions run on ``device``
        batch_size=len(labelled_bars(plan.fit, plan.labels)),
        amp="off",
    )


def fit_logreg(
    cfg: TrainingConfig, prep: Prepared, plan: FitPlan, device: torch.device
) -> TrainResult:
    """The ``logreg`` model (issue 17 item 1): scikit-learn's multinomial logistic regression on
    :func:`window_summary` of the fit bars (balanced class weights like the networks' loss, L2
    with ``logreg_c``), its coefficients copied into
    :class:`pipeline.classifiers.nets.LogRegClassifier`. One "epoch": the early-stopping block only
    reports (nothing to stop)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from pipeline.classifiers.nets import LogRegClassifier

    t0 = time.perf_counter()
    x_fit, y_fit, _, _ = _tabular_data(prep, plan, spread=False)
    sk = LogisticRegression(
        C=cfg.logreg_c, max_iter=2000, class_weight="balanced", random_state=cfg.seed
    ).fit(x_fit, y_fit)
    model = LogRegClassifier(len(prep.feature_names))
    with torch.no_grad():
        model.linear.weight.copy_(torch.as_tensor(sk.coef_, dtype=torch.float32))
        model.linear.bias.copy_(torch.as_tensor(sk.intercept_, dtype=torch.float32))
    return _tabular_result(model, prep, plan, device, t0)


LIGHTGBM_EARLY_STOP = 50
"""Boosting rounds without a better validation log loss before LightGBM stops."""


def fit_lightgbm(
    cfg: TrainingConfig, prep: Prepared, plan: FitPlan, device: torch.device
) -> TrainResult:
    """The ``lightgbm`` model (issue 17 item 1): gradient-boosted trees (multiclass, balanced
    class weights) on :func:`window_summary` with the spread, early-stopped on the
    early-stopping block's log loss like the networks; kept in LightGBM's text format inside
    :class:`pipeline.classifiers.nets.BoosterClassifier`."""
    import lightgbm
    from sklearn.utils.class_weight import compute_sample_weight

    from pipeline.classifiers.nets import BoosterClassifier
    from pipeline.device import configure_cpu_threads

    t0 = time.perf_counter()
    x_fit, y_fit, x_es, y_es = _tabular_data(prep, plan, spread=True)
    params = {
        "objective": "multiclass",
        "num_class": 3,
        "learning_rate": cfg.lightgbm_learning_rate,
        "num_leaves": cfg.lightgbm_leaves,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": cfg.seed,
        "deterministic": True,
        "num_threads": configure_cpu_threads(cfg.num_threads),
        "verbosity": -1,
    }
    train = lightgbm.Dataset(x_fit, y_fit, weight=compute_sample_weight("balanced", y_fit))
    valid = lightgbm.Dataset(x_es, y_es, weight=compute_sample_weight("balanced", y_es))
    booster = lightgbm.train(
        params,
        train,
        num_boost_round=cfg.lightgbm_rounds,
        valid_sets=[valid],
        callbacks=[lightgbm.early_stopping(LIGHTGBM_EARLY_STOP, verbose=False)],
    )
    text = booster.model_to_string(num_iteration=booster.best_iteration or None)
    result = _tabular_result(BoosterClassifier(text), prep, plan, device, t0)
    result.extra["boosting_rounds"] = int(booster.best_iteration or booster.current_iteration())
    return result


def model_payload(
    cfg: TrainingConfig, prep: Prepared, name: str, plan: FitPlan, result: TrainResult
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


# ================================================================ metrics and reports


def block_info(prep: Prepared, block: Block) -> dict[str, Any]:
    """Bar range and times of a block (``stop_bar`` exclusive, ``end_time`` of its last bar)."""
    ts = prep.df["timestamp"]
    return {
        "start_bar": int(block.start),
        "stop_bar": int(block.stop),
        "start_time": ts.iloc[block.start].isoformat(),
        "end_time": ts.iloc[block.stop - 1].isoformat(),
    }


def evaluate_block(
    model: torch.nn.Module, prep: Prepared, block: Block, device: torch.device
) -> dict[str, Any]:
    """Metrics of the main model on ``block`` (dataset's own scaler and labels), with the
    permutation baseline of its predictions (issue 18 item 2)."""
    import numpy as np

    from pipeline.classifiers.metrics import classification_metrics, permutation_baseline
    from pipeline.classifiers.windows import WindowData, predict_proba

    a = prep.arrays
    bars = labelled_bars(block, a.labels)
    data = WindowData.create(a.scaled, bars, None, a.lookback, device)
    pred = predict_proba(model, data).argmax(axis=1)
    y = a.labels[bars].astype(np.int64)
    metrics = classification_metrics(y, pred)
    metrics["permutation"] = permutation_baseline(y, pred, a.splits.purge)
    return metrics


def _summary_entry(status: str, reason: str, metrics: dict[str, Any]) -> dict[str, Any]:
    b = metrics["baselines"]
    cmp = headline_comparison(metrics)
    return {
        "status": status,
        "reason": reason,
        "headline": cmp["headline"],
        "verdict": cmp["verdict"],
        "test_macro_f1": metrics["test"]["macro_f1"],
        "chance_macro_f1": cmp["chance_macro_f1"],
        "logreg_test_macro_f1": b["logreg"]["test"]["macro_f1"],
        "majority_test_macro_f1": b["majority"]["test"]["macro_f1"],
        "test_rows": cmp["test_rows"],
        "macro_f1_standard_error": cmp["macro_f1_standard_error"],
        "beats_chance_on_test": cmp["beats_chance_on_test"],
        "beats_logreg_on_test": cmp["beats_logreg_on_test"],
        "direction_accuracy": cmp["direction_accuracy"],
        "direction_calls": cmp["direction_calls"],
        "direction_p_value": cmp["direction_p_value"],
        "label_horizon": cmp["label_horizon"],
        "logreg_direction_accuracy": cmp["logreg_direction_accuracy"],
        # The val scores come from the early-stopping block (issue 8 item 19): kept, labelled.
        "val_block": VAL_BLOCK_NOTE,
        "val_macro_f1": metrics["val"]["macro_f1"],
        "val_rows": int(sum(map(sum, metrics["val"]["confusion"]))),
        "majority_val_macro_f1": b["majority"]["val"]["macro_f1"],
        "beats_majority_on_val": metrics["beats_majority_on_val"],
        "best_epoch": metrics.get("best_epoch"),
        "epochs_run": metrics["epochs_run"],
        "train_seconds": metrics["train_seconds"],
    }


# ================================================================ one model, all models


def train_main_model(
    cfg: Config,
    prep: Prepared,
    name: str,
    paths: Paths,
    device: torch.device,
    baselines: dict[str, dict[str, Any]],
    resume: bool,
) -> dict[str, Any]:
    """Train, save and report the main model of ``name``; returns its metrics dict."""
    from pipeline.classifiers.nets import save_model_file

    train_cfg = cfg.training
    dataset = prep.info.name
    plan = main_plan(prep)
    art = Artifacts(paths, dataset)
    ckpt = art.classifier_checkpoint(name)
    result = fit_model(train_cfg, prep, name, plan, device, ckpt, resume, desc=f"{name}")
    payload = model_payload(train_cfg, prep, name, plan, result)
    save_model_file(art.classifier_model(name), payload)
    write_resolved(cfg, art.classifier_config(name))

    s = prep.arrays.splits
    val = evaluate_block(result.model, prep, s.val, device)
    # The test block is touched here once, for the report; nothing above looked at it.
    test = evaluate_block(result.model, prep, s.test, device)
    beats = val["macro_f1"] > baselines["majority"]["val"]["macro_f1"]
    metrics = {
        "model": name,
        "dataset": dataset,
        "dataset_sha256": prep.info.sha256,
        "config_hash": train_cfg.hash_for_model(name),
        "device": result.device,
        "amp": result.amp,
        "batch_size": result.batch_size,
        "n_parameters": payload["n_parameters"],
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "train_seconds": result.train_seconds,
        "delta": float(prep.arrays.delta),
        "label_horizon": int(prep.arrays.k),
        "delta_auto": train_cfg.threshold_delta is None,
        "val_block": VAL_BLOCK_NOTE,
        "val": val,
        "test": test,
        "baselines": {
            "majority": {k: baselines["majority"][k] for k in ("val", "test", "class")},
            "logreg": {k: baselines["logreg"][k] for k in ("val", "test")},
        },
        "beats_majority_on_val": bool(beats),
        "blocks": {b: block_info(prep, getattr(s, b)) for b in ("train", "val", "test")},
        "dataset_info": prep.info.to_dict(),
    }
    cmp = headline_comparison(metrics)
    metrics["comparison"] = cmp
    metrics["headline"] = cmp["headline"]
    # A verdict is a finding, not a fault: "no better than chance" is the honest result on a
    # random walk, so it is INFO like the others (issue 22 item 16).
    log.info("%s: %s", name, cmp["headline"])
    history = {
        "model": name,
        "dataset": dataset,
        "best_epoch": result.best_epoch,
        "resumed_from_epoch": result.resumed_from_epoch,
        "epochs": result.history,
    }
    atomic_write_json(art.history(name), history)
    plot_training(
        result.history,
        val["confusion"],
        art.training_plot(name),
        title=f"{name} on {dataset}: best epoch {result.best_epoch} of {result.epochs_run} "
        f"(lowest loss on the early-stopping block)\n{cmp['headline']}",
        best_epoch=result.best_epoch,
    )
    atomic_write_json(art.metrics(name), metrics)
    # Only now: a kill before the metrics file exists must leave the checkpoint, so that
    # --resume finishes this model from its last epoch instead of from epoch 1 (issue 22 item 4).
    ckpt.unlink(missing_ok=True)
    return metrics


def train_fold_models(
    cfg: Config,
    prep: Prepared,
    name: str,
    paths: Paths,
    device: torch.device,
    force: bool,
    resume: bool,
) -> dict[str, str]:
    """Walk-forward models for folds 1..F-1 (fold 0 is only ever trained on); same skip rule."""
    from pipeline.classifiers.nets import save_model_file

    train_cfg = cfg.training
    art = Artifacts(paths, prep.info.name)
    status: dict[str, str] = {}
    for fold in range(1, len(prep.arrays.splits.folds)):
        path = art.fold_model(name, fold)
        ok, reason = up_to_date(path, prep.info.sha256, train_cfg.hash_for_model(name))
        if ok and not force:
            status[f"fold{fold}"] = "skipped"
            log.info("%s fold %d: skipped, %s", name, fold, reason)
            continue
        log.info("%s fold %d: training (%s)", name, fold, "--force" if force else reason)
        plan = fold_plan(prep, train_cfg, fold)
        ckpt = art.classifier_checkpoint(name, plan.tag)
        result = fit_model(
            train_cfg, prep, name, plan, device, ckpt, resume, desc=f"{name}/fold{fold}"
        )
        save_model_file(path, model_payload(train_cfg, prep, name, plan, result))
        ckpt.unlink(missing_ok=True)
        status[f"fold{fold}"] = "trained"
    return status


def _read_metrics(paths: Paths, name: str, dataset: str) -> dict[str, Any] | None:
    try:
        return json.loads(Artifacts(paths, dataset).metrics(name).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _train_all(
    cfg: Config,
    dataset: str,
    paths: Paths,
    models: list[str] | None = None,
    force: bool = False,
    resume: bool = False,
) -> TrainingSummary:
    """Step 5: train (or skip) each selected model, write metrics, summary and prediction tables.

    Returns the training summary (also written to ``results/training_summary_{dataset}.json``).
    """
    import torch

    from pipeline.classifiers.prediction_table import write_prediction_tables
    from pipeline.classifiers.prepare import prepare_dataset
    from pipeline.common import TrainingInterrupted
    from pipeline.device import configure_cpu_threads, resolve_device

    train_cfg = cfg.training
    names = select_models(cfg, models)
    device = resolve_device(train_cfg.device)
    if device.type == "cpu":
        threads = configure_cpu_threads(train_cfg.num_threads)
        log.info("device cpu, %d threads, float32", threads)
    else:
        log.info("device %s (%s)", device, torch.cuda.get_device_name(device))
    prep = prepare_dataset(train_cfg, dataset, paths)
    name_ds = prep.info.name
    paths.models.mkdir(parents=True, exist_ok=True)
    paths.results.mkdir(parents=True, exist_ok=True)
    baselines = baseline_metrics(prep, train_cfg.seed)
    # the oracle source keeps the walk-forward layout of blocks (issue 10)
    walk_forward = cfg.ppo.ppo_prediction_source != "in_sample"
    # issue 17 item 4: walk_forward_models = agent trains fold models only for what feeds the agent
    every_fold = walk_forward and cfg.training.walk_forward_models == "all"
    table_models = names

    entries: dict[str, dict[str, Any]] = {}
    try:
        for name in names:
            entries[name] = _train_or_skip(
                cfg, prep, name, paths, device, baselines, force, resume, every_fold
            )
        if walk_forward and not every_fold:
            table_models = agent_models(cfg, paths, name_ds, entries)
            if not table_models:
                log.warning(
                    "walk_forward_models = agent: the agent's classifier is not among this run's "
                    "models (%s); no fold models or prediction table written now",
                    ", ".join(names),
                )
            for name in names:
                if name not in table_models:
                    entries[name]["walk_forward"] = "not trained (walk_forward_models = agent)"
                    continue
                t0 = time.perf_counter()
                folds = train_fold_models(cfg, prep, name, paths, device, force, resume)
                entries[name]["walk_forward"] = folds
                entries[name]["wall_seconds"] += time.perf_counter() - t0
    except TrainingInterrupted as exc:
        if not entries:
            raise
        # Say which models are safe on disk (issue 8 item 6): a rerun skips them.
        raise TrainingInterrupted(
            f"{exc}; finished before the interrupt and kept: {', '.join(entries)}",
            exc.checkpoint_path,
            exc.last_epoch,
            exc.epoch,
            exc.what,
        ) from None

    alarms, control = step5_alarms(cfg, prep, paths, device, entries)
    written = write_prediction_tables(cfg, prep, paths, table_models, device)
    tables = written.paths
    summary: TrainingSummary = {
        "dataset": name_ds,
        "dataset_sha256": prep.info.sha256,
        "device": str(device),
        "prediction_source": cfg.ppo.ppo_prediction_source,
        "models": _merge_summary(paths, name_ds, entries),
        "prediction_tables": {k: str(v) for k, v in tables.items()},
        "auto_ensemble": written.auto_ensemble,
        "alarms": [a.to_dict() for a in alarms],
        "permutation_control": control,
    }
    art = Artifacts(paths, name_ds)
    atomic_write_json(art.training_summary, summary)
    record_artifacts(art, entries, tables)
    print(format_summary_table(entries))
    print("\n".join(alarm_lines(alarms) or ["leak alarms: none"]))
    raise_if_strict(alarms, cfg.training.strict_alarms, str(art.training_summary))
    return summary


def agent_models(
    cfg: Config, paths: Paths, dataset: str, entries: dict[str, dict[str, Any]]
) -> list[str]:
    """The models of this run that feed the agent: the ensemble's members, the named model, or
    for ``prediction_model = auto`` the best validation macro-F1 (step 7's own rule)."""
    from pipeline.classifiers.model_choice import AUTO, best_on_validation

    chosen = cfg.ppo.prediction_model
    if chosen == "ensemble":
        wanted = list(cfg.ppo.ensemble_models)
    elif chosen == AUTO:
        best = best_on_validation({"models": _merge_summary(paths, dataset, entries)})
        wanted = [best[0]] if best else list(entries)
    else:
        wanted = [chosen]
    return [m for m in entries if m in wanted]


def step5_alarms(
    cfg: Config, prep: Prepared, paths: Paths, device: torch.device, entries: dict[str, Any]
) -> tuple[list[Alarm], dict[str, Any] | None]:
    """Issue 18 item 1: step 5's run-time leak alarms (``pipeline/checks/leak_alarms.py``) on the
    bars the main models really used, and the label-permutation control on the model with the best
    early-stopping F1 among those trained now (``leak_controls``)."""
    from pipeline.checks.leak_alarms import classifier_alarms

    plan = main_plan(prep)
    fit_bars = labelled_bars(plan.fit, plan.labels)
    es_bars = labelled_bars(plan.early_stop, plan.labels)
    metrics = {n: m for n in entries if (m := _read_metrics(paths, n, prep.info.name))}
    limit = cfg.training.alarm_direction_accuracy
    alarms = classifier_alarms(prep, plan, fit_bars, es_bars, metrics, limit)
    trained = [n for n, e in entries.items() if e["status"] == "trained"]
    control = None
    if cfg.training.leak_controls and trained:
        name = max(trained, key=lambda n: float(entries[n]["val_macro_f1"]))
        control = permutation_control(cfg, prep, name, plan, paths, device)
        alarms += permutation_alarms(f"{name} (permuted-label control)", control)
    for alarm in alarms:
        log.warning("%s", alarm.line())
    return alarms, control


def permutation_control(
    cfg: Config, prep: Prepared, name: str, plan: FitPlan, paths: Paths, device: torch.device
) -> dict[str, Any]:
    """``name`` trained like its main model but with the labels of the train and early-stopping
    blocks permuted; its test headline. Only a path from the test labels to the model survives
    the permutation (the early-stopping labels too: selecting epochs on true labels would pick the
    epoch whose random weights happen to align with the signal)."""
    from dataclasses import replace

    import numpy as np

    from pipeline.checks.leak_alarms import permuted_labels

    s = prep.arrays.splits
    seen = np.concatenate([labelled_bars(b, plan.labels) for b in (s.train, s.val)])
    labels = permuted_labels(plan.labels, seen, cfg.training.seed)
    control = replace(plan, tag="permuted", labels=labels)
    ckpt = Artifacts(paths, prep.info.name).classifier_checkpoint(name, control.tag)
    log.info("%s: label-permutation control (train labels permuted)", name)
    result = fit_model(cfg.training, prep, name, control, device, ckpt, False, f"{name}/permuted")
    ckpt.unlink(missing_ok=True)
    test = evaluate_block(result.model, prep, prep.arrays.splits.test, device)
    m = {"test": test, "baselines": {"logreg": {"test": test}}, "label_horizon": prep.arrays.k}
    cmp = headline_comparison(m)
    keys = ("beats_chance_on_test", "chance_macro_f1", "direction_accuracy", "direction_p_value")
    out = {"model": name, "test_macro_f1": test["macro_f1"], **{k: cmp[k] for k in keys}}
    # Where the features carry a strong signal, even untrained weights map it to a direction
    # (right or wrong with equal odds), so the control must ALSO beat the shuffled-label
    # baseline's 95th percentile in macro-F1 to count as having learned the test labels.
    q95 = (test.get("permutation") or {}).get("q95", 1.0)
    out["beats_chance_on_test"] = bool(cmp["beats_chance_on_test"] and test["macro_f1"] > q95)
    direction = cmp["headline"].split("; ", 1)[1].split(" (")[0]  # "direction 50.3% of ..."
    out["headline"] = (
        f"{name} on permuted train labels: test macro-F1 {test['macro_f1']:.3f} vs shuffled "
        f"labels {cmp['chance_macro_f1']:.3f} (95% {q95:.3f}), {direction} (p "
        f"{cmp['direction_p_value'] or 1:.2g}): "
        f"{'ABOVE CHANCE' if out['beats_chance_on_test'] else 'at chance, as it must be'}"
    )
    log.info("%s", out["headline"])
    return out


def record_artifacts(
    art: Artifacts, entries: dict[str, dict[str, Any]], tables: dict[str, Path]
) -> None:
    """List what step 5 wrote (or found up to date) in the run manifest; the push step pushes
    exactly what the manifest lists (issue 9)."""
    from pipeline.store.manifest import STEP_CLASSIFIERS, UP_TO_DATE, WRITTEN

    manifest = art.manifest()
    for name, entry in entries.items():
        status = WRITTEN if entry.get("status") == "trained" else UP_TO_DATE
        files = [
            (art.classifier_model(name), "classifier_model"),
            (art.classifier_config(name), "config"),
            (art.metrics(name), "metrics"),
            (art.history(name), "history"),
            (art.training_plot(name), "plot"),
        ]
        folds = entry.get("walk_forward")
        for fold in folds if isinstance(folds, dict) else {}:  # trained or skipped: current
            files.append((art.fold_model(name, int(fold.removeprefix("fold"))), "fold_model"))
        manifest.record_many(
            [(p, kind) for p, kind in files if p.is_file()], STEP_CLASSIFIERS, status=status
        )
    extras = [(art.scaler, "scaler"), (art.training_summary, "training_summary")]
    extras += [(p, "prediction_table") for p in tables.values()]
    if "ensemble" in tables:  # how the ensemble combines its members (issue 17 item 2)
        extras.append((art.ensemble_report, "ensemble"))
    manifest.record_many([(p, k) for p, k in extras if Path(p).is_file()], STEP_CLASSIFIERS)


def _train_or_skip(
    cfg: Config,
    prep: Prepared,
    name: str,
    paths: Paths,
    device: torch.device,
    baselines: dict[str, dict[str, Any]],
    force: bool,
    resume: bool,
    walk_forward: bool,
) -> dict[str, Any]:
    """The main model of ``name`` (trained or skipped) and its fold models; its summary entry."""
    t0 = time.perf_counter()
    name_ds = prep.info.name
    chash = cfg.training.hash_for_model(name)
    ok, reason = up_to_date(
        Artifacts(paths, name_ds).classifier_model(name), prep.info.sha256, chash
    )
    metrics = _read_metrics(paths, name, name_ds) if ok else None
    if ok and metrics is None:
        ok, reason = False, "no metrics file"
    if ok and not force and metrics is not None:
        log.info("%s: skipped, %s", name, reason)
        entry = _summary_entry("skipped", reason, metrics)
    else:
        reason = "--force" if force else reason
        log.info("%s: training (%s)", name, reason)
        metrics = train_main_model(cfg, prep, name, paths, device, baselines, resume)
        entry = _summary_entry("trained", reason, metrics)
    if walk_forward:
        entry["walk_forward"] = train_fold_models(cfg, prep, name, paths, device, force, resume)
    entry["wall_seconds"] = time.perf_counter() - t0
    return entry


_HEADLINE_KEYS = (
    "headline",
    "verdict",
    "chance_macro_f1",
    "test_rows",
    "macro_f1_standard_error",
    "beats_chance_on_test",
    "beats_logreg_on_test",
    "direction_accuracy",
    "direction_calls",
    "direction_p_value",
    "label_horizon",
    "logreg_direction_accuracy",
)


def _merge_summary(
    paths: Paths, dataset: str, entries: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Entries of this run over those of earlier runs (models not trained now keep theirs).

    An earlier entry written before the headline existed gets it from its metrics file.
    """
    try:
        summary_file = Artifacts(paths, dataset).training_summary
        old = json.loads(summary_file.read_text(encoding="utf-8"))["models"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        old = {}
    if not isinstance(old, dict):
        old = {}
    for name, entry in old.items():
        if not isinstance(entry, dict) or "headline" in entry or name in entries:
            continue
        metrics = _read_metrics(paths, name, dataset)
        try:
            cmp = headline_comparison(metrics) if metrics is not None else None
        except (KeyError, TypeError, IndexError, ValueError):
            cmp = None
        if cmp is not None:
            entry.update({k: cmp[k] for k in _HEADLINE_KEYS if k in cmp})
    return {**old, **entries}


# ================================================================ CLI


def train_classifiers(
    cfg: Config,
    dataset: str,
    paths: Paths,
    models: list[str] | None = None,
    force: bool = False,
    resume: bool = False,
) -> TrainingSummary:
    """Step 5 as a function (the CLI and the driver both call it): :func:`_train_all`, and an
    interrupt outside a training epoch (data preparation, saving, prediction tables) said as
    what is on disk rather than assumed (issue 8 item 6)."""
    from pipeline.common import TrainingInterrupted

    try:
        return _train_all(cfg, dataset, paths, models, force, resume)
    except KeyboardInterrupt:
        pending = Artifacts(paths, dataset).pending_classifier_checkpoints(MODEL_NAMES)
        where = "train_models interrupted outside a training epoch; model files saved "
        if pending:
            what = f"{where}before it are kept, checkpoints kept: {', '.join(map(str, pending))}"
        else:
            what = f"{where}before it are kept; no checkpoint is pending"
        raise TrainingInterrupted(what, pending[0] if pending else None) from None


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of step 5 (usage errors exit 1: issue 8 item 12)."""
    p = CliParser(
        prog="train_models.py",
        description="Step 5: train the LSTM / GRU / BiLSTM / DLSTM classifiers on one dataset, "
        "report test metrics against chance and a logistic-regression baseline and write the "
        "agent's prediction tables.",
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="dataset name (datasets/NAME.csv under --root) or a path to an OHLCV CSV",
    )
    p.add_argument(
        "--models",
        help="comma-separated models to train (lstm,gru,bilstm,dlstm); default: the ensemble "
        "members when ppo_config.txt has prediction_model = ensemble, else all four",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="retrain even when a model file with the same dataset and config hash exists",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue interrupted trainings from their last epoch checkpoint "
        "(models/checkpoints/); gives the same result as an uninterrupted run",
    )
    p.add_argument(
        "--root",
        type=Path,
        help="folder holding datasets/, models/, scalers/, results/ (default: $PIPELINE_HOME "
        "or the project folder)",
    )
    p.add_argument("--verbose", action="store_true", help="debug logging (one line per epoch)")
    add_config_args(p)
    return p


def _resume_command(argv: list[str]) -> str:
    args = [a for a in argv if a != "--resume"] + ["--resume"]
    return shlex.join(["python", "train_models.py", *args])


def interrupt_hint(message: str, has_checkpoint: bool, argv: list[str]) -> str:
    """The interrupt's message plus the command to run next; a resume only when it can resume.

    Issue 8 item 6: without a checkpoint, "resume" would be a false promise.
    """
    if has_checkpoint:
        return f"{message}; resume with: {_resume_command(argv)}"
    return f"{message}; rerun with: {shlex.join(['python', 'train_models.py', *argv])}"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run :func:`train_classifiers`; exit 130 with a true hint on interruption.

    Holds the dataset's run lock (``pipeline.run.lock.step_lock``) while training, so that a run
    by hand refuses to write while a full run on the same dataset and root is going
    (issue 8 item 14); the driver, which holds the lock itself, passes through.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        from pipeline.common import TrainingInterrupted
        from pipeline.run.lock import step_lock
        from pipeline.run.process import interrupt_on_signals

        cfg = config_from_args(args)
        paths = Paths.from_root(args.root)
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        try:
            with interrupt_on_signals(), step_lock(paths, args.dataset):
                train_classifiers(cfg, args.dataset, paths, models, args.force, args.resume)
        except TrainingInterrupted as exc:
            raise TrainingInterrupted(
                interrupt_hint(str(exc), exc.has_checkpoint, argv),
                exc.checkpoint_path,
                exc.last_epoch,
                exc.epoch,
                exc.what,
            ) from None
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
