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
to a config file during a long run cannot split the run across two configs. A step's
failure is an exception carrying its one-line message: the run stops with
``error: step N (name) failed: reason`` and the step's exit code; a summary table of every step
is printed and written to ``results/run_summary_{dataset}.json`` in every case. A lock file
``logs/run_{dataset}.lock`` keeps a second run on the same dataset from writing the same artifacts.

The run summary describes this invocation: ``status`` is ``running`` from the start,
``pushing`` in the copy step 8 commits (final for steps 1-7, said so in the log too), then ``ok``,
``failed`` or ``interrupted`` (SIGINT, SIGTERM, SIGHUP, the parent ``runpod_main.py`` gone, or an
exception between steps); rows of steps not run now are marked ``earlier_run`` with the config
hash they came from and listed under ``carried_over``; secrets and URL passwords are masked.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

from pipeline.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    PROJECT_ROOT,
    CliParser,
    Paths,
    PipelineError,
    run_cli,
    setup_logging,
)
from pipeline.config.files import add_config_args, config_from_args, passthrough_args
from pipeline.config.schema import Config
from pipeline.run.basic_steps import step_dataset, step_gpu, step_paths, step_push
from pipeline.run.driver_setup import (
    acquire_lock,
    archive_before_run,
    env_flag,
    push_setting,
    watch_launcher,
)
from pipeline.run.driver_steps import complete_records, parse_steps, run_step
from pipeline.run.driver_summary import (
    before_push,
    log_run_summary,
    summary_path,
    with_alarms,
    write_summary,
)
from pipeline.run.estimate import log_estimate
from pipeline.run.lock import RunLock, absolute_dataset, lock_path
from pipeline.run.preflight import DEPENDENCIES, install_secret_masking, missing_modules
from pipeline.run.process import console_to_file, interrupt_on_signals, stop_reasons
from pipeline.run.script_exit import exit_releasing_last
from pipeline.run.step_results import BacktestReport, TrainingSummary
from pipeline.run.summary import (
    ALL_STEPS,
    STEP_NAMES,
    StepOutcome,
    StepRecord,
    agent_line,
    agent_results,
    carried_record,
    classifier_line,
    read_json,
    validation_line,
)
from pipeline.store.artifacts import Artifacts, dataset_name, log_stamp

log = logging.getLogger("runpod_train")


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


def install_requirements(requirements: Path) -> None:
    """``python -m pip install -r requirements.txt`` with the running interpreter."""
    cmd = [sys.executable, "-m", "pip", "install", "-r", str(requirements)]
    log.info("installing missing packages: %s", " ".join(cmd))
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise StepFailed(f"{' '.join(cmd)} exited with code {proc.returncode}")


# ---------------------------------------------------------------- the eight steps
# Steps 1, 3, 4 and 8 call only the library: pipeline/run/basic_steps.py.


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


def step_train_classifiers(ctx: RunContext) -> StepOutcome:
    """Step 5: ``train_models.train_classifiers`` (reuses up-to-date models; resume passed on)."""
    import train_models

    summary = train_models.train_classifiers(ctx.cfg, ctx.dataset, ctx.paths, resume=ctx.resume)
    ctx.classifiers = summary
    ctx.info["classifiers"] = summary["models"]
    return with_alarms(ctx, StepOutcome(result=classifier_line(summary), details=dict(summary)))


def step_validate_models(ctx: RunContext) -> StepOutcome:
    """Step 6: every model the agent needs loads and predicts (prediction_wrapper)."""
    from ppo_approach.prediction_wrapper import validate_models

    # The dataset as given (a path stays a path), not its artifact name: a CSV outside
    # datasets/ must be found here as in steps 4, 5 and 7.
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
    from ppo_approach.export_bundle import export_after_training

    line, ctx.info["export"] = export_after_training(ctx.cfg, ctx.dataset, ctx.paths)
    outcome.result += "; " + line
    if ctx.cfg.training.evaluation == "rolling":
        import rolling_eval

        rolling = rolling_eval.run_rolling(ctx.cfg, ctx.dataset, ctx.paths)
        ctx.info["rolling"] = rolling["distribution"]
        outcome.result += "; " + rolling_eval.format_rolling(rolling).splitlines()[-1]
    return outcome


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
        if n not in selected:
            records.append(carried_record(n, earlier))
            continue
        if stopped:
            records.append(StepRecord(n, STEP_NAMES[n], "not run"))
            continue
        if n == 8 and ctx.push:
            before_push(ctx, records, code, selected, earlier)
        failure = run_step(n, STEP_FUNCTIONS[n], ctx, records, lambda: resume_command(ctx))
        if failure is not None:
            code, stopped = failure, True
    return code, records


def resume_command(ctx: RunContext) -> str:
    """The command that continues this run from its checkpoints."""
    args = ["python", "runpod_train.py", "--dataset", ctx.dataset, "--root", str(ctx.paths.root)]
    return shlex.join([*args, *ctx.config_args, "--resume"])


