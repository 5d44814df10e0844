"""One command for a whole run: preflight checks, then the eight-step driver ``runpod_train.py``.

    python runpod_main.py --dataset SYNTH-BTC-EUR_1H_20240101-20251231 --preset demo --no-push

1. Preflight: disk, memory, GPU, git remote (only when pushing), dataset, dependencies, write
   access, run lock; one table row each (check, found, required, pass/warn/fail). Any ``fail``
   stops here with exit code 2, before anything is trained.
2. ``runpod_train.py`` runs as a subprocess with ``DATASET_NAME``, ``RESUME_TRAINING`` and
   ``RUNPOD_PUSH_TO_GITHUB`` set; its output is streamed line by line to the console and to
   ``logs/run_{dataset}_{timestamp}.log``. Ctrl-C / SIGTERM are forwarded to it (it writes a
   checkpoint and stops with 130; rerun with ``--resume``). The exit code is the driver's.

Secrets never reach the log: the value of ``GITHUB_TOKEN`` (and of any variable named like a
token, secret or password) is masked in every log record and every streamed line, and the
environment is never logged.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType

from pipeline.common import (
    EXIT_INTERRUPTED,
    EXIT_PREFLIGHT,
    EXIT_PUSH,
    PROJECT_ROOT,
    Paths,
    run_cli,
    setup_logging,
)
from pipeline.config import add_config_args, config_from_args, passthrough_args
from pipeline.preflight import (
    failed,
    format_checks,
    install_secret_masking,
    mask_secrets,
    run_preflight,
    secret_values,
)
from pipeline.runlock import dataset_name

log = logging.getLogger("runpod_main")
child_log = logging.getLogger("runpod_main.child")

DRIVER = PROJECT_ROOT / "runpod_train.py"
_FALSE = {"0", "false", "no", "off"}


def build_parser() -> argparse.ArgumentParser:
    """The entry point's command line (``--help`` explains each flag)."""
    p = argparse.ArgumentParser(
        prog="runpod_main.py",
        description="Check the machine and the dataset (preflight), then train the classifiers "
        "and the PPO agent and push the artifacts (runpod_train.py, 8 steps). Exit codes: 0 ok, "
        "1 a step failed, 2 preflight failed, 3 push failed (artifacts kept locally), "
        "130 interrupted (checkpoint written; rerun with --resume).",
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="dataset name (datasets/NAME.csv under the artifact root) or a path to a CSV file",
    )
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


def push_enabled(no_push: bool) -> bool:
    """Push unless ``--no-push`` or ``RUNPOD_PUSH_TO_GITHUB`` is explicitly false."""
    if no_push:
        return False
    return os.environ.get("RUNPOD_PUSH_TO_GITHUB", "true").strip().lower() not in _FALSE


def setup_run_logging(paths: Paths, dataset: str, verbose: bool) -> Path | None:
    """Console + ``logs/run_{dataset}_{timestamp}.log``; the driver's lines go to both verbatim.

    Returns the log file, or ``None`` when the logs folder cannot be written (the preflight's
    write-access row then says why).
    """
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    log_file: Path | None = paths.logs / f"run_{dataset}_{stamp}.log"
    try:
        paths.logs.mkdir(parents=True, exist_ok=True)
        setup_logging(verbose, log_file)
    except OSError:
        log_file = None
        setup_logging(verbose)
    # The driver's output already carries its own timestamps and levels: pass lines through.
    plain = logging.Formatter("%(message)s")
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


def driver_command(args: argparse.Namespace, paths: Paths) -> list[str]:
    """``python runpod_train.py --root ROOT --no-log-file [config args] [--verbose]``."""
    cmd = [sys.executable, str(DRIVER), "--root", str(paths.root), "--no-log-file"]
    cmd += passthrough_args(args)
    if args.verbose:
        cmd.append("--verbose")
    return cmd


