"""The entry point's helpers around the driver launch: whether to push, the driver's environment
(its settings, the progress mode, the parent pid and run log it watches), the run log in the run
manifest, the closing lines that say where everything is, the root check of
``--skip-validation`` and the preflight's error line."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.common import EXIT_INTERRUPTED, EXIT_PUSH, PROGRESS_ENV, Paths, PipelineError
from pipeline.secrets import mask_secrets
from pipeline.store.artifacts import Artifacts
from pipeline.store.manifest import STEP_ENTRY, ManifestError

# The entry point's logger: its lines keep the name they always had (``runpod_main: ...``).
log = logging.getLogger("runpod_main")

_FALSE = {"0", "false", "no", "off"}


def push_enabled(no_push: bool) -> bool:
    """Push unless ``--no-push`` or ``RUNPOD_PUSH_TO_GITHUB`` is explicitly false."""
    if no_push:
        return False
    return os.environ.get("RUNPOD_PUSH_TO_GITHUB", "true").strip().lower() not in _FALSE


def progress_mode() -> str:
    """``bar`` when our console is a terminal, else ``log``.

    The driver's output is a pipe to us, so it cannot tell by itself; a value the user set in
    ``PIPELINE_PROGRESS`` wins. Both streams must be terminals: the bars are relayed to stdout,
    and stderr is what the driver's own check would look at.
    """
    chosen = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if chosen in ("bar", "log"):
        return chosen
    return "bar" if sys.stdout.isatty() and sys.stderr.isatty() else "log"


PARENT_PID_ENV = "PIPELINE_PARENT_PID"
"""Set for the driver: the entry point's pid; the driver stops when its parent changes."""
RUN_LOG_ENV = "PIPELINE_RUN_LOG"
"""Set for the driver: the log file this process writes its output into; step 8 waits until its
pre-push lines are in it before it commits the file."""


def driver_env(
    dataset: str,
    resume: bool,
    push: bool,
    progress: str | None = None,
    log_file: Path | None = None,
) -> dict[str, str]:
    """The driver's environment: ours plus the settings it reads."""
    env = dict(os.environ)
    env["DATASET_NAME"] = dataset
    env["RESUME_TRAINING"] = "true" if resume else "false"
    env["RUNPOD_PUSH_TO_GITHUB"] = "true" if push else "false"
    env["PYTHONUNBUFFERED"] = "1"  # line-by-line streaming
    env[PROGRESS_ENV] = progress or progress_mode()
    if env[PROGRESS_ENV] == "bar" and "COLUMNS" not in env:
        # The driver's stderr is our pipe, so tqdm cannot ask the terminal for its width; it
        # falls back to $COLUMNS.
        env["COLUMNS"] = str(shutil.get_terminal_size().columns)
    # The driver watches for our death (kill -9, closed terminal) and then checkpoints and
    # stops instead of training on as an orphan nobody sees.
    env[PARENT_PID_ENV] = str(os.getpid())
    env.pop(RUN_LOG_ENV, None)
    if log_file is not None:
        env[RUN_LOG_ENV] = str(log_file)
    return env


def record_run_log(paths: Paths, dataset: str, log_file: Path) -> None:
    """List the run log in the dataset's run manifest now, so this run's step 8 pushes it.

    A log is a live kind (it grows after this), as the push step's glob took the log being written
    before. A manifest that cannot be read is only warned about here: the steps that record into it
    stop with the one error line that says how to repair it.
    """
    try:
        Artifacts(paths, dataset).manifest().record(log_file, "log", STEP_ENTRY)
    except ManifestError as exc:
        log.warning("run log not listed in the run manifest: %s", exc)


def report_locations(paths: Paths, dataset: str, log_file: Path | None, code: int) -> None:
    """The last lines: where the results, models, plots and the log are."""
    artifacts = Artifacts(paths, dataset)
    summary = artifacts.run_summary
    pngs = artifacts.plots()
    lines = [
        f"results:           {paths.results}"
        + (f" (summary: {summary.name})" if summary.exists() else ""),
        f"plots:             {paths.results}/{artifacts.plot_glob} ({len(pngs)} files)",
        f"classifier models: {paths.models}",
        f"PPO models:        {paths.ppo_models}",
        f"log file:          {log_file if log_file is not None else '(console only)'}",
    ]
    if code == 0:
        log.info("run finished.\n%s", "\n".join(lines))
    else:
        hints = {
            EXIT_INTERRUPTED: " (interrupted: the step line above says which checkpoint, if any, "
            "was kept; rerun with --resume to continue from it)",
            EXIT_PUSH: " (push failed, the commit and artifacts are kept locally; retry with "
            f"`python runpod_train.py --dataset {dataset} --steps 8`)",
        }
        hint = hints.get(code, "")
        log.error("run stopped with exit code %d%s.\n%s", code, hint, "\n".join(lines))


def check_root_writable(paths: Paths) -> None:
    """With ``--skip-validation``: the artifact root must be a writable folder.

    Without the preflight nothing else checks it before the driver starts; say so in one line
    naming the folder instead of a traceback from the first file the driver tries to create.
    """
    probe = paths.logs / f".write-probe-{os.getpid()}"
    try:
        paths.logs.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        where = exc.filename or paths.logs
        raise PipelineError(
            f"--root {paths.root}: cannot write {where} ({exc.strerror or exc}); expected a "
            "writable folder: check its permissions or pass another --root"
        ) from None


def preflight_error_line(bad: Sequence[object], secrets: Sequence[str]) -> str:
    """The closing ``error: preflight failed: ...`` line, secrets masked."""
    text = "; ".join(
        f"{r.check}: {r.found} (required: {r.required})"  # type: ignore[attr-defined]
        for r in bad
    )
    return mask_secrets(f"error: preflight failed: {text}", secrets)
