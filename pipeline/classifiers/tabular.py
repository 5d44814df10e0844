"""The tabular classifiers of step 5: ``logreg`` (scikit-learn's multinomial logistic regression)
and ``lightgbm`` (gradient-boosted trees), fit on a numpy summary of each window
(:func:`window_summary`), and ``window_logreg`` (logistic regression on every bar of the window,
:func:`window_rows`), kept as the torch modules of :mod:`pipeline.classifiers.nets`, so that
they are saved, loaded and predicted like the networks.

``train_models.py`` picks the labelled bars of a :class:`~pipeline.classifiers.fit_plan.FitPlan`
and turns :func:`fit_tabular`'s fields into its training result; sklearn and LightGBM are imported
inside the functions that use them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeAlias

from pipeline.common import PipelineError
from pipeline.config.schema import TrainingConfig

if TYPE_CHECKING:
    import numpy as np
    import torch

    from pipeline.classifiers.fit_plan import FitPlan
    from pipeline.classifiers.nets import (
        BoosterClassifier,
        LogRegClassifier,
        WindowLogRegClassifier,
    )
    from pipeline.classifiers.prepare import ClassifierData

TABULAR_MODELS = ("logreg", "window_logreg", "lightgbm")
"""The models fit by :func:`fit_tabular` rather than by the networks' training loop."""

LIGHTGBM_EARLY_STOP = 50
"""Boosting rounds without a better log loss on the inner stopping split (:func:`inner_split`)
before LightGBM stops."""

WINDOW_LOGREG_C_GRID = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
"""The inverse L2 strengths ``window_logreg`` chooses from on the inner stopping split (by its
class-balanced log loss). Its lookback x 6 inputs overfit at logreg's C = 1; on the ladder's
sequential rows the choice fell on 0.001-0.1 (issue 17)."""

Bars: TypeAlias = tuple["np.ndarray", "np.ndarray"]
"""``(fit_bars, early_stop_bars)``: the labelled bars of a plan's fit and early-stopping blocks."""


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


def tabular_data(
    prep: ClassifierData, plan: FitPlan, bars: Bars, spread: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_fit, y_fit, x_es, y_es)``: summaries and labels of the fit and early-stopping bars."""
    import numpy as np

    out = []
    for block_bars in bars:
        out += [
            window_summary(plan.scaled, block_bars, prep.arrays.lookback, spread),
            plan.labels[block_bars].astype(np.int64),
        ]
    _check_three_classes(plan, out[1])
    return out[0], out[1], out[2], out[3]


def _check_three_classes(plan: FitPlan, y_fit: np.ndarray) -> None:
    """One error line when the fit block's labels miss a class (nothing to fit a 3-class model
    on)."""
    import numpy as np

    if len(np.unique(y_fit)) < 3:
        raise PipelineError(
            f"{plan.tag}: the fit block's labels have {len(np.unique(y_fit))} of the 3 classes; "
            "use a longer dataset or another threshold_delta"
        )


def history_row(
    model: torch.nn.Module,
    prep: ClassifierData,
    plan: FitPlan,
    bars: Bars,
    device: torch.device,
    t0: float,
) -> dict[str, float]:
    """The one-"epoch" history row of a fitted tabular model: it scores the fit and
    early-stopping blocks through the same windows and predictor as the networks."""
    import numpy as np

    from pipeline.classifiers.metrics import classification_metrics
    from pipeline.classifiers.windows import WindowData, predict_proba

    # The networks' history columns; lr is 0: there is no gradient step to size.
    row: dict[str, float] = {"epoch": 1, "lr": 0.0, "epoch_seconds": time.perf_counter() - t0}
    for split, block_bars in zip(("train", "val"), bars, strict=True):
        y = plan.labels[block_bars].astype(np.int64)
        data = WindowData.create(plan.scaled, block_bars, None, prep.arrays.lookback, device)
        proba = predict_proba(model, data)  # (n, 3)
        picked = np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0)  # (n,) p of the true class
        row[f"{split}_loss"] = float(-np.mean(np.log(picked)))
        m = classification_metrics(y, proba.argmax(axis=1))
        row[f"{split}_accuracy"], row[f"{split}_macro_f1"] = m["accuracy"], m["macro_f1"]
    return row


def fit_tabular(
    cfg: TrainingConfig,
    prep: ClassifierData,
    name: str,
    plan: FitPlan,
    bars: Bars,
    device: torch.device,
) -> dict[str, Any]:
    """Fit the tabular model ``name`` on ``bars`` of ``plan``: the fields of its one-"epoch"
    training result (``pytorch_train.TrainResult(**fields)``; the library may not import it),
    whose history row (:func:`history_row`) scores the fit and early-stopping blocks."""
    from pipeline.classifiers.fit_plan import MAIN_PLAN_TAG

    t0 = time.perf_counter()
    model, extra = _fit(cfg, prep, name, plan, bars)
    cv = training_block_cv(cfg, prep, name, bars[0]) if plan.tag == MAIN_PLAN_TAG else None
    if cv is not None:  # auto's pooled rows (model_choice): the main model only
        extra["cv_rows"] = cv
    model = model.to(device).eval()
    row = history_row(model, prep, plan, bars, device, t0)
    return {
        "model": model,
        "history": [row],
        "best_epoch": 1,
        "epochs_run": 1,
        "best_val_loss": row["val_loss"],
        "train_seconds": time.perf_counter() - t0,
        "device": "cpu",  # scikit-learn and LightGBM fit on the CPU; predictions run on ``device``
        "batch_size": len(bars[0]),
        "amp": "off",
        "extra": extra,
    }


def _fit(
    cfg: TrainingConfig,
    prep: ClassifierData,
    name: str,
    plan: FitPlan,
    bars: Bars,
    chosen: dict[str, Any] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The tabular model ``name`` fit on ``bars[0]``, and what it chose (C, boosting rounds);
    ``chosen`` (what an earlier fit returned) is used instead of choosing again."""
    chosen = chosen or {}
    if name == "logreg":
        return fit_logreg(cfg, prep, plan, bars), {}
    if name == "window_logreg":
        model, c = fit_window_logreg(cfg, prep, plan, bars, chosen.get("c"))
        return model, {"c": c}
    booster, rounds = fit_lightgbm(cfg, prep, plan, bars, chosen.get("boosting_rounds"))
    return booster, {"boosting_rounds": rounds}


