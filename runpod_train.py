"""The eight-step training driver: paths, dependencies, GPU, dataset, classifiers, validation, PPO,
push. ``runpod_main.py`` runs it as a subprocess after its preflight; it also runs on its own.

    python runpod_train.py --dataset SYNTH-BTC-EUR_1H_20240101-20251231 --preset demo
    python runpod_train.py --dataset X --steps 5,6       # rerun only some steps
    python runpod_train.py --dataset X --from-step 7     # PPO and push again
    python runpod_train.py --dataset X --resume          # continue from checkpoints

Settings come from flags or, for a launch by ``runpod_main.py``, from the environment:
``DATASET_NAME`` (``--dataset`` wins), ``RESUME_TRAINING=true`` (or ``--resume``),
``RUNPOD_PUSH_TO_GITHUB=true`` (step 8 pushes only then, or when ``--steps`` names step 8 and the
variable is not explicitly false; never with ``--no-push``).

The config is parsed once per run; every step is a plain function called with it and returns a
typed result (steps 5-7: ``train_models.train_classifiers`` -> ``TrainingSummary``,
``prediction_wrapper.validate_models`` -> report, ``train_ppo_agent.train_agent`` ->
``BacktestReport``; step 8: ``pipeline.publish.push.push_artifacts`` -> ``PushResult``), so an edit
to a config file during a long run cannot split the run across two configs (issue 9). A step's
failure is an exception carrying its one-line message: the run stops with
``error: step N (name) failed: reason`` and the step's exit code; a summary table of every step
is printed and written to ``results/run_summary_{dataset}.json`` in every case. A lock file
``logs/run_{dataset}.lock`` keeps a second run on the same dataset from writing the same artifacts.

The run summary describes this invocation (issue 8): ``status`` is ``running`` from the start,
``pushing`` in the copy step 8 commits (final for steps 1-7, said so in the log too), then ``ok``,
``failed`` or ``interrupted`` (SIGINT, SIGTERM, SIGHUP, the parent ``runpod_main.py`` gone, or an
exception between steps); rows of steps not run now are marked ``earlier_run`` with the config
hash they came from and listed under ``carried_over``; secrets and URL passwords are masked.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import importlib.metadata
import json
import logging
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

from pipeline.checks.leak_alarms import alarm_lines
from pipeline.common import (
    CLEAR_OS_ERRORS,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    PROJECT_ROOT,
    CliParser,
    Paths,
    PipelineError,
    TrainingInterrupted,
    atomic_write_json,
    os_error_message,
    run_cli,
    setup_logging,
)
from pipeline.config.files import add_config_args, config_from_args, passthrough_args
from pipeline.config.schema import Config
from pipeline.run.archive import archive_previous_run
from pipeline.run.lock import RunLock, absolute_dataset, lock_path
from pipeline.run.multi_run import DEFERRED_REASON, PUSH_DEFERRED_ENV
from pipeline.run.preflight import (
    CPU_SLOWDOWN,
    DEPENDENCIES,
    install_secret_masking,
    missing_modules,
)
from pipeline.run.process import (
    console_to_file,
    detach_console,
    interrupt_on_signals,
    parent_gone,
    parent_to_watch,
    raise_interrupt,
    stop_reasons,
    wait_for_log,
    watch_parent,
)
from pipeline.run.step_results import BacktestReport, TrainingSummary
from pipeline.run.summary import (
    ALL_STEPS,
    STEP_NAMES,
    StepOutcome,
    StepRecord,
    agent_line,
    agent_results,
    carried_over,
    carried_record,
    classifier_line,
    config_overrides,
    describe_overrides,
    format_summary,
    mask_payload,
    read_json,
    run_status,
    validation_line,
)
from pipeline.secrets import secret_values
from pipeline.store.artifacts import Artifacts, dataset_name, log_stamp
from pipeline.store.manifest import STEP_DRIVER

log = logging.getLogger("runpod_train")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class StepFailed(PipelineError):
    """A step failed; the message is the one-line reason, ``exit_code`` the step's code."""


# ---------------------------------------------------------------- run context


