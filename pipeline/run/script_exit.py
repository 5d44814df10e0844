"""How the driver ends when it runs as a script: a signal after the run is recorded as an
interrupt (exit 130, never the shell's 129), and the run lock is released as the process's last
act, after the exit functions ran."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from pipeline.common import EXIT_INTERRUPTED, EXIT_OK
from pipeline.run.lock import RunLock
from pipeline.run.process import raise_interrupt

LATE_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def exit_releasing_last(main: Callable[[], int], release_at_exit: list[RunLock]) -> NoReturn:
    """Run ``main()``, then exit with its code; the locks it left in ``release_at_exit`` are
    released right before ``os._exit``.

    A SIGINT, SIGTERM or SIGHUP after the run's own handlers are gone (the summary is written,
    the interpreter winds down) is recorded, not fatal: the exit code is then 130, as the README
    documents for an interrupt.
    """
    late: list[int] = []
    finished = False

    def on_signal(signum: int, _frame: object) -> None:
        if not finished:
            raise_interrupt(signum)  # like interrupt_on_signals, which main() installs
        late.append(signum)

    watched = [s for s in LATE_SIGNALS if signal.getsignal(s) != signal.SIG_IGN]  # nohup
    for s in watched:
        if s != signal.SIGINT:  # Ctrl-C stays Python's KeyboardInterrupt until the end
            signal.signal(s, on_signal)
    try:
        code = main()
    except BaseException:
        for lock in release_at_exit:
            lock.release()
        raise
    finished = True
    for s in watched:
        signal.signal(s, on_signal)
    try:
        atexit._run_exitfuncs()  # what a normal exit runs (logging.shutdown, ...)
    finally:
        if late and code == EXIT_OK:
            name = signal.Signals(late[0]).name
            print(
                f"interrupted: {name} after the run finished (its summary is final)",
                file=sys.stderr,
            )
            code = EXIT_INTERRUPTED
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        for lock in release_at_exit:
            lock.release()
        os._exit(code)