CV_CHUNKS = 5
"""The training block's labelled bars in this many chronological chunks; chunks 3-5 are each
predicted by the model refit on the chunks before them (purged): :func:`training_block_cv`."""


def training_block_cv(
    cfg: TrainingConfig, prep: ClassifierData, name: str, fit_bars: np.ndarray
) -> dict[str, Any] | None:
    """Out-of-fold predictions of the tabular model ``name`` on the last 3/5 of the training
    block (the main plan's labelled fit bars ``fit_bars``): expanding windows, each fold refit
    on the chunks before it less the ``purge`` gap (:func:`cv_folds`: its own scaler and auto
    threshold, fit on those bars alone, as a walk-forward fold's), so no window, label or
    statistic of a predicted bar reaches its fit. C or the boosting rounds are chosen once, on
    the first fold's own inner split (before every predicted bar), and kept for the later folds:
    choosing them again in each fold took ``window_logreg`` 3.5 s a run at the demo's 8,000 bars
    instead of 0.6 s (LightGBM 1.1 s instead of 0.6 s; this 2-core CPU). ``{"first_bar",
    "labels", "predicted"}`` like the validation rows
    (:func:`pipeline.classifiers.training_records.evaluate_bars`); ``None`` when a fold has too
    few bars or not every class to fit on (a short dataset: auto then uses validation alone).

    Why: ``prediction_model = auto`` weighs a validation lead by its paired standard error, and
    on the demo's ~1,150 validation rows ``window_logreg``'s lead over logreg on the ladder's
    sequential rows was inside it on most seeds although it led on test on all twelve; these rows
    are cheap for the tabular models and, pooled with the validation rows (each chunk scored
    alone: :func:`pipeline.classifiers.model_choice.segment_leads`), halve that s.e.
    (:func:`pipeline.classifiers.model_choice.best_on_validation`; issue 17). The test block
    plays no part."""
    import numpy as np
    import torch

    from pipeline.classifiers.metrics import encode_classes
    from pipeline.classifiers.windows import WindowData, predict_proba

    folds = cv_folds(cfg, prep, fit_bars)
    if folds is None:
        return None
    cpu, chosen = torch.device("cpu"), None
    labels, predicted = [], []
    no_early_stop = np.empty(0, dtype=np.int64)  # nothing to stop on: the predicted chunk is unseen
    for fold, fold_fit, predict_bars in folds:
        model, first = _fit(cfg, prep, name, fold, (fold_fit, no_early_stop), chosen)
        chosen = chosen or first
        data = WindowData.create(fold.scaled, predict_bars, None, prep.arrays.lookback, cpu)
        predicted.append(predict_proba(model.eval(), data).argmax(axis=1))  # (n_j,)
        labels.append(fold.labels[predict_bars].astype(np.int64))  # (n_j,)
    return {
        "first_bar": int(folds[0][2][0]),
        "labels": encode_classes(np.concatenate(labels)),
        "predicted": encode_classes(np.concatenate(predicted)),
    }


