"""How step 5 reports a classifier: the baselines it is compared with (chance, the train block's
majority class, a logistic regression on the last bar's features, all scored on the same rows),
the one-line headline with a directional metric, the training plot and the console table with
its legend.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.common import atomic_path
from pipeline.data.labels import CLASS_NAMES
from pipeline.tables import format_table

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

    from pipeline.classifiers.prepare import ClassifierData
    from pipeline.data.splits import Block

CHANCE_MACRO_F1 = 1 / 3
"""Macro-F1 of guessing among three classes (in expectation, whatever the class shares)."""


VAL_BLOCK_NOTE = (
    "early-stopping block: it picked the best epoch, so scores on it are optimistic; "
    "compare models on the test block"
)
"""What the "val" scores are: the validation block is the one early stopping
watched, so they are labelled, not used for the headline."""


def labelled_bars(block: Block, labels: np.ndarray) -> np.ndarray:
    """Bars of ``block`` that have a label, ``(n,)`` int64."""
    bars = block.bars()
    return bars[labels[bars] >= 0]


def baseline_metrics(prep: ClassifierData, seed: int) -> dict[str, dict[str, Any]]:
    """Majority class of the TRAIN block and a logistic regression on the last bar's features.

    Both are fit on train rows only and scored on exactly the val and test rows the model is.
    The logistic regression uses balanced class weights, like the model's weighted loss.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from pipeline.classifiers.metrics import classification_metrics

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


def direction_score(confusion: list[list[int]]) -> tuple[float | None, int]:
    """Share of correct signs among bars that truly rose or fell and were called Rise or Fall.

    From a 3x3 confusion matrix (rows true, columns predicted, order Fall, Stationary, Rise):
    the calls counted are bars labelled Fall or Rise that were predicted Fall or Rise; a call is
    correct when the signs agree. Returns ``(share, calls)``, ``(None, 0)`` without such calls.
    A coin scores about 50 %.
    """
    fall, rise = 0, 2
    hits = int(confusion[fall][fall]) + int(confusion[rise][rise])
    calls = hits + int(confusion[fall][rise]) + int(confusion[rise][fall])
    return (hits / calls if calls else None), calls


DIRECTION_ALPHA = 0.01
"""One-sided level of the direction test: "above chance" needs ``p < 0.01``.
Strict because several models are judged on the same block; a false "edge" costs a user money."""


def effective_rows(n: int, horizon: int) -> float:
    """Independent observations among ``n`` bars whose labels span ``horizon`` bars.

    A label averages the next ``k`` closes, so neighbouring labels share ``k - 1`` of their ``k``
    bars and count as about one observation per ``k`` bars (the overlap correction of Lopez de
    Prado 2018, ch. 4, "average uniqueness" ``1/k``).
    """
    return max(float(n) / max(int(horizon), 1), 1.0)


def direction_test(
    confusion: list[list[int]], horizon: int = 1, alpha: float = DIRECTION_ALPHA
) -> dict[str, Any]:
    """Are the signed calls right more often than a coin, on the effective sample size?

    ``z = (share - 0.5) / sqrt(0.25 / n_eff)`` with ``n_eff = calls / horizon``; one-sided
    ``p = 1 - Phi(z)``. On a GARCH random walk the share stays near 50 % even where volatility
    clustering lifts macro-F1 above 1/3, so this, not macro-F1 against 1/3, is the chance test.
    """
    share, calls = direction_score(confusion)
    out: dict[str, Any] = {"accuracy": share, "calls": calls, "horizon": int(horizon)}
    if share is None:
        return {**out, "effective_calls": 0.0, "z": None, "p_value": None, "above_chance": False}
    n_eff = effective_rows(calls, horizon)
    z = (share - 0.5) / math.sqrt(0.25 / n_eff)
    p = 0.5 * math.erfc(z / math.sqrt(2.0))  # 1 - Phi(z)
    return {**out, "effective_calls": n_eff, "z": z, "p_value": p, "above_chance": p < alpha}


def macro_f1_standard_error(n_rows: int, horizon: int = 1) -> float:
    """About ``sqrt(p (1 - p) / n_eff)`` with ``p = 1/3`` and ``n_eff = n / horizon``."""
    n_eff = effective_rows(n_rows, horizon)
    return math.sqrt(CHANCE_MACRO_F1 * (1 - CHANCE_MACRO_F1) / n_eff)


