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
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from pipeline.common import (
    Paths,
    PipelineError,
    atomic_path,
    atomic_write_json,
    run_cli,
    setup_logging,
)
from pipeline.config import (
    MODEL_NAMES,
    Config,
    TrainingConfig,
    add_config_args,
    config_from_args,
    write_resolved,
)
from pipeline.features import (
    MIN_BLOCK_SAMPLES,
    Block,
    apply_scaler,
    auto_threshold,
    fit_scaler,
    make_labels,
)
from pipeline.prepare import Prepared, prepare_dataset
from pytorch_train import (
    CLASS_NAMES,
    MODEL_FILE_FORMAT,
    TrainingInterrupted,
    TrainResult,
    WindowData,
    arch_config,
    build_model,
    classification_metrics,
    configure_cpu_threads,
    count_parameters,
    load_model_file,
    predict_proba,
    resolve_device,
    save_model_file,
    seed_everything,
    sigterm_as_keyboard_interrupt,
    train_classifier,
)

log = logging.getLogger("train_models")


# ================================================================ paths


def model_path(paths: Paths, model: str, dataset: str) -> Path:
    """The main model file of ``model`` on ``dataset``."""
    return paths.models / f"{model}_{dataset}_classification.pth"


def fold_model_path(paths: Paths, model: str, dataset: str, fold: int) -> Path:
    """The walk-forward model that predicts fold ``fold``."""
    return paths.models / "walkforward" / f"{model}_{dataset}_fold{fold}.pth"


def checkpoint_path(paths: Paths, model: str, dataset: str, tag: str = "main") -> Path:
    """The per-epoch training checkpoint (deleted once the model file is written)."""
    return paths.models / "checkpoints" / f"{model}_{dataset}_{tag}.ckpt.pt"


def metrics_path(paths: Paths, model: str, dataset: str) -> Path:
    """``results/metrics_{model}_{dataset}.json``."""
    return paths.results / f"metrics_{model}_{dataset}.json"


def summary_path(paths: Paths, dataset: str) -> Path:
    """``results/training_summary_{dataset}.json`` (read by the driver's summary table)."""
    return paths.results / f"training_summary_{dataset}.json"


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
    return list(MODEL_NAMES)


def up_to_date(path: Path, dataset_sha: str, config_hash: str) -> tuple[bool, str]:
    """Whether the model file at ``path`` can be reused, and why not (for the log)."""
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


def labelled_bars(block: Block, labels: np.ndarray) -> np.ndarray:
    """Bars of ``block`` that have a label, ``(n,)`` int64."""
    bars = block.bars()
    return bars[labels[bars] >= 0]


def main_plan(prep: Prepared) -> FitPlan:
    """The main model: train block, early stopping on val, the dataset's train-only scaler."""
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
    lookback = prep.arrays.lookback
    fit_bars = labelled_bars(plan.fit, plan.labels)
    es_bars = labelled_bars(plan.early_stop, plan.labels)
    train = WindowData.create(plan.scaled, fit_bars, plan.labels[fit_bars], lookback, device)
    val = WindowData.create(plan.scaled, es_bars, plan.labels[es_bars], lookback, device)
    seed_everything(cfg.seed)
    model = build_model(arch_config(name, len(prep.feature_names), cfg))
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


