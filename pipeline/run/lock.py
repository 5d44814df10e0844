"""A lock file per dataset so two runs never write the same artifacts at once.

The lock is ``logs/run_{dataset}.lock``, created with ``O_CREAT | O_EXCL`` (atomic on POSIX and on
NFS v3+), holding JSON ``{"pid", "host", "started", "started_epoch", "nonce", "argv"}``.

* A second run on the same dataset fails fast with :class:`LockHeldError` naming the owner's pid.
* A lock left by a dead process (crash, ``kill -9``, pod restart on the same host) is *stale*: the
  next run takes it over with a warning. "Dead" means the pid does not exist, is a zombie, or
  belongs to a process created after the lock was written (the pid was reused).
* A lock written on another host cannot be checked (its pid means nothing here), so it counts as
  held; the error says which file to delete if that run is known to be gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from pipeline.common import Paths, PipelineError
from pipeline.store.artifacts import Artifacts, dataset_file

log = logging.getLogger(__name__)

FRESH_UNREADABLE_S = 30.0
"""A lock file that cannot be parsed and is younger than this is being written right now: held."""

_CREATE_TIME_SLACK_S = 1.0
"""Clock granularity allowance when comparing a process's start time with the lock's."""


class LockHeldError(PipelineError):
    """Another live run holds the dataset's lock."""


@dataclass(frozen=True)
class LockOwner:
    """What a lock file says about the run that wrote it."""

    pid: int
    host: str
    started: str
    started_epoch: float
    nonce: str

    def describe(self) -> str:
        """``pid 123 on host h (started 2025-01-01T00:00:00+00:00)``."""
        return f"pid {self.pid} on host {self.host} (started {self.started})"


def absolute_dataset(dataset: str, datasets_dir: Path, cwd: Path | None = None) -> str:
    """``dataset`` as the driver should receive it: a name stays a name, a path becomes absolute.

    A name found in ``datasets_dir`` (``NAME`` or ``NAME.csv`` there) is kept as given. Anything
    else that names an existing file relative to ``cwd`` (default: the working directory), with
    or without ``.csv``, becomes that file's absolute path, so a process started in another
    folder (the driver runs with the project as its working directory) finds the same file. What
    matches nothing is kept as given, for the "not found" error.
    """
    raw = str(dataset).strip()
    given = Path(raw).expanduser()
    if not given.is_absolute():
        if dataset_file(datasets_dir, raw).is_file() or (datasets_dir / raw).is_file():
            return raw
        given = (cwd if cwd is not None else Path.cwd()) / given
    candidates = [given, dataset_file(given.parent, given.name)] if given.name else [given]
    for cand in candidates:
        if cand.is_file():
            return str(cand.resolve())
    return raw


def lock_path(paths: Paths, dataset: str) -> Path:
    """Where the lock of ``dataset`` (a name or CSV path) lives: :attr:`Artifacts.lock`
    (the artifacts module owns every path)."""
    return Artifacts(paths, dataset).lock


def read_owner(path: Path) -> LockOwner | None:
    """Parse a lock file; ``None`` when it is missing, empty or not valid lock JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LockOwner(
            pid=int(data["pid"]),
            host=str(data["host"]),
            started=str(data["started"]),
            started_epoch=float(data["started_epoch"]),
            nonce=str(data["nonce"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_alive(pid: int, not_after: float | None = None) -> bool:
    """True when ``pid`` is a running (non-zombie) process on this host.

    With ``not_after`` (epoch seconds), a process created later than that is a different program
    that reused the pid, so it does not count.
    """
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if not_after is not None and proc.create_time() > not_after + _CREATE_TIME_SLACK_S:
            return False
        return True
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        # It exists but belongs to someone else: alive as far as we can tell.
        return True


def owner_is_alive(owner: LockOwner) -> bool:
    """Whether the run that wrote the lock may still be running (other hosts: assume yes)."""
    if owner.host != socket.gethostname():
        return True
    return pid_alive(owner.pid, not_after=owner.started_epoch)


def check_lock(path: Path) -> LockOwner | None:
    """The live owner of the lock at ``path``, or ``None`` when it is free or stale."""
    owner = read_owner(path)
    if owner is None:
        return None
    return owner if owner_is_alive(owner) else None


class RunLock:
    """An exclusive lock file; use as a context manager or call :meth:`acquire` / :meth:`release`.

    Example::

        with RunLock(lock_path(paths, dataset)):
            ...  # write artifacts
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.owner: LockOwner | None = None
        self.took_over: LockOwner | None = None

    def _payload(self) -> tuple[LockOwner, bytes]:
        now = time.time()
        owner = LockOwner(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.fromtimestamp(now, tz=timezone.utc).isoformat(timespec="seconds"),
            started_epoch=now,
            nonce=uuid.uuid4().hex,
        )
        data: dict[str, Any] = {
            "pid": owner.pid,
            "host": owner.host,
            "started": owner.started,
            "started_epoch": owner.started_epoch,
            "nonce": owner.nonce,
            "argv": sys.argv,
        }
        return owner, (json.dumps(data, indent=2) + "\n").encode("utf-8")

    def _try_create(self) -> bool:
        owner, payload = self._payload()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.owner = owner
        return True

    def _held_error(self, owner: LockOwner | None) -> LockHeldError:
        who = owner.describe() if owner is not None else "a run that is still writing it"
        return LockHeldError(
            f"{self.path}: another run on this dataset is in progress ({who}); wait for it to "
            f"finish or stop it (kill {owner.pid if owner else '<pid>'}). If that run is known "
            f"to be gone, delete {self.path}"
        )

    def _take_over(self, stale: LockOwner | None) -> bool:
        """Move a stale lock aside; False when someone else changed it meanwhile (retry)."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        moved = read_owner(aside)
        same = (moved is None and stale is None) or (
            moved is not None and stale is not None and moved.nonce == stale.nonce
        )
        if not same:
            # A racing run replaced the stale lock with its own live one between our read and
            # the rename: put it back (link is an exclusive create) and let the caller re-check.
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        with contextlib.suppress(FileNotFoundError):
            aside.unlink()
        return same

    def acquire(self) -> RunLock:
        """Create the lock (taking over a stale one); LockHeldError if a live run has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _attempt in range(5):
            if self._try_create():
                return self
            owner = read_owner(self.path)
            if owner is None:
                try:
                    age = time.time() - self.path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age < FRESH_UNREADABLE_S:
                    raise self._held_error(None)
                log.warning("%s: unreadable lock file %.0f s old, taking it over", self.path, age)
            elif owner_is_alive(owner):
                raise self._held_error(owner)
            else:
                log.warning(
                    "%s: stale lock from %s (process gone), taking it over",
                    self.path,
                    owner.describe(),
                )
            if self._take_over(owner):
                self.took_over = owner
        raise self._held_error(read_owner(self.path))

    def release(self) -> None:
        """Delete the lock if it is still ours (never someone else's)."""
        if self.owner is None:
            return
        current = read_owner(self.path)
        if current is not None and current.nonce == self.owner.nonce:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.owner = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@contextlib.contextmanager
def step_lock(paths: Paths, dataset: str) -> Iterator[None]:
    """Hold the dataset's lock while a single step runs by hand.

    A no-op when this process already holds it (the driver calls the steps in-process); a
    :class:`LockHeldError` when another live run holds it.
    """
    path = lock_path(paths, dataset)
    owner = read_owner(path)
    if owner is not None and owner.pid == os.getpid() and owner.host == socket.gethostname():
        yield
        return
    with RunLock(path):
        yield
