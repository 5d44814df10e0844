"""The run-time estimate the driver logs at a run's start: a rough duration per step from the
settings, linear in the budget knobs around reference points measured on the 2-core CPU machine,
scaled for the machine's current load."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.common import Paths
from pipeline.config.schema import Config

# The driver's own logger: its lines keep the name they always had (``runpod_train: ...``).
log = logging.getLogger("runpod_train")

# Reference points of the run-time estimate, from BENCHMARKS.md on the 2-core CPU machine: step 5 of
# the demo preset on the bundled 17,544-row dataset about 200 s (lookback 32, early stopping near 10
# epochs, 4 models with walk-forward folds); PPO with the default net (1280x640, 20 epochs) about
# 309 timesteps/s; steps 6 and 7's evaluation and backtest, and steps 1-4, about 30 s.
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


def log_estimate(cfg: Config, dataset: str, paths: Paths, selected: Sequence[int]) -> str | None:
    """Log the run's estimated duration at its start; returns the line (None: no dataset yet)."""
    rows = _count_rows(dataset, paths)
    if rows is None or not ({5, 7} & set(selected)):
        return None
    cuda = cfg.training.device != "cpu" and _cuda_available()
    est = estimate_seconds(cfg, rows, selected, cuda)
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
