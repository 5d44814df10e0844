"""Paths, the one-line error type, atomic writes, hashing, logging and the CLI wrapper.

Every step imports from here so that error handling and artifact writing behave the same
everywhere: one clear error line, nothing destroyed.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The folder that holds runpod_main.py, the configs and datasets/."""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PREFLIGHT = 2
EXIT_PUSH = 3
EXIT_INTERRUPTED = 130


class PipelineError(Exception):
    """An error the user can fix; printed as one line (no traceback) by :func:`run_cli`."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class TrainingInterrupted(PipelineError):
    """Ctrl-C, SIGTERM or SIGHUP stopped a training (exit code 130): the one interrupt type of the
    classifier loop and of PPO.

    ``checkpoint_path`` is the checkpoint that exists now (None = none: stopped before the first
    epoch or rollout finished, or checkpoints were off); ``last_epoch`` the epoch it holds (0 =
    none or not an epoch-based training), ``epoch`` the epoch that was running and ``what`` the
    model (``gru``, ``gru/fold2``). Callers must not promise a resume when :attr:`has_checkpoint`
    is false.
    """

    exit_code = EXIT_INTERRUPTED

    def __init__(
        self,
        message: str,
        checkpoint_path: Path | None = None,
        last_epoch: int = 0,
        epoch: int | None = None,
        what: str = "",
    ) -> None:
        super().__init__(message)
        self.checkpoint_path = checkpoint_path
        self.last_epoch = last_epoch
        self.epoch = epoch
        self.what = what

    @property
    def has_checkpoint(self) -> bool:
        """Whether a checkpoint exists that ``--resume`` continues."""
        return self.last_epoch > 0 or self.checkpoint_path is not None


@dataclass(frozen=True)
class Paths:
    """Where artifacts live. ``root`` defaults to ``$PIPELINE_HOME`` or the project folder."""

    root: Path

    @classmethod
    def from_root(cls, root: str | os.PathLike[str] | None = None) -> Paths:
        """Build paths under ``root`` (or ``$PIPELINE_HOME``, or the project folder)."""
        chosen = root if root is not None else os.environ.get("PIPELINE_HOME") or PROJECT_ROOT
        return cls(Path(chosen).resolve())

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def scalers(self) -> Path:
        return self.root / "scalers"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def ppo_models(self) -> Path:
        return self.root / "ppo_approach" / "models"

    @property
    def ppo_checkpoints(self) -> Path:
        return self.root / "ppo_approach" / "checkpoints"

    @property
    def ppo_logs(self) -> Path:
        return self.root / "ppo_approach" / "logs"

    def output_dirs(self) -> list[Path]:
        """Every folder a run writes into."""
        return [
            self.models,
            self.scalers,
            self.results,
            self.logs,
            self.ppo_models,
            self.ppo_checkpoints,
            self.ppo_logs,
        ]

    def ensure(self) -> Paths:
        """Create every output folder; returns self."""
        for d in self.output_dirs():
            d.mkdir(parents=True, exist_ok=True)
        return self


# ---------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it over ``path``, else delete it.

    A crash or Ctrl-C half-way through writing never leaves a truncated artifact behind.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the artifact the mode a plain open() would (0666 & ~umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        # fsync the data before the rename and the folder after it: a pod evicted right after
        # the write must not come back with an empty final file.
        _fsync_path(tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        named = _with_path(exc, target)
        if named is not exc:
            raise named from exc
        raise


LOW_DISK_BYTES = 16 << 20
"""Below this much free space a failed library write (``torch.save``) is taken for a full disk."""


def _with_path(exc: BaseException, target: Path) -> BaseException:
    """The error of a failed write of ``target``, naming ``target``.

    A ``write()`` on a full disk raises ``OSError(ENOSPC)`` without a file name, and
    ``torch.save`` a ``RuntimeError`` ("file write failed"): the one-line message must still say
    which file could not be written. ``exc`` itself is returned for anything else.
    """
    if isinstance(exc, OSError) and exc.errno in CLEAR_OS_ERRORS and not exc.filename:
        return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(target))
    if isinstance(exc, RuntimeError) and "write" in str(exc).lower():
        with contextlib.suppress(OSError):
            if shutil.disk_usage(target.parent).free < LOW_DISK_BYTES:
                return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    return exc


def _fsync_path(path: Path) -> None:
    """Flush a written file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (numpy scalars and Paths converted)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalar
        return obj.item()
    if hasattr(obj, "tolist"):  # numpy array
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex SHA-256 of ``obj`` serialised as canonical JSON (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- logging and CLI


def setup_logging(verbose: bool = False, log_file: str | os.PathLike[str] | None = None) -> None:
    """Console logging (INFO, or DEBUG with ``verbose``) and optionally a log file."""
    level = logging.DEBUG if verbose else logging.INFO
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=handlers,
        force=True,
    )
    # Third-party chatter that would drown our own DEBUG lines.
    for noisy in ("matplotlib", "PIL", "git", "urllib3", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


PROGRESS_ENV = "PIPELINE_PROGRESS"
"""``bar`` or ``log``: set by ``runpod_main.py`` for the driver, whose output is a pipe even when
the user's terminal is a terminal."""


def progress_bars_wanted() -> bool:
    """Progress bars when stderr is a terminal or the entry point forwarded one; never in pytest."""
    mode = os.environ.get(PROGRESS_ENV, "")
    if mode in ("bar", "log"):
        return mode == "bar"
    return sys.stderr.isatty() and "PYTEST_CURRENT_TEST" not in os.environ


class ProgressLog:
    """Log ``desc: done/total unit (pct), elapsed, ETA`` at most every ``interval_s`` seconds.

    For pod logs and pipes, where a progress bar is invisible. Call :meth:`update` with the
    absolute count; the first call only starts the clock.
    """

    def __init__(
        self,
        desc: str,
        total: int,
        unit: str,
        interval_s: float = 30.0,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.desc, self.total, self.unit = desc, max(int(total), 1), unit
        self.interval_s = interval_s
        self.log = logger or logging.getLogger(__name__)
        self.clock = clock
        self.t0: float | None = None
        self.start_count = 0
        self.last = 0.0

    def update(self, done: int) -> bool:
        """Record progress; returns True when a line was logged."""
        now = self.clock()
        if self.t0 is None:
            self.t0, self.start_count, self.last = now, done, now
            return False
        if now - self.last < self.interval_s and done < self.total:
            return False
        self.last = now
        elapsed = now - self.t0
        rate = (done - self.start_count) / elapsed if elapsed > 0 else 0.0
        eta = f"{(self.total - done) / rate:.0f} s" if rate > 0 else "unknown"
        self.log.info(
            "%s: %d/%d %s (%.0f%%), %.0f s elapsed, ETA %s",
            self.desc,
            done,
            self.total,
            self.unit,
            100.0 * done / self.total,
            elapsed,
            eta,
        )
        return True


class CliParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors exit 1 (bad input), not argparse's 2.

    The README reserves exit code 2 for "preflight failed".
    """

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


CLEAR_OS_ERRORS = frozenset({errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT})
"""OS errors that are the user's to fix (disk full, no permission): one line, no traceback."""


def os_error_message(exc: OSError) -> str:
    """One line for an OS error: what failed, on which path, and what to do."""
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        free = ""
        if exc.filename:
            with contextlib.suppress(OSError):
                folder = Path(str(exc.filename)).parent
                while not folder.exists() and folder != folder.parent:
                    folder = folder.parent
                free = f" ({shutil.disk_usage(folder).free / 1e9:.2f} GB free there)"
        if not where:
            where = f" (the system did not say which file; the current folder is {Path.cwd()})"
        return (
            f"no space left on the device writing{where}{free}; a run needs about min_disk_gb "
            "(training_config.txt, default 10 GB) free: free some space and rerun with --resume "
            "(the artifacts written so far are intact)"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{where}: {exc.strerror}; check the folder's permissions or use --root"
    return f"{exc.strerror or exc}{':' if where else ''}{where}"


def run_cli(fn: Callable[[], int]) -> int:
    """Run a step's body; a :class:`PipelineError` becomes one ``error:`` line and its exit code.

    Disk-full and permission errors (``OSError`` with an errno) also become one line naming the
    path instead of a traceback.
    """
    try:
        return fn()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in CLEAR_OS_ERRORS:
            raise
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
