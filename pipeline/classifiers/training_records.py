"""What step 5 records: each main model's scores, metrics file and history, its entry in the
training summary (merged over earlier runs' entries), which models feed the agent, the
permuted-label control's headline and the run manifest's rows.

``train_models.py`` trains, scores and writes; the functions here only build the records (and
read back what earlier runs wrote).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.classifiers.report import VAL_BLOCK_NOTE, headline_comparison
from pipeline.common import Paths
from pipeline.config.schema import Config, TrainingConfig
from pipeline.store.artifacts import Artifacts

if TYPE_CHECKING:
    import numpy as np
    import torch

    from pipeline.classifiers.fit_plan import TrainedModel
    from pipeline.classifiers.prepare import ClassifierData
    from pipeline.data.splits import Block

# ================================================================ one model's metrics


def block_info(prep: ClassifierData, block: Block) -> dict[str, Any]:
    """Bar range and times of a block (``stop_bar`` exclusive, ``end_time`` of its last bar)."""
    ts = prep.df["timestamp"]
    return {
        "start_bar": int(block.start),
        "stop_bar": int(block.stop),
        "start_time": ts.iloc[block.start].isoformat(),
        "end_time": ts.iloc[block.stop - 1].isoformat(),
    }


def evaluate_bars(
    model: torch.nn.Module,
    prep: ClassifierData,
    bars: np.ndarray,
    device: torch.device,
    keep_rows: bool = False,
) -> dict[str, Any]:
    """Metrics of the main model on the labelled ``bars`` of a block (dataset's own scaler and
    labels), with the permutation baseline of its predictions. ``keep_rows``: also each row's
    label and prediction (``rows``: first bar and :func:`~pipeline.classifiers.metrics.
    encode_classes` text), which the validation block keeps for auto's paired rule."""
    import numpy as np

    from pipeline.classifiers.metrics import (
        classification_metrics,
        encode_classes,
        permutation_baseline,
    )
    from pipeline.classifiers.windows import WindowData, predict_proba

    a = prep.arrays
    data = WindowData.create(a.scaled, bars, None, a.lookback, device)
    pred = predict_proba(model, data).argmax(axis=1)
    y = a.labels[bars].astype(np.int64)
    metrics = classification_metrics(y, pred)
    metrics["permutation"] = permutation_baseline(y, pred, a.splits.purge)
    if keep_rows and len(bars):
        metrics["rows"] = {
            "first_bar": int(bars[0]),
            "labels": encode_classes(y),
            "predicted": encode_classes(pred),
        }
    return metrics


def main_metrics(
    cfg: TrainingConfig,
    prep: ClassifierData,
    name: str,
    result: TrainedModel,
    n_parameters: int,
    scores: tuple[dict[str, Any], dict[str, Any]],
    baselines: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The metrics file of the main model of ``name``: its val and test ``scores``, the baselines
    on the same rows, the blocks, and the headline comparison (``comparison``, ``headline``)."""
    val, test = scores
    s = prep.arrays.splits
    beats = val["macro_f1"] > baselines["majority"]["val"]["macro_f1"]
    metrics = {
        "model": name,
        "dataset": prep.info.name,
        "dataset_sha256": prep.info.sha256,
        "config_hash": cfg.hash_for_model(name),
        "device": result.device,
        "amp": result.amp,
        "batch_size": result.batch_size,
        "n_parameters": n_parameters,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "train_seconds": result.train_seconds,
        "delta": float(prep.arrays.delta),
        "label_horizon": int(prep.arrays.k),
        "delta_auto": cfg.threshold_delta is None,
        "val_block": VAL_BLOCK_NOTE,
        "val": val,
        "test": test,
        # the tabular models' out-of-fold rows of the training block: auto's pooled rows
        **({"cv_rows": result.extra["cv_rows"]} if "cv_rows" in result.extra else {}),
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
    return metrics


def history_record(name: str, dataset: str, result: TrainedModel) -> dict[str, Any]:
    """The history file of the main model of ``name``: one row per epoch."""
    return {
        "model": name,
        "dataset": dataset,
        "best_epoch": result.best_epoch,
        "resumed_from_epoch": result.resumed_from_epoch,
        "epochs": result.history,
    }


def read_metrics(paths: Paths, name: str, dataset: str) -> dict[str, Any] | None:
    """The metrics file of ``name`` on ``dataset``; None when it is missing or not JSON."""
    try:
        return json.loads(Artifacts(paths, dataset).metrics(name).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# ================================================================ the training summary


def summary_entry(status: str, reason: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """A model's entry in the training summary: ``status`` (trained / skipped), why, its test
    headline against chance and the baselines, and its (labelled) early-stopping scores."""
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
        # The val scores come from the early-stopping block: kept, labelled.
        "val_block": VAL_BLOCK_NOTE,
        "val_macro_f1": metrics["val"]["macro_f1"],
        "val_rows": int(sum(map(sum, metrics["val"]["confusion"]))),
        # each validation row's label and prediction: auto's paired rule (model_choice)
        **({"val_row_classes": metrics["val"]["rows"]} if "rows" in metrics["val"] else {}),
        **({"cv_row_classes": metrics["cv_rows"]} if "cv_rows" in metrics else {}),
        "majority_val_macro_f1": b["majority"]["val"]["macro_f1"],
        "beats_majority_on_val": metrics["beats_majority_on_val"],
        "best_epoch": metrics.get("best_epoch"),
        "epochs_run": metrics["epochs_run"],
        "train_seconds": metrics["train_seconds"],
    }


HEADLINE_KEYS = (
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
"""The headline fields an entry of an older summary gets from its metrics file."""


def merge_summary(
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
        metrics = read_metrics(paths, name, dataset)
        try:
            cmp = headline_comparison(metrics) if metrics is not None else None
        except (KeyError, TypeError, IndexError, ValueError):
            cmp = None
        if cmp is not None:
            entry.update({k: cmp[k] for k in HEADLINE_KEYS if k in cmp})
    return {**old, **entries}


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
        best = best_on_validation({"models": merge_summary(paths, dataset, entries)})
        wanted = [best[0]] if best else list(entries)
    else:
        wanted = [chosen]
    return [m for m in entries if m in wanted]


def control_record(name: str, test: dict[str, Any], label_horizon: int) -> dict[str, Any]:
    """The permuted-label control's summary: ``name``'s ``test`` metrics (trained on permuted
    labels) judged against chance, with its one-line headline."""
    m = {"test": test, "baselines": {"logreg": {"test": test}}, "label_horizon": label_horizon}
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
    return out


# ================================================================ the run manifest


def record_artifacts(
    art: Artifacts, entries: dict[str, dict[str, Any]], tables: dict[str, Path]
) -> None:
    """List what step 5 wrote (or found up to date) in the run manifest; the push step pushes
    exactly what the manifest lists."""
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
    # each table's .json: step 7 reads the dataset's facts there (a pushed table needs it too)
    extras += [(art.prediction_meta(m), "prediction_table") for m in tables]
    if "ensemble" in tables:  # how the ensemble combines its members
        extras.append((art.ensemble_report, "ensemble"))
    manifest.record_many([(p, k) for p, k in extras if Path(p).is_file()], STEP_CLASSIFIERS)