def headline_comparison(metrics: dict[str, Any]) -> dict[str, Any]:
    """The model's test block against chance and the logistic regression, in one line.

    **Chance** is judged on direction, the signed calls right vs 50 % on the effective sample
    size (:func:`direction_test`, labels overlap ``k`` bars), no longer on macro-F1 "one s.e.
    above 1/3", because on honest data with volatility clusters the Stationary class is partly
    predictable and macro-F1 sits above 1/3 without any directional edge. Macro-F1 is compared
    with the logistic regression on the same rows (better only by more than one overlap-corrected
    standard error) and with the permutation baseline (the model's own predictions against
    circularly shifted labels: same class shares, no alignment), when the metrics carry it.
    Returns the numbers and the ``headline`` string.
    """
    test = metrics["test"]
    logreg = metrics["baselines"]["logreg"]["test"]
    horizon = int(metrics.get("label_horizon") or 1)
    n_rows = int(sum(sum(row) for row in test["confusion"]))
    f1, lr = float(test["macro_f1"]), float(logreg["macro_f1"])
    se = macro_f1_standard_error(n_rows, horizon)
    perm = test.get("permutation") or {}
    chance = float(perm.get("mean", CHANCE_MACRO_F1))
    direction = direction_test(test["confusion"], horizon)
    lr_direction = direction_test(logreg["confusion"], horizon)
    beats_chance = bool(direction["above_chance"])
    beats_logreg = f1 > lr + se
    if beats_chance and beats_logreg:
        verdict = "better than chance and logreg"
    elif beats_chance:
        verdict = "above chance but no better than logreg"
    elif beats_logreg:
        verdict = "no better than chance"
    else:
        verdict = "no better than chance or logreg"
    chance_text = f"chance {chance:.3f}"
    if perm:
        chance_text = f"shuffled labels {chance:.3f} (95% {float(perm['q95']):.3f})"
    rows_text = f"{n_rows:,} rows" + (f", {horizon}-bar labels" if horizon > 1 else "")
    headline = (
        f"test macro-F1 {f1:.3f} vs {chance_text} and logreg {lr:.3f} "
        f"(s.e. {se:.3f} on {rows_text}): {verdict}; {direction_text(direction, lr_direction)}"
    )
    return {
        "headline": headline,
        "verdict": verdict,
        "test_rows": n_rows,
        "label_horizon": horizon,
        "macro_f1_standard_error": se,
        "chance_macro_f1": chance,
        "permutation_macro_f1": perm or None,
        "beats_chance_on_test": beats_chance,
        "beats_logreg_on_test": bool(beats_logreg),
        "direction_accuracy": direction["accuracy"],
        "direction_calls": direction["calls"],
        "direction_p_value": direction["p_value"],
        "direction_effective_calls": direction["effective_calls"],
        "logreg_direction_accuracy": lr_direction["accuracy"],
        "logreg_direction_calls": lr_direction["calls"],
        "logreg_direction_p_value": lr_direction["p_value"],
    }


def direction_text(direction: dict[str, Any], logreg: dict[str, Any]) -> str:
    """``direction 52.1% of 310 signed calls (62 independent, p 0.37; logreg 51.0%)``."""
    if direction["accuracy"] is None:
        return "direction n/a (no Rise/Fall call on a bar that rose or fell)"
    text = f"direction {direction['accuracy']:.1%} of {direction['calls']:,} signed calls ("
    if direction["horizon"] > 1:
        text += f"{direction['effective_calls']:,.0f} independent, "
    text += f"p {direction['p_value']:.2g}"
    if logreg["accuracy"] is not None:
        text += f"; logreg {logreg['accuracy']:.1%}"
    return text + ")"


