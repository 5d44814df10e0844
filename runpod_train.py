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
``BacktestReport``; step 8: ``pipeline.git_push.push_artifacts`` -> ``PushResult``), so an edit
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
import contextlib
import importlib
import importlib.metadata
import io
import json
import logging
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from pipeline.artifacts import dataset_name
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
from pipeline.config import Config, add_config_args, config_from_args, passthrough_args
from pipeline.preflight import (
    CPU_SLOWDOWN,
    DEPENDENCIES,
    format_table,
    install_secret_masking,
    mask_secrets,
    missing_modules,
    secret_values,
)
from pipeline.runlock import RunLock, absolute_dataset, lock_path

if TYPE_CHECKING:
    from ppo_approach.train_ppo_agent import BacktestReport
    from train_models import TrainingSummary

log = logging.getLogger("runpod_train")

STEP_NAMES: dict[int, str] = {
    1: "paths and environment",
    2: "dependencies",
    3: "GPU",
    4: "dataset",
    5: "train classifiers",
    6: "validate models",
    7: "train PPO agent",
    8: "push",
}
ALL_STEPS: tuple[int, ...] = tuple(STEP_NAMES)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class StepFailed(PipelineError):
    """A step failed; the message is the one-line reason, ``exit_code`` the step's code."""


# ---------------------------------------------------------------- run context


@dataclass
class StepOutcome:
    """What a step reports: ``ok`` / ``warn`` / ``skipped``, a key-result line and details."""

    status: str = "ok"
    result: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepRecord:
    """One row of the run summary."""

    number: int
    name: str
    status: str  # ok | warn | skipped | failed | interrupted | not run | (earlier run)
    seconds: float | None = None
    result: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    earlier: bool = False
    earlier_config_hash: str | None = None  # the config of the run a carried-over row is from
    earlier_started: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        out = {
            "number": self.number,
            "name": self.name,
            "status": self.status,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "result": self.result,
            "details": self.details,
            "earlier_run": self.earlier,
        }
        if self.earlier:
            out["earlier_config_hash"] = self.earlier_config_hash
            out["earlier_started"] = self.earlier_started
        return out


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


def config_overrides(cfg: Config) -> dict[str, str]:
    """Keys set by ``--preset`` or ``--set`` (not by the config files) and where from."""
    return {k: v for k, v in cfg.sources.items() if v.startswith("preset ") or v == "--set"}


def describe_overrides(overrides: dict[str, str]) -> str:
    """``preset smoke: 26 values; --set: training.epochs`` (or ``config files only``)."""
    by_source: dict[str, list[str]] = {}
    for key, source in overrides.items():
        by_source.setdefault(source, []).append(key)
    parts = []
    for source, keys in by_source.items():
        if source == "--set":
            parts.append(f"--set: {', '.join(keys)}")
        else:
            parts.append(f"{source}: {len(keys)} values")
    return "; ".join(parts) or "config files only"


# ---------------------------------------------------------------- console streams


class _StreamWrapper(io.TextIOBase):
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


