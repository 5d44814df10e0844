"""The run-time estimate the driver logs at a run's start: a rough duration per step from the
settings (data, epochs, lookback, each network's size, PPO timesteps and net) around reference
points measured on the 2-core CPU machine, scaled for the machine's current load."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.common import Paths
from pipeline.config.schema import Config

# The driver's own logger: its lines keep the name they always had (``runpod_train: ...``).
log = logging.getLogger("runpod_train")

# Reference points of the run-time estimate, measured on the 2-core CPU machine (Intel Xeon, torch
# 2.13.0+cpu, 2 threads; bench/bench_estimate.py, BENCHMARKS.md): a network costs about
# NET_SECONDS * params**NET_EXPONENT seconds per training window, epoch and lookback bar (step 5's
# own train seconds: the demo's 11-16 k-parameter networks 0.9-1.5 us, the default config's GRU
# 159 k 12.5 us, DLSTM 425 k 15.6 us, BiLSTM 556 k 18.9 us, LSTM 1.34 M 41 us; the power law is
# within 30 % of each), so the network size matters as much as the data (the default config's
# networks are 10-100x the demo's). The rest of step 5 (tabular models, tables, controls) about
# _REST_S + _REST_ROW_S per row. PPO about _PPO_STEP_S + _PPO_WORK_S * n_epochs * weights per
# timestep (BENCHMARKS.md, "vec env": 10,462 timesteps/s at the demo's 256x256 net and 10 epochs,
# 734-761 at the default 1280x640 and 20), plus _PPO_REST_S + _PPO_REST_ROW_S per row for its
# validation and backtest. Checked: step 5 of the demo on the bundled dataset 22.7 s (estimate
# 28.9 s) and of the default config on 4,000 bars with 2 epochs 87.6 s (estimate 107.3 s); the
# demo end to end 45 s (estimate 51 s: step 7 17.1 s, estimate 17.1 s) and the smoke run on 2,000
# rows 10 s (estimate 11 s; bench/results/end_to_end.md). GPU speed-ups are not measured yet
# (issue 17): step 5 is divided by 5.
NET_SECONDS, NET_EXPONENT = 6.1e-10, 0.8  # public: bench/bench_estimate.py reports them
_WINDOW_SHARE = 0.62  # labelled train windows per dataset row (17,544 rows: 11,107 windows)
_FOLD_FIT = 0.8  # one walk-forward fold model against the main model (less data, similar epochs)
_REST_S, _REST_ROW_S = 3.0, 5e-4
_PPO_STEP_S, _PPO_WORK_S = 4.3e-5, 8.0e-11
_PPO_REST_S, _PPO_REST_ROW_S = 1.0, 3.7e-4
_FIXED_S = 5.0  # steps 1-4, 6 and 8, preflight and interpreter start-up


def network_parameters(cfg: Config) -> dict[str, int]:
    """Trainable parameters of each network in ``cfg.training.models`` at its configured size
    (built on the CPU and thrown away: milliseconds)."""
    from pipeline.classifiers.nets import arch_config, build_classifier, count_parameters
    from pipeline.config.registry import NETWORK_NAMES

    t = cfg.training
    return {
        name: count_parameters(build_classifier(arch_config(name, len(t.resolved_features()), t)))
        for name in t.models
        if name in NETWORK_NAMES
    }


def estimate_seconds(
    cfg: Config, rows: int, selected: Sequence[int], cuda: bool
) -> dict[str, float]:
    """A rough duration per step from the settings (``"5"``, ``"7"``, ``"other"``, ``"total"``):
    the cost model above, for an idle machine."""
    t, p = cfg.training, cfg.ppo
    out = {"5": 0.0, "7": 0.0, "other": _FIXED_S}
    if 5 in selected:
        epochs = min(t.epochs, t.patience + 2)  # early stopping usually ends it about there
        per_net = {
            name: _WINDOW_SHARE * rows * epochs * t.lookback * NET_SECONDS * n**NET_EXPONENT
            for name, n in network_parameters(cfg).items()
        }  # seconds of each network's main model
        folds = max(0, t.walk_forward_folds - 1) if p.ppo_prediction_source == "walk_forward" else 0
        if t.walk_forward_models == "all":
            fold_s = sum(per_net.values())
        elif p.prediction_model in per_net:
            fold_s = per_net[p.prediction_model]
        elif p.prediction_model == "ensemble":
            fold_s = sum(per_net.get(m, 0.0) for m in p.ensemble_models)
        else:  # auto: one model's folds, not known before step 5 (a network's, on average)
            fold_s = sum(per_net.values()) / max(1, len(per_net))
        nets = sum(per_net.values()) + folds * _FOLD_FIT * fold_s
        out["5"] = nets / (5.0 if cuda else 1.0) + _REST_S + _REST_ROW_S * rows
    if 7 in selected:
        net = list(p.net_arch)
        weights = sum(a * b for a, b in zip(net, net[1:], strict=False)) + sum(net)
        per_step = _PPO_STEP_S + _PPO_WORK_S * p.n_epochs * weights
        rest = _PPO_REST_S + _PPO_REST_ROW_S * rows
        out["7"] = max(1, p.seeds) * (p.total_timesteps * per_step + rest)
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
    try:
        est = estimate_seconds(cfg, rows, selected, cuda)
    except ImportError:  # torch missing: the dependencies step (2) says so in one line
        return None
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    busy = max(1.0, load / cores) if not cuda else 1.0
    parts = [f"step {n} ~{duration_text(est[n])}" for n in ("5", "7") if est[n] > 0]
    line = (
        f"estimated duration: about {duration_text(est['total'] * busy)} ({', '.join(parts)}; "
        f"{rows:,} rows, {'GPU' if cuda else f'{cores}-core CPU'}); a rough guide from the "
        "settings for an idle machine"
        + (f", scaled x{busy:.1f} for the current load ({load:.1f})" if busy > 1 else "")
        + ": other jobs on the machine make the run slower"
    )
    log.info("%s", line)
    return line


def duration_text(seconds: float) -> str:
    """``"45 s"`` under two minutes, ``"12 min"`` under two hours, else ``"3.5 h"``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
