"""Preflight checks of ``runpod_main.py``, plain-text tables and secret masking for logs.

Each check returns one :class:`CheckResult` row (check, value found, required, pass/warn/fail).
A ``fail`` stops the run before any training (exit code 2); a ``warn`` is printed and the run goes
on (no GPU; git remote unreachable while pushing is only the default: only the push step would
fail). The push row fails when ``RUNPOD_PUSH_TO_GITHUB=true`` was set explicitly. Secret masking
lives in :mod:`pipeline.secrets`, the push plumbing in :mod:`pipeline.publish.push`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from pipeline.common import Paths, PipelineError
from pipeline.config.schema import Config, TrainingConfig
from pipeline.secrets import mask_secrets, secret_values
from pipeline.tables import format_table

log = logging.getLogger(__name__)

PASS, WARN, FAIL = "pass", "warn", "fail"

GB = 1e9
"""Decimal gigabytes, as disk and RAM vendors (and ``df -H``) count them."""

DEPENDENCIES: tuple[tuple[str, str], ...] = (
    ("torch", "torch"),
    ("stable_baselines3", "stable-baselines3"),
    ("sb3_contrib", "sb3-contrib"),
    ("gymnasium", "gymnasium"),
    ("pandas", "pandas"),
    ("numpy", "numpy"),
    ("ta", "ta"),
    ("sklearn", "scikit-learn"),
    ("git", "GitPython"),
)
"""(import name, distribution name) of every package a run needs."""

CPU_SLOWDOWN = "roughly 10-50x slower"
"""What the no-GPU warning tells the user to expect (LSTM training on CPU vs a datacenter GPU)."""


@dataclass(frozen=True)
class CheckResult:
    """One row of the preflight table."""

    check: str
    found: str
    required: str
    status: str  # pass | warn | fail

    def to_dict(self) -> dict[str, str]:
        """The row as a JSON-able dict."""
        return asdict(self)


# ---------------------------------------------------------------- tables


def format_checks(results: Sequence[CheckResult]) -> str:
    """The preflight table: check, found, required, status (failures upper-cased to stand out)."""
    return format_table(
        ("check", "found", "required", "status"),
        (
            (r.check, r.found, r.required, r.status.upper() if r.status != PASS else r.status)
            for r in results
        ),
    )


# ---------------------------------------------------------------- log masking
# Built on pipeline.secrets; still here because runpod_main.py and runpod_train.py import it from
# this module; it moves to pipeline.secrets together with those imports.


def install_secret_masking(secrets: Sequence[str] | None = None) -> None:
    """Mask secrets and URL userinfo in every log record created from now on, whatever handler
    writes it.

    A record factory (not a handler filter) is used because step modules may replace the root
    handlers (``setup_logging(force=True)``); the factory survives that. The message is formatted
    eagerly and masked, and so is the traceback text of ``log.exception``.
    """
    chosen = list(secret_values() if secrets is None else secrets)
    # Installed even without secrets: URL userinfo (user:password@) is masked always.
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_masks_secrets", False):
        previous = previous._inner  # type: ignore[attr-defined]

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = str(record.msg)
        record.msg = mask_secrets(message, chosen)
        record.args = None
        if record.exc_info:
            record.exc_text = mask_secrets(
                logging.Formatter().formatException(record.exc_info), chosen
            )
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info, chosen)
        return record

    factory._masks_secrets = True  # type: ignore[attr-defined]
    factory._inner = previous  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


# ---------------------------------------------------------------- the checks


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing parent (disk usage of a folder not created yet)."""
    p = path.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_disk(paths: Paths, min_gb: float) -> CheckResult:
    """Free disk space where the artifacts go."""
    where = _existing_ancestor(paths.root)
    free = shutil.disk_usage(where).free / GB
    status = PASS if free >= min_gb else FAIL
    return CheckResult("disk", f"{free:.1f} GB free at {where}", f">= {min_gb:g} GB", status)


def check_memory(min_gb: float) -> CheckResult:
    """Total RAM (available shown too: other processes can hold part of it)."""
    vm = psutil.virtual_memory()
    total, avail = vm.total / GB, vm.available / GB
    status = PASS if total >= min_gb else FAIL
    found = f"{total:.1f} GB total, {avail:.1f} GB available"
    return CheckResult("memory", found, f">= {min_gb:g} GB", status)


def check_gpu() -> CheckResult:
    """CUDA GPU via ``torch.cuda``; none is a warning with the expected slowdown."""
    try:
        import torch
    except ImportError:
        return CheckResult("gpu", "torch not importable", "CUDA GPU (optional)", WARN)
    if not torch.cuda.is_available():
        return CheckResult(
            "gpu",
            f"no CUDA GPU: training runs on CPU, {CPU_SLOWDOWN}",
            "CUDA GPU (optional)",
            WARN,
        )
    props = torch.cuda.get_device_properties(0)
    count = torch.cuda.device_count()
    found = f"{props.name}, {props.total_memory / GB:.1f} GB" + (
        f" (+{count - 1} more)" if count > 1 else ""
    )
    return CheckResult("gpu", found, "CUDA GPU (optional)", PASS)


