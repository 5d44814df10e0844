"""The driver's process plumbing: console streams copied into a log file (secrets masked),
the console detached when the entry point is gone, and the watch on the parent process that
stops an orphaned run with a checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline.secrets import mask_secrets, secret_values

log = logging.getLogger(__name__)

stop_reasons: list[str] = []
"""Why the run was asked to stop (signal name, parent gone); read into the run summary."""


class StreamWrapper(io.TextIOBase):
    """A stand-in for ``sys.stdout``/``sys.stderr``; subclasses define ``write``.

    Everything else (tty check, fileno, encoding, flush) is the wrapped console stream's, so
    progress bars and libraries that inspect the stream behave as without the wrapper.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._stream = stream

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._stream, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")


PARENT_POLL_S = 1.0


def detach_console(log_file: Path | None) -> None:
    """The console (our parent's pipe) is gone: send the rest of our output to ``log_file``.

    File descriptors 1 and 2 are pointed at ``/dev/null`` first, so no write (a ``print``, a
    progress bar, C code) fails with a broken pipe half-way through a checkpoint; then
    ``sys.stdout``/``sys.stderr`` and the logging handlers that wrote to them copy everything,
    secrets masked, into ``log_file``, so the stop is still on record.
    """
    old_out, old_err = sys.stdout, sys.stderr
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
    if log_file is None:
        return
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = open(log_file, "a", encoding="utf-8")  # noqa: SIM115 - open until the process ends
    except OSError:
        return
    secrets = secret_values()
    sys.stdout = TeeStream(old_out, fh, secrets)
    sys.stderr = TeeStream(old_err, fh, secrets)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            stream = handler.stream
            if stream is old_out or stream is getattr(old_out, "_stream", None):
                handler.setStream(sys.stdout)
            elif stream is old_err or stream is getattr(old_err, "_stream", None):
                handler.setStream(sys.stderr)


def watch_parent(
    expected_ppid: int,
    interval_s: float = PARENT_POLL_S,
    getppid: Callable[[], int] = os.getppid,
    log_file: Path | None = None,
) -> threading.Event:
    """Stop this run (SIGTERM to ourselves: checkpoint, summary, exit 130) when the parent dies.

    The entry point starts us in a session of our own, so a closed terminal or ``kill -9`` of
    ``runpod_main.py`` would leave us training on as an orphan nobody sees, whose results no summary
    reports. Polling ``os.getppid()`` (re-parented to init or a subreaper when the parent dies) is
    used rather than ``prctl(PR_SET_PDEATHSIG)``: it works on every POSIX system, needs no
    ``preexec_fn`` (unsafe with threads), and PDEATHSIG fires when the parent *thread* that forked
    exits, not the process. A second of latency is harmless next to a checkpoint. Returns an event
    that stops the watch when set.
    """
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            if getppid() != expected_ppid:
                if not stop_reasons:
                    stop_reasons.append(f"parent process (pid {expected_ppid}) exited")
                detach_console(log_file)
                log.warning(
                    "the parent process (pid %d, runpod_main.py) is gone: writing a checkpoint "
                    "and stopping (rerun with --resume)",
                    expected_ppid,
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()
    return stop


def parent_to_watch() -> int | None:
    """The entry point's pid when it launched us (``PIPELINE_PARENT_PID``), else None.

    Also when it is no longer our parent because it already died (killed in the first moments after
    starting us, before we looked); then :func:`parent_gone` is true at once. A pid that is alive
    but not our parent is a variable inherited from elsewhere: None.
    """
    raw = os.environ.get("PIPELINE_PARENT_PID", "").strip()
    if not raw.isdigit():
        return None
    pid = int(raw)
    if pid == os.getppid():
        return pid
    return None if _pid_exists(pid) else pid


def parent_gone(expected_ppid: int) -> bool:
    """Whether the process that launched us (``expected_ppid``) is no longer our parent."""
    return os.getppid() != expected_ppid


def _pid_exists(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, dead but not yet reaped, is not)."""
    import psutil

    try:
        return pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


class TeeStream(StreamWrapper):
    """A console stream that also appends every write (secrets masked) to a log file."""

    def __init__(self, stream: Any, log_file: Any, secrets: Sequence[str]) -> None:
        super().__init__(stream)
        self._file = log_file
        self._secrets = list(secrets)

    def write(self, s: str) -> int:
        self._stream.write(s)
        if not self._file.closed:
            self._file.write(mask_secrets(s, self._secrets))
            self._file.flush()
        return len(s)


@contextlib.contextmanager
def console_to_file(log_file: Path) -> Iterator[None]:
    """Copy everything written to stdout/stderr into ``log_file`` while the block runs.

    A tee of the console (rather than a logging FileHandler) keeps the file complete even when a
    step module reconfigures the root logger, and also catches ``print`` and ``error:`` lines.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    secrets = secret_values()
    with open(log_file, "a", encoding="utf-8") as fh:
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = TeeStream(old_out, fh, secrets)
        sys.stderr = TeeStream(old_err, fh, secrets)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = old_out, old_err


PUSH_WAIT_S = 10.0
"""How long step 8 waits for the entry point to have written the pre-push lines to its log."""


def wait_for_log(marker: str, timeout_s: float = PUSH_WAIT_S) -> bool:
    """Wait until the entry point's log file (``PIPELINE_RUN_LOG``) holds ``marker``.

    The entry point writes our output into its log as it reads the pipe; the push must not
    commit the file before the final lines are in it. True when seen (or no such log), False
    after the timeout.
    """
    name = os.environ.get("PIPELINE_RUN_LOG", "").strip()
    if not name:
        return True
    path = Path(name)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if marker in path.read_text(encoding="utf-8", errors="replace"):
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


# ---------------------------------------------------------------- signals

INTERRUPT_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)
"""A pod being stopped sends SIGTERM, a closed terminal SIGHUP: both stop a run like Ctrl-C."""


