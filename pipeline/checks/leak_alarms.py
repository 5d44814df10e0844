"""Run-time leak alarms: checks that run inside every step 5 and step 7 and say, in a warning row,
when a result looks like a leak rather than an edge.

Tests catch leaks planted in the code; these alarms catch the leaks a user's change, data or
config brings in at run time. Two kinds:

* **structural**, exact: the blocks a model was fit and early-stopped on precede the test block
  with the purge gap between them (a shuffled split or a missing gap fails it); the scaler's
  statistics are those of the train block's rows (a scaler fit on the whole series fails it);
  the model's inputs at bar ``t`` are reproduced from the candles cut after bar ``t`` (the
  *future-shift control*: with no bar ``t + 1`` in existence, a centred window or a feature that
  reads the next bar gives a different value; freqtrade's ``lookahead-analysis`` does the same);
* **statistical**, with the chance test of :mod:`pipeline.classifiers.report`: direction accuracy
  that no honest model reaches at this bar interval; a test score far above the validation
  score (validation is the early-stopping block, so it is the optimistic one); the same model
  trained on permuted train labels scoring above chance (the *label-permutation control*: only
  a channel from the test labels to the model survives the permutation); an agent Sharpe ratio
  no strategy of one asset reaches.

An alarm is a finding, not a failure: it is logged as a warning, written to the step's JSON
(``alarms``), shown as a row under the step's table and in the run summary; ``--strict`` turns
any alarm into exit code 4 (``EXIT_ALARM``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from pipeline.classifiers.prepare import ClassifierData
    from pipeline.data.splits import Block

EXIT_ALARM = 4
"""Exit code of a run with ``--strict`` that raised a leak alarm (README "Exit codes")."""

LOOKAHEAD_CUTS = 6
"""Bars at which the future-shift control recomputes the inputs (spread over train and test)."""


@dataclass(frozen=True)
class Alarm:
    """One leak alarm: which check fired, on what, and the numbers that made it fire."""

    check: str  # split | scaler | lookahead | direction | test_vs_val | permutation | sharpe
    subject: str  # "gru", "logreg (beside gru)", "agent", "dataset"
    message: str

    def to_dict(self) -> dict[str, str]:
        """JSON-able dict."""
        return asdict(self)

    def line(self) -> str:
        """``LEAK ALARM [split] gru: ...``: the warning row."""
        return f"LEAK ALARM [{self.check}] {self.subject}: {self.message}"


def raise_if_strict(alarms: Sequence[Alarm], strict: bool, where: str) -> None:
    """``strict_alarms`` / ``--strict``: one line naming the first alarm, exit code 4."""
    if strict and alarms:
        from pipeline.common import PipelineError

        more = f" (and {len(alarms) - 1} more)" if len(alarms) > 1 else ""
        raise PipelineError(
            f"{alarms[0].line()}{more}; stopped by --strict (strict_alarms), see {where}",
            exit_code=EXIT_ALARM,
        )


def alarm_lines(alarms: Sequence[dict[str, Any] | Alarm]) -> list[str]:
    """The warning rows of ``alarms`` (dicts as stored in JSON, or :class:`Alarm`)."""
    out = []
    for a in alarms:
        a = a if isinstance(a, Alarm) else Alarm(str(a["check"]), str(a["subject"]), a["message"])
        out.append(a.line())
    return out


# ---------------------------------------------------------------- structural checks


def split_alarms(
    subject: str,
    fit_bars: np.ndarray,
    early_stop_bars: np.ndarray,
    test_bars: np.ndarray,
    purge: int,
) -> list[Alarm]:
    """The bars a model learned from and early-stopped on must end ``purge`` bars before the
    test block starts, and the fit bars before the early-stopping bars (chronological split).

    A shuffled split (rows drawn at random from the whole series) and a missing purge gap both
    break it; labels span ``k`` bars and windows ``lookback`` bars, so a gap below ``purge``
    lets a training label see bars a test window reads (Lopez de Prado 2018, ch. 7).
    """
    alarms = []
    test_start = int(np.min(test_bars)) if len(test_bars) else None
    for what, bars in (("fit", fit_bars), ("early-stopping", early_stop_bars)):
        if test_start is None or not len(bars):
            continue
        last = int(np.max(bars))
        if last + purge > test_start:
            inside = int(np.sum(np.asarray(bars) >= test_start))
            alarms.append(
                Alarm(
                    "split",
                    subject,
                    f"{what} bars reach bar {last:,}, the test block starts at bar {test_start:,}"
                    f" (needs a purge gap of {purge} bars; {inside:,} {what} bars lie inside "
                    "or after the test block): the split is not chronological and purged",
                )
            )
    if len(fit_bars) and len(early_stop_bars):
        last_fit, first_es = int(np.max(fit_bars)), int(np.min(early_stop_bars))
        if last_fit + purge > first_es:
            alarms.append(
                Alarm(
                    "split",
                    subject,
                    f"fit bars reach bar {last_fit:,}, the early-stopping block starts at bar "
                    f"{first_es:,} (needs a purge gap of {purge} bars): model selection saw "
                    "bars the model learned from",
                )
            )
    return alarms


def scaler_alarms(
    features: np.ndarray, fit_rows: slice, mean: np.ndarray, scale: np.ndarray
) -> list[Alarm]:
    """The scaler's mean and scale must be the statistics of the fit rows (train windows).

    Recomputed here with numpy, independently of the code that fit the scaler; a scaler fit on
    the whole series (or on train + test) differs in the mean by far more than rounding.
    """
    rows = np.asarray(features[fit_rows], dtype=np.float64)  # (n + L - 1, F)
    want_mean, want_scale = rows.mean(axis=0), rows.std(axis=0)
    want_scale[want_scale == 0] = 1.0  # sklearn's StandardScaler does the same
    tol = 1e-6 * np.maximum(np.abs(want_scale), 1e-12)
    off = np.abs(np.asarray(mean) - want_mean) > tol + 1e-6 * np.abs(want_mean)
    off |= np.abs(np.asarray(scale) - want_scale) > 1e-6 * want_scale
    if not off.any():
        return []
    f = int(np.argmax(off))
    return [
        Alarm(
            "scaler",
            "dataset",
            f"the scaler's statistics are not those of the train block's rows (feature {f}: "
            f"mean {float(mean[f]):.6g}, train rows give {want_mean[f]:.6g}; {int(off.sum())} of "
            f"{off.size} features differ): it was fit on rows outside the train block",
        )
    ]


def lookahead_alarms(
    recompute: Callable[[int], np.ndarray],
    model_inputs: np.ndarray,
    bars: Sequence[int],
    names: Sequence[str],
) -> list[Alarm]:
    """Future-shift control: the inputs at bar ``t`` recomputed from the candles up to ``t``.

    ``recompute(t)`` returns the (scaled) input row of bar ``t`` from the series cut after bar
    ``t``; ``model_inputs[t]`` is what the model was given. Any difference means the inputs
    read bars after ``t`` (a centred window, a shifted column, a smoothed series).
    """
    bad: list[tuple[int, str, float, float]] = []
    for t in bars:
        want = np.asarray(recompute(int(t)), dtype=np.float64)  # (F,)
        got = np.asarray(model_inputs[int(t)], dtype=np.float64)  # (F,)
        differs = ~np.isclose(got, want, rtol=1e-4, atol=1e-4, equal_nan=True)
        if differs.any():
            f = int(np.argmax(differs))
            bad.append((int(t), str(names[f]), float(got[f]), float(want[f])))
    if not bad:
        return []
    t, name, got_v, want_v = bad[0]
    return [
        Alarm(
            "lookahead",
            "dataset",
            f"inputs differ when the candles after the bar are removed: at {len(bad)} of "
            f"{len(bars)} bars checked (bar {t:,}, feature '{name}': {got_v:.6g} with the full "
            f"series, {want_v:.6g} without its future): features read bars after t",
        )
    ]


def lookahead_bars(first: int, last: int, n: int = LOOKAHEAD_CUTS) -> list[int]:
    """``n`` bars spread evenly over ``first .. last`` (inclusive), where the control cuts."""
    if last < first:
        return []
    return sorted({int(round(v)) for v in np.linspace(first, last, n)})


# ---------------------------------------------------------------- statistical checks


def direction_alarms(
    subject: str, comparison: dict[str, Any], max_accuracy: float, interval: str = ""
) -> list[Alarm]:
    """Direction right on more than ``max_accuracy`` of the signed calls, significantly.

    Published direction accuracies for liquid markets sit at 50-58 % (e.g. Fischer & Krauss
    2018, 54 %; crypto studies 52-57 % hourly); an honest model above the limit on hundreds of
    independent calls is far rarer than a leak. ``comparison`` is a
    :func:`pipeline.classifiers.report.headline_comparison` result (or the same keys).
    """
    acc = comparison.get("direction_accuracy")
    p = comparison.get("direction_p_value")
    if acc is None or p is None or acc <= max_accuracy or p >= 0.01:
        return []
    calls = int(comparison.get("direction_calls") or 0)
    where = f" on {interval} bars" if interval else ""
    return [
        Alarm(
            "direction",
            subject,
            f"direction right on {acc:.1%} of {calls:,} signed test calls{where} (p {p:.2g}), "
            f"above the plausible {max_accuracy:.0%} (alarm_direction_accuracy): a label or a "
            "future bar may be in the inputs",
        )
    ]


def val_gap_alarms(
    subject: str, test_f1: float, val_f1: float, test_rows: int, val_rows: int, horizon: int
) -> list[Alarm]:
    """Test macro-F1 more than 3 standard errors above the early-stopping block's.

    The early-stopping block picked the epoch, so it is the optimistic one; a test block far
    above it means the model knew the test block (trained on it, or its labels leaked).
    """
    from pipeline.classifiers.report import macro_f1_standard_error

    se = math.hypot(
        macro_f1_standard_error(test_rows, horizon), macro_f1_standard_error(val_rows, horizon)
    )
    if test_f1 - val_f1 <= 3 * se:
        return []
    return [
        Alarm(
            "test_vs_val",
            subject,
            f"test macro-F1 {test_f1:.3f} is {test_f1 - val_f1:.3f} above the early-stopping "
            f"block's {val_f1:.3f} (3 s.e. = {3 * se:.3f}): the model may have seen the test block",
        )
    ]


def permutation_alarms(subject: str, comparison: dict[str, Any]) -> list[Alarm]:
    """The model trained on permuted train labels must be at chance on the test block."""
    if not comparison.get("beats_chance_on_test"):
        return []
    return [
        Alarm(
            "permutation",
            subject,
            f"{comparison['headline']}: test labels reach the model by another way",
        )
    ]


def sharpe_alarms(subject: str, sharpe: float | None, max_sharpe: float) -> list[Alarm]:
    """An annualised test-block Sharpe ratio above ``max_sharpe`` after fees.

    The best-known single-asset systematic strategies report annual Sharpe ratios of 1-3;
    a filled-before-decided trade or an observation of the next bar gives tens.
    """
    if sharpe is None or not math.isfinite(sharpe) or sharpe <= max_sharpe:
        return []
    return [
        Alarm(
            "sharpe",
            subject,
            f"annualised Sharpe ratio {sharpe:.2f} on the test block after fees, above the "
            f"plausible {max_sharpe:g} (alarm_sharpe): fills or observations may see the future",
        )
    ]


# ---------------------------------------------------------------- step 5 in one call


class FitPlanLike(Protocol):
    """What the checks read of step 5's fit plan (``pipeline.classifiers.fit_plan.FitPlan``)."""

    fit: Block
    scaled: np.ndarray  # (N, F) float32
    scaler_mean: np.ndarray  # (F,)
    scaler_scale: np.ndarray  # (F,)


