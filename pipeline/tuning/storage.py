"""Study storage of the tuner: Optuna's own.

By default an SQLite file
(:data:`pipeline.store.artifacts.TUNING_STORAGE_NAME` under ``results/tuning_{stage}_{dataset}/``);
any RDB URL (``postgresql://...``, ``mysql+pymysql://...``) or a journal file (``journal:PATH``, a
file on a shared volume) lets several pods work on one study: the same command on each pod pulls
trials from the shared study. RDB storages run with a heartbeat: a trial whose worker died (killed
pod, ``kill -9``) goes stale after ``grace_period`` seconds, is marked failed the next time any
worker starts a trial, and Optuna's retry callback (``RetryHeartbeatStaleTrialCallback``,
``RetryFailedTrialCallback`` before Optuna 4.9) queues it again with the same parameters. A
journal file has no heartbeat in Optuna: a dead worker's trial stays RUNNING there (use an RDB URL
when pods may die mid-trial).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.common import PipelineError

if TYPE_CHECKING:
    import optuna

JOURNAL_PREFIX = "journal:"


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
