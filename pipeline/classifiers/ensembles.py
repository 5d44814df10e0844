"""How the ensemble combines its members' probabilities: ``ensemble_method``.

* ``mean``: the members' probabilities averaged (the seed's ensemble, unchanged).
* ``weighted``: weighted voting, the weights found by ensemble selection (Caruana et al. 2004,
  "Ensemble selection from libraries of models": greedy forward selection with replacement, each
  step adding the member that most lowers the log loss).
* ``stacking``: a multinomial logistic regression on the members' log-probabilities (Wolpert
  1992, "Stacked generalization").

Honest by construction: both are FITTED on the prediction table's agent-``train`` rows and CHOSEN
on its agent-``val`` rows, and all of these are out-of-fold walk-forward predictions (each made by
a fold model trained on earlier folds, with purge gaps), never the test block. The choice is among
the fitted combination, the plain mean and every member alone, so the ensemble scores at least its
best member on the validation rows. The test block's scores are computed once, for the report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.classifiers.metrics import (
    PAIRED_BLOCK_HORIZONS,
    classification_metrics,
    paired_macro_f1_standard_errors,
)

METHODS = ("mean", "weighted", "stacking")
AUTO = "auto"
"""``fit_ensemble`` method of ``prediction_model = auto``: weighted voting, the mean and each member
alone are the candidates, chosen on the agent-val rows. Stacking is left out: its meta-model is
fitted on the fold models' out-of-fold probabilities but applied, on the test block, to the main
models' (trained on more data, calibrated otherwise), and a log-probability model amplifies that
shift; on the classifier ladder (momentum, seed 1) stacking won on validation and scored 0.481 on
test against members' 0.512-0.544. A convex weighting of the probabilities is far less sensitive
to that shift. ``prediction_model = ensemble`` with ``ensemble_method = stacking`` still fits
it."""
SELECTION_ROUNDS = 25
"""Forward-selection steps of the weighted ensemble (weights are multiples of 1/25)."""


def _log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    picked = np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)  # (n,)
    return float(-np.mean(np.log(picked)))


def select_weights(member_probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Caruana ensemble selection: ``member_probs`` (M, n, 3), labels (n,) -> weights (M,)."""
    m = member_probs.shape[0]
    counts = np.zeros(m)
    total = np.zeros(member_probs.shape[1:])  # (n, 3) sum of the picks so far
    for step in range(1, SELECTION_ROUNDS + 1):
        losses = [_log_loss((total + member_probs[i]) / step, y) for i in range(m)]
        best = int(np.argmin(losses))
        counts[best] += 1
        total += member_probs[best]
    return counts / counts.sum()


def _stack_features(member_probs: np.ndarray) -> np.ndarray:
    """(M, n, 3) -> (n, 3M) log-probabilities, the meta-model's inputs."""
    logs = np.log(np.clip(member_probs, 1e-12, 1.0))  # (M, n, 3)
    return np.concatenate(list(logs), axis=1)


def combine(member_probs: np.ndarray, fit: dict[str, Any]) -> np.ndarray:
    """The ensemble's probabilities (n, 3) from the members' (M, n, 3) and a :func:`fit_ensemble`
    result (weights, or the stacking meta-model's coefficients)."""
    if fit["kind"] == "stacking":
        logits = _stack_features(member_probs) @ np.asarray(fit["coef"]).T + np.asarray(
            fit["intercept"]
        )  # (n, 3)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)
    w = np.asarray(fit["weights"], dtype=np.float64)  # (M,)
    return np.tensordot(w, member_probs, axes=1)  # (n, 3)


def fit_ensemble(
    names: list[str],
    member_probs: np.ndarray,
    labels: np.ndarray,
    blocks: np.ndarray,
    method: str,
    seed: int = 0,
    horizon: int | None = None,
) -> dict[str, Any]:
    """Fit ``method`` (:data:`METHODS`, or :data:`AUTO`: weighted voting against the mean and
    each member alone) on the agent-train rows, choose on the agent-val rows, score the test rows.

    ``member_probs`` (M, n, 3), ``labels`` (n,) with -1 where unlabelled, ``blocks`` (n,) the rows'
    agent blocks. Returns, JSON-ready, the chosen combination (``kind``, ``weights`` or
    ``coef``/``intercept``), what was tried, the members' and the ensemble's validation and test
    macro-F1, and with ``horizon`` (the labels', in bars) and a combination chosen, per member the
    paired s.e. of its lead over it on the agent-val rows (``val_lead_standard_errors``)."""
    m = len(names)
    uniform = {"kind": "weights", "weights": [1.0 / m] * m}
    is_val = (blocks == "val") & (labels >= 0)
    if method == "mean":
        chosen, choice = uniform, "mean"
        candidates: dict[str, dict[str, Any]] = {"mean": uniform}
        scores: dict[str, float] = {}
    else:
        fit_rows = (blocks == "train") & (labels >= 0)
        y_fit = labels[fit_rows].astype(np.int64)
        fitted = ("weighted",) if method == AUTO else (method,)
        candidates = {k: _fit_method(k, member_probs[:, fit_rows], y_fit, seed) for k in fitted}
        candidates["mean"] = uniform
        for i, name in enumerate(names):
            candidates[f"{name} alone"] = {"kind": "weights", "weights": np.eye(m)[i].tolist()}
        y_val = labels[is_val].astype(np.int64)
        scores = {
            k: classification_metrics(y_val, combine(member_probs[:, is_val], c).argmax(1))[
                "macro_f1"
            ]
            for k, c in candidates.items()
        }
        # max keeps the first of equal scores: the fitted combination, then the mean, then a member
        choice = max(scores, key=lambda k: scores[k])
        chosen = candidates[choice]
    val_rows = int(is_val.sum())
    out: dict[str, Any] = {
        **chosen,
        "method": method,
        "members": list(names),
        "choice": choice,
        "candidates": list(candidates),
        "candidate_val_macro_f1": scores,
        "val_rows": val_rows,
        "scores": _scores(names, member_probs, labels, blocks, chosen),
    }
    if horizon is not None and is_combination(out) and val_rows > 0:
        out["val_lead_standard_errors"] = _lead_errors(
            names, member_probs[:, is_val], labels[is_val], chosen, horizon
        )
        out["lead_horizon"] = int(horizon)
    return out