@dataclass
class RunContext:
    """Everything the steps share: dataset, paths, config, flags and the step modules' argv."""

    dataset: str
    paths: Paths
    cfg: Config
    resume: bool
    push: bool
    push_reason: str
    install: bool
    verbose: bool
    config_args: list[str] = field(default_factory=list)  # --preset/--set/... for the resume hint
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    info: dict[str, Any] = field(default_factory=dict)
    earlier: dict[str, Any] = field(default_factory=dict)  # the run summary found at the start
    classifiers: TrainingSummary | None = None  # step 5's result in this invocation
    agent: BacktestReport | None = None  # step 7's result in this invocation

    @property
    def name(self) -> str:
        """The dataset's artifact name: ``--dataset`` without folder and ``.csv``."""
        return dataset_name(self.dataset)


# ---------------------------------------------------------------- small helpers


def plots(paths: Paths, dataset: str) -> list[str]:
    """The PNG plots of this dataset in ``results/``."""
    return [str(p) for p in Artifacts(paths, dataset).plots()]


def install_requirements(requirements: Path) -> None:
    """``python -m pip install -r requirements.txt`` with the running interpreter."""
    cmd = [sys.executable, "-m", "pip", "install", "-r", str(requirements)]
    log.info("installing missing packages: %s", " ".join(cmd))
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise StepFailed(f"{' '.join(cmd)} exited with code {proc.returncode}")


# ---------------------------------------------------------------- the eight steps


def step_paths(ctx: RunContext) -> StepOutcome:
    """Step 1: artifact folders, Python, platform, dataset and the resolved config."""
    ctx.paths.ensure()
    log.info("project: %s", PROJECT_ROOT)
    log.info("artifact root: %s", ctx.paths.root)
    log.info("python %s on %s", platform.python_version(), platform.platform())
    log.info(
        "dataset %s, resume %s, push %s (%s)",
        ctx.dataset,
        ctx.resume,
        ctx.push,
        ctx.push_reason,
    )
    log.info("config %s; %s", ctx.cfg.hash(), describe_overrides(config_overrides(ctx.cfg)))
    return StepOutcome(
        result=f"root {ctx.paths.root}",
        details={"root": str(ctx.paths.root), "config_hash": ctx.cfg.hash()},
    )


def step_dependencies(ctx: RunContext) -> StepOutcome:
    """Step 2: every package importable; missing ones installed from requirements.txt."""
    missing = missing_modules()
    installed = False
    if missing:
        names = ", ".join(dist for _, dist in missing)
        requirements = PROJECT_ROOT / "requirements.txt"
        if not ctx.install:
            raise StepFailed(f"missing packages: {names}; run pip install -r {requirements}")
        install_requirements(requirements)
        installed = True
        still = missing_modules()
        if still:
            raise StepFailed(f"still missing after pip install: {', '.join(d for _, d in still)}")
    versions: dict[str, str] = {}
    for module, dist in DEPENDENCIES:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - a broken install raises anything
            raise StepFailed(f"{module} is installed but cannot be imported: {exc}") from None
        try:
            versions[module] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[module] = "?"
    log.info("packages: %s", ", ".join(f"{m} {v}" for m, v in versions.items()))
    result = f"{len(versions)} packages importable" + (" (installed missing)" if installed else "")
    return StepOutcome(result=result, details={"versions": versions, "installed": installed})


def step_gpu(ctx: RunContext) -> StepOutcome:
    """Step 3: CUDA GPU name and memory; CPU-only is a warning with the expected slowdown."""
    import torch

    if not torch.cuda.is_available():
        msg = f"no CUDA GPU: training runs on CPU, {CPU_SLOWDOWN}"
        log.warning("%s (torch %s, %d threads)", msg, torch.__version__, torch.get_num_threads())
        return StepOutcome(status="warn", result="CPU only", details={"cuda": False})
    props = torch.cuda.get_device_properties(0)
    mem_gb = props.total_memory / 1e9
    log.info("GPU: %s, %.1f GB, CUDA %s", props.name, mem_gb, torch.version.cuda)
    return StepOutcome(
        result=f"{props.name} {mem_gb:.0f} GB",
        details={"cuda": True, "name": props.name, "memory_gb": round(mem_gb, 2)},
    )


