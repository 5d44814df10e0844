"""Which classifier feeds the agent: ``prediction_model = auto``.

When step 5 fitted an ensemble over every model's walk-forward table and it beat every model
alone on the agent-val rows by more than the paired standard error of its lead over each
(:func:`pipeline.classifiers.ensembles.beats_members`; ``auto_ensemble.used`` in the summary),
the agent uses that ensemble. Otherwise it uses the simplest classifier within one standard
error of the best VALIDATION macro-F1 of step 5's training summary
(``results/training_summary_{dataset}.json``; :func:`best_on_validation`): the validation block
selects models, the test block stays the one honest score and plays no part here (ties go to the
earlier name of :data:`pipeline.config.schema.MODEL_NAMES`). The tabular models also keep
out-of-fold rows of the training block; pooled with the validation rows they can rule out a model
another one beats clearly there (:func:`pooled_drops`). On data where one architecture is
the weakest (the default dlstm on EURUSD-like data: test F1 0.335, direction 44 %) the agent no
longer gets it by default, and every report names the model that fed the agent.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from pipeline.common import Paths, PipelineError
from pipeline.config import registry as model_registry
from pipeline.config.schema import MODEL_NAMES, Config
from pipeline.store.artifacts import Artifacts, dataset_name

AUTO = "auto"

OK_MODEL_STATUSES = (None, "trained", "ok", "skipped", "reused", "up to date")
"""Statuses of a model in the training summary whose scores can be used."""


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


SIMPLEST_FIRST: tuple[str, ...] = model_registry.SIMPLEST_FIRST
"""The models from the simplest (fewest parameters, fastest to fit) to the most complex: the
one-standard-error rule prefers the earlier of models whose validation scores are that close
(each architecture's ``simplicity`` in :mod:`pipeline.config.registry`)."""


def best_on_validation(training_summary: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """``(name, model entry)`` that ``prediction_model = auto`` picks; ``None`` when no model has
    a validation score. The entry is a copy with ``auto_standard_error`` (the margin used, when
    one was) and ``auto_rule`` (``paired``, ``single`` or ``maximum``).

    The one-standard-error rule (Hastie, Tibshirani & Friedman, *The Elements of Statistical
    Learning*, 2009, section 7.10): of the models whose validation macro-F1 is within one standard
    error of the best one, the simplest (:data:`SIMPLEST_FIRST`). Differences smaller than that
    are selection noise: on the classifier ladder the plain maximum's choice fell more than one
    s.e. below the best of logreg and LightGBM on test on 4 of 15 synthetic runs, this rule's on
    2 of 15 (1 of 15 once the batch kept 50 steps an epoch).

    Which s.e.: when every candidate's entry keeps its validation rows (``val_row_classes``, the
    same rows for all: step 5 writes them), the PAIRED one, per candidate: the s.e. of the best
    model's lead over it on those rows (:func:`pipeline.classifiers.metrics.
    paired_macro_f1_standard_errors`; ``paired``). Two models share the labels' noise, which
    cancels in their difference, so a lead the single-model s.e. calls noise can be a clear one:
    on the ladder's validation blocks the paired s.e. of a lead over logreg was 0.018 (median)
    where one score's is 0.030, and auto's choice scored above the best of logreg and LightGBM
    on 11 of 21 sequential runs instead of 5 (development and confirmation series, 8,000 bars),
    within one s.e. of it on all 45 runs (issue 17; BENCHMARKS.md, the classifier ladder).
    Otherwise (older summaries, models trained with another lookback) the s.e. of one score on
    ``val_rows`` rows with labels overlapping ``label_horizon`` bars (``single``); entries
    without ``val_rows``: the plain maximum. Ties: the earlier name of :data:`MODEL_NAMES`.
    A model :func:`pooled_drops` rules out is not a candidate (``auto_ruled_out``)."""
    from pipeline.classifiers.report import macro_f1_standard_error

    order = {m: i for i, m in enumerate(MODEL_NAMES)}
    candidates = []
    for name, m in (training_summary.get("models") or {}).items():
        if not isinstance(m, dict) or m.get("status") not in OK_MODEL_STATUSES:
            continue
        val = _number(m.get("val_macro_f1"))
        if val is None:
            continue
        candidates.append((-val, order.get(name, len(order)), name, m))
    if not candidates:
        return None
    neg_best, _i, name, m = min(candidates)
    horizon = int(_number(m.get("label_horizon")) or 1)
    paired = _paired_errors({c[2]: c[3] for c in candidates}, name, horizon)
    rows = _number(m.get("val_rows"))
    if paired is not None:
        margin, rule = paired, "paired"
    elif rows is not None and rows > 0:
        se = macro_f1_standard_error(int(rows), horizon)
        margin, rule = {c[2]: se for c in candidates}, "single"
    else:
        return name, {**m, "auto_rule": "maximum"}
    close = [c for c in candidates if -c[0] >= -neg_best - margin[c[2]]]
    kept, dropped = _not_ruled_out(candidates, close, horizon)
    simple = {n: i for i, n in enumerate(SIMPLEST_FIRST)}
    _neg, _i, name, m = min(kept, key=lambda c: (simple.get(c[2], len(simple)), c[0], c[1]))
    return name, {
        **m,
        "auto_rule": rule,
        "auto_standard_error": margin.get(name, 0.0),
        **({"auto_ruled_out": dropped} if dropped else {}),
    }


def _not_ruled_out(
    candidates: list[Any], close: list[Any], horizon: int
) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """The ``close`` candidates :func:`pooled_drops` does not rule out (when it rules out all of
    them, the pooled rows' best), and what it ruled out."""
    dropped = pooled_drops({c[2]: c[3] for c in candidates}, horizon)
    kept = [c for c in close if c[2] not in dropped]
    if not kept:
        kept = [c for c in candidates if c[2] == next(iter(dropped.values()))["by"]]
    return kept, dropped


def pooled_drops(entries: dict[str, dict[str, Any]], horizon: int) -> dict[str, dict[str, Any]]:
    """The models that another one beats by more than the paired s.e. of its lead on the
    POOLED rows: the training block's out-of-fold rows (``cv_row_classes``:
    :func:`pipeline.classifiers.tabular.training_block_cv`, kept by the tabular models) and the
    validation rows. ``{name: {"by", "lead", "standard_error", "rows"}}``; empty when fewer than
    two models keep the same such rows.

    Why: on the demo's ~1,150 validation rows the one-standard-error rule kept logreg, the
    simplest model, over ``window_logreg`` on most of the classifier ladder's sequential runs,
    where ``window_logreg`` led on test on all twelve; pooled with the training block's
    out-of-fold rows (about 3,000 more) the paired s.e. of that lead fell by half (issue 17;
    BENCHMARKS.md). A model ruled out here is no longer "within one standard error" of the best.

    Pooled, but each SEGMENT scored alone (:func:`segment_leads`): every out-of-fold chunk has
    its own fit and its own auto threshold, so its labels and a model's favourite class differ
    from the next chunk's. The macro-F1 of the rows concatenated rewards a model whose favourite
    class moves from chunk to chunk (each class is predicted somewhere, so every class's recall
    looks fair): on GOOG daily ``window_logreg`` led logreg by 0.064 (s.e. 0.027) on the
    concatenated rows while its lead on the four segments was -0.012, +0.001, +0.023 and
    -0.004, and it then trailed logreg on test by 0.048. The mean of per-fold scores is the
    usual cross-validation estimate; Forman & Scholz (2010, "Apples-to-apples in cross-
    validation studies", SIGKDD Explorations 12(1)) prefer pooled counts for folds drawn from one
    distribution, which chronological folds with their own thresholds are not.
    The leader is picked on the same rows it is then tested on: with the two or three tabular
    models this flatters it a little, inside the paired s.e. (the leakage review).
    """
    from pipeline.classifiers.tabular import CV_CHUNKS

    with_cv = {n: e for n, e in entries.items() if isinstance(e.get("cv_row_classes"), dict)}
    cv, val = _kept_rows(with_cv, "cv_row_classes"), _kept_rows(with_cv, "val_row_classes")
    if len(with_cv) < 2 or cv is None or val is None:
        return {}
    # the out-of-fold rows are chunks 3..CV_CHUNKS of np.array_split(fit bars, CV_CHUNKS)
    # concatenated, so np.array_split of them in CV_CHUNKS - 2 gives those chunks back exactly
    chunks = np.array_split(np.arange(len(cv[0])), CV_CHUNKS - 2)
    segments = [(cv[0][i], {n: p[i] for n, p in cv[1].items()}) for i in chunks if len(i)]
    best, lead, se = segment_leads([*segments, val], horizon)
    rows = len(cv[0]) + len(val[0])
    return {
        n: {"by": best, "lead": lead[n], "standard_error": se[n], "rows": rows}
        for n in lead
        if n != best and lead[n] > se[n]
    }


def segment_leads(
    segments: list[tuple[np.ndarray, dict[str, np.ndarray]]], horizon: int
) -> tuple[str, dict[str, float], dict[str, float]]:
    """``(best, {name: best's lead}, {name: its s.e.})`` over ``segments`` of ``(labels,
    {name: predictions})``, the same names in each: a model's score is the row-weighted mean of
    its macro-F1 on each segment alone; the s.e. of a lead combines each segment's paired
    block-bootstrap s.e. (:func:`pipeline.classifiers.metrics.paired_macro_f1_standard_errors`)
    with the same weights, the segments' resamplings being independent."""
    from pipeline.classifiers.metrics import (
        PAIRED_BLOCK_HORIZONS,
        classification_metrics,
        paired_macro_f1_standard_errors,
    )

    w = np.array([len(y) for y, _ in segments], dtype=float)
    w /= w.sum()
    names = list(segments[0][1])
    scores = {
        n: sum(wi * float(classification_metrics(y, p[n])["macro_f1"]) for wi, (y, p) in
               zip(w, segments, strict=True))
        for n in names
    }  # fmt: skip
    best = max(names, key=lambda n: scores[n])
    var = dict.fromkeys(names, 0.0)
    for wi, (y, p) in zip(w, segments, strict=True):
        se = paired_macro_f1_standard_errors(y, p, best, PAIRED_BLOCK_HORIZONS * horizon)
        var = {n: var[n] + (wi * se[n]) ** 2 for n in names}
    lead = {n: float(scores[best] - scores[n]) for n in names}
    return best, lead, {n: float(np.sqrt(v)) for n, v in var.items()}


def _paired_errors(
    entries: dict[str, dict[str, Any]], best: str, horizon: int
) -> dict[str, float] | None:
    """Per candidate, the paired s.e. of ``best``'s validation lead over it; ``None`` unless
    every entry keeps the same validation rows (first bar and labels) and its predictions."""
    from pipeline.classifiers.metrics import PAIRED_BLOCK_HORIZONS, paired_macro_f1_standard_errors

    rows = _kept_rows(entries, "val_row_classes")
    if rows is None:
        return None
    return paired_macro_f1_standard_errors(rows[0], rows[1], best, PAIRED_BLOCK_HORIZONS * horizon)


def _kept_rows(
    entries: dict[str, dict[str, Any]], key: str
) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """``(labels, {name: predictions})`` of the rows every entry keeps under ``key`` (first bar,
    labels, predictions: :func:`pipeline.classifiers.metrics.encode_classes`); ``None`` unless
    every entry keeps the same rows."""
    from pipeline.classifiers.metrics import decode_classes

    kept: list[dict[str, Any]] = [
        k for k in (e.get(key) for e in entries.values()) if isinstance(k, dict)
    ]
    if not kept or len(kept) != len(entries):
        return None
    first = kept[0]
    try:
        same = all(
            k["first_bar"] == first["first_bar"]
            and k["labels"] == first["labels"]
            and len(k["predicted"]) == len(first["labels"])
            for k in kept
        )
        if not same or not first["labels"]:
            return None
        predictions = {n: decode_classes(e[key]["predicted"]) for n, e in entries.items()}
        y = decode_classes(first["labels"])
    except (AttributeError, KeyError, TypeError, ValueError, UnicodeEncodeError):  # hand-edited
        return None
    if y.min() < 0 or y.max() > 2 or any(p.min() < 0 or p.max() > 2 for p in predictions.values()):
        return None
    return y, predictions


def resolve_prediction_model(cfg: Config, paths: Paths, dataset: str) -> tuple[Config, str]:
    """``cfg`` with ``prediction_model = auto`` replaced by the chosen model, and a line saying
    which and why (``"dlstm (set in the config)"`` when it was not auto).

    Raises :class:`PipelineError` (one line naming the summary file) when auto has nothing to
    choose from: step 5 has not run, or its summary has no validation scores.
    """
    chosen = cfg.ppo.prediction_model
    if chosen != AUTO:
        return cfg, f"{chosen} (set in the config)"
    files = Artifacts(paths, dataset_name(dataset))
    path = files.training_summary
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        # Step 5 run elsewhere and only its prediction table copied here: one table, one choice.
        tables = [m for m in MODEL_NAMES if files.prediction_table(m).is_file()]
        if len(tables) == 1:
            return _with_model(cfg, tables[0]), (
                f"{tables[0]} (auto: the only prediction table; {path.name} is missing)"
            )
        raise PipelineError(
            f"prediction_model = auto: {path} does not exist; run step 5 (train_models.py) first, "
            "or name the model (prediction_model = dlstm)"
        ) from None
    except (OSError, ValueError) as exc:
        raise PipelineError(
            f"prediction_model = auto: {path} cannot be read ({exc}); run step 5 again"
        ) from None
    summary = summary if isinstance(summary, dict) else {}
    ensemble = _auto_ensemble(cfg, summary)
    if ensemble is not None:
        return ensemble
    best = best_on_validation(summary)
    if best is None:
        raise PipelineError(
            f"prediction_model = auto: {path} lists no trained model with a validation "
            "macro-F1; run step 5 again, or name the model (prediction_model = dlstm)"
        )
    name, entry = best
    top = max(
        (float(m["val_macro_f1"]) for m in (summary.get("models") or {}).values()
         if isinstance(m, dict) and m.get("status") in OK_MODEL_STATUSES
         and _number(m.get("val_macro_f1")) is not None),
        default=float(entry["val_macro_f1"]),
    )  # fmt: skip
    why = f"best validation macro-F1 {float(entry['val_macro_f1']):.3f}"
    if float(entry["val_macro_f1"]) < top:
        val = float(entry["val_macro_f1"])
        why = (
            f"validation macro-F1 {val:.3f}, {top - val:.3f} below the best {top:.3f}, inside "
            f"one paired standard error of that lead ({float(entry['auto_standard_error']):.3f}"
            "), and the simplest such model"
            if entry.get("auto_rule") == "paired"
            else f"validation macro-F1 {val:.3f}, within one standard error of the best "
            f"{top:.3f}, and the simplest such model"
        )
    return _with_model(cfg, name), f"{name} (auto: {why}{_ruled_out_note(entry)})"


def _ruled_out_note(entry: dict[str, Any]) -> str:
    """``"; logreg ruled out: window_logreg led it by 0.015 on ..."``, or ``""``."""
    out = entry.get("auto_ruled_out") or {}
    return "".join(
        f"; {n} ruled out: {d['by']} led it by {d['lead']:.3f} on {d['rows']:,} rows (the "
        f"training block's out-of-fold chunks and validation, each scored alone), paired s.e. "
        f"{d['standard_error']:.3f}"
        for n, d in out.items()
    )


def _auto_ensemble(cfg: Config, summary: dict[str, Any]) -> tuple[Config, str] | None:
    """``cfg`` feeding the ensemble step 5 found better than every model alone (its table was
    written), with the reason; ``None`` when step 5 chose no ensemble."""
    ens = summary.get("auto_ensemble")
    if not (
        isinstance(ens, dict)
        and ens.get("used")
        and "ensemble" in (summary.get("prediction_tables") or {})
    ):
        return None
    members = tuple(str(m) for m in ens.get("members", ()))
    val = (ens.get("scores") or {}).get("val") or {}
    best_member = max((v, k) for k, v in val.items() if k != "ensemble") if val else None
    ppo = dataclasses.replace(cfg.ppo, prediction_model="ensemble", ensemble_models=members)
    why = (
        f"agent-val macro-F1 {val['ensemble']:.3f} vs best model alone {best_member[1]} "
        f"{best_member[0]:.3f}"
        if best_member and "ensemble" in val
        else "it beat every model alone on the agent-val rows"
    )
    return dataclasses.replace(cfg, ppo=ppo), (
        f"ensemble of {', '.join(members)} (auto: {ens.get('choice')}; {why})"
    )


def _with_model(cfg: Config, name: str) -> Config:
    return dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, prediction_model=name))