def model_payload(
    cfg: TrainingConfig, prep: Prepared, name: str, plan: FitPlan, result: TrainResult
) -> dict[str, Any]:
    """Everything needed to rebuild and use the model; only weights-only-safe types inside."""
    return {
        "format": MODEL_FILE_FORMAT,
        "model": name,
        "dataset": prep.info.name,
        "source": f"{name}/{plan.tag}",
        "arch": arch_config(name, len(prep.feature_names), cfg),
        "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
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


def baseline_metrics(prep: Prepared, seed: int) -> dict[str, dict[str, Any]]:
    """Majority class of the TRAIN block and a logistic regression on the last bar's features.

    Both are fit on train rows only and scored on exactly the val and test rows the model is.
    The logistic regression uses balanced class weights, like the model's weighted loss.
    """
    a = prep.arrays
    train_bars = labelled_bars(a.splits.train, a.labels)
    y_train = a.labels[train_bars].astype(np.int64)
    majority = int(np.bincount(y_train, minlength=3).argmax())
    logreg = LogisticRegression(max_iter=1000, class_weight="balanced", random_state=seed)
    logreg.fit(a.scaled[train_bars], y_train)
    out: dict[str, dict[str, Any]] = {"majority": {}, "logreg": {}}
    for split in ("val", "test"):
        bars = labelled_bars(getattr(a.splits, split), a.labels)
        y = a.labels[bars].astype(np.int64)
        out["majority"][split] = classification_metrics(y, np.full_like(y, majority))
        out["logreg"][split] = classification_metrics(y, logreg.predict(a.scaled[bars]))
    out["majority"]["class"] = CLASS_NAMES[majority]
    return out


def evaluate_block(
    model: torch.nn.Module, prep: Prepared, block: Block, device: torch.device
) -> dict[str, Any]:
    """Metrics of the main model on ``block`` (dataset's own scaler and labels)."""
    a = prep.arrays
    bars = labelled_bars(block, a.labels)
    data = WindowData.create(a.scaled, bars, None, a.lookback, device)
    pred = predict_proba(model, data).argmax(axis=1)
    return classification_metrics(a.labels[bars].astype(np.int64), pred)


def plot_training(history: list[dict[str, float]], confusion: list[list[int]], path: Path) -> None:
    """Loss and accuracy curves and the validation confusion matrix, as one PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(epochs, [h["train_loss"] for h in history], label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], label="val")
    axes[0].set(title="loss (class-weighted CE)", xlabel="epoch")
    axes[0].legend()
    axes[1].plot(epochs, [h["train_accuracy"] for h in history], label="train accuracy")
    axes[1].plot(epochs, [h["val_accuracy"] for h in history], label="val accuracy")
    axes[1].plot(epochs, [h["val_macro_f1"] for h in history], label="val macro-F1")
    axes[1].set(title="accuracy", xlabel="epoch")
    axes[1].legend()
    cm = np.asarray(confusion)
    axes[2].imshow(cm, cmap="Blues")
    for i in range(3):
        for j in range(3):
            axes[2].text(j, i, str(cm[i, j]), ha="center", va="center")
    axes[2].set(
        title="validation confusion (best epoch)",
        xticks=range(3),
        yticks=range(3),
        xticklabels=CLASS_NAMES,
        yticklabels=CLASS_NAMES,
        xlabel="predicted",
        ylabel="true",
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def _summary_entry(status: str, reason: str, metrics: dict[str, Any]) -> dict[str, Any]:
    b = metrics["baselines"]
    return {
        "status": status,
        "reason": reason,
        "val_macro_f1": metrics["val"]["macro_f1"],
        "test_macro_f1": metrics["test"]["macro_f1"],
        "majority_val_macro_f1": b["majority"]["val"]["macro_f1"],
        "majority_test_macro_f1": b["majority"]["test"]["macro_f1"],
        "logreg_test_macro_f1": b["logreg"]["test"]["macro_f1"],
        "beats_majority_on_val": metrics["beats_majority_on_val"],
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
    t = cfg.training
    dataset = prep.info.name
    plan = main_plan(prep)
    ckpt = checkpoint_path(paths, name, dataset)
    result = fit_model(t, prep, name, plan, device, ckpt, resume, desc=f"{name}")
    payload = model_payload(t, prep, name, plan, result)
    save_model_file(model_path(paths, name, dataset), payload)
    write_resolved(cfg, paths.models / f"{name}_{dataset}_config.txt")
    ckpt.unlink(missing_ok=True)

    s = prep.arrays.splits
    val = evaluate_block(result.model, prep, s.val, device)
    # The test block is touched here once, for the report; nothing above looked at it.
    test = evaluate_block(result.model, prep, s.test, device)
    beats = val["macro_f1"] > baselines["majority"]["val"]["macro_f1"]
    if not beats:
        log.warning(
            "%s does NOT beat the majority-class baseline on validation (macro-F1 %.3f vs %.3f)",
            name,
            val["macro_f1"],
            baselines["majority"]["val"]["macro_f1"],
        )
    metrics = {
        "model": name,
        "dataset": dataset,
        "dataset_sha256": prep.info.sha256,
        "config_hash": t.hash_for_model(name),
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
        "delta_auto": t.threshold_delta is None,
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
    history = {
        "model": name,
        "dataset": dataset,
        "best_epoch": result.best_epoch,
        "resumed_from_epoch": result.resumed_from_epoch,
        "epochs": result.history,
    }
    atomic_write_json(paths.results / f"history_{name}_{dataset}.json", history)
    plot_training(
        result.history, val["confusion"], paths.results / f"training_{name}_{dataset}.png"
    )
    atomic_write_json(metrics_path(paths, name, dataset), metrics)
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
    t = cfg.training
    dataset = prep.info.name
    status: dict[str, str] = {}
    for fold in range(1, len(prep.arrays.splits.folds)):
        path = fold_model_path(paths, name, dataset, fold)
        ok, reason = up_to_date(path, prep.info.sha256, t.hash_for_model(name))
        if ok and not force:
            status[f"fold{fold}"] = "skipped"
            log.info("%s fold %d: skipped, %s", name, fold, reason)
            continue
        log.info("%s fold %d: training (%s)", name, fold, "--force" if force else reason)
        plan = fold_plan(prep, t, fold)
        ckpt = checkpoint_path(paths, name, dataset, plan.tag)
        result = fit_model(t, prep, name, plan, device, ckpt, resume, desc=f"{name}/fold{fold}")
        save_model_file(path, model_payload(t, prep, name, plan, result))
        ckpt.unlink(missing_ok=True)
        status[f"fold{fold}"] = "trained"
    return status


def _read_metrics(paths: Paths, name: str, dataset: str) -> dict[str, Any] | None:
    try:
        return json.loads(metrics_path(paths, name, dataset).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def train_all(
    cfg: Config,
    dataset: str,
    paths: Paths,
    models: list[str] | None = None,
    force: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Step 5: train (or skip) each selected model, write metrics, summary and prediction tables.

    Returns the training summary (also written to ``results/training_summary_{dataset}.json``).
    """
    from ppo_approach.prediction_wrapper import write_prediction_tables

    t = cfg.training
    names = select_models(cfg, models)
    device = resolve_device(t.device)
    if device.type == "cpu":
        threads = configure_cpu_threads(t.num_threads)
        log.info("device cpu, %d threads, float32", threads)
    else:
        log.info("device %s (%s)", device, torch.cuda.get_device_name(device))
    prep = prepare_dataset(t, dataset, paths)
    name_ds = prep.info.name
    paths.models.mkdir(parents=True, exist_ok=True)
    paths.results.mkdir(parents=True, exist_ok=True)
    baselines = baseline_metrics(prep, t.seed)
    walk_forward = cfg.ppo.ppo_prediction_source == "walk_forward"

    entries: dict[str, dict[str, Any]] = {}
    for name in names:
        t0 = time.perf_counter()
        chash = t.hash_for_model(name)
        ok, reason = up_to_date(model_path(paths, name, name_ds), prep.info.sha256, chash)
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
        entries[name] = entry

    tables = write_prediction_tables(cfg, prep, paths, names, device)
    summary = {
        "dataset": name_ds,
        "dataset_sha256": prep.info.sha256,
        "device": str(device),
        "prediction_source": cfg.ppo.ppo_prediction_source,
        "models": _merge_summary(paths, name_ds, entries),
        "prediction_tables": {k: str(v) for k, v in tables.items()},
    }
    atomic_write_json(summary_path(paths, name_ds), summary)
    print(format_summary_table(entries))
    return summary


def _merge_summary(
    paths: Paths, dataset: str, entries: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Entries of this run over those of earlier runs (models not trained now keep theirs)."""
    try:
        old = json.loads(summary_path(paths, dataset).read_text(encoding="utf-8"))["models"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        old = {}
    return {**old, **entries}


def format_summary_table(entries: dict[str, dict[str, Any]]) -> str:
    """Plain-text table: model, status, epochs, val macro-F1 vs majority, test macro-F1, time."""
    header = (
        f"{'model':<8} {'status':<8} {'epochs':>6} {'val F1':>7} {'majority':>8} "
        f"{'beats':>5} {'test F1':>7} {'logreg':>7} {'time':>8}"
    )
    lines = [header, "-" * len(header)]
    for name, e in entries.items():
        lines.append(
            f"{name:<8} {e['status']:<8} {e['epochs_run']:>6} {e['val_macro_f1']:>7.3f} "
            f"{e['majority_val_macro_f1']:>8.3f} "
            f"{'yes' if e['beats_majority_on_val'] else 'NO':>5} "
            f"{e['test_macro_f1']:>7.3f} {e['logreg_test_macro_f1']:>7.3f} "
            f"{e['wall_seconds']:>7.1f}s"
        )
    return "\n".join(lines)


# ================================================================ CLI


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of step 5."""
    p = argparse.ArgumentParser(
        prog="train_models.py",
        description="Step 5: train the LSTM / GRU / BiLSTM / DLSTM classifiers on one dataset, "
        "report val/test metrics against baselines and write the agent's prediction tables.",
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


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run :func:`train_all`; exit 130 with a resume hint on interruption."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        cfg = config_from_args(args)
        paths = Paths.from_root(args.root)
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        try:
            with sigterm_as_keyboard_interrupt():
                train_all(cfg, args.dataset, paths, models, args.force, args.resume)
        except TrainingInterrupted as exc:
            raise TrainingInterrupted(
                f"{exc}; resume with: {_resume_command(argv)}", exc.checkpoint_path, exc.last_epoch
            ) from None
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