def classifier_alarms(
    prep: ClassifierData,
    plan: FitPlanLike,
    fit_bars: np.ndarray,
    early_stop_bars: np.ndarray,
    metrics: dict[str, dict[str, Any]],
    max_accuracy: float,
) -> list[Alarm]:
    """Every step-5 check but the permutation control, on the bars the models really used.

    ``fit_bars`` / ``early_stop_bars`` are the labelled bars the main models were fit and
    early-stopped on, ``metrics`` each model's metrics file (``headline_comparison`` input).
    """
    # the function build_classifier_arrays calls, looked up now
    import pipeline.classifiers.prepare as prepare
    from pipeline.classifiers.report import headline_comparison, labelled_bars

    a = prep.arrays
    test_bars = labelled_bars(a.splits.test, a.labels)
    # The gap the labels and windows need, whatever the split says it used (a split built with
    # no gap also reports purge 0).
    purge = max(a.splits.purge, a.k + a.lookback)
    alarms = split_alarms("main models", fit_bars, early_stop_bars, test_bars, purge)
    rows = prepare.scaler_rows(plan.fit, a.lookback)
    alarms += scaler_alarms(a.features, rows, plan.scaler_mean, plan.scaler_scale)

    def recompute(t: int) -> np.ndarray:
        cut = prep.df.iloc[: t + 1]  # the candles up to bar t: bar t + 1 does not exist yet
        row = prepare.features_of(cut, prep.feature_names).to_numpy(np.float64)[-1]
        return (row - plan.scaler_mean) / plan.scaler_scale  # (F,)

    cuts = lookahead_bars(a.splits.first_bar, a.splits.last_bar)
    alarms += lookahead_alarms(recompute, plan.scaled, cuts, prep.feature_names)
    logreg_done = False
    for name, m in metrics.items():
        cmp = headline_comparison(m)
        alarms += direction_alarms(name, cmp, max_accuracy)
        if not logreg_done:  # the same logistic regression sits beside every model
            logreg = {
                "direction_accuracy": cmp["logreg_direction_accuracy"],
                "direction_calls": cmp["logreg_direction_calls"],
                "direction_p_value": cmp["logreg_direction_p_value"],
            }
            alarms += direction_alarms("logreg baseline", logreg, max_accuracy)
            logreg_done = True
        val_rows = int(sum(sum(r) for r in m["val"]["confusion"]))
        alarms += val_gap_alarms(
            name,
            float(m["test"]["macro_f1"]),
            float(m["val"]["macro_f1"]),
            cmp["test_rows"],
            val_rows,
            cmp["label_horizon"],
        )
    return alarms


def permuted_labels(labels: np.ndarray, train_bars: np.ndarray, seed: int) -> np.ndarray:
    """``labels`` with the train block's labelled bars shuffled among themselves (control)."""
    out = np.array(labels, copy=True)
    out[train_bars] = np.random.default_rng(seed).permutation(out[train_bars])
    return out
