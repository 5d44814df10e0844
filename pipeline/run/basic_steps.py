"""The driver's steps that call only the library: 1 (paths and environment), 3 (GPU), 4 (dataset)
and 8 (push). ``runpod_train.py`` holds the run context, step 2 and steps 5-7, which call the
classifier and agent scripts, and lists every step in its ``STEP_FUNCTIONS``."""

from __future__ import annotations

import logging
import platform

from pipeline.common import PROJECT_ROOT
from pipeline.run.driver_summary import DriverRun, push_metrics
from pipeline.run.preflight import CPU_SLOWDOWN
from pipeline.run.summary import StepOutcome, config_overrides, describe_overrides

# The driver's own logger: its lines keep the name they always had (``runpod_train: ...``).
log = logging.getLogger("runpod_train")


def step_paths(ctx: DriverRun) -> StepOutcome:
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


def step_gpu(ctx: DriverRun) -> StepOutcome:
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


def step_dataset(ctx: DriverRun) -> StepOutcome:
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


def step_push(ctx: DriverRun) -> StepOutcome:
    """Step 8: commit and push the artifacts (only when enabled; else skipped)."""
    if not ctx.push:
        log.info("push skipped: %s", ctx.push_reason)
        return StepOutcome(status="skipped", result=f"skipped ({ctx.push_reason})")
    from pipeline.publish.push import PushConfig, push_artifacts

    train_cfg = ctx.cfg.training
    config = PushConfig(
        remote=train_cfg.git_remote,
        branch=train_cfg.git_branch,
        max_file_mb=train_cfg.push_max_file_mb,
    )
    result = push_artifacts(ctx.paths.root, ctx.name, push_metrics(ctx, ctx.earlier), config)
    details = {
        "commit": result.commit,
        "pushed": result.pushed,
        "files": list(result.files),
        "skipped": list(result.skipped),
        "rebased": result.rebased,
        "remote": train_cfg.git_remote,
        "branch": train_cfg.git_branch,
    }
    ctx.info["push"] = details
    extra = f", {len(result.skipped)} too large, kept locally" if result.skipped else ""
    return StepOutcome(
        status="ok" if result.pushed else "warn",
        result=f"commit {result.commit[:12]} -> {train_cfg.git_remote}/{train_cfg.git_branch}, "
        f"{len(result.files)} files{extra}",
        details=details,
    )