def cv_folds(
    cfg: TrainingConfig, prep: ClassifierData, fit_bars: np.ndarray
) -> list[tuple[FitPlan, np.ndarray, np.ndarray]] | None:
    """:func:`training_block_cv`'s folds ``(plan, fit bars, predicted bars)``: ``fit_bars`` in
    :data:`CV_CHUNKS` chronological chunks, chunks 3-5 each predicted by a fit on the chunks
    before it less the ``purge`` gap, with that fit's own scaler and threshold
    (:func:`pipeline.classifiers.fit_plan.past_plan`); ``None`` when a fit would have fewer than
    ``MIN_BLOCK_SAMPLES`` bars or miss a class."""
    import numpy as np

    from pipeline.classifiers.fit_plan import past_plan
    from pipeline.data.splits import MIN_BLOCK_SAMPLES, Block

    chunks = np.array_split(np.asarray(fit_bars, dtype=np.int64), CV_CHUNKS)
    purge, folds = prep.arrays.splits.purge, []
    for j in range(2, CV_CHUNKS):
        fit = np.concatenate(chunks[:j])
        fit, predict = fit[fit < chunks[j][0] - purge], chunks[j]
        if len(fit) < MIN_BLOCK_SAMPLES or len(predict) == 0:
            return None
        start = int(predict[0])
        block = Block(f"cv{j}-fit", int(fit[0]), int(fit[-1]) + 1)
        plan = past_plan(prep, cfg, f"cv{j}", block, Block(f"cv{j}-none", start, start))
        if len(np.unique(plan.labels[fit])) < 3:
            return None
        folds.append((plan, fit, predict))
    return folds