def step_dataset(ctx: RunContext) -> StepOutcome:
    """Step 4: load and validate the dataset; rows, date range, columns, gaps."""
    from pipeline.data.load import load_dataset

    df, info = load_dataset(ctx.dataset, ctx.paths.datasets)
    log.info("columns: %s", ", ".join(str(c) for c in df.columns))
    for w in info.warnings:
        log.warning("dataset: %s", w)
    ctx.info["dataset"] = info.to_dict()
    gaps = f"{info.n_gaps} gaps" if info.n_gaps else "no gaps"
    fmt = "%Y-%m-%d"
    return StepOutcome(
        result=(
            f"{info.rows:,} rows, {info.start.strftime(fmt)} .. {info.end.strftime(fmt)}, {gaps}"
        ),
        details={**info.to_dict(), "columns": [str(c) for c in df.columns]},
    )


def step_train_classifiers(ctx: RunContext) -> StepOutcome:
    """Step 5: ``train_models.train_classifiers`` (reuses up-to-date models; resume passed on)."""
    import train_models

    summary = train_models.train_classifiers(ctx.cfg, ctx.dataset, ctx.paths, resume=ctx.resume)
    ctx.classifiers = summary
    ctx.info["classifiers"] = summary["models"]
    return with_alarms(ctx, StepOutcome(result=classifier_line(summary), details=dict(summary)))


def with_alarms(ctx: RunContext, outcome: StepOutcome) -> StepOutcome:
    """A step whose result carries leak alarms (issue 18 item 1) is ``warn`` and says how many;
    the alarms are gathered for the run summary's rows."""
    alarms = list(outcome.details.get("alarms") or [])
    if alarms:
        ctx.info.setdefault("alarms", []).extend(alarms)
        outcome.status = "warn"
        outcome.result = f"{len(alarms)} LEAK ALARM(S), see below; {outcome.result}"
    return outcome


def step_validate_models(ctx: RunContext) -> StepOutcome:
    """Step 6: every model the agent needs loads and predicts (prediction_wrapper)."""
    from ppo_approach.prediction_wrapper import validate_models

    # The dataset as given (a path stays a path), not its artifact name: a CSV outside
    # datasets/ must be found here as in steps 4, 5 and 7 (issue 8 item 1).
    report = validate_models(ctx.cfg, ctx.dataset, ctx.paths)
    return StepOutcome(
        result=validation_line(report), details=json.loads(json.dumps(report, default=str))
    )


def step_train_ppo(ctx: RunContext) -> StepOutcome:
    """Step 7: ``train_ppo_agent.train_agent`` (``--resume`` continues a checkpoint), backtest."""
    from ppo_approach import train_ppo_agent

    report = train_ppo_agent.train_agent(ctx.cfg, ctx.dataset, ctx.paths, ctx.resume)
    ctx.agent = report
    agent = agent_results(report)
    ctx.info["agent"] = agent
    outcome = with_alarms(ctx, StepOutcome(result=agent_line(agent), details=agent))
    if ctx.cfg.training.evaluation == "rolling":
        import rolling_eval

        rolling = rolling_eval.run_rolling(ctx.cfg, ctx.dataset, ctx.paths)
        ctx.info["rolling"] = rolling["distribution"]
        outcome.result += "; " + rolling_eval.format_rolling(rolling).splitlines()[-1]
    return outcome


def push_metrics(ctx: RunContext, earlier: dict[str, Any]) -> dict[str, object]:
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


