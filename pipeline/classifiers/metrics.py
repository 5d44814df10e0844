"""Classification metrics from a 3x3 confusion matrix (numpy only) and class weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.data.labels import CLASS_NAMES

N_CLASSES = 3

PAIRED_BLOCK_HORIZONS = 10
"""Bootstrap blocks of the paired rule (:func:`paired_macro_f1_standard_errors` as used by
``prediction_model = auto`` and by the ensembles' margin), in label horizons (50 rows for 5-bar
labels): labels overlap ``label_horizon`` bars and a model's predictions persist over
neighbouring windows, so a block holds several horizons of that dependence."""


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


def encode_classes(classes: np.ndarray) -> str:
    """Class indices 0-2 as one digit per row (``"0120..."``): a block's labels or predictions
    kept in the training summary as plain text, for the paired rule of ``prediction_model =
    auto`` (:func:`paired_macro_f1_standard_errors`)."""
    return "".join("012"[int(c)] for c in np.asarray(classes, dtype=np.int64))


def decode_classes(text: str) -> np.ndarray:
    """:func:`encode_classes` back to class indices (n,)."""
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - ord("0")


def _macro_f1_rows(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Macro-F1 of each row of ``y`` and ``pred`` (B, n) -> (B,): ``2 tp / (2 tp + fp + fn)`` per
    class, as :func:`metrics_from_confusion` (an empty class scores 0)."""
    out = np.zeros(y.shape[0])
    for c in range(N_CLASSES):
        tp = ((y == c) & (pred == c)).sum(axis=1)
        wrong = ((y == c) != (pred == c)).sum(axis=1)  # fp + fn
        denom = 2 * tp + wrong
        out += np.divide(2.0 * tp, denom, out=np.zeros(len(tp)), where=denom > 0)
    return out / N_CLASSES


def paired_macro_f1_standard_errors(
    y_true: np.ndarray,
    predictions: dict[str, np.ndarray],
    best: str,
    block: int,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Per model, the standard error of ``best``'s macro-F1 lead over it on the same rows.

    A circular block bootstrap (Politis & Romano 1992) of the rows, the same resampled rows for
    every model, blocks of ``block`` rows so that labels overlapping the label horizon and
    predictions persisting over neighbouring windows stay together. Paired: two models read
    the same labels, so the label noise they share cancels in their difference, which the s.e.
    of one model's score (:func:`pipeline.classifiers.report.macro_f1_standard_error`) does not
    see; on the classifier ladder's validation blocks the paired s.e. of a model's lead over
    logreg was about 0.6 of it (median 0.018 against 0.030; issue 17). ``best`` itself gets 0.
    """
    y = np.asarray(y_true, dtype=np.int64)
    n = len(y)
    block = max(1, min(int(block), n))
    starts = np.random.default_rng(seed).integers(0, n, size=(n_boot, -(-n // block)))
    idx = ((starts[:, :, None] + np.arange(block)) % n).reshape(n_boot, -1)[:, :n]  # (B, n)
    y_boot = y[idx]
    scores = {m: _macro_f1_rows(y_boot, np.asarray(p, dtype=np.int64)[idx]) for m, p in
              predictions.items()}  # fmt: skip
    return {m: float(np.std(scores[best] - s, ddof=1)) for m, s in scores.items()}
