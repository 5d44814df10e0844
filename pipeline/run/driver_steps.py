"""The driver's step plumbing that does not depend on the steps themselves: which steps a command
line selects, running one step into its summary row (a failure is one line on stderr and the
step's exit code), and the rows of an interrupted run."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pipeline.common import (
    CLEAR_OS_ERRORS,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    PipelineError,
    TrainingInterrupted,
    os_error_message,
)
from pipeline.run.summary import ALL_STEPS, STEP_NAMES, StepOutcome, StepRecord, carried_record

# The driver's own logger: its lines keep the name they always had (``runpod_train: ...``).
log = logging.getLogger("runpod_train")

C = TypeVar("C")


def parse_steps(steps: str | None, from_step: int | None) -> list[int]:
    """``--steps 5,6`` | ``5-7`` or ``--from-step 7`` -> sorted step numbers (default: all)."""
    if steps is not None and from_step is not None:
        raise PipelineError("--steps and --from-step cannot be combined; use one of them")
    if from_step is not None:
        if from_step not in STEP_NAMES:
            raise PipelineError(f"--from-step {from_step}: expected a step number 1..8")
        return list(range(from_step, ALL_STEPS[-1] + 1))
    if steps is None:
        return list(ALL_STEPS)
    chosen: set[int] = set()
    for part in steps.split(","):
        item = part.strip()
        lo, sep, hi = item.partition("-")
        try:
            numbers = range(int(lo), int(hi) + 1) if sep else range(int(item), int(item) + 1)
        except ValueError:
            raise PipelineError(
                f"--steps {steps}: {item!r} is not a step number; expected e.g. 5,6 or 5-7"
            ) from None
        if not numbers or any(n not in STEP_NAMES for n in numbers):
            raise PipelineError(f"--steps {steps}: {item!r} is out of range; steps are 1..8")
        chosen.update(numbers)
    return sorted(chosen)


def run_step(
    n: int,
    step: Callable[[C], StepOutcome],
    ctx: C,
    records: list[StepRecord],
    resume_command: Callable[[], str],
) -> int | None:
    """Run step ``n`` and append its row to ``records``: None when it finished (``ok``, ``warn``,
    ``skipped``), else the exit code the run stops with (interrupted, or failed with the
    step's code and the one line ``error: step N (name) failed: reason`` on stderr).

    ``resume_command`` gives the command that continues the run, offered only when an
    interrupted step kept a checkpoint.
    """
    name = STEP_NAMES[n]
    log.info("=" * 72)
    log.info("STEP %d/8: %s", n, name)
    log.info("=" * 72)
    t0 = time.perf_counter()
    try:
        outcome = step(ctx)
    except TrainingInterrupted as exc:
        secs = time.perf_counter() - t0
        # The step's own message says what is true: which checkpoint was kept, or that none
        # was written yet; a resume is offered only when there is one.
        text = str(exc) + (f"; resume with: {resume_command()}" if exc.has_checkpoint else "")
        log.warning("step %d (%s) interrupted after %.1f s: %s", n, name, secs, text)
        records.append(StepRecord(n, name, "interrupted", secs, text))
        print(f"interrupted: step {n} ({name}): {text}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        secs = time.perf_counter() - t0
        records.append(StepRecord(n, name, "interrupted", secs, "interrupted"))
        print(f"interrupted: step {n} ({name})", file=sys.stderr)
        return EXIT_INTERRUPTED
    except PipelineError as exc:
        secs = time.perf_counter() - t0
        log.debug("step %d failed", n, exc_info=True)
        _failed(records, n, secs, " ".join(str(exc).split("\n")))
        return exc.exit_code or EXIT_ERROR
    except OSError as exc:
        if exc.errno not in CLEAR_OS_ERRORS:
            raise
        # A full disk or an unwritable folder: one line naming the path, no traceback.
        _failed(records, n, time.perf_counter() - t0, os_error_message(exc))
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - a bug, not bad input: keep the traceback
        secs = time.perf_counter() - t0
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        log.error("step %d (%s) crashed", n, name, exc_info=True)
        _failed(records, n, secs, reason)
        return EXIT_ERROR
    secs = time.perf_counter() - t0
    log.info("step %d (%s) %s in %.1f s: %s", n, name, outcome.status, secs, outcome.result)
    records.append(StepRecord(n, name, outcome.status, secs, outcome.result, outcome.details))
    return None


def _failed(records: list[StepRecord], n: int, secs: float, reason: str) -> None:
    """A failed step's row, and its one line on stderr."""
    records.append(StepRecord(n, STEP_NAMES[n], "failed", secs, reason))
    print(f"error: step {n} ({STEP_NAMES[n]}) failed: {reason}", file=sys.stderr)


def complete_records(
    records: list[StepRecord], selected: Sequence[int], earlier: dict[str, Any]
) -> None:
    """After an interrupt between steps: a row for every step (carried, interrupted, not run)."""
    done = {r.number for r in records}
    first_missing = True
    for n in ALL_STEPS:
        if n in done:
            continue
        if n not in selected:
            records.append(carried_record(n, earlier))
        elif first_missing:
            records.append(StepRecord(n, STEP_NAMES[n], "interrupted", result="interrupted"))
            first_missing = False
        else:
            records.append(StepRecord(n, STEP_NAMES[n], "not run"))
    records.sort(key=lambda r: r.number)
