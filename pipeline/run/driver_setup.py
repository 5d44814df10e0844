"""The driver's settings and start that do not depend on the steps: environment flags, whether
step 8 pushes (and why), taking the run lock, archiving the previous run."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

from pipeline.common import CLEAR_OS_ERRORS, Paths, PipelineError
from pipeline.run.archive import archive_previous_run
from pipeline.run.driver_steps import parse_steps
from pipeline.run.lock import RunLock
from pipeline.run.multi_run import DEFERRED_REASON, PUSH_DEFERRED_ENV
from pipeline.run.process import (
    detach_console,
    parent_gone,
    parent_to_watch,
    stop_reasons,
    watch_parent,
)
from pipeline.store.artifacts import Artifacts, log_stamp

# The driver's own logger: its lines keep the name they always had (``runpod_train: ...``).
log = logging.getLogger("runpod_train")

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE


def push_setting(no_push: bool, steps: str | None) -> tuple[bool, str]:
    """Whether step 8 pushes, and the reason logged with it: ``--no-push``, a deferred push of
    several datasets, ``RUNPOD_PUSH_TO_GITHUB`` true or false, or ``--steps`` naming step 8."""
    push_env = os.environ.get("RUNPOD_PUSH_TO_GITHUB", "").strip().lower()
    if no_push:
        push, reason = False, "--no-push"
    elif env_flag(PUSH_DEFERRED_ENV):
        # runpod_main.py over several datasets pushes them all in one commit at the end.
        push, reason = False, DEFERRED_REASON
    elif push_env in TRUE:
        push, reason = True, "RUNPOD_PUSH_TO_GITHUB=true"
    elif push_env in FALSE:
        push, reason = False, f"RUNPOD_PUSH_TO_GITHUB={push_env}"
    elif steps is not None and 8 in parse_steps(steps, None):
        # `--steps 8` is the retry the push error suggests: naming the step asks for the push.
        push, reason = True, "--steps names step 8"
    else:
        push, reason = False, "RUNPOD_PUSH_TO_GITHUB is not true"
    return push, reason


def acquire_lock(lock: RunLock) -> RunLock:
    """Take the run lock; a root that cannot hold it is one line naming the path."""
    try:
        return lock.acquire()
    except OSError as exc:
        if exc.errno in CLEAR_OS_ERRORS:
            raise  # run_cli turns these into one line naming the path
        raise PipelineError(
            f"cannot create the run lock {lock.path}: {exc.strerror or exc}"
            f"{f' ({exc.filename})' if exc.filename else ''}; expected a writable folder as "
            "--root"
        ) from None


def archive_before_run(paths: Paths, name: str) -> None:
    """Nothing overwritten: the previous run's files go to runs/{dataset}/{n}/ before this run
    writes its first file (a --resume continues that run instead)."""
    archived = archive_previous_run(paths, name)
    if archived is not None:
        log.info(
            "previous run (started %s, %s) archived to %s",
            archived.info.get("started"),
            archived.info.get("status"),
            archived.folder,
        )


def watch_launcher(root: Path | None, dataset: str | None) -> tuple[bool, threading.Event | None]:
    """Launched by ``runpod_main.py``: watch it, so this run stops when it dies (its last words
    go to the orphan log). Returns ``(gone, watch)``: ``gone`` when it died before the watch
    started (the run must stop at once, exit 130), ``watch`` the event that ends the watch."""
    parent = parent_to_watch()
    if parent is None:
        return False, None
    name = dataset or os.environ.get("DATASET_NAME", "").strip() or "run"
    orphan_log = Artifacts(Paths.from_root(root), name).orphan_log(log_stamp())
    if parent_gone(parent):
        # runpod_main.py died before we started watching it: train nothing, take no lock;
        # say so in the orphan log, as a watched run would.
        stop_reasons.append(f"parent process (pid {parent}) exited")
        detach_console(orphan_log)
        print(
            f"interrupted: the parent process (pid {parent}, runpod_main.py) exited before "
            "this run started; nothing was run (start it again)",
            file=sys.stderr,
        )
        return True, None
    return False, watch_parent(parent, log_file=orphan_log)