def driver_env(dataset: str, resume: bool, push: bool) -> dict[str, str]:
    """The driver's environment: ours plus the three settings it reads."""
    env = dict(os.environ)
    env["DATASET_NAME"] = dataset
    env["RESUME_TRAINING"] = "true" if resume else "false"
    env["RUNPOD_PUSH_TO_GITHUB"] = "true" if push else "false"
    env["PYTHONUNBUFFERED"] = "1"  # line-by-line streaming
    return env


def stream_driver(cmd: Sequence[str], env: dict[str, str], secrets: Sequence[str]) -> int:
    """Run the driver, stream its output, forward SIGINT/SIGTERM; returns its exit code.

    The child gets its own session, so a terminal Ctrl-C reaches only this process, which forwards
    it exactly once (a doubled SIGINT would cut the child's checkpoint short).
    """
    proc = subprocess.Popen(
        list(cmd),
        env=env,
        cwd=str(PROJECT_ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )

    def forward(signum: int, _frame: FrameType | None) -> None:
        if proc.poll() is None:
            log.warning(
                "%s received: asking the training process (pid %d) to checkpoint and stop",
                signal.Signals(signum).name,
                proc.pid,
            )
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            child_log.info("%s", mask_secrets(line.rstrip("\n"), secrets))
        code = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    # Killed by a signal: report it the way a shell does (128 + signal number).
    return 128 - code if code < 0 else code


def report_locations(paths: Paths, dataset: str, log_file: Path | None, code: int) -> None:
    """The last lines: where the results, models, plots and the log are."""
    summary = paths.results / f"run_summary_{dataset}.json"
    pngs = sorted(paths.results.glob(f"*{dataset}*.png")) if paths.results.is_dir() else []
    lines = [
        f"results:           {paths.results}"
        + (f" (summary: {summary.name})" if summary.exists() else ""),
        f"plots:             {paths.results}/*{dataset}*.png ({len(pngs)} files)",
        f"classifier models: {paths.models}",
        f"PPO models:        {paths.ppo_models}",
        f"log file:          {log_file if log_file is not None else '(console only)'}",
    ]
    if code == 0:
        log.info("run finished.\n%s", "\n".join(lines))
    else:
        hints = {
            EXIT_INTERRUPTED: " (checkpoint written; rerun with --resume)",
            EXIT_PUSH: " (push failed, the commit and artifacts are kept locally; retry with "
            f"`python runpod_train.py --dataset {dataset} --steps 8`)",
        }
        hint = hints.get(code, "")
        log.error("run stopped with exit code %d%s.\n%s", code, hint, "\n".join(lines))


def run(args: argparse.Namespace) -> int:
    """Preflight, then the driver; returns the exit code."""
    paths = Paths.from_root(args.root)
    dataset = dataset_name(args.dataset)
    secrets = secret_values()
    install_secret_masking(secrets)
    log_file = setup_run_logging(paths, dataset, args.verbose)
    if log_file is not None:
        log.info("log file: %s", log_file)
    cfg = config_from_args(args)
    push = push_enabled(args.no_push)

    if args.skip_validation:
        log.warning("preflight checks skipped (--skip-validation)")
    else:
        rows = run_preflight(cfg, args.dataset, paths, push)
        bad = failed(rows)
        table = format_checks(rows)
        if bad:
            log.error("preflight failed:\n%s", table)
            print(
                "error: preflight failed: "
                + "; ".join(f"{r.check}: {r.found} (required: {r.required})" for r in bad),
                file=sys.stderr,
            )
            return EXIT_PREFLIGHT
        log.info("preflight:\n%s", table)

    cmd = driver_command(args, paths)
    log.info(
        "starting %s (dataset %s, resume %s, push %s)", DRIVER.name, dataset, args.resume, push
    )
    code = stream_driver(cmd, driver_env(args.dataset, args.resume, push), secrets)
    report_locations(paths, dataset, log_file, code)
    return code


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run; exit code 0, 1 (step failed), 2 (preflight), 3 (push), 130."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
