"""The tuner's study: creating or loading it, and the worker loop that runs its trials. The
objectives themselves live in ``tune.py`` (they train a classifier or an agent, which
``pipeline/`` may not import); the storage, the development-only data, the trial counts and the
progress line, the output files and the ``--jobs`` workers have modules of their own in
``pipeline/tuning/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.common import PipelineError, TrainingInterrupted

# Re-exported: the output files were written from this module before they had their own.
from pipeline.tuning.outputs import summary_lines as summary_lines
from pipeline.tuning.outputs import write_outputs as write_outputs
from pipeline.tuning.trials import counts

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


class StudyFull(Exception):
    """Raised by a trial that started after the study already had its ``--trials`` (another
    worker started the last one first); the trial is marked failed with ``surplus = true`` and
    the worker stops."""


STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""A study name: it names the trial folders (``{study}_trial_{n}``) under the tuning folder, so it
must be a plain name, never a path (issue 22 item 2)."""


def check_study_name(name: str) -> str:
    """``name`` if it is a plain study name, else a one-line :class:`PipelineError`."""
    if not STUDY_NAME.fullmatch(name) or ".." in name:
        raise PipelineError(
            f"--study {name!r}: expected a name (letters, digits, '.', '_', '-'; up to 100 "
            "characters, no '/' or '..'), not a path"
        )
    return name


def remove_inside(folder: Path, root: Path) -> None:
    """``shutil.rmtree(folder)`` (missing is fine), only when ``folder`` lies inside ``root``."""
    resolved, inside = folder.resolve(), root.resolve()
    assert resolved != inside and resolved.is_relative_to(inside), (
        f"refusing to delete {folder}: not inside {root}"
    )
    shutil.rmtree(resolved, ignore_errors=True)


def make_study(args: argparse.Namespace, storage: Any, name: str, meta: dict[str, str]) -> Any:
    """Create or load the study; refuse one made for another stage, dataset or model."""
    import optuna

    pruner: optuna.pruners.BasePruner
    if args.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    elif args.pruner == "halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner()
    else:
        pruner = optuna.pruners.NopPruner()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    probe = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True
    )
    seed = None
    if args.seed is not None:
        # Each worker and each rerun samples differently: the same seed would repeat trials.
        seed = args.seed + 1000 * args.worker_index + len(probe.trials)
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner,
    )
    for key, value in meta.items():
        old = study.user_attrs.get(key)
        if old is None:
            study.set_user_attr(key, value)
        elif old != value:
            raise PipelineError(
                f"--study {name}: this study was made with {key} = {old}, not {value}; use "
                "another --study name"
            )
    return study


def is_surplus(study: optuna.Study, number: int, n_trials: int) -> bool:
    """Whether trial ``number`` is beyond the study's ``n_trials``: that many trials that are
    finished, running or queued have a smaller number (trial numbers are handed out by the
    storage in one transaction, so two workers never both get the last place)."""
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    ahead = [t for t in study.get_trials(deepcopy=False, states=live) if t.number < number]
    return len(ahead) >= n_trials


def guarded(
    objective: Callable[[optuna.Trial], float], n_trials: int, current: list[int]
) -> Callable[[optuna.Trial], float]:
    """``objective`` behind the surplus check; ``current`` gets the running trial's number."""

    def run(trial: optuna.Trial) -> float:
        current[:] = [trial.number]
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        if is_surplus(trial.study, trial.number, n_trials):
            trial.set_user_attr("surplus", True)
            raise StudyFull(f"trial {trial.number}: the study already has {n_trials} trials")
        try:
            return objective(trial)
        except TrainingInterrupted as exc:
            # A signal inside training: stop the worker (not a failed trial to skip over).
            raise KeyboardInterrupt(str(exc)) from None
        except PipelineError as exc:
            trial.set_user_attr("error", str(exc))  # for the table and the stop message
            raise

    return run


@dataclass
class WorkerResult:
    """What one worker did."""

    trials_run: int
    stopped_by: str  # "trials", "timeout", "surplus"


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    timeout_s: float | None = None,
    on_trial: Callable[[optuna.Study, Any], None] | None = None,
    max_failures_in_a_row: int = 3,
) -> WorkerResult:
    """Run trials of ``study`` until it has ``n_trials`` complete or pruned ones (counted over
    every worker and pod), ``timeout_s`` has passed, or a trial finds the study full.

    Trials queued by the retry callback (a dead worker's trial) are run first. A trial that
    fails with a :class:`PipelineError` (e.g. a sampled combination the config refuses) is
    marked failed and the next one starts; ``max_failures_in_a_row`` such failures stop the
    worker with the last error. Ctrl-C / SIGTERM: the running trial is marked failed, queued
    again with the same parameters (so the next run retries it), and KeyboardInterrupt rises.
    """
    from optuna.trial import TrialState

    t0 = time.monotonic()
    current: list[int] = []
    run = guarded(objective, n_trials, current)
    ran = 0
    failures = 0
    while True:
        if timeout_s is not None and time.monotonic() - t0 >= timeout_s:
            return WorkerResult(ran, "timeout")
        if _target_reached(study, n_trials):
            return WorkerResult(ran, "trials")
        current.clear()
        try:
            study.optimize(run, n_trials=1, catch=(PipelineError, StudyFull))
        except KeyboardInterrupt:
            _requeue_interrupted(study, current)
            raise
        if not current:
            continue
        trial = study.get_trials(deepcopy=False)[current[0]]
        if trial.user_attrs.get("surplus"):
            return WorkerResult(ran, "surplus")
        ran += 1
        if on_trial is not None:
            on_trial(study, trial)
        if trial.state == TrialState.FAIL:
            failures += 1
            if failures >= max_failures_in_a_row:
                reason = trial.user_attrs.get("error", "see the log above")
                raise PipelineError(
                    f"{failures} trials failed in a row (last: trial {trial.number}: "
                    f"{str(reason).strip().splitlines()[-1]}); check the search space and config"
                )
        else:
            failures = 0


def _target_reached(study: optuna.Study, n_trials: int) -> bool:
    """Whether the study has ``n_trials`` finished trials, or that many finished, running and
    queued ones with none of them queued: no trial is left for this worker to start."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import fail_stale_trials

    # A dead worker's trial turns stale here (and is queued again by the retry callback)
    # before counting, so a rerun does not wait for it as if it were still running.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        fail_stale_trials(study)
    c = counts(study)
    done = c.get("COMPLETE", 0) + c.get("PRUNED", 0)
    live = done + c.get("RUNNING", 0) + c.get("WAITING", 0)
    return done >= n_trials or (live >= n_trials and c.get("WAITING", 0) == 0)


def _requeue_interrupted(study: optuna.Study, current: list[int]) -> None:
    """Queue the interrupted trial's parameters again, so the next run retries it."""
    if not current:
        return
    trial = study.get_trials(deepcopy=False)[current[0]]
    if trial.params and not trial.user_attrs.get("surplus"):
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        log.warning(
            "trial %d interrupted: marked failed and queued again; rerun the same command to "
            "continue the study",
            trial.number,
        )


def python_command(argv: Sequence[str]) -> list[str]:
    """``[python, tune.py, *argv]`` for a worker subprocess."""
    return [sys.executable, str(Path(__file__).resolve().parents[2] / "tune.py"), *argv]
