"""One command for a whole run: preflight checks, then the eight-step driver ``runpod_train.py``.

    python runpod_main.py --dataset SYNTH-BTC-EUR_1H_20240101-20251231 --preset demo --no-push

1. Preflight: disk, memory, GPU, git remote (only when pushing), dataset, dependencies, write
   access, run lock; one table row each (check, found, required, pass/warn/fail). Any ``fail``
   stops here with exit code 2, before anything is trained.
2. ``runpod_train.py`` runs as a subprocess with ``DATASET_NAME``, ``RESUME_TRAINING`` and
   ``RUNPOD_PUSH_TO_GITHUB`` set and every user path made absolute; its output is streamed line
   by line to the console and to ``logs/run_{dataset}_{timestamp}.log`` (progress bars redraw in
   place on a terminal; elsewhere the driver logs a progress line with ETA instead). Ctrl-C,
   SIGTERM and SIGHUP (a closed terminal) are forwarded to it (it writes a checkpoint and stops
   with 130; rerun with ``--resume``); if this process dies (``kill -9``) the driver notices and
   stops the same way. The exit code is the driver's.

Several datasets (``--dataset A --dataset B`` or ``--dataset A,B``): one preflight (the
machine once, each dataset's file and run lock; a dataset that fails its rows is skipped, the others
run), then the driver for each dataset in turn with its own run log, going on when one fails. At the
end a cross-dataset table (console, ``results/multi_run_summary.json`` and ``.png``) read from the
reports of steps 5 and 7, one push of every good dataset in one commit (the drivers skip step 8),
and exit code 1 with one line naming the datasets that failed (see :mod:`pipeline.run.multi_run`).

Secrets never reach the log: the value of ``GITHUB_TOKEN`` (and of any variable named like a
token, secret or password) is masked in every log record and every streamed line, and the
environment is never logged.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from pipeline.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PREFLIGHT,
    EXIT_PUSH,
    PROJECT_ROOT,
    CliParser,
    Paths,
    PipelineError,
    run_cli,
    setup_logging,
)
from pipeline.config.files import add_config_args, config_from_args, passthrough_args
from pipeline.config.schema import Config
from pipeline.run.driver_output import stream_driver
from pipeline.run.entry import (
    check_root_writable,
    driver_env,
    preflight_error_line,
    push_enabled,
    record_run_log,
    report_locations,
)
from pipeline.run.lock import absolute_dataset
from pipeline.run.multi_run import (
    PUSH_DEFERRED_ENV,
    MultiRun,
    failed_line,
    format_multi_table,
    plot_multi_summary,
    push_run,
    split_datasets,
    write_multi_summary,
)
from pipeline.run.preflight import (
    CheckResult,
    failed,
    format_checks,
    install_secret_masking,
    mask_secrets,
    run_preflight,
    run_preflight_many,
    secret_values,
)
from pipeline.run.process import interrupt_on_signals
from pipeline.store.artifacts import Artifacts, dataset_name, log_stamp

log = logging.getLogger("runpod_main")
child_log = logging.getLogger("runpod_main.child")
"""The driver's lines (:func:`pipeline.run.driver_output.stream_driver` logs them here), passed
through to the console and the run log by :func:`setup_run_logging`."""

DRIVER = PROJECT_ROOT / "runpod_train.py"


def build_parser() -> argparse.ArgumentParser:
    """The entry point's command line (``--help`` explains each flag)."""
    # CliParser: usage errors exit 1 (bad input); 2 means "preflight failed".
    p = CliParser(
        prog="runpod_main.py",
        description="Check the machine and the dataset (preflight), then train the classifiers "
        "and the PPO agent and push the artifacts (runpod_train.py, 8 steps). Exit codes: 0 ok, "
        "1 bad input (also usage errors) or a step failed, 2 preflight failed, 3 push failed "
        "(artifacts kept locally), 130 interrupted (rerun with --resume to continue from the "
        "checkpoint the step kept, if any).",
    )
    p.add_argument(
        "--dataset",
        required=True,
        action=_DatasetsAction,
        help="dataset name (datasets/NAME.csv under the artifact root) or a path to a CSV file; "
        "repeat it or give a comma list to run several datasets in turn (one preflight, one "
        "push, a cross-dataset table at the end)",
    )
    p.set_defaults(datasets=None)
    p.add_argument("--verbose", action="store_true", help="debug logging (console and log file)")
    p.add_argument(
        "--skip-validation",
        action="store_true",
        help="skip the preflight checks (disk, memory, GPU, network, dataset, packages, write "
        "access) and start training at once",
    )
    p.add_argument(
        "--no-push",
        action="store_true",
        help="do not commit and push the artifacts at the end (step 8 is skipped; the network "
        "check is not run). Without it the run pushes unless RUNPOD_PUSH_TO_GITHUB=false",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoints of an interrupted run instead of starting over",
    )
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="artifact root holding datasets/, models/, results/, logs/, ... "
        "(default: $PIPELINE_HOME or the project folder)",
    )
    add_config_args(p)
    return p


