"""The driver's run summary file and its console table: ``results/run_summary_{dataset}.json``
written at the start, before the push and on every way out, the carried-over rows, the key
numbers of the push commit, the leak alarms and the plots list.

The driver (``runpod_train.py``) holds the steps and its :class:`DriverRun` context; this module
holds what does not depend on the steps themselves.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from pipeline.checks.leak_alarms import alarm_lines
from pipeline.common import Paths, atomic_write_json
from pipeline.config.schema import Config
from pipeline.run.process import wait_for_log
from pipeline.run.step_results import BacktestReport, TrainingSummary
from pipeline.run.summary import (
    STEP_NAMES,
    StepOutcome,
    StepRecord,
    agent_results,
    carried_over,
    config_overrides,
    format_summary,
    mask_payload,
    run_status,
)
from pipeline.secrets import secret_values
from pipeline.store.artifacts import Artifacts
from pipeline.store.manifest import STEP_DRIVER

# The driver's own logger: its lines keep the name they always had (``runpod_train: ...``).
log = logging.getLogger("runpod_train")


class DriverRun(Protocol):
    """What the library side of the driver (this summary, :mod:`pipeline.run.basic_steps`) reads
    of its run context, ``runpod_train.RunContext``."""

    dataset: str
    paths: Paths
    cfg: Config
    resume: bool
    push: bool
    push_reason: str
    started: datetime
    earlier: dict[str, Any]
    info: dict[str, Any]
    classifiers: TrainingSummary | None
    agent: BacktestReport | None

    @property
    def name(self) -> str:
        """The dataset's artifact name."""
        ...


def plots(paths: Paths, dataset: str) -> list[str]:
    """The PNG plots of this dataset in ``results/``."""
    return [str(p) for p in Artifacts(paths, dataset).plots()]


def summary_path(paths: Paths, dataset: str) -> Path:
    """``results/run_summary_{dataset}.json``."""
    return Artifacts(paths, dataset).run_summary


def write_summary(
    ctx: DriverRun,
    records: Sequence[StepRecord],
    exit_code: int | None,
    selected: Sequence[int],
    earlier: dict[str, Any] | None = None,
    status: str | None = None,
) -> Path:
    """Write ``results/run_summary_{dataset}.json`` atomically (also after a failure).

    The summary describes this invocation only: the classifier and agent numbers are read from their
    reports on disk only when this invocation ran the step that writes them and it succeeded (after
    a failure, or for a step not run now, the files on disk are an older run's and would pass for
    this one's); rows and numbers of earlier runs are listed under ``carried_over`` with their
    config hash. ``status`` is ``running`` while the run goes on (so a run killed outright never
    leaves the previous run's summary standing), ``pushing`` in the copy the push commits, else
    ``ok`` / ``failed`` / ``interrupted``. Every string is passed through the secret mask (tokens,
    URL passwords).
    """
    finished = datetime.now(timezone.utc)
    ran_ok = {r.number for r in records if not r.earlier and r.status in ("ok", "warn")}
    payload = {
        "dataset": ctx.name,
        "dataset_source": ctx.dataset,
        "status": status or run_status(exit_code),
        "pid": os.getpid(),
        "started": ctx.started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "seconds": round((finished - ctx.started).total_seconds(), 3),
        "exit_code": exit_code,
        "stop_reason": ctx.info.get("stop_reason"),
        "steps_selected": list(selected),
        "resume": ctx.resume,
        "config_hash": ctx.cfg.hash(),
        "config_overrides": config_overrides(ctx.cfg),
        "steps": [r.to_dict() for r in records],
        "classifiers": ctx.classifiers["models"] if ctx.classifiers and 5 in ran_ok else None,
        "agent": agent_results(ctx.agent) if ctx.agent is not None and 7 in ran_ok else None,
        "carried_over": carried_over(ctx.cfg.hash(), records, earlier or {}),
        "push": ctx.info.get("push"),
        "alarms": ctx.info.get("alarms") or [],
        "rolling": ctx.info.get("rolling"),  # evaluation = rolling: results/rolling_*.json
        "plots": plots(ctx.paths, ctx.name),
    }
    masked = mask_payload(payload, secret_values())
    return atomic_write_json(summary_path(ctx.paths, ctx.name), masked)


