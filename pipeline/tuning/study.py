"""The tuner's library: study storage, the development-only data, the worker loop, the progress
line and the output files. The objectives themselves live in ``tune.py`` (they train a classifier
or an agent, which ``pipeline/`` may not import).

Storage: Optuna's own. By default an SQLite file
(:data:`pipeline.store.artifacts.TUNING_STORAGE_NAME` under ``results/tuning_{stage}_{dataset}/``);
any RDB URL (``postgresql://...``, ``mysql+pymysql://...``) or a journal file (``journal:PATH``, a
file on a shared volume) lets several pods work on one study: the same command on each pod pulls
trials from the shared study. RDB storages run with a heartbeat: a trial whose worker died (killed
pod, ``kill -9``) goes stale after ``grace_period`` seconds, is marked failed the next time any
worker starts a trial, and Optuna's retry callback (``RetryHeartbeatStaleTrialCallback``,
``RetryFailedTrialCallback`` before Optuna 4.9) queues it again with the same parameters. A
journal file has no heartbeat in Optuna: a dead worker's trial stays RUNNING there (use an RDB URL
when pods may die mid-trial).

Trials never see the test block: the classifier stage cuts the dataset before the first row any
test window of any lookback in the space reads (:func:`development_rows`) and splits the rest into
train and validation only (:func:`development_arrays`); the agent stage keeps only the agent's
train and val blocks (``tune.py``).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.common import (
    PipelineError,
    TrainingInterrupted,
    atomic_write_json,
    atomic_write_text,
    progress_bars_wanted,
)
from pipeline.config.files import format_value
from pipeline.config.schema import TrainingConfig
from pipeline.data.splits import (
    MIN_BLOCK_SAMPLES,
    Block,
    SplitError,
    Splits,
    make_splits,
    resolve_purge,
)
from pipeline.tuning.space import SearchSpace

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from pipeline.classifiers.prepare import PreparedArrays

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal:"
STAGES = ("classifier", "agent")
METRICS = {
    "classifier": "validation macro-F1",
    "agent": "best validation mean episode reward",
}
"""What each stage maximises (``tune.py --help`` and the outputs say it)."""


class StudyFull(Exception):
    """Raised by a trial that started after the study already had its ``--trials`` (another
    worker started the last one first); the trial is marked failed with ``surplus = true`` and
    the worker stops."""


# ================================================================ storage


def storage_url(spec: str | None, default_path: Path) -> str:
    """The storage as a URL: ``None`` -> SQLite at ``default_path``; a path ending ``.db`` /
    ``.sqlite`` -> SQLite there; ``journal:PATH`` and URLs are returned as given."""
    if spec is None or spec.strip() == "":
        return f"sqlite:///{Path(default_path).resolve()}"
    spec = spec.strip()
    if spec.startswith(JOURNAL_PREFIX) or "://" in spec:
        return spec
    if spec.endswith((".db", ".sqlite", ".sqlite3")):
        return f"sqlite:///{Path(spec).expanduser().resolve()}"
    raise PipelineError(
        f"--storage {spec}: not a storage; expected an RDB URL (sqlite:///PATH, "
        "postgresql://..., mysql://...), journal:PATH, or a PATH ending in .db"
    )


def masked_url(url: str) -> str:
    """``url`` with the user and password of an RDB URL hidden (for logs and error lines)."""
    return re.sub(r"://[^@/]*@", "://***@", url)


def _retry_callback(max_retry: int) -> dict[str, Any]:
    """RDBStorage's argument that queues a stale trial again: Optuna >= 4.9 names it
    ``heartbeat_stale_trial_callback`` (``RetryHeartbeatStaleTrialCallback``), older versions
    ``failed_trial_callback`` (``RetryFailedTrialCallback``)."""
    from optuna import storages

    new = getattr(storages, "RetryHeartbeatStaleTrialCallback", None)
    if new is not None:
        return {"heartbeat_stale_trial_callback": new(max_retry=max_retry)}
    return {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=max_retry)}


def retried_from(trial: Any) -> int | None:
    """The number of the stale trial that ``trial`` retries (None if it is no retry)."""
    value = trial.system_attrs.get("failed_trial")
    return int(value) if value is not None else None


def _serialise_sqlite(engine: Any) -> None:
    """Every SQLite transaction starts with ``BEGIN IMMEDIATE`` (SQLAlchemy's pysqlite recipe).

    Optuna hands a queued (WAITING) trial to a worker by reading it ``FOR UPDATE`` and setting it
    RUNNING; SQLite ignores ``FOR UPDATE`` and Python's sqlite3 begins the transaction only at
    the UPDATE, so two worker processes could both read WAITING and both run the trial (seen
    with ``--jobs 2`` on queued trials: the second one failed at the end with "Trial#0 has
    already finished"). Taking the write lock at BEGIN makes the read-check-write one step."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections pooled before the listeners existed


def open_storage(
    url: str,
    heartbeat_interval: int = 60,
    grace_period: int | None = None,
    max_retry: int = 3,
) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage (with heartbeat and the retry callback) or journal storage."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX) :]).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise PipelineError(
                f"--storage {masked_url(url)}: cannot open the journal file: {exc}"
            ) from None
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        # Several worker processes write one file: wait for the lock instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 120}}
    try:
        with warnings.catch_warnings():
            # The heartbeat and its retry callback are "experimental" in Optuna's terms.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                **_retry_callback(max_retry),
            )
        if url.startswith("sqlite:"):
            _serialise_sqlite(storage.engine)
        return storage
    except (ImportError, ModuleNotFoundError) as exc:
        raise PipelineError(
            f"--storage {masked_url(url)}: the database driver is not installed ({exc}); "
            "install it (e.g. psycopg2-binary for PostgreSQL, pymysql for MySQL)"
        ) from None
    except Exception as exc:  # SQLAlchemy's errors: a bad URL, an unreachable server
        if isinstance(exc, optuna.exceptions.OptunaError | PipelineError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(
            f"--storage {masked_url(url)}: cannot open the study storage: {masked_url(first)}"
        ) from None


# ================================================================ development data only


def lookbacks_of(space: SearchSpace, cfg: TrainingConfig) -> list[int]:
    """Every lookback a trial can use: the space's values, else the config's."""
    p = space.get("training.lookback")
    return [int(v) for v in p.values()] if p is not None else [int(cfg.lookback)]


def development_rows(
    n_rows: int, warmup: int, cfg: TrainingConfig, lookbacks: Iterable[int]
) -> int:
    """Rows a classifier trial may see: those before the first row that any test-block window
    reads (bar ``test.start - lookback + 1``) for any lookback in ``lookbacks``, where ``test`` is
    the test block the full pipeline would use on all ``n_rows`` rows. Rows from there on never
    reach a trial, whichever lookback wins."""
    cut = n_rows
    for lookback in lookbacks:
        splits = make_splits(
            n_rows,
            warmup,
            lookback,
            cfg.smoothing_k,
            cfg.test_fraction,
            cfg.val_fraction,
            cfg.purge_gap,
            cfg.walk_forward_folds,
        )
        cut = min(cut, splits.test.start - lookback + 1)
    return cut


def development_splits(
    n_rows: int, warmup: int, lookback: int, k: int, val_fraction: float, purge_gap: int | None
) -> Splits:
    """Train and validation blocks over a development frame of ``n_rows`` rows, laid out like
    :func:`pipeline.data.splits.make_splits` lays out the development block (validation = its last
    ``val_fraction``, a purge gap before it); ``test`` is empty and there are no folds."""
    purge = resolve_purge(purge_gap, k, lookback)
    first = warmup + lookback - 1
    last = n_rows - k - 1
    dev = Block("dev", first, last + 1)
    n_val = int(round(len(dev) * val_fraction))
    val = Block("val", dev.stop - n_val, dev.stop)
    train = Block("train", first, val.start - purge)
    for block in (train, val):
        if len(block) < MIN_BLOCK_SAMPLES:
            raise SplitError(
                f"the development rows ({n_rows}) leave block '{block.name}' {len(block)} "
                f"sample bars with lookback {lookback} (needs >= {MIN_BLOCK_SAMPLES}); use a "
                "longer dataset or smaller lookbacks in the search space"
            )
    empty = Block("test", last + 1, last + 1)
    return Splits(train, val, empty, dev, [], purge, first, last)


def development_arrays(
    df: pd.DataFrame, cfg: TrainingConfig, features: np.ndarray | None = None
) -> PreparedArrays:
    """:func:`pipeline.classifiers.prepare.prepare_arrays` for a development frame: the same
    features, labels (threshold from the train block), train-only scaler, with
    :func:`development_splits`. ``features`` (``compute_features`` of ``df``, unscaled) may be
    passed to reuse them across trials (they do not depend on the tuned keys)."""
    from pipeline.classifiers.prepare import PreparedArrays, apply_scaler, fit_scaler
    from pipeline.data.features import (
        check_feature_names,
        compute_features,
        utc_index,
        warmup_bars,
    )
    from pipeline.data.labels import auto_threshold, make_labels, smoothed_future_return

    names = check_feature_names(cfg.resolved_features())
    warm = warmup_bars(names)
    splits = development_splits(
        len(df), warm, cfg.lookback, cfg.smoothing_k, cfg.val_fraction, cfg.purge_gap
    )
    if features is None:
        features = compute_features(df, names).to_numpy(dtype=np.float32)  # (N, F)
    close = np.asarray(df["close"], dtype=np.float64)
    r = smoothed_future_return(close, cfg.smoothing_k)
    delta = (
        auto_threshold(r[splits.train.bars()])
        if cfg.threshold_delta is None
        else float(cfg.threshold_delta)
    )
    scaler = fit_scaler(features, splits.train, cfg.lookback)
    return PreparedArrays(
        feature_names=names,
        lookback=cfg.lookback,
        k=cfg.smoothing_k,
        delta=float(delta),
        delta_auto=cfg.threshold_delta is None,
        timestamps=utc_index(df["timestamp"]).to_numpy(),
        open=np.asarray(df["open"], dtype=np.float64),
        close=close,
        features=features,
        price_features=np.empty((len(df), 0), dtype=np.float32),  # the agent's, unused here
        r=r,
        labels=make_labels(r, delta),
        splits=splits,
        scaler=scaler,
        scaled=apply_scaler(scaler, features),
        warmup=warm,
    )


# ================================================================ the worker loop


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
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    t0 = time.monotonic()
    current: list[int] = []
    run = guarded(objective, n_trials, current)
    ran = 0
    failures = 0
    while True:
        if timeout_s is not None and time.monotonic() - t0 >= timeout_s:
            return WorkerResult(ran, "timeout")
        # A dead worker's trial turns stale here (and is queued again by the retry callback)
        # before counting, so a rerun does not wait for it as if it were still running.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            fail_stale_trials(study)
        c = counts(study)
        done = c.get("COMPLETE", 0) + c.get("PRUNED", 0)
        live = done + c.get("RUNNING", 0) + c.get("WAITING", 0)
        if done >= n_trials or (live >= n_trials and c.get("WAITING", 0) == 0):
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


# ================================================================ progress


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


# ================================================================ outputs


def best_params_text(
    study: optuna.Study, stage: str, dataset: str, space: SearchSpace, base: Sequence[str] = ()
) -> str:
    """The best trial's parameters as a ``--set-file`` (``[training]`` / ``[ppo]`` sections)."""
    best = chosen_trial(study)
    by_section: dict[str, list[str]] = {"training": [], "ppo": []}
    for name, value in best.params.items():
        section, _, key = name.partition(".")
        p = space.get(name)
        text = _format_param(value, p.kind if p is not None else "")
        by_section.setdefault(section, []).append(f"{key} = {text}")
    lines = [
        f"# best parameters of tune.py --stage {stage} on {dataset} (study {study.study_name!r}):",
        f"# trial {best.number}, {METRICS[stage]} {best.value:.6g}",
        "# use: python runpod_main.py --dataset NAME --set-file THIS_FILE (every step takes it)",
    ]
    if base:
        lines.append(f"# tuned on top of: {' '.join(base)}")
    # The run that uses these settings deflates its agent's Sharpe for every trial tried.
    from optuna.trial import TrialState

    tried = sum(t.state == TrialState.COMPLETE for t in study.trials)
    by_section.setdefault("ppo", []).append(f"configurations_tried = {max(tried, 1)}")
    for section, items in by_section.items():
        if items:
            lines += ["", f"[{section}]", *items]
    return "\n".join(lines) + "\n"


def _format_param(value: Any, kind: str) -> str:
    if kind == "float" and isinstance(value, float):
        return repr(value)
    return format_value(value) if not isinstance(value, str) else value


def top_trials_table(study: optuna.Study, stage: str, n: int = 10) -> str:
    """The ``n`` best complete trials as a Markdown table (value, parameters, duration)."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    done.sort(  # as chosen_trial: ties by the most trades, then the earliest
        key=lambda t: (t.value if t.value is not None else -math.inf, trades_of(t) or 0, -t.number),
        reverse=True,
    )
    names = sorted({k for t in done for k in t.params})
    trades = stage == "agent"
    head = ["rank", "trial", METRICS[stage], *(["trades"] if trades else []), *names, "seconds"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rank, t in enumerate(done[:n], start=1):
        secs = t.duration.total_seconds() if t.duration is not None else float("nan")
        cells = [str(rank), str(t.number), f"{t.value:.5g}"]
        if trades:
            cells.append("?" if trades_of(t) is None else str(trades_of(t)))
        cells += [_short(t.params.get(k, "")) for k in names]
        cells.append(f"{secs:.1f}")
        rows.append("| " + " | ".join(cells) + " |")
    c = counts(study)
    tally = ", ".join(f"{v} {k.lower()}" for k, v in sorted(c.items()))
    return (
        "\n".join([f"Top {min(n, len(done))} of the study's trials ({tally}).", "", *rows]) + "\n"
    )


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def plot_study(study: optuna.Study, history: Path, importance: Path) -> list[str]:
    """Optuna's matplotlib optimisation history and parameter importances as PNGs; returns
    notes for plots that could not be made (e.g. importances need two complete trials with
    different values)."""
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    notes = []
    for path, fn in (
        (history, ovm.plot_optimization_history),
        (importance, ovm.plot_param_importances),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning of optuna's matplotlib API
                fn(study)
            fig = plt.gcf()
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            tmp = path.with_name(f".{path.name}.tmp.png")
            fig.savefig(tmp, dpi=100)
            plt.close(fig)
            tmp.replace(path)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            plt.close("all")
            notes.append(f"{path.name}: not drawn ({exc})")
    return notes


def full_run_command(dataset: str, best_params: Path, extra: Sequence[str] = ()) -> str:
    """The command that runs the whole pipeline with the best parameters. ``dataset`` is what
    the tuner was given (a path made absolute), not the artifact stem, which names a file only
    in ``datasets/``."""
    return shlex.join(
        ["python", "runpod_main.py", "--dataset", dataset, *extra, "--set-file", str(best_params)]
    )


def write_outputs(
    study: optuna.Study,
    out_dir: Path,
    stage: str,
    dataset: str,
    space: SearchSpace,
    base_args: Sequence[str],
    names: dict[str, str],
    run_dataset: str | None = None,
    run_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Write the best-parameter file, the PNGs, the top-trials table, the command and a summary
    JSON into ``out_dir``; ``names`` maps ``best``, ``history``, ``importance``, ``top``,
    ``command``, ``summary`` to file names. ``run_dataset`` (default ``dataset``) and
    ``run_args`` (``--root``) go into the command. Returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    best_value, best_number = best_of(study)
    summary: dict[str, Any] = {
        "stage": stage,
        "dataset": dataset,
        "study": study.study_name,
        "metric": METRICS[stage],
        "direction": "maximize",
        "trials": counts(study),
        "best_value": best_value,
        "best_trial": best_number,
        "search_space": str(space.path),
    }
    if best_number is None:
        summary["note"] = "no complete trial yet: no best parameters"
        atomic_write_json(out_dir / names["summary"], summary)
        return summary
    best_path = out_dir / names["best"]
    atomic_write_text(best_path, best_params_text(study, stage, dataset, space, base_args))
    command = full_run_command(run_dataset or dataset, best_path, [*base_args, *run_args])
    best = chosen_trial(study)
    summary["best_trades"] = trades_of(best)
    atomic_write_text(out_dir / names["command"], command + "\n")
    atomic_write_text(out_dir / names["top"], top_trials_table(study, stage))
    notes = plot_study(study, out_dir / names["history"], out_dir / names["importance"])
    summary.update(
        {
            "best_params": best.params,
            "best_params_file": str(best_path),
            "command": command,
            "plot_notes": notes,
        }
    )
    atomic_write_json(out_dir / names["summary"], summary)
    return summary


def summary_lines(summary: dict[str, Any], out_dir: Path) -> list[str]:
    """What the console shows at the end."""
    c = summary["trials"]
    lines = [
        f"study {summary['study']}: " + ", ".join(f"{v} {k.lower()}" for k, v in sorted(c.items())),
    ]
    if summary.get("best_trial") is None:
        return [*lines, "no complete trial: nothing to report yet"]
    lines += [
        f"{summary['metric']}: {summary['best_value']:.5g} at best (trial {summary['best_trial']}"
        + (
            f", {summary['best_trades']} trades at its best evaluation)"
            if summary.get("best_trades") is not None
            else ")"
        ),
        f"best parameters: {summary['best_params_file']}",
        f"outputs: {out_dir}",
        f"full pipeline with them: {summary['command']}",
    ]
    if summary.get("best_trades") == 0:
        lines.append(
            "note: the best trial never trades at its best evaluation: its score is that of "
            "staying flat, not of a strategy"
        )
    return lines


def python_command(argv: Sequence[str]) -> list[str]:
    """``[python, tune.py, *argv]`` for a worker subprocess."""
    return [sys.executable, str(Path(__file__).resolve().parents[2] / "tune.py"), *argv]