@contextlib.contextmanager
def handle_signals(on_signal: Callable[[int], None], signals: Sequence[int]) -> Iterator[None]:
    """Route ``signals`` to ``on_signal(signum)`` inside the block; the previous handlers come
    back on exit. The one signal mechanism of the pipeline.

    A signal ignored when the block starts stays ignored (``nohup``: the user asked the run to
    outlive the terminal). Outside the main thread, where Python cannot install handlers, nothing is
    installed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    chosen = [s for s in signals if signal.getsignal(s) != signal.SIG_IGN]
    previous = {s: signal.signal(s, lambda signum, _frame: on_signal(signum)) for s in chosen}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def raise_interrupt(signum: int) -> None:
    """Stop like Ctrl-C: record why (for the run summary) and raise KeyboardInterrupt, so
    ``finally`` blocks release the lock and a training loop writes its checkpoint."""
    if not stop_reasons:
        stop_reasons.append(signal.Signals(signum).name)
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def interrupt_on_signals(signals: Sequence[int] = INTERRUPT_SIGNALS) -> Iterator[None]:
    """Inside the block SIGTERM and SIGHUP raise KeyboardInterrupt (see :func:`raise_interrupt`).

    A Ctrl-C held since the process started (:func:`children_start_holding_interrupts`) arrives
    as soon as the handlers are in: KeyboardInterrupt, raised here on entry."""
    with handle_signals(raise_interrupt, signals):
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
        yield


HELD_SIGNALS: tuple[int, ...] = (signal.SIGINT,)
"""What a child started by :func:`children_start_holding_interrupts` holds until it is ready."""


@contextlib.contextmanager
def children_start_holding_interrupts() -> Iterator[None]:
    """A child process started inside the block starts with SIGINT blocked: held, not lost, until
    it enters :func:`interrupt_on_signals`.

    Why: a SIGINT that reaches a Python interpreter while it is still starting up (``site``,
    the frozen imports) ends it with status 1 and a KeyboardInterrupt traceback, not as an
    interrupt, so ``runpod_main`` reported a Ctrl-C in the first 5-20 ms of the driver as a
    failure instead of 130 (measured: a SIGINT 5, 10 and 20 ms after the driver's start gave
    status 1, at 0 ms and from 40 ms on the signal). A child inherits the blocked set across
    ``exec``; SIGTERM and SIGHUP are not held: unhandled, they end a starting child by the signal,
    which is already reported as 130."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