class _DatasetsAction(argparse.Action):
    """``--dataset`` may repeat and take a comma list: ``args.datasets`` gets them all,
    in order and without repeats; ``args.dataset`` stays the first (the one-dataset run)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        given = split_datasets([*(getattr(namespace, "datasets", None) or []), str(values)])
        if not given:
            parser.error(f"argument --dataset: {values!r} names no dataset")
        namespace.datasets = given
        namespace.dataset = given[0]


def setup_run_logging(paths: Paths, dataset: str, verbose: bool) -> Path | None:
    """Console + the run log (:meth:`Artifacts.run_log`); the driver's lines go to both verbatim.

    Returns the log file, or ``None`` when the logs folder cannot be written (the preflight's
    write-access row then says why).
    """
    log_file: Path | None = Artifacts(paths, dataset).run_log(log_stamp())
    try:
        paths.logs.mkdir(parents=True, exist_ok=True)
        setup_logging(verbose, log_file)
    except OSError:
        log_file = None
        setup_logging(verbose)
    # The driver's output already carries its own timestamps and levels: pass lines through.
    plain = logging.Formatter("%(message)s")
    for handler in child_log.handlers:
        handler.close()  # the previous dataset's log file, in a run over several datasets
    child_log.handlers.clear()
    child_log.propagate = False
    child_log.setLevel(logging.DEBUG)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(plain)
    child_log.addHandler(console)
    if log_file is not None:
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(plain)
        child_log.addHandler(to_file)
    return log_file


def resolve_user_paths(args: argparse.Namespace) -> None:
    """Make every path the user gave absolute, once, against the user's working directory.

    The driver runs with the project as its working directory, so a relative ``--dataset``,
    ``--training-config``, ``--ppo-config`` or ``--root`` would name another file there. A
    dataset *name* (found in the root's ``datasets/``) stays a name.
    """
    if args.root is not None:
        args.root = Path(args.root).expanduser().resolve()
    args.training_config = Path(args.training_config).expanduser().resolve()
    args.ppo_config = Path(args.ppo_config).expanduser().resolve()
    args.dataset = absolute_dataset(args.dataset, Paths.from_root(args.root).datasets)


def driver_command(args: argparse.Namespace, paths: Paths) -> list[str]:
    """``python runpod_train.py --dataset D --root ROOT --no-log-file [config args] [--verbose]``.

    The dataset travels as a flag too (not only ``DATASET_NAME``), already absolute when it is a
    path.
    """
    cmd = [sys.executable, str(DRIVER), "--dataset", str(args.dataset)]
    cmd += ["--root", str(paths.root), "--no-log-file"]
    cmd += passthrough_args(args)
    if args.verbose:
        cmd.append("--verbose")
    return cmd


def run(args: argparse.Namespace) -> int:
    """Preflight, then the driver; returns the exit code."""
    resolve_user_paths(args)
    paths = Paths.from_root(args.root)
    dataset = dataset_name(args.dataset)
    # The config first: a usage error (--preset nonexist, --set bad=1) is one line and leaves
    # no log file behind.
    cfg = config_from_args(args)
    secrets = secret_values()
    install_secret_masking(secrets)
    log_file = setup_run_logging(paths, dataset, args.verbose)
    if log_file is not None:
        log.info("log file: %s", log_file)
    push = push_enabled(args.no_push)

    if args.skip_validation:
        log.warning("preflight checks skipped (--skip-validation)")
        check_root_writable(paths)
    else:
        rows = run_preflight(cfg, args.dataset, paths, push)
        bad = failed(rows)
        table = format_checks(rows)
        if bad:
            log.error("preflight failed:\n%s", table)
            print(preflight_error_line(bad, secrets), file=sys.stderr)
            return EXIT_PREFLIGHT
        log.info("preflight:\n%s", table)

    return run_driver(args, paths, log_file, push, secrets)


def run_driver(
    args: argparse.Namespace,
    paths: Paths,
    log_file: Path | None,
    push: bool,
    secrets: Sequence[str],
    deferred_push: bool = False,
) -> int:
    """Run the driver on ``args.dataset`` and report where things are; returns its exit code.

    ``deferred_push``: a run over several datasets pushes them all once at the end, so the
    driver skips step 8 and says why.
    """
    dataset = dataset_name(args.dataset)
    if log_file is not None:
        # After the preflight (which checks that no other run holds the dataset's lock), so two
        # runs do not rewrite the manifest at once.
        record_run_log(paths, dataset, log_file)
    cmd = driver_command(args, paths)
    log.info(
        "starting %s (dataset %s, resume %s, push %s)",
        DRIVER.name,
        args.dataset,
        args.resume,
        "at the end, all datasets in one commit" if deferred_push else push,
    )
    env = driver_env(args.dataset, args.resume, push and not deferred_push, log_file=log_file)
    if deferred_push:
        env[PUSH_DEFERRED_ENV] = "true"
    code = stream_driver(cmd, env, secrets)
    report_locations(paths, dataset, log_file, code)
    return code


# ---------------------------------------------------------------- several datasets


def resolve_datasets(args: argparse.Namespace, paths: Paths) -> list[str]:
    """Every ``--dataset`` made absolute like the one of a one-dataset run; two that share an
    artifact name are refused (their artifacts would overwrite each other)."""
    datasets = split_datasets(absolute_dataset(d, paths.datasets) for d in args.datasets)
    seen: dict[str, str] = {}
    for d in datasets:
        name = dataset_name(d)
        if name in seen:
            raise PipelineError(
                f"--dataset {seen[name]} and --dataset {d} have the same artifact name {name!r}: "
                "their models and reports would overwrite each other; rename one file"
            )
        seen[name] = d
    return datasets


def preflight_many(
    cfg: Config, multi: MultiRun, paths: Paths, push: bool, secrets: Sequence[str]
) -> bool:
    """One preflight over every dataset; False when the run must stop (a machine row failed, or
    every dataset did). A dataset whose own rows fail is marked failed and skipped."""
    machine, per_dataset = run_preflight_many(cfg, multi.datasets, paths, push)
    rows: list[CheckResult] = [*machine, *(r for d in multi.datasets for r in per_dataset[d])]
    table = format_checks(rows)
    bad = {d: failed(per_dataset[d]) for d in multi.datasets if failed(per_dataset[d])}
    if failed(machine) or len(bad) == len(multi.datasets):
        log.error("preflight failed:\n%s", table)
        print(preflight_error_line(failed(rows), secrets), file=sys.stderr)
        return False
    (log.warning if bad else log.info)("preflight:\n%s", table)
    for dataset, rows_bad in bad.items():
        outcome = multi.outcome(dataset)
        outcome.code = EXIT_PREFLIGHT
        outcome.reason = mask_secrets(
            "preflight: " + "; ".join(f"{r.check}: {r.found}" for r in rows_bad), secrets
        )
        log.warning("%s is skipped: %s", outcome.name, outcome.reason)
    return True


def push_all(
    cfg: Config, paths: Paths, multi: MultiRun, rows: list[dict[str, object]], extra: list[Path]
) -> int:
    """The one push of every good dataset (:func:`pipeline.run.multi_run.push_run`); returns 0, or 3
    (push failed) after one error line."""
    good = [d for d in multi.datasets if multi.outcome(d).ok]
    try:
        result = push_run(cfg, paths, good, rows, extra)
    except PipelineError as exc:
        print(f"error: push of {len(good)} datasets failed: {exc}", file=sys.stderr)
        return EXIT_PUSH
    train_cfg = cfg.training
    log.info(
        "pushed %d datasets in one commit %s -> %s/%s (%d files)",
        len(good),
        result.commit[:12],
        train_cfg.git_remote,
        train_cfg.git_branch,
        len(result.files),
    )
    return EXIT_OK


def run_many(args: argparse.Namespace) -> int:
    """Several datasets: one preflight, the driver for each in turn (going on when one fails),
    the cross-dataset table, one push; returns the exit code."""
    resolve_user_paths(args)
    paths = Paths.from_root(args.root)
    multi = MultiRun(resolve_datasets(args, paths))
    cfg = config_from_args(args)  # before the log file: a usage error leaves none
    secrets = secret_values()
    install_secret_masking(secrets)
    log_file = setup_run_logging(paths, multi.datasets[0], args.verbose)
    push = push_enabled(args.no_push)
    log.info(
        "%d datasets: %s", len(multi.datasets), ", ".join(dataset_name(d) for d in multi.datasets)
    )
    if args.skip_validation:
        log.warning("preflight checks skipped (--skip-validation)")
        check_root_writable(paths)
    elif not preflight_many(cfg, multi, paths, push, secrets):
        return EXIT_PREFLIGHT
    interrupted = False
    for i, dataset in enumerate(multi.datasets):
        outcome = multi.outcome(dataset)
        if outcome.code is not None or interrupted:
            continue
        if i > 0:
            log_file = setup_run_logging(paths, dataset, args.verbose)
        log.info("dataset %d of %d: %s", i + 1, len(multi.datasets), outcome.name)
        one = argparse.Namespace(**{**vars(args), "dataset": dataset})
        outcome.log_file = log_file
        outcome.started = datetime.now(timezone.utc)
        outcome.code = run_driver(one, paths, log_file, push, secrets, deferred_push=push)
        interrupted = outcome.code == EXIT_INTERRUPTED
    for dataset in multi.datasets:
        if multi.outcome(dataset).code is None:
            multi.outcome(dataset).reason = "not run: the run was interrupted"
    rows = multi.rows(paths)
    table = format_multi_table(rows)
    summary = write_multi_summary(paths, rows, multi.started, push)
    plot = plot_multi_summary(paths, rows)
    log.info("datasets (test block):\n%s\ntable: %s, %s", table, summary, plot)
    if interrupted:
        return EXIT_INTERRUPTED
    code = EXIT_OK
    if push and any(r["status"] == "ok" for r in rows):
        code = push_all(cfg, paths, multi, rows, [summary, plot])
    line = failed_line(rows)
    if line is not None:
        print(mask_secrets(f"error: {line}", secrets), file=sys.stderr)
        return EXIT_ERROR
    return code


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run; exit code 0, 1 (bad input / step failed / a dataset of several
    failed), 2 (preflight), 3 (push), 130 (interrupted)."""
    args = build_parser().parse_args(argv)
    # SIGTERM and SIGHUP outside the driver's run (the preflight, the last lines after it) stop
    # like Ctrl-C with 130, never with the shell's 129 or 143; while the
    # driver runs, stream_driver forwards them instead.
    with interrupt_on_signals():
        if len(args.datasets or []) > 1:
            return run_cli(lambda: run_many(args))
        return run_cli(lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
