"""The driver's output and signals, as ``runpod_main.py`` runs it: the driver's raw output split
into logged lines and progress-bar redraws (secrets masked), SIGINT, SIGTERM and SIGHUP forwarded
to it exactly once, and its exit status as one of the README's exit codes."""

from __future__ import annotations

import codecs
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

from pipeline.common import EXIT_INTERRUPTED, PROJECT_ROOT
from pipeline.run.process import children_start_holding_interrupts, handle_signals
from pipeline.secrets import mask_secrets

# The entry point's loggers: its lines keep the names they always had (``runpod_main: ...``);
# the driver's own lines go to ``child_log``, which ``runpod_main.py`` sends to the console and
# the run log verbatim.
log = logging.getLogger("runpod_main")
child_log = logging.getLogger("runpod_main.child")


FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Passed on to the driver. SIGHUP is a closed terminal / SSH disconnect."""


def forwarded_signals() -> list[signal.Signals]:
    """The signals to forward now: a SIGHUP ignored at start (``nohup``) stays ignored.

    Under ``nohup`` the user asked for the run to outlive the terminal; forwarding the hangup
    would stop it instead.
    """
    return [
        s
        for s in FORWARDED_SIGNALS
        if not (s == signal.SIGHUP and signal.getsignal(s) == signal.SIG_IGN)
    ]


class _Relay:
    """Split the driver's raw output into lines (``\n``) and progress updates (``\r``).

    A line is masked and logged (console and log file); a carriage-return update (a progress
    bar redrawing itself) is masked and written to the console only, so the bar moves in place
    and the log file gets only its final state. A segment is handled only once its terminator
    has arrived, so a secret split across two reads is still masked whole.
    """

    def __init__(
        self, secrets: Sequence[str], on_line: Callable[[str], None], console: object
    ) -> None:
        self._secrets = list(secrets)
        self._on_line = on_line
        self._console = console
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._bar_shown = False

    def feed(self, data: bytes, final: bool = False) -> None:
        """Take the next chunk of output (``final``: the stream ended)."""
        self._pending += self._decoder.decode(data, final=final)
        start = 0
        text = self._pending
        for i, ch in enumerate(text):
            if ch == "\n":
                self._line(text[start:i].rstrip("\r"))
                start = i + 1
            elif ch == "\r" and i + 1 < len(text) and text[i + 1] != "\n":
                self._update(text[start:i])
                start = i + 1
        self._pending = text[start:]
        if final and self._pending:
            self._line(self._pending)
            self._pending = ""

    def _update(self, segment: str) -> None:
        if not segment:
            return
        stream = self._console
        try:
            stream.write("\r" + mask_secrets(segment, self._secrets))  # type: ignore[attr-defined]
            stream.flush()  # type: ignore[attr-defined]
        except (OSError, ValueError):
            return  # the terminal is gone (SIGHUP); the log file still gets the lines
        self._bar_shown = True

    def _line(self, line: str) -> None:
        if self._bar_shown:
            # Start the line at column 0 over the bar's last state.
            with_cr = getattr(self._console, "write", None)
            if with_cr is not None:
                try:
                    with_cr("\r")
                except (OSError, ValueError):
                    pass
            self._bar_shown = False
        self._on_line(mask_secrets(line, self._secrets))


def stream_driver(cmd: Sequence[str], env: dict[str, str], secrets: Sequence[str]) -> int:
    """Run the driver, stream its output, forward SIGINT/SIGTERM/SIGHUP; returns its exit code.

    The child gets its own session, so a terminal Ctrl-C (or a hangup) reaches only this
    process, which forwards it exactly once (a doubled SIGINT would cut the child's checkpoint
    short).
    """
    started: list[subprocess.Popen[bytes]] = []
    pending: list[int] = []

    def forward(signum: int) -> None:
        if not started:
            # Before the driver exists: pass it on once it does, instead of dying here and leaving
            # the driver to train on alone.
            pending.append(signum)
            return
        proc = started[0]
        if proc.poll() is None:
            log.warning(
                "%s received: asking the training process (pid %d) to checkpoint and stop",
                signal.Signals(signum).name,
                proc.pid,
            )
            proc.send_signal(signum)

    relay = _Relay(secrets, lambda line: child_log.info("%s", line), sys.stdout)
    # The handlers go in before the driver starts: a signal in between is forwarded, not fatal.
    with handle_signals(forward, forwarded_signals()):  # the pipeline's one signal mechanism
        # The driver holds a Ctrl-C until its own handlers are in (a starting interpreter would
        # end with status 1, not 130); one that reaches us meanwhile is handled after the block.
        with children_start_holding_interrupts():
            proc = subprocess.Popen(
                list(cmd),
                env=env,
                cwd=str(PROJECT_ROOT),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                bufsize=0,
                start_new_session=True,
            )
            started.append(proc)
        for signum in pending[:1]:  # once: a doubled SIGINT would cut the checkpoint short
            forward(signum)
        code = _relay_until_exit(proc, relay)
    return exit_code_of(code)


def exit_code_of(code: int) -> int:
    """The driver's exit status as one of the README's exit codes.

    Killed by SIGINT, SIGTERM or SIGHUP (before its handlers were in, or after they were gone) is an
    interrupt: 130, as documented, not the shell's 128 + n. Another signal (``kill -9``) is reported
    the way a shell does.
    """
    if code < 0:
        return EXIT_INTERRUPTED if -code in FORWARDED_SIGNALS else 128 - code
    return code


def _relay_until_exit(proc: subprocess.Popen[bytes], relay: _Relay) -> int:
    """Stream the driver's output until it ends; its raw exit status (negative: a signal)."""
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for safety
                continue
            if not chunk:
                break
            relay.feed(chunk)
        relay.feed(b"", final=True)
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