PUSH_ENV = "RUNPOD_PUSH_TO_GITHUB"
_TRUE = {"1", "true", "yes", "on"}


def push_explicitly_requested(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``RUNPOD_PUSH_TO_GITHUB`` is set to true (not merely the default of pushing)."""
    env = os.environ if environ is None else environ
    return env.get(PUSH_ENV, "").strip().lower() in _TRUE


def _remote_url(repo_dir: Path, remote: str) -> str | None:
    """The URL ``git remote get-url`` gives for ``remote`` (no network), or None."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo_dir), "remote", "get-url", remote],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    url = proc.stdout.strip()
    return url if proc.returncode == 0 and url else None


def check_remote(
    repo_dir: Path,
    remote: str,
    timeout_s: int = 10,
    branch: str = "main",
    required: bool | None = None,
) -> CheckResult:
    """Where the run pushes (remote, URL with userinfo masked, branch), checked with
    ``git ls-remote`` under the push step's own credentials (:mod:`pipeline.publish.push`'s askpass
    route).

    Not reachable, or the credentials refused: a failure when ``required`` (default: env
    ``RUNPOD_PUSH_TO_GITHUB=true`` was set explicitly), else a warning, since only the push step
    would fail (before this check, a clone of someone else's repository trained for hours, then
    failed at the push with exit 3).
    """
    if required is None:
        required = push_explicitly_requested()
    secrets = secret_values()
    url = _remote_url(repo_dir, remote)
    where = f"push to {remote}" + (f" ({url})" if url else "") + f", branch {branch}"
    where = mask_secrets(where, secrets)
    need = "remote reachable with the push credentials (git ls-remote)" + (
        f"; {PUSH_ENV}=true" if required else "; else only the push step fails"
    )
    try:
        # Imported here: it needs GitPython, and preflight must still run (and report the missing
        # package in its dependencies row) where that is not installed.
        from pipeline.publish.push import check_remote_reachable
    except ImportError as exc:
        status = FAIL if required else WARN
        found = f"{where}: pipeline.publish.push not importable: {exc}"
        return CheckResult("network", found, need, status)
    ok, message = check_remote_reachable(repo_dir, remote, timeout_s)
    message = mask_secrets(message, secrets)
    # "remote origin (URL) reachable ..." -> "reachable ...": the row already names both.
    message = re.sub(rf"^remote {re.escape(remote)} \(.*?\) ", "", message, count=1)
    if ok:
        return CheckResult("network", f"{where}: {message}", need, PASS)
    status = FAIL if required else WARN
    return CheckResult("network", f"{where}: {message}; the push step will fail", need, status)


def _split_args(train_cfg: TrainingConfig) -> tuple[int, int, int, float, float, int | None, int]:
    """(warm-up, lookback, k, test, val, purge, folds) exactly as step 5 passes them to
    :func:`pipeline.data.splits.make_splits` (via
    ``pipeline.classifiers.prepare.arrays_from_config``)."""
    from pipeline.data.features import warmup_bars

    return (
        warmup_bars(train_cfg.resolved_features()),
        train_cfg.lookback,
        train_cfg.smoothing_k,
        train_cfg.test_fraction,
        train_cfg.val_fraction,
        train_cfg.purge_gap,
        train_cfg.walk_forward_folds,
    )


def min_dataset_rows(train_cfg: TrainingConfig) -> int | None:
    """Fewest CSV rows whose chronological split step 5 accepts with ``train_cfg`` (None: no
    count does).

    Asks :mod:`pipeline.data.splits`, which raises step 5's "needs at least N rows", so preflight
    and step 5 cannot disagree.
    """
    from pipeline.data.splits import min_rows_for_split

    return min_rows_for_split(*_split_args(train_cfg))


def check_dataset(dataset: str, paths: Paths, cfg: TrainingConfig | None = None) -> CheckResult:
    """The dataset exists, passes validation (``pipeline.data.load.load_dataset``) and, with
    ``cfg``, has enough rows for step 5's chronological split (the same check that step 5 makes)."""
    from pipeline.data.load import load_dataset

    required = "present and valid OHLCV CSV"
    needed = min_dataset_rows(cfg) if cfg is not None else None
    if needed is not None:
        required += f", >= {needed} rows"
    try:
        _df, info = load_dataset(dataset, paths.datasets)
    except PipelineError as exc:
        return CheckResult("dataset", str(exc), required, FAIL)
    if cfg is not None:
        from pipeline.data.splits import SplitError, make_splits

        try:
            make_splits(info.rows, *_split_args(cfg))
        except SplitError as exc:
            why = (
                f"step 5 needs at least {needed} rows (lookback {cfg.lookback}, smoothing_k "
                f"{cfg.smoothing_k}, purge_gap "
                f"{cfg.purge_gap if cfg.purge_gap is not None else 'auto'}, "
                f"test_fraction {cfg.test_fraction}, val_fraction {cfg.val_fraction}, "
                f"walk_forward_folds {cfg.walk_forward_folds}, feature warm-up "
                f"{_split_args(cfg)[0]} bars)"
                if needed is not None
                else str(exc)
            )
            return CheckResult("dataset", f"{info.path}: {info.rows} rows; {why}", required, FAIL)
    return CheckResult("dataset", info.summary(), required, PASS)


def missing_modules(
    modules: Sequence[tuple[str, str]] = DEPENDENCIES,
) -> list[tuple[str, str]]:
    """(module, distribution) pairs that cannot be found (``find_spec``: nothing is imported)."""
    importlib.invalidate_caches()  # packages pip-installed since the last look count
    out = []
    for module, dist in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append((module, dist))
    return out


def check_dependencies(
    modules: Sequence[tuple[str, str]] = DEPENDENCIES,
) -> CheckResult:
    """Every needed package can be found (no slow imports in the parent)."""
    missing = missing_modules(modules)
    if missing:
        return CheckResult(
            "dependencies",
            f"missing: {', '.join(d for _, d in missing)} (pip install -r requirements.txt)",
            ", ".join(m for m, _ in modules),
            FAIL,
        )
    versions: list[str] = []
    for module, dist in modules:
        try:
            versions.append(f"{module} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(module)
    return CheckResult("dependencies", ", ".join(versions), "all importable", PASS)


def check_write_permissions(paths: Paths) -> CheckResult:
    """Create every output folder and write + delete a probe file in each."""
    problems: list[str] = []
    for d in paths.output_dirs():
        probe = d / f".preflight-{uuid.uuid4().hex[:8]}.probe"
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            problems.append(f"{d}: {exc.strerror or exc}")
    n = len(paths.output_dirs())
    if problems:
        return CheckResult("write access", "; ".join(problems), f"{n} output folders", FAIL)
    return CheckResult(
        "write access", f"{n} folders under {paths.root}", f"{n} output folders", PASS
    )


def check_lock(paths: Paths, dataset: str) -> CheckResult:
    """No other live run holds this dataset's lock (the driver takes it; this fails fast)."""
    from pipeline.run.lock import check_lock as live_owner
    from pipeline.run.lock import lock_path

    path = lock_path(paths, dataset)
    owner = live_owner(path)
    if owner is None:
        return CheckResult("run lock", f"free ({path.name})", "no other run on this dataset", PASS)
    return CheckResult(
        "run lock",
        f"held by {owner.describe()}: {path}",
        "no other run on this dataset",
        FAIL,
    )


def run_preflight(
    cfg: Config,
    dataset: str,
    paths: Paths,
    push: bool,
    push_required: bool | None = None,
) -> list[CheckResult]:
    """All checks, in table order; the push-destination check only when ``push``.

    ``push_required`` (default: env ``RUNPOD_PUSH_TO_GITHUB=true`` set explicitly) turns an
    unreachable remote or refused credentials from a warning into a failure.
    """
    train_cfg = cfg.training
    return [
        *_resource_checks(cfg, paths, push, push_required),
        check_dataset(dataset, paths, train_cfg),
        check_dependencies(),
        check_write_permissions(paths),
        check_lock(paths, dataset),
    ]


def _resource_checks(
    cfg: Config, paths: Paths, push: bool, push_required: bool | None
) -> list[CheckResult]:
    """Disk, memory, GPU, and the push destination when ``push``: the machine's first rows."""
    train_cfg = cfg.training
    rows = [
        check_disk(paths, train_cfg.min_disk_gb),
        check_memory(train_cfg.min_memory_gb),
        check_gpu(),
    ]
    if push:
        rows.append(
            check_remote(
                paths.root,
                train_cfg.git_remote,
                branch=train_cfg.git_branch,
                required=push_required,
            )
        )
    return rows


def run_preflight_many(
    cfg: Config,
    datasets: Sequence[str],
    paths: Paths,
    push: bool,
    push_required: bool | None = None,
) -> tuple[list[CheckResult], dict[str, list[CheckResult]]]:
    """One preflight for several datasets: the machine's rows once, then the dataset and run-lock
    rows of each dataset, named ``dataset NAME`` / ``run lock NAME``.

    Returns (machine rows, rows per dataset as given). A failed machine row stops the whole run;
    a failed dataset row only that dataset.
    """
    from pipeline.store.artifacts import dataset_name

    train_cfg = cfg.training
    machine = [
        *_resource_checks(cfg, paths, push, push_required),
        check_dependencies(),
        check_write_permissions(paths),
    ]
    per_dataset: dict[str, list[CheckResult]] = {}
    for dataset in datasets:
        name = dataset_name(dataset)
        rows = [check_dataset(dataset, paths, train_cfg), check_lock(paths, dataset)]
        per_dataset[dataset] = [
            CheckResult(f"{r.check} {name}", r.found, r.required, r.status) for r in rows
        ]
    return machine, per_dataset


def failed(results: Sequence[CheckResult]) -> list[CheckResult]:
    """The rows with status ``fail``."""
    return [r for r in results if r.status == FAIL]