def _lead_errors(
    names: list[str],
    val_probs: np.ndarray,
    val_labels: np.ndarray,
    chosen: dict[str, Any],
    horizon: int,
) -> dict[str, float]:
    """Per member, the paired s.e. of the ensemble's macro-F1 lead over it on the agent-val rows
    (``val_probs`` (M, n, 3), ``val_labels`` (n,);
    :func:`pipeline.classifiers.metrics.paired_macro_f1_standard_errors`, the same bootstrap as
    ``prediction_model = auto``'s rule between models)."""
    y = val_labels.astype(np.int64)
    predictions = {"ensemble": combine(val_probs, chosen).argmax(1)}
    predictions |= {name: val_probs[i].argmax(1) for i, name in enumerate(names)}
    block = PAIRED_BLOCK_HORIZONS * int(horizon)
    errors = paired_macro_f1_standard_errors(y, predictions, "ensemble", block)
    return {name: errors[name] for name in names}


def _fit_method(method: str, member_probs: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Any]:
    """Weights (``weighted``) or a meta-model (``stacking``) fitted on ``member_probs`` (M, n, 3)
    and labels ``y`` (n,)."""
    if method == "weighted":
        return {"kind": "weights", "weights": [float(v) for v in select_weights(member_probs, y)]}
    from sklearn.linear_model import LogisticRegression

    meta = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    meta.fit(_stack_features(member_probs), y)
    return {"kind": "stacking", "coef": meta.coef_.tolist(), "intercept": meta.intercept_.tolist()}


def beats_members(fit: dict[str, Any], horizon: int) -> bool:
    """True when the fitted combination (:func:`is_combination`) scores more than one standard
    error above every member alone on the agent-val rows: the one-standard-error rule that
    :func:`pipeline.classifiers.model_choice.best_on_validation` applies between models, with
    the same s.e.: PAIRED, per member, when the fit kept it for labels over ``horizon`` bars
    (``val_lead_standard_errors``: the members and the ensemble read the same labels, whose
    noise cancels in the lead); else the s.e. of one score (overlap-corrected,
    ``fit["val_rows"]`` rows), as fits written before it."""
    from pipeline.classifiers.report import macro_f1_standard_error

    val = (fit.get("scores") or {}).get("val") or {}
    rows = int(fit.get("val_rows") or 0)
    if not is_combination(fit) or "ensemble" not in val or rows <= 0:
        return False
    members = {k: v for k, v in val.items() if k != "ensemble"}
    paired = fit.get("val_lead_standard_errors")
    if (
        isinstance(paired, dict)
        and fit.get("lead_horizon") == horizon
        and set(paired) == set(members)
    ):
        return all(val["ensemble"] > v + float(paired[k]) for k, v in members.items())
    return val["ensemble"] > max(members.values()) + macro_f1_standard_error(rows, horizon)


def is_combination(fit: dict[str, Any]) -> bool:
    """True when the chosen combination uses more than one member (a meta-model, or two or more
    non-zero weights), i.e. it is not one member alone under another name."""
    if fit.get("kind") == "stacking":
        return True
    return sum(1 for w in fit.get("weights", []) if w > 0) > 1


def _scores(
    names: list[str],
    member_probs: np.ndarray,
    labels: np.ndarray,
    blocks: np.ndarray,
    chosen: dict[str, Any],
) -> dict[str, dict[str, float]]:
    """Macro-F1 of each member and of the ensemble on the agent-val and test rows."""
    out: dict[str, dict[str, float]] = {}
    for block in ("val", "test"):
        rows = (blocks == block) & (labels >= 0)
        y = labels[rows].astype(np.int64)
        if not len(y):
            continue
        row = {
            name: classification_metrics(y, member_probs[i, rows].argmax(1))["macro_f1"]
            for i, name in enumerate(names)
        }
        row["ensemble"] = classification_metrics(
            y, combine(member_probs[:, rows], chosen).argmax(1)
        )["macro_f1"]
        out[block] = row
    return out