def step_push(ctx: RunContext) -> StepOutcome:
    """Step 8: commit and push the artifacts (only when enabled; else skipped)."""
    if not ctx.push:
        log.info("push skipped: %s", ctx.push_reason)
        return StepOutcome(status="skipped", result=f"skipped ({ctx.push_reason})")
    from pipeline.publish.push import PushConfig, push_artifacts

    t = ctx.cfg.training
    config = PushConfig(remote=t.git_remote, branch=t.git_branch, max_file_mb=t.push_max_file_mb)
    result = push_artifacts(ctx.paths.root, ctx.name, push_metrics(ctx, ctx.earlier), config)
    details = {
        "commit": result.commit,
        "pushed": result.pushed,
        "files": list(result.files),
        "skipped": list(result.skipped),
        "rebased": result.rebased,
        "remote": t.git_remote,
        "branch": t.git_branch,
    }
    ctx.info["push"] = details
    extra = f", {len(result.skipped)} too large, kept locally" if result.skipped else ""
    return StepOutcome(
        status="ok" if result.pushed else "warn",
        result=f"commit {result.commit[:12]} -> {t.git_remote}/{t.git_branch}, "
        f"{len(result.files)} files{extra}",
        details=details,
    )


STEP_FUNCTIONS: dict[int, Callable[[RunContext], StepOutcome]] = {
    1: step_paths,
    2: step_dependencies,
    3: step_gpu,
    4: step_dataset,
    5: step_train_classifiers,
    6: step_validate_models,
    7: step_train_ppo,
    8: step_push,
}


# ---------------------------------------------------------------- running and summarising


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


def summary_path(paths: Paths, dataset: str) -> Path:
    """``results/run_summary_{dataset}.json``."""
    return Artifacts(paths, dataset).run_summary


def write_summary(
    ctx: RunContext,
    records: Sequence[StepRecord],
    exit_code: int | None,
    selected: Sequence[int],
    earlier: dict[str, Any] | None = None,
    status: str | None = None,
) -> Path:
    """Write ``results/run_summary_{dataset}.json`` atomically (also after a failure).

    The summary describes this invocation only (issue 8 item 27): the classifier and agent
    numbers are read from their reports on disk only when this invocation ran the step that
    writes them and it succeeded (after a failure, or for a step not run now, the files on disk
    are an older run's and would pass for this one's); rows and numbers of earlier runs are
    listed under ``carried_over`` with their config hash. ``status`` is ``running`` while the
    run goes on (so a run killed outright never leaves the previous run's summary standing),
    ``pushing`` in the copy the push commits, else ``ok`` / ``failed`` / ``interrupted``. Every
    string is passed through the secret mask (tokens, URL passwords; issue 8 item 8).
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
    ctx: RunContext,
    records: list[StepRecord],
    code: int,
    selected: Sequence[int],
    earlier: dict[str, Any],
) -> None:
    """Write the summary and log lines the push commits, final for everything but the push.

    The pushed commit carries them; a second push is never needed to complete it (issue 8
    item 25). They say that the push was in progress; its outcome is in the local summary.
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