# ---------------------------------------------------------------- small helpers


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fmt_f1(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def _fmt_pct(value: Any) -> str:
    return f"{value:+.2%}" if isinstance(value, (int, float)) else "n/a"


def _fmt_num(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "n/a"


def classifier_line(summary: dict[str, Any]) -> str:
    """``dlstm test F1 0.412 vs majority 0.167; ...`` (failed models say why).

    A model's ``headline`` (written by train_models from the same block as its summary table)
    is used as is when present, so the step line and the table never quote different blocks
    (issue 8 item 28).
    """
    parts = []
    for name, m in (summary.get("models") or {}).items():
        if not isinstance(m, dict):
            continue
        if m.get("status") not in (None, "trained", "ok", "skipped", "reused", "up to date"):
            parts.append(f"{name} {m.get('status')}: {m.get('reason') or ''}".strip())
            continue
        headline = m.get("headline")
        if isinstance(headline, str) and headline.strip():
            text = " ".join(headline.split())
            parts.append(text if text.startswith(f"{name} ") else f"{name} {text}")
            continue
        parts.append(
            f"{name} test F1 {_fmt_f1(m.get('test_macro_f1'))} vs majority "
            f"{_fmt_f1(m.get('majority_test_macro_f1'))}"
        )
    return "; ".join(parts) or "no models in the training summary"


def agent_results(report: BacktestReport) -> dict[str, Any]:
    """Agent vs buy-and-hold on the test block, from step 7's report."""
    strategies = report["strategies"]
    agent = strategies.get("agent") or {}
    bh = strategies.get("buy_and_hold") or {}
    return {
        "model": report["model"],
        "prediction_source": report["prediction_source"],
        "agent_total_return": agent.get("total_return"),
        "agent_sharpe": agent.get("sharpe"),
        "buy_and_hold_total_return": bh.get("total_return"),
        "buy_and_hold_sharpe": bh.get("sharpe"),
        "in_sample_predictions": bool(report["in_sample_predictions"]),
    }


def agent_line(a: dict[str, Any]) -> str:
    """``agent return +1.20% Sharpe 0.50 vs buy-and-hold ...`` (test block).

    A run whose agent saw in-sample classifier predictions says so: those inputs are better than
    anything available live, so the return would look too good for the wrong reason.
    """
    line = (
        f"agent return {_fmt_pct(a.get('agent_total_return'))} Sharpe "
        f"{_fmt_num(a.get('agent_sharpe'))} vs buy-and-hold "
        f"{_fmt_pct(a.get('buy_and_hold_total_return'))} Sharpe "
        f"{_fmt_num(a.get('buy_and_hold_sharpe'))} (test block)"
    )
    return line + (" [IN-SAMPLE predictions]" if a.get("in_sample_predictions") else "")


def plots(paths: Paths, dataset: str) -> list[str]:
    """The PNG plots of this dataset in ``results/``."""
    if not paths.results.is_dir():
        return []
    return sorted(str(p) for p in paths.results.glob(f"*{dataset}*.png"))


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
    from pipeline.data import load_dataset

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
    return StepOutcome(result=classifier_line(summary), details=dict(summary))


def step_validate_models(ctx: RunContext) -> StepOutcome:
    """Step 6: every model the agent needs loads and predicts (prediction_wrapper)."""
    from ppo_approach.prediction_wrapper import validate_models

    # The dataset as given (a path stays a path), not its artifact name: a CSV outside
    # datasets/ must be found here as in steps 4, 5 and 7 (issue 8 item 1).
    report = validate_models(ctx.cfg, ctx.dataset, ctx.paths)
    return StepOutcome(
        result=validation_line(report), details=json.loads(json.dumps(report, default=str))
    )


def validation_line(report: dict[str, Any]) -> str:
    """``dlstm (+2 walk-forward models) ok; prediction table 1,745 rows`` from step 6's report."""
    parts = []
    for name, d in report.items():
        if name == "table" or not isinstance(d, dict):
            continue
        wf = d.get("walk_forward_models")
        parts.append(f"{name} (+{wf} walk-forward models)" if wf else name)
    text = (", ".join(parts) or "no models") + " load and predict"
    table = report.get("table")
    if isinstance(table, dict) and isinstance(table.get("rows"), int):
        text += f"; prediction table {table['rows']:,} rows"
        if table.get("in_sample_rows"):
            text += f" ({table['in_sample_rows']:,} in-sample)"
    return text


def step_train_ppo(ctx: RunContext) -> StepOutcome:
    """Step 7: ``train_ppo_agent.train_agent`` (``--resume`` continues a checkpoint), backtest."""
    from ppo_approach import train_ppo_agent

    report = train_ppo_agent.train_agent(ctx.cfg, ctx.dataset, ctx.paths, ctx.resume)
    ctx.agent = report
    agent = agent_results(report)
    ctx.info["agent"] = agent
    return StepOutcome(result=agent_line(agent), details=agent)


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
    from pipeline.git_push import PushConfig, push_artifacts

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
    return paths.results / f"run_summary_{dataset}.json"


_NOT_CARRIED = {"not run", "not selected", "pending", "in progress"}
"""Row statuses of an earlier summary that are no result and are not carried over."""


def _earlier_records(earlier: dict[str, Any]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for s in earlier.get("steps") or []:
        if isinstance(s, dict) and isinstance(s.get("number"), int):
            out[s["number"]] = s
    return out


def carried_record(n: int, earlier: dict[str, Any]) -> StepRecord:
    """Step ``n`` (not selected now) as the earlier summary on disk recorded it, marked so.

    The row keeps the config hash and start time of the run it came from (a row that earlier
    run itself carried over keeps its own origin), so a summary never passes an older run's
    result off as this invocation's (issue 8 item 27).
    """
    prev = _earlier_records(earlier).get(n)
    if prev is None or prev.get("status") in _NOT_CARRIED:
        return StepRecord(n, STEP_NAMES[n], "not selected")
    origin_hash = earlier.get("config_hash") if not prev.get("earlier_run") else None
    origin_started = earlier.get("started") if not prev.get("earlier_run") else None
    return StepRecord(
        n,
        STEP_NAMES[n],
        str(prev.get("status")),
        prev.get("seconds"),
        str(prev.get("result") or ""),
        prev.get("details") or {},
        earlier=True,
        earlier_config_hash=prev.get("earlier_config_hash") or origin_hash,
        earlier_started=prev.get("earlier_started") or origin_started,
    )


def format_summary(records: Sequence[StepRecord], config_hash: str | None = None) -> str:
    """The end-of-run table: step, status, time, key result.

    A carried-over row says ``(earlier run)``, and also ``other config`` when it came from a run
    with a different config hash than ``config_hash``.
    """
    rows = []
    for r in records:
        secs = "" if r.seconds is None else f"{r.seconds:.1f} s"
        status = r.status
        if r.earlier:
            other = (
                config_hash is not None
                and r.earlier_config_hash is not None
                and r.earlier_config_hash != config_hash
            )
            status += (
                f" (earlier run, config {r.earlier_config_hash})" if other else " (earlier run)"
            )
        rows.append((f"{r.number} {r.name}", status, secs, r.result))
    return format_table(("step", "status", "time", "key result"), rows)


def _mask_payload(obj: Any, secrets: Sequence[str]) -> Any:
    """Every string in a JSON-able structure with secrets (tokens, URL passwords) masked."""
    if isinstance(obj, str):
        return mask_secrets(obj, secrets)
    if isinstance(obj, dict):
        return {k: _mask_payload(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_mask_payload(v, secrets) for v in obj]
    if isinstance(obj, Path):
        return mask_secrets(str(obj), secrets)
    return obj


def _run_status(exit_code: int | None) -> str:
    if exit_code is None:
        return "running"
    if exit_code == EXIT_OK:
        return "ok"
    if exit_code == EXIT_INTERRUPTED:
        return "interrupted"
    return "failed"


def carried_over(
    ctx: RunContext, records: Sequence[StepRecord], earlier: dict[str, Any]
) -> dict[str, Any] | None:
    """Which earlier results this summary repeats, from which run and config (issue 8 item 27).

    ``None`` when every row is this invocation's. The classifier and agent numbers of carried
    steps 5 and 7 are the earlier summary's (its own or those it carried itself), never the
    reports now on disk, which a later partial run may have rewritten.
    """
    carried = [r for r in records if r.earlier]
    if not carried:
        return None
    prev_carry = (
        earlier.get("carried_over") if isinstance(earlier.get("carried_over"), dict) else {}
    )
    numbers = {r.number for r in carried}

    def earlier_value(key: str, step: int) -> Any:
        if step not in numbers:
            return None
        value = earlier.get(key)
        return value if value is not None else (prev_carry or {}).get(key)

    hashes = sorted({r.earlier_config_hash for r in carried if r.earlier_config_hash})
    return {
        "steps": sorted(numbers),
        "config_hashes": hashes,
        "same_config": hashes == [ctx.cfg.hash()],
        "from_run_started": sorted({r.earlier_started for r in carried if r.earlier_started}),
        "classifiers": earlier_value("classifiers", 5),
        "agent": earlier_value("agent", 7),
    }


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
        "status": status or _run_status(exit_code),
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
        "carried_over": carried_over(ctx, records, earlier or {}),
        "push": ctx.info.get("push"),
        "plots": plots(ctx.paths, ctx.name),
    }
    masked = _mask_payload(payload, secret_values())
    return atomic_write_json(summary_path(ctx.paths, ctx.name), masked)


PUSH_WAIT_S = 10.0
"""How long step 8 waits for the entry point to have written the pre-push lines to its log."""


def _wait_for_log(marker: str, timeout_s: float = PUSH_WAIT_S) -> bool:
    """Wait until the entry point's log file (``PIPELINE_RUN_LOG``) holds ``marker``.

    The entry point writes our output into its log as it reads the pipe; the push must not
    commit the file before the final lines are in it (issue 8 item 25). True when seen (or no
    such log), False after the timeout.
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
    if not _wait_for_log(marker):
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


_stop_reason: list[str] = []
"""Why the run was asked to stop (signal name, parent gone); read into the run summary."""


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM (pod shutdown, runpod_main forwarding) and SIGHUP (closed terminal) unwind like
    # Ctrl-C: finally blocks release the lock, and a step in a training loop checkpoints on
    # KeyboardInterrupt.
    if not _stop_reason:
        _stop_reason.append(signal.Signals(signum).name)
    raise KeyboardInterrupt(f"signal {signum}")


PARENT_POLL_S = 1.0


def detach_console(log_file: Path | None) -> None:
    """The console (our parent's pipe) is gone: send the rest of our output to ``log_file``.

    File descriptors 1 and 2 are pointed at ``/dev/null`` first, so no write (a ``print``, a
    progress bar, C code) fails with a broken pipe half-way through a checkpoint; then
    ``sys.stdout``/``sys.stderr`` and the logging handlers that wrote to them copy everything,
    secrets masked, into ``log_file`` (issue 8 item 5), so the stop is still on record.
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
    sys.stdout = _TeeStream(old_out, fh, secrets)
    sys.stderr = _TeeStream(old_err, fh, secrets)
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
    ``runpod_main.py`` would leave us training on as an orphan nobody sees, whose results no
    summary reports (issue 8 item 5). Polling ``os.getppid()`` (re-parented to init or a
    subreaper when the parent dies) is used rather than ``prctl(PR_SET_PDEATHSIG)``: it works
    on every POSIX system, needs no ``preexec_fn`` (unsafe with threads), and PDEATHSIG fires when
    the parent *thread* that forked exits, not the process. A second of latency is harmless
    next to a checkpoint. Returns an event that stops the watch when set.
    """
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            if getppid() != expected_ppid:
                if not _stop_reason:
                    _stop_reason.append(f"parent process (pid {expected_ppid}) exited")
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


def _parent_to_watch() -> int | None:
    """The entry point's pid when it launched us (``PIPELINE_PARENT_PID`` is our parent)."""
    raw = os.environ.get("PIPELINE_PARENT_PID", "").strip()
    if not raw.isdigit():
        return None
    pid = int(raw)
    return pid if pid == os.getppid() else None


class _TeeStream(_StreamWrapper):
    """A console stream that also appends every write (secrets masked) to a log file."""

    def __init__(self, stream: Any, log_file: Any, secrets: Sequence[str]) -> None:
        super().__init__(stream)
        self._file = log_file
        self._secrets = list(secrets)

    def write(self, s: str) -> int:  # type: ignore[override]
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
        sys.stdout = _TeeStream(old_out, fh, secrets)
        sys.stderr = _TeeStream(old_err, fh, secrets)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = old_out, old_err


def run_context(args: argparse.Namespace) -> RunContext:
    """Resolve dataset, paths, config and the push/resume/install flags from args and env."""
    dataset = args.dataset or os.environ.get("DATASET_NAME", "").strip()
    if not dataset:
        raise PipelineError("no dataset: pass --dataset NAME or set DATASET_NAME")
    cfg = config_from_args(args)
    push_env = os.environ.get("RUNPOD_PUSH_TO_GITHUB", "").strip().lower()
    if args.no_push:
        push, reason = False, "--no-push"
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


def drive(args: argparse.Namespace) -> int:
    """Resolve the run's settings, take the lock, run the steps and write the summary.

    The summary is written when the run starts (status ``running``, so a run killed outright
    never leaves the previous run's summary standing as its own) and again on every way out:
    finished, failed step, signal, parent gone, or an exception between steps (issue 8 item 5).
    """
    selected = parse_steps(args.steps, args.from_step)
    ctx = run_context(args)
    lock = _acquire(RunLock(lock_path(ctx.paths, ctx.name)))
    try:
        if lock.took_over is not None:
            log.warning("took over a stale lock of %s", lock.took_over.describe())
        earlier = _read_json(summary_path(ctx.paths, ctx.name)) or {}
        ctx.earlier = earlier
        records: list[StepRecord] = []
        planned = [
            carried_record(n, earlier)
            if n not in selected
            else StepRecord(n, STEP_NAMES[n], "pending")
            for n in ALL_STEPS
        ]
        write_summary(ctx, planned, None, selected, earlier)
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
            if _stop_reason and ctx.info.get("stop_reason") is None:
                ctx.info["stop_reason"] = _stop_reason[0]
            if status is not None:
                _complete_records(records, selected, earlier)
                log.warning("run interrupted (%s)", ctx.info.get("stop_reason") or "interrupt")
            out = write_summary(ctx, records, code, selected, earlier, status=status)
    finally:
        lock.release()
    log.info("run summary (%s):\n%s", out, format_summary(records, ctx.cfg.hash()))
    found = plots(ctx.paths, ctx.name)
    if found:
        log.info("plots: %s", ", ".join(found))
    return code


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the driver; exit code 0, a step's code, or 130 if interrupted."""
    args = build_parser().parse_args(argv)
    install_secret_masking()
    _stop_reason.clear()
    # A SIGHUP ignored at start (`nohup runpod_train.py ...`) stays ignored: the user asked for
    # the run to outlive the terminal.
    handled = [signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        handled.append(signal.SIGHUP)
    previous = {s: signal.signal(s, _raise_interrupt) for s in handled}
    parent = _parent_to_watch()
    watch = None
    if parent is not None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name = dataset_name(args.dataset or os.environ.get("DATASET_NAME", "").strip() or "run")
        orphan_log = Paths.from_root(args.root).logs / f"train_{name}_{stamp}_parent_gone.log"
        watch = watch_parent(parent, log_file=orphan_log)
    try:
        with contextlib.ExitStack() as stack:
            dataset = args.dataset or os.environ.get("DATASET_NAME", "").strip()
            log_file = None
            if not args.no_log_file and dataset:
                stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
                logs = Paths.from_root(args.root).logs
                log_file = logs / f"train_{dataset_name(dataset)}_{stamp}.log"
                try:
                    stack.enter_context(console_to_file(log_file))
                except OSError as exc:
                    print(f"warning: no log file ({exc}); console only", file=sys.stderr)
                    log_file = None
            setup_logging(args.verbose)
            if log_file is not None:
                log.info("log file: %s", log_file)
            return run_cli(lambda: drive(args))
    finally:
        if watch is not None:
            watch.set()
        for s, h in previous.items():
            signal.signal(s, h)


if __name__ == "__main__":
    raise SystemExit(main())