def fit_logreg(
    cfg: TrainingConfig, prep: ClassifierData, plan: FitPlan, bars: Bars
) -> LogRegClassifier:
    """The ``logreg`` model: scikit-learn's multinomial logistic regression on
    :func:`window_summary` of the fit bars (balanced class weights like the networks' loss, L2 with
    ``logreg_c``), its coefficients copied into :class:`pipeline.classifiers.nets.LogRegClassifier`.
    One "epoch": the early-stopping block only reports (nothing to stop)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from pipeline.classifiers.nets import LogRegClassifier

    x_fit, y_fit, _, _ = tabular_data(prep, plan, bars, spread=False)
    c = cfg.model_params("logreg")["c"]
    sk = LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=cfg.seed).fit(
        x_fit, y_fit
    )
    model = LogRegClassifier(len(prep.feature_names))
    with torch.no_grad():
        model.linear.weight.copy_(torch.as_tensor(sk.coef_, dtype=torch.float32))
        model.linear.bias.copy_(torch.as_tensor(sk.intercept_, dtype=torch.float32))
    return model


def window_rows(
    scaled: np.ndarray, bars: np.ndarray, lookback: int, columns: list[int]
) -> np.ndarray:
    """``window_logreg``'s inputs: the ``columns`` of each of the ``lookback`` bars ending at
    ``bars``, flattened ``(n, lookback * F')`` in the order of
    :meth:`pipeline.classifiers.nets.WindowLogRegClassifier.flat`."""
    import numpy as np

    x = np.asarray(scaled, dtype=np.float64)[:, columns]  # (N, F')
    idx = bars[:, None] + np.arange(-lookback + 1, 1)[None, :]  # (n, lookback)
    return x[idx].reshape(len(bars), -1)  # (n, lookback * F')


def fit_window_logreg(
    cfg: TrainingConfig, prep: ClassifierData, plan: FitPlan, bars: Bars, c: float | None = None
) -> tuple[WindowLogRegClassifier, float]:
    """The ``window_logreg`` model: scikit-learn's multinomial logistic regression on every bar of
    the window (:func:`window_rows`: the per-bar features at each lag), balanced class weights.
    Also returns the C kept.

    Where the signal is an ordering inside the window (the ladder's ``echo`` and ``vol_echo``: a
    shock, or its size, coming back 24 bars later) logreg's last bar and mean blur it and the
    networks overfit 8,000 bars before they find it; one weight per lag sees it. C is chosen from
    :data:`WINDOW_LOGREG_C_GRID` on the inner split of the fit bars (:func:`inner_split`, as
    LightGBM's rounds), then the model is refit on all of them, so the early-stopping block on
    which ``prediction_model = auto`` compares the models stays unseen. A given ``c`` skips the
    search (:func:`training_block_cv`'s later folds)."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.utils.class_weight import compute_sample_weight

    from pipeline.classifiers.nets import WindowLogRegClassifier
    from pipeline.data.features import per_bar_columns

    lookback, columns = int(cfg.lookback), per_bar_columns(cfg.resolved_features())
    labels = plan.labels

    def data(block_bars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = window_rows(plan.scaled, block_bars, lookback, columns)
        return x, labels[block_bars].astype(np.int64)

    def fit(x: np.ndarray, y: np.ndarray, c: float) -> Any:
        return LogisticRegression(
            C=c, max_iter=3000, class_weight="balanced", random_state=cfg.seed
        ).fit(x, y)

    x_fit, y_fit = data(bars[0])
    _check_three_classes(plan, y_fit)
    inner_fit, inner_stop = inner_split(bars[0], cfg.val_fraction, prep.arrays.splits.purge)
    (x_in, y_in), (x_stop, y_stop) = data(inner_fit), data(inner_stop)
    # Too few inner bars to hold every class: the strongest penalty, the safest guess.
    c_best, loss_best = (WINDOW_LOGREG_C_GRID[0] if c is None else c), float("inf")
    if c is None and len(np.unique(y_in)) == 3:
        weight = compute_sample_weight("balanced", y_stop)
        for grid_c in WINDOW_LOGREG_C_GRID:
            p = fit(x_in, y_in, grid_c).predict_proba(x_stop)  # (n, 3)
            loss = log_loss(y_stop, p, sample_weight=weight, labels=[0, 1, 2])
            if loss < loss_best:
                c_best, loss_best = grid_c, loss
    sk = fit(x_fit, y_fit, c_best)
    model = WindowLogRegClassifier(len(prep.feature_names), lookback, columns)
    with torch.no_grad():
        model.linear.weight.copy_(torch.as_tensor(sk.coef_, dtype=torch.float32))
        model.linear.bias.copy_(torch.as_tensor(sk.intercept_, dtype=torch.float32))
    return model, float(c_best)


def fit_lightgbm(
    cfg: TrainingConfig, prep: ClassifierData, plan: FitPlan, bars: Bars, rounds: int | None = None
) -> tuple[BoosterClassifier, int]:
    """The ``lightgbm`` model: gradient-boosted trees (multiclass, balanced class weights) on
    :func:`window_summary` with the spread, kept in LightGBM's text format inside
    :class:`pipeline.classifiers.nets.BoosterClassifier`. Also returns the boosting rounds kept.

    The rounds are chosen on an inner split of the FIT bars (:func:`inner_split`), and the trees
    then refit on all of them with that many rounds: the plan's early-stopping block, on which
    ``prediction_model = auto`` compares the models, stays unseen. Stopped on that block, LightGBM's
    validation score led its test score (against logreg's) by +0.016 (s.e. 0.009) over the
    classifier ladder's 17 runs, and auto took it over a BiLSTM that was better on both blocks
    (``vol_echo`` at 40,000 bars, seed 3; issue 17). Given ``rounds`` skip the inner split
    (:func:`training_block_cv`'s later folds)."""
    import lightgbm
    from sklearn.utils.class_weight import compute_sample_weight

    from pipeline.classifiers.nets import BoosterClassifier
    from pipeline.device import configure_cpu_threads

    x_fit, y_fit, _, _ = tabular_data(prep, plan, bars, spread=True)
    own = cfg.model_params("lightgbm")  # learning_rate, leaves, rounds, min_leaf_rows, l2
    params = {
        "objective": "multiclass",
        "num_class": 3,
        "learning_rate": own["learning_rate"],
        "num_leaves": own["leaves"],
        "min_data_in_leaf": own["min_leaf_rows"],
        "lambda_l2": own["l2"],
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": cfg.seed,
        "deterministic": True,
        "num_threads": configure_cpu_threads(cfg.num_threads),
        "verbosity": -1,
    }

    def data(x: np.ndarray, y: np.ndarray) -> lightgbm.Dataset:
        return lightgbm.Dataset(x, y, weight=compute_sample_weight("balanced", y))

    if rounds is None:
        inner = inner_split(bars[0], cfg.val_fraction, prep.arrays.splits.purge)
        x_in, y_in, x_stop, y_stop = tabular_data(prep, plan, inner, spread=True)
        probe = lightgbm.train(
            params,
            data(x_in, y_in),
            num_boost_round=own["rounds"],
            valid_sets=[data(x_stop, y_stop)],
            callbacks=[lightgbm.early_stopping(LIGHTGBM_EARLY_STOP, verbose=False)],
        )
        rounds = int(probe.best_iteration or probe.current_iteration())
    booster = lightgbm.train(params, data(x_fit, y_fit), num_boost_round=rounds)
    return BoosterClassifier(booster.model_to_string()), rounds


def inner_split(fit_bars: np.ndarray, val_fraction: float, purge: int) -> Bars:
    """``(inner_fit, inner_stop)``: the last ``val_fraction`` of ``fit_bars`` to choose LightGBM's
    boosting rounds on, and the bars before it less a ``purge`` gap (the splits' own rule: no
    label or window of the fit part reaches the stopping part)."""
    n_stop = max(1, int(round(len(fit_bars) * val_fraction)))
    stop = fit_bars[-n_stop:]
    return fit_bars[fit_bars < stop[0] - purge], stop