def run_steps(
    ctx: RunContext,
    selected: Sequence[int],
    earlier: dict[str, Any] | None = None,
    records: list[StepRecord] | None = None,
) -> tuple[int, list[StepRecord]]:
    """Run the selected steps in order; stop at the first failure. Returns (exit code, records).

    ``records`` (appended to as the steps finish) lets the caller write the summary even when
    an interrupt escapes between steps.
    """
    earlier = earlier if earlier is not None else {}
    records = records if records is not None else []
    code = EXIT_OK
    stopped = False
    for n in ALL_STEPS:
        name = STEP_NAMES[n]
        if n not in selected:
            records.append(carried_record(n, earlier))
            continue
        if stopped:
            records.append(StepRecord(n, name, "not run"))
            continue
        if n == 8 and ctx.push:
            before_push(ctx, records, code, selected, earlier)
        log.info("=" * 72)
        log.info("STEP %d/8: %s", n, name)
        log.info("=" * 72)
        t0 = time.perf_counter()
        try:
            outcome = STEP_FUNCTIONS[n](ctx)
        except TrainingInterrupted as exc:
            secs = time.perf_counter() - t0
            # The step's own message says what is true: which checkpoint was kept, or that none
            # was written yet (issue 8 item 6); a resume is offered only when there is one.
            text = str(exc) + (
                f"; resume with: {resume_command(ctx)}" if exc.has_checkpoint else ""
            )
            log.warning("step %d (%s) interrupted after %.1f s: %s", n, name, secs, text)
            records.append(StepRecord(n, name, "interrupted", secs, text))
            code, stopped = EXIT_INTERRUPTED, True
            print(f"interrupted: step {n} ({name}): {text}", file=sys.stderr)
            continue
        except KeyboardInterrupt:
            secs = time.perf_counter() - t0
            records.append(StepRecord(n, name, "interrupted", secs, "interrupted"))
            code, stopped = EXIT_INTERRUPTED, True
            print(f"interrupted: step {n} ({name})", file=sys.stderr)
            continue
        except PipelineError as exc:
            secs = time.perf_counter() - t0
            reason = " ".join(str(exc).split("\n"))
            records.append(StepRecord(n, name, "failed", secs, reason))
            code, stopped = exc.exit_code or EXIT_ERROR, True
            log.debug("step %d failed", n, exc_info=True)
            print(f"error: step {n} ({name}) failed: {reason}", file=sys.stderr)
            continue
        except OSError as exc:
            if exc.errno not in CLEAR_OS_ERRORS:
                raise
            # A full disk or an unwritable folder: one line naming the path, no traceback
            # (issue 8 items 10 and 11).
            secs = time.perf_counter() - t0
            reason = os_error_message(exc)
            records.append(StepRecord(n, name, "failed", secs, reason))
            code, stopped = EXIT_ERROR, True
            print(f"error: step {n} ({name}) failed: {reason}", file=sys.stderr)
            continue
        except Exception as exc:  # noqa: BLE001 - a bug, not bad input: keep the traceback
            secs = time.perf_counter() - t0
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            log.error("step %d (%s) crashed", n, name, exc_info=True)
            records.append(StepRecord(n, name, "failed", secs, reason))
            code, stopped = EXIT_ERROR, True
            print(f"error: step {n} ({name}) failed: {reason}", file=sys.stderr)
            continue
        secs = time.perf_counter() - t0
        log.info("step %d (%s) %s in %.1f s: %s", n, name, outcome.status, secs, outcome.result)
        records.append(StepRecord(n, name, outcome.status, secs, outcome.result, outcome.details))
    return code, records


def resume_command(ctx: RunContext) -> str:
    """The command that continues this run from its checkpoints."""
    args = ["python", "runpod_train.py", "--dataset", ctx.dataset, "--root", str(ctx.paths.root)]
    return shlex.join([*args, *ctx.config_args, "--resume"])


def _complete_records(
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


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def build_parser() -> argparse.ArgumentParser:
    """The driver's command line."""
    # CliParser: usage errors exit 1 (bad input), not argparse's 2 (issue 8 item 12).
    p = CliParser(
        prog="runpod_train.py",
        description="Run the eight pipeline steps (1 paths, 2 dependencies, 3 GPU, 4 dataset, "
        "5 classifiers, 6 model validation, 7 PPO agent, 8 push) for one dataset.",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="dataset name (datasets/NAME.csv) or CSV path; default: $DATASET_NAME",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from checkpoints (passed to steps 5 and 7); also $RESUME_TRAINING=true",
    )
    p.add_argument(
        "--no-push",
        action="store_true",
        help="skip step 8 even when $RUNPOD_PUSH_TO_GITHUB=true (step 8 pushes only when it "
        "is true, or when --steps names step 8 and it is not false)",
    )
    p.add_argument(
        "--no-install",
        action="store_true",
        help="step 2: fail on missing packages instead of pip-installing requirements.txt",
    )
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="artifact root (models/, results/, ...); default $PIPELINE_HOME or the project",
    )
    p.add_argument("--steps", default=None, help="run only these steps, e.g. 5,6 or 5-7")
    p.add_argument(
        "--from-step", type=int, default=None, help="run from this step to the end, e.g. 7"
    )
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.add_argument(
        "--no-log-file",
        action="store_true",
        help="log to the console only (runpod_main.py captures the output into its own log)",
    )
    add_config_args(p)
    return p