def build_parser() -> argparse.ArgumentParser:
    """The driver's command line."""
    # CliParser: usage errors exit 1 (bad input), not argparse's 2.
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
    push, reason = push_setting(args.no_push, args.steps)
    paths = Paths.from_root(args.root)
    return RunContext(
        # A path becomes absolute once, here, so every step finds the same file whatever its
        # working directory; a name in datasets/ stays a name.
        dataset=absolute_dataset(dataset, paths.datasets),
        paths=paths,
        cfg=cfg,
        resume=args.resume or env_flag("RESUME_TRAINING"),
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


release_at_exit: list[RunLock] | None = None
"""Run as a script (:func:`run_as_script`): the run lock, released only as the process's last act,
not while the interpreter still winds down for seconds (a second run must not start then).
``None`` when the driver is called in-process: released as :func:`drive` ends."""


def drive(args: argparse.Namespace, log_file: Path | None = None) -> int:
    """Resolve the run's settings, take the lock, run the steps and write the summary.

    The summary is written when the run starts (status ``running``, so a run killed outright
    never leaves the previous run's summary standing as its own) and again on every way out:
    finished, failed step, signal, parent gone, or an exception between steps.
    """
    selected = parse_steps(args.steps, args.from_step)
    ctx = run_context(args)
    if log_file is not None:
        ctx.info["log_files"] = [str(log_file)]
    lock = acquire_lock(RunLock(lock_path(ctx.paths, ctx.name)))
    try:
        if lock.took_over is not None:
            log.warning("took over a stale lock of %s", lock.took_over.describe())
        earlier = start_run(ctx, selected)
        code, records, out = run_and_summarise(ctx, selected, earlier)
    finally:
        if release_at_exit is not None:
            release_at_exit.append(lock)  # run as a script: released as the last act
        else:
            lock.release()
    log_run_summary(ctx, records, out)
    return code


def start_run(ctx: RunContext, selected: Sequence[int]) -> dict[str, Any]:
    """Before the first step: archive the previous run (not for a resume), read its summary
    (the rows carried over), write this run's first summary (``running``), log the estimated
    duration and mark a fresh run for step 7. Returns the summary found."""
    if not ctx.resume:
        # Nothing overwritten: the previous run's files go to runs/{dataset}/{n}/ before
        # this run writes its first file (a --resume continues that run instead).
        archive_before_run(ctx.paths, ctx.name)
    earlier = read_json(summary_path(ctx.paths, ctx.name)) or {}
    ctx.earlier = earlier
    planned = [
        carried_record(n, earlier) if n not in selected else StepRecord(n, STEP_NAMES[n], "pending")
        for n in ALL_STEPS
    ]
    write_summary(ctx, planned, None, selected, earlier)
    log_estimate(ctx.cfg, ctx.dataset, ctx.paths, selected)
    if not ctx.resume and 7 in selected:
        from ppo_approach import run_folder

        # A later --resume of this run must not judge its step 7 by an older run's agent.
        run_folder.mark_fresh_run(ctx.paths, ctx.name)
    return earlier


def run_and_summarise(
    ctx: RunContext, selected: Sequence[int], earlier: dict[str, Any]
) -> tuple[int, list[StepRecord], Path]:
    """Run the steps and write the summary however they end: finished, failed step, signal,
    parent gone, or an exception between steps. Returns (exit code, records, summary file)."""
    records: list[StepRecord] = []
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
            complete_records(records, selected, earlier)
            log.warning("run interrupted (%s)", ctx.info.get("stop_reason") or "interrupt")
        out = write_summary(ctx, records, code, selected, earlier, status=status)
    return code, records, out


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the driver; exit code 0, a step's code, or 130 if interrupted."""
    args = build_parser().parse_args(argv)
    install_secret_masking()
    stop_reasons.clear()
    gone, watch = watch_launcher(args.root, args.dataset)
    if gone:
        return EXIT_INTERRUPTED
    try:
        # SIGTERM (pod shutdown, runpod_main forwarding) and SIGHUP (closed terminal) unwind like
        # Ctrl-C; a SIGHUP ignored at start (`nohup`) stays ignored.
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(interrupt_on_signals())
            except KeyboardInterrupt:  # a Ctrl-C runpod_main's driver held while it started
                print("interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
            dataset = args.dataset or os.environ.get("DATASET_NAME", "").strip()
            # Usage errors first: they are one line and leave no log file.
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


def run_as_script(argv: list[str] | None = None) -> NoReturn:
    """``python runpod_train.py``: :func:`main`, then exit with the lock released last.

    A SIGINT, SIGTERM or SIGHUP after the run's own handlers are gone (the summary is written,
    the interpreter winds down) is recorded, not fatal: the exit code is then 130, as the README
    documents for an interrupt, never the shell's 129. The run lock is released after the exit
    functions ran, right before ``os._exit``.
    """
    global release_at_exit
    release_at_exit = []
    exit_releasing_last(lambda: main(argv), release_at_exit)


if __name__ == "__main__":
    run_as_script()