def before_push(
    ctx: DriverRun,
    records: list[StepRecord],
    code: int,
    selected: Sequence[int],
    earlier: dict[str, Any],
) -> None:
    """Write the summary and log lines the push commits, final for everything but the push.

    The pushed commit carries them; a second push is never needed to complete it. They say that
    the push was in progress; its outcome is in the local summary.
    """
    pending = StepRecord(8, STEP_NAMES[8], "in progress", result="push in progress")
    ctx.info["push"] = {
        "status": "in progress",
        "note": "written before the push, which committed this file; the push's outcome is in "
        "the local run summary and the console/log of the run",
        "remote": ctx.cfg.training.git_remote,
        "branch": ctx.cfg.training.git_branch,
    }
    out = write_summary(ctx, [*records, pending], code, selected, earlier, status="pushing")
    # The push commits what the run manifest lists: this summary and the run's log too.
    files = Artifacts(ctx.paths, ctx.name)
    logs = [(Path(p), "log") for p in ctx.info.get("log_files", []) if Path(p).is_file()]
    files.manifest().record_many([(out, "run_summary"), *logs], STEP_DRIVER)
    ctx.info["push"] = None
    log.info(
        "run summary before the push (%s):\n%s",
        out,
        format_summary([*records, pending], ctx.cfg.hash()),
    )
    marker = (
        "push in progress: this log and the run summary are final for every step but the "
        f"push (run {os.getpid()}-{time.time():.0f})"
    )
    log.info("%s", marker)
    if not wait_for_log(marker):
        log.warning("the run log does not show the pre-push lines yet; pushing anyway")


def log_run_summary(ctx: DriverRun, records: Sequence[StepRecord], out: Path) -> None:
    """The run's last lines: the summary table with its leak alarms, then the plots."""
    rows = alarm_lines(ctx.info.get("alarms") or [])
    table = "\n".join([format_summary(records, ctx.cfg.hash()), *rows])
    log.info("run summary (%s):\n%s", out, table)
    found = plots(ctx.paths, ctx.name)
    if found:
        log.info("plots: %s", ", ".join(found))


def with_alarms(ctx: DriverRun, outcome: StepOutcome) -> StepOutcome:
    """A step whose result carries leak alarms is ``warn`` and says how many; the alarms are
    gathered for the run summary's rows."""
    alarms = list(outcome.details.get("alarms") or [])
    if alarms:
        ctx.info.setdefault("alarms", []).extend(alarms)
        outcome.status = "warn"
        outcome.result = f"{len(alarms)} LEAK ALARM(S), see below; {outcome.result}"
    return outcome


def push_metrics(ctx: DriverRun, earlier: dict[str, Any]) -> dict[str, object]:
    """Key numbers for the commit message: this invocation's classifier F1s and agent result,
    else those the earlier run summary recorded (``--steps 8``, the push retry)."""
    metrics: dict[str, object] = {}
    carried = earlier.get("carried_over") if isinstance(earlier.get("carried_over"), dict) else {}
    models = (
        ctx.classifiers["models"]
        if ctx.classifiers is not None
        else earlier.get("classifiers") or (carried or {}).get("classifiers") or {}
    )
    for name, m in models.items():
        if isinstance(m, dict) and isinstance(m.get("test_macro_f1"), (int, float)):
            metrics[f"{name}_test_f1"] = float(m["test_macro_f1"])
    agent = (
        agent_results(ctx.agent)
        if ctx.agent is not None
        else earlier.get("agent") or (carried or {}).get("agent") or {}
    )
    for key in ("agent_total_return", "agent_sharpe", "buy_and_hold_total_return"):
        if isinstance(agent.get(key), (int, float)):
            metrics[key] = float(agent[key])
    if agent.get("in_sample_predictions"):
        metrics["agent_predictions"] = "IN-SAMPLE"
    return metrics