def run_context(args: argparse.Namespace) -> RunContext:
    """Resolve dataset, paths, config and the push/resume/install flags from args and env."""
    dataset = args.dataset or os.environ.get("DATASET_NAME", "").strip()
    if not dataset:
        raise PipelineError("no dataset: pass --dataset NAME or set DATASET_NAME")
    cfg = config_from_args(args)
    push_env = os.environ.get("RUNPOD_PUSH_TO_GITHUB", "").strip().lower()
    if args.no_push:
        push, reason = False, "--no-push"
    elif _env_flag(PUSH_DEFERRED_ENV):
        # runpod_main.py over several datasets pushes them all in one commit at the end (issue 12).
        push, reason = False, DEFERRED_REASON
    elif push_env in _TRUE:
        push, reason = True, "RUNPOD_PUSH_TO_GITHUB=true"
    elif push_env in _FALSE:
        push, reason = False, f"RUNPOD_PUSH_TO_GITHUB={push_env}"
    elif args.steps is not None and 8 in parse_steps(args.steps, None):
        # `--steps 8` is the retry the push error suggests: naming the step asks for the push.
        push, reason = True, "--steps names step 8"
    else:
        push, reason = False, "RUNPOD_PUSH_TO_GITHUB is not true"
    paths = Paths.from_root(args.root)
    return RunContext(
        # A path becomes absolute once, here, so every step finds the same file whatever its
        # working directory (issue 8 items 1 and 2); a name in datasets/ stays a name.
        dataset=absolute_dataset(dataset, paths.datasets),
        paths=paths,
        cfg=cfg,
        resume=args.resume or _env_flag("RESUME_TRAINING"),
        push=push,
        push_reason=reason,
        install=not args.no_install,
        verbose=args.verbose,
        config_args=passthrough_args(args),
    )


def check_usage(args: argparse.Namespace) -> int:
    """The command line's own errors (no dataset, bad steps, a config that does not parse), as
    :class:`PipelineError` before anything is written; EXIT_OK when there are none."""
    if not (args.dataset or os.environ.get("DATASET_NAME", "").strip()):
        raise PipelineError("no dataset: pass --dataset NAME or set DATASET_NAME")
    parse_steps(args.steps, args.from_step)
    config_from_args(args)
    return EXIT_OK


def _acquire(lock: RunLock) -> RunLock:
    """Take the run lock; a root that cannot hold it is one line naming the path (item 10)."""
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


# Reference points of the run-time estimate (issue 22 item 20), from BENCHMARKS.md on the 2-core
# CPU machine: step 5 of the demo preset on the bundled 17,544-row dataset about 200 s (lookback
# 32, early stopping near 10 epochs, 4 models with walk-forward folds); PPO with the default net
# (1280x640, 20 epochs) about 309 timesteps/s; steps 6 and 7's evaluation and backtest, and
# steps 1-4, about 30 s.
_REF_STEP5_S = 200.0
_REF_ROWS, _REF_LOOKBACK, _REF_EPOCHS, _REF_FOLDS = 17_544, 32, 10, 4
_REF_PPO_WORK = 20 * (1280 * 640 + 640) / (1 / 309)  # n_epochs x net weights per second
_MIN_PPO_STEP_S = 2e-3  # rollout, env and small nets: measured 16,384 timesteps of the demo's
# PPO settings (256x256, 8 envs, 10 epochs) in 43 s at load 2.5 on the 2-core machine
_FIXED_S = 30.0


def estimate_seconds(
    cfg: Config, rows: int, selected: Sequence[int], cuda: bool
) -> dict[str, float]:
    """A rough duration per step from the settings (``"5"``, ``"7"``, ``"other"``, ``"total"``):
    linear in the budget knobs around the reference points above, for an idle machine."""
    t, p = cfg.training, cfg.ppo
    out = {"5": 0.0, "7": 0.0, "other": _FIXED_S}
    if 5 in selected:
        n_models = len(p.ensemble_models) if p.prediction_model == "ensemble" else 4
        folds = t.walk_forward_folds if p.ppo_prediction_source == "walk_forward" else 0
        epochs = min(t.epochs, t.patience + 6)  # early stopping usually ends it about there
        out["5"] = (
            _REF_STEP5_S
            * (rows / _REF_ROWS)
            * (t.lookback / _REF_LOOKBACK)
            * (epochs / _REF_EPOCHS)
            * (n_models / 4)
            * ((1 + folds) / (1 + _REF_FOLDS))
        ) / (5.0 if cuda else 1.0)
    if 7 in selected:
        net = list(p.net_arch)
        weights = sum(a * b for a, b in zip(net, net[1:], strict=False)) + sum(net)
        per_step = max(_MIN_PPO_STEP_S, p.n_epochs * weights / _REF_PPO_WORK)
        out["7"] = max(1, p.seeds) * p.total_timesteps * per_step
    out["total"] = out["5"] + out["7"] + out["other"]
    return out