def training_figure(
    history: list[dict[str, float]],
    confusion: list[list[int]],
    title: str = "",
    best_epoch: int | None = None,
) -> Figure:
    """Loss, accuracy, macro-F1 and the confusion matrix of the best epoch, as one figure.

    With a model/dataset title, integer epoch ticks, accuracy and F1 in separate panels, and a
    dotted line on the best epoch (the weights that were kept).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [int(h["epoch"]) for h in history]
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4))
    split_label = {"train": "train", "val": "val (early-stopping block)"}
    panels = (
        (axes[0], "loss (class-weighted cross-entropy)", "loss", ("train_loss", "val_loss")),
        (axes[1], "accuracy", "accuracy", ("train_accuracy", "val_accuracy")),
        (axes[2], "macro-F1", "macro-F1", ("val_macro_f1",)),
    )
    for ax, panel_title, ylabel, keys in panels:
        for key in keys:
            split = split_label[key.split("_", 1)[0]]
            ax.plot(epochs, [h[key] for h in history], marker=".", label=split)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
        ax.set(title=panel_title, xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    _draw_confusion(axes[3], confusion)
    if title:
        lines = [part for line in title.splitlines() for part in textwrap.wrap(line, 150)]
        fig.suptitle("\n".join(lines))
    fig.tight_layout()
    return fig


def _draw_confusion(ax: Any, confusion: list[list[int]]) -> None:
    """The best epoch's validation confusion matrix, counts written in the cells."""
    import numpy as np

    matrix = np.asarray(confusion)  # (3, 3) rows true, columns predicted
    ax.imshow(matrix, cmap="Blues")
    for i in range(3):
        for j in range(3):
            dark = matrix[i, j] > matrix.max() / 2  # white digits on dark cells, stay readable
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                color="white" if dark else "black",
            )
    ax.set(
        title="val confusion, best epoch\n(early-stopping block)",
        xticks=range(3),
        yticks=range(3),
        xticklabels=CLASS_NAMES,
        yticklabels=CLASS_NAMES,
        xlabel="predicted",
        ylabel="true",
    )


def plot_training(
    history: list[dict[str, float]],
    confusion: list[list[int]],
    path: Path,
    title: str = "",
    best_epoch: int | None = None,
) -> None:
    """:func:`training_figure` written to ``path`` as a PNG (Agg backend)."""
    import matplotlib.pyplot as plt

    fig = training_figure(history, confusion, title, best_epoch)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


SUMMARY_LEGEND = (
    "columns: epochs = epochs run, best = epoch whose weights were kept (lowest loss on the "
    "early-stopping block); ES-val F1 = macro-F1 on the validation block that early stopping "
    "watched (optimistic, so nothing is compared on it). All other scores are on the test "
    "block, the same rows for every column: test F1 = the model's macro-F1, chance = its "
    "predictions scored against circularly shifted labels (same class shares, no alignment; 1/3 "
    "in older files), "
    "majority = always predicting the train block's majority class, logreg = logistic "
    "regression on the last bar's features; dir% = correct signs among bars that rose or fell "
    "and were called Rise or Fall, signed = how many such calls (a coin scores ~50%); verdict = "
    "chance judged on direction (above 50% at p < 0.01, one independent call per label "
    "horizon, since overlapping labels are not independent), logreg on test F1 (better only by "
    "more than one overlap-corrected standard error); time = "
    "wall time including walk-forward models."
)


def format_summary_table(entries: dict[str, dict[str, Any]]) -> str:
    """Plain-text table of this run's models, then a legend explaining each column.

    Every score the table compares is on the test block; the early-stopping block's F1 is shown
    apart, labelled as such.
    """
    headers = (
        "model", "status", "epochs", "best", "ES-val F1", "test F1", "chance", "majority",
        "logreg", "dir%", "signed", "verdict", "time",
    )  # fmt: skip
    rows = []
    for name, e in entries.items():
        direction = e.get("direction_accuracy")
        best = e.get("best_epoch")
        rows.append(
            [
                name,
                e["status"],
                e["epochs_run"],
                best if best is not None else "?",
                f"{e['val_macro_f1']:.3f}",
                f"{e['test_macro_f1']:.3f}",
                f"{e.get('chance_macro_f1', CHANCE_MACRO_F1):.3f}",
                f"{e['majority_test_macro_f1']:.3f}",
                f"{e['logreg_test_macro_f1']:.3f}",
                f"{direction:.1%}" if isinstance(direction, (int, float)) else "n/a",
                f"{e.get('direction_calls', 0):,}",
                e.get("verdict", ""),
                f"{e['wall_seconds']:.1f}s",
            ]
        )
    lines = [format_table(headers, rows, right=(2, 3, 4, 5, 6, 7, 8, 9, 10, 12))]
    lines.extend(textwrap.wrap(SUMMARY_LEGEND, width=100))
    return "\n".join(lines)
