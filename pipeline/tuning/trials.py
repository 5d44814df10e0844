"""The study's trials counted and ranked (what each stage maximises, the best trial) and the
progress line of a running study."""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

from pipeline.common import progress_bars_wanted

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("pipeline.tuning.study")  # the progress line keeps its logger's name

STAGES = ("classifier", "agent")
METRICS = {
    "classifier": "validation macro-F1",
    "agent": "best validation mean episode reward",
}
"""What each stage maximises (``tune.py --help`` and the outputs say it)."""


def finished_states() -> tuple[Any, ...]:
    """Trial states that count towards ``--trials``: complete and pruned."""
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


def counts(study: optuna.Study) -> dict[str, int]:
    """``{state name: trials}`` of the study (``COMPLETE``, ``PRUNED``, ``RUNNING``, ...)."""
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def finished(study: optuna.Study) -> int:
    """Complete plus pruned trials."""
    c = counts(study)
    return c.get("COMPLETE", 0) + c.get("PRUNED", 0)


class StudyProgress:
    """Trials done, best value so far and ETA: a tqdm bar in a terminal, else a log line per
    finished trial."""

    def __init__(self, total: int, done: int, bar: bool | None = None) -> None:
        self.total = max(int(total), 1)
        self.start_done = done
        self.t0 = time.monotonic()
        self.bar: Any = None
        if progress_bars_wanted() if bar is None else bar:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=done, desc="trials", unit="trial")

    def eta_s(self, done: int) -> float | None:
        """Seconds left at this session's trial rate (None before the first trial)."""
        n = done - self.start_done
        if n <= 0:
            return None
        rate = n / (time.monotonic() - self.t0)
        return max(self.total - done, 0) / rate

    def update(self, done: int, best: float | None, best_trial: int | None) -> None:
        """Show ``done`` finished trials and the best value (of trial ``best_trial``)."""
        best_text = "none yet" if best is None else f"{best:.4g} (trial {best_trial})"
        eta = self.eta_s(done)
        if self.bar is not None:
            self.bar.n = done
            self.bar.set_postfix_str(f"best {best_text}")
            self.bar.refresh()
            return
        log.info(
            "trials %d/%d, best %s, ETA %s",
            done,
            self.total,
            best_text,
            "unknown" if eta is None else f"{eta:.0f} s",
        )

    def close(self) -> None:
        """Close the bar (if any)."""
        if self.bar is not None:
            self.bar.close()


def chosen_trial(study: optuna.Study) -> Any:
    """The best complete trial, ties broken by the most trades (``best_trades``), then the
    earliest; None before the first complete trial.

    Optuna's ``best_trial`` takes the first of equal values: among agent trials that never
    trade (all at the flat score) it would pick an arbitrary non-trader over one that trades as
    well as staying flat does.
    """
    from optuna.trial import TrialState

    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    if not done:
        return None
    return max(done, key=lambda t: (t.value, trades_of(t) or 0, -t.number))


def trades_of(trial: Any) -> int | None:
    """How many trades the agent trial made at its best evaluation (None: not recorded)."""
    value = trial.user_attrs.get("best_trades")
    return None if value is None else int(value)


def best_of(study: optuna.Study) -> tuple[float | None, int | None]:
    """The best value and its trial number, ``(None, None)`` before the first complete trial."""
    best = chosen_trial(study)
    if best is None:
        return None, None
    return float(best.value), best.number
