"""Classification metrics from a 3x3 confusion matrix (numpy only) and class weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.data.labels import CLASS_NAMES

N_CLASSES = 3


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """3x3 counts, rows = true class, columns = predicted class."""
    idx = np.asarray(y_true, dtype=np.int64) * N_CLASSES + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=N_CLASSES * N_CLASSES).reshape(N_CLASSES, N_CLASSES)


def metrics_from_confusion(counts: np.ndarray) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro-F1 (empty classes count as 0)."""
    matrix = np.asarray(counts, dtype=np.float64)  # (3, 3) rows true, columns predicted
    tp = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    total = matrix.sum()
    return {
        "accuracy": float(tp.sum() / total) if total > 0 else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(CLASS_NAMES)
        },
        "confusion": matrix.astype(np.int64).tolist(),
    }


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """:func:`metrics_from_confusion` of the labels and predictions."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred))


def class_weights(y: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights ``n / (3 n_c)`` of the training labels (absent classes: 0)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=N_CLASSES).astype(np.float64)
    weights = np.zeros(N_CLASSES)
    present = counts > 0
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def permutation_baseline(
    y_true: np.ndarray, y_pred: np.ndarray, min_shift: int, n_shifts: int = 200, seed: int = 0
) -> dict[str, Any] | None:
    """Macro-F1 of the same predictions against circularly shifted labels: chance, honestly.

    1/3 is the chance level only for uniform guessing. Shifting the labels by
    ``min_shift .. n - min_shift`` bars keeps both series' class shares and runs (volatility
    regimes, sticky predictions) and breaks only their alignment, so the spread of these scores
    is what a model without information scores on these rows. Returns the mean, the 95th
    percentile and the number of shifts; ``None`` when the block is too short to shift.
    """
    y = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    n = len(y)
    lo, hi = max(int(min_shift), 1), n - max(int(min_shift), 1)
    if hi <= lo:
        return None
    shifts = np.random.default_rng(seed).integers(lo, hi, size=n_shifts)
    scores = np.array(
        [metrics_from_confusion(confusion_matrix(np.roll(y, s), pred))["macro_f1"] for s in shifts]
    )
    return {
        "mean": float(scores.mean()),
        "q95": float(np.quantile(scores, 0.95)),
        "shifts": int(n_shifts),
        "min_shift": lo,
    }