def _count_rows(dataset: str, paths: Paths) -> int | None:
    """The CSV's data lines (a quick newline count), or None when it cannot be read."""
    from pipeline.store.artifacts import dataset_file

    path = Path(dataset) if Path(dataset).is_file() else dataset_file(paths.datasets, dataset)
    try:
        with open(path, "rb") as f:
            return max(
                0, sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1
            )
    except OSError:
        return None


def log_estimate(ctx: RunContext, selected: Sequence[int]) -> str | None:
    """Log the run's estimated duration at its start; returns the line (None: no dataset yet)."""
    rows = _count_rows(ctx.dataset, ctx.paths)
    if rows is None or not ({5, 7} & set(selected)):
        return None
    cuda = ctx.cfg.training.device != "cpu" and _cuda_available()
    est = estimate_seconds(ctx.cfg, rows, selected, cuda)
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    busy = max(1.0, load / cores) if not cuda else 1.0
    parts = [f"step {n} ~{est[n] / 60:.0f} min" for n in ("5", "7") if est[n] > 0]
    line = (
        f"estimated duration: about {est['total'] * busy / 60:.0f} min ({', '.join(parts)}; "
        f"{rows:,} rows, {'GPU' if cuda else f'{cores}-core CPU'}); a rough guide from the "
        "settings for an idle machine"
        + (f", scaled x{busy:.1f} for the current load ({load:.1f})" if busy > 1 else "")
        + ": other jobs on the machine make the run slower"
    )
    log.info("%s", line)
    return line


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


release_at_exit: list[RunLock] | None = None
"""Run as a script (:func:`run_as_script`): the run lock, released only as the process's last act
(issue 22 item 12), not while the interpreter still winds down for seconds (a second run must
not start then). ``None`` when the driver is called in-process: released as :func:`drive` ends."""


def drive(args: argparse.Namespace, log_file: Path | None = None) -> int:
    """Resolve the run's settings, take the lock, run the steps and write the summary.

    The summary is written when the run starts (status ``running``, so a run killed outright
    never leaves the previous run's summary standing as its own) and again on every way out:
    finished, failed step, signal, parent gone, or an exception between steps (issue 8 item 5).
    """
    selected = parse_steps(args.steps, args.from_step)
    ctx = run_context(args)
    if log_file is not None:
        ctx.info["log_files"] = [str(log_file)]
    lock = _acquire(RunLock(lock_path(ctx.paths, ctx.name)))
    try:
        if lock.took_over is not None:
            log.warning("took over a stale lock of %s", lock.took_over.describe())
        if not ctx.resume:
            # Nothing overwritten: the previous run's files go to runs/{dataset}/{n}/ before
            # this run writes its first file (a --resume continues that run instead).
            archived = archive_previous_run(ctx.paths, ctx.name)
            if archived is not None:
                log.info(
                    "previous run (started %s, %s) archived to %s",
                    archived.info.get("started"),
                    archived.info.get("status"),
                    archived.folder,
                )
        earlier = read_json(summary_path(ctx.paths, ctx.name)) or {}
        ctx.earlier = earlier
        records: list[StepRecord] = []
        planned = [
            carried_record(n, earlier)
            if n not in selected
            else StepRecord(n, STEP_NAMES[n], "pending")
            for n in ALL_STEPS
        ]
        write_summary(ctx, planned, None, selected, earlier)
        log_estimate(ctx, selected)  # issue 22 item 20
        if not ctx.resume and 7 in selected:
            from ppo_approach import run_folder

            # A later --resume of this run must not judge its step 7 by an older run's agent
            # (issue 22 item 5).
            run_folder.mark_fresh_run(ctx.paths, ctx.name)
        code: int | None = None
        status: str | None = None
        try:
            code, records = run_steps(ctx, selected, earlier, records)
        except KeyboardInterrupt:
            code, status = EXIT_INTERRUPTED, "interrupted"
            raise
        except BaseException as exc:
            code, status = EXIT_ERROR, "interrupted"
            ctx.info["stop_reason"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            raise
        finally:
            if stop_reasons and ctx.info.get("stop_reason") is None:
                ctx.info["stop_reason"] = stop_reasons[0]
            if status is not None:
                _complete_records(records, selected, earlier)
                log.warning("run interrupted (%s)", ctx.info.get("stop_reason") or "interrupt")
            out = write_summary(ctx, records, code, selected, earlier, status=status)
    finally:
        if release_at_exit is not None:
            release_at_exit.append(lock)  # run as a script: released as the last act
        else:
            lock.release()
    rows = alarm_lines(ctx.info.get("alarms") or [])
    table = "\n".join([format_summary(records, ctx.cfg.hash()), *rows])
    log.info("run summary (%s):\n%s", out, table)
    found = plots(ctx.paths, ctx.name)
    if found:
        log.info("plots: %s", ", ".join(found))
    return code


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the driver; exit code 0, a step's code, or 130 if interrupted."""
    args = build_parser().parse_args(argv)
    install_secret_masking()
    stop_reasons.clear()
    parent = parent_to_watch()
    watch = None
    if parent is not None:
        name = args.dataset or os.environ.get("DATASET_NAME", "").strip() or "run"
        orphan_log = Artifacts(Paths.from_root(args.root), name).orphan_log(log_stamp())
        if parent_gone(parent):
            # runpod_main.py died before we started watching it (issue 22 item 1): train
            # nothing, take no lock; say so in the orphan log, as a watched run would.
            stop_reasons.append(f"parent process (pid {parent}) exited")
            detach_console(orphan_log)
            print(
                f"interrupted: the parent process (pid {parent}, runpod_main.py) exited before "
                "this run started; nothing was run (start it again)",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        watch = watch_parent(parent, log_file=orphan_log)
    try:
        # SIGTERM (pod shutdown, runpod_main forwarding) and SIGHUP (closed terminal) unwind like
        # Ctrl-C; a SIGHUP ignored at start (`nohup`) stays ignored.
        with contextlib.ExitStack() as stack:
            stack.enter_context(interrupt_on_signals())
            dataset = args.dataset or os.environ.get("DATASET_NAME", "").strip()
            # Usage errors first: they are one line and leave no log file (issue 22 item 16).
            usage = run_cli(lambda: check_usage(args))
            if usage != EXIT_OK:
                return usage
            log_file = None
            if not args.no_log_file and dataset:
                log_file = Artifacts(Paths.from_root(args.root), dataset).train_log(log_stamp())
                try:
                    stack.enter_context(console_to_file(log_file))
                except OSError as exc:
                    print(f"warning: no log file ({exc}); console only", file=sys.stderr)
                    log_file = None
            setup_logging(args.verbose)
            if log_file is not None:
                log.info("log file: %s", log_file)
            return run_cli(lambda: drive(args, log_file))
    finally:
        if watch is not None:
            watch.set()


LATE_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_as_script(argv: list[str] | None = None) -> NoReturn:
    """``python runpod_train.py``: :func:`main`, then exit with the lock released last.

    A SIGINT, SIGTERM or SIGHUP after the run's own handlers are gone (the summary is written,
    the interpreter winds down) is recorded, not fatal: the exit code is then 130, as the README
    documents for an interrupt, never the shell's 129 (issue 22 item 9). The run lock is released
    after the exit functions ran, right before ``os._exit`` (issue 22 item 12).
    """
    global release_at_exit
    release_at_exit = []
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
        code = main(argv)
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


if __name__ == "__main__":
    run_as_script()
