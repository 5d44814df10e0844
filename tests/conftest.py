"""Shared test settings, the shared trained roots, and the test tiers.

Settings: a headless matplotlib backend, quiet progress bars, and logging restored after every
test (a step's ``setup_logging`` points the root logger at the stream of the test that called it;
a later test must not write to that closed stream).

Trained roots (session scope: built once for every module that asks):
``signal_run`` / ``rw_run`` (all four classifiers, smoke sizes, 3 epochs, on a planted-signal and a
random-walk dataset) and ``ppo_source_root`` (the DLSTM walk-forward prediction table the agent
trains on). Tests must not change them: a test that writes copies the root first
(``shutil.copytree(root, tmp_path / "copy")``). The ``write_dataset``, ``smoke_config`` and
``signal_config`` fixtures hand out the helpers that build such roots.

Tiers (markers registered in pyproject.toml; every test carries exactly one of unit/integration,
on the test itself or its module's ``pytestmark``, checked by tests/test_markers.py):

- ``unit``: no subprocess, no training of a model or agent (nor a fixture that trains one), no
  git, and under about a second. ``make test-fast`` runs these (``-m "unit and not slow"``).
- ``integration``: the rest. ``slow`` tests (over ~20 s, left out of the default run) are
  integration tests too, and so is every test that asks for a fixture of
  ``INTEGRATION_FIXTURES`` (it trains, or runs a subprocess or git).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Under `nohup` SIGHUP starts ignored, the pipeline keeps it ignored by design (a user's nohup
# wins), and the tests of a closed terminal would see no hangup. A do-nothing handler still
# shields this process from a real hangup, but it is not "ignored", and exec'd children start
# with the default action, so those tests see what a terminal's run sees.
if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
    signal.signal(signal.SIGHUP, lambda signum, frame: None)

# Before the project imports below: tqdm reads its TQDM_* defaults when it is imported.
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch

import train_models
from pipeline.common import Paths
from pipeline.config.files import Config, load_config
from pipeline.config.schema import MODEL_NAMES
from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
from pipeline.run.step_results import TrainingSummary

# Fixtures that train a model or an agent, or run a subprocess or git (here or in a module): a
# test asking for one, even through another fixture, must be marked integration
# (tests/test_markers.py checks it).
INTEGRATION_FIXTURES = frozenset(
    {
        "signal_run",
        "rw_run",
        "ppo_source_root",
        "trained",  # test_ppo_agent
        "pruned_run",
        "smoke_run",  # test_end_to_end
        "repos",  # test_github_push: git repositories
        "live_pid",  # test_preflight: a sleeping subprocess
        "dead_pid",
    }
)

N_BARS = 3000
"""Bars in the datasets of ``signal_run`` and ``rw_run``."""
TRAIN_SETTINGS = ("epochs=3", "patience=3", "num_threads=1", "training.device=cpu")
PPO_DATASET = "RW-TEST_1H"
"""The dataset of ``ppo_source_root``."""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    factory = logging.getLogRecordFactory()
    disabled = logging.root.manager.disable  # a bench's main() calls logging.disable(...)
    yield
    logging.disable(disabled)
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)
    logging.setLogRecordFactory(factory)


def _write_dataset(root: Path, name: str, signal: float, seed: int, n: int = N_BARS) -> Path:
    """A generated OHLCV CSV at ``root/datasets/{name}.csv``."""
    return write_ohlcv_csv(
        generate_ohlcv(n, signal=signal, seed=seed), root / "datasets" / f"{name}.csv"
    )


def _smoke_config(*extra: str) -> Config:
    """Smoke sizes, 3 epochs, one CPU thread, then ``extra`` settings."""
    return load_config(None, None, "smoke", [*TRAIN_SETTINGS, *extra])


def _signal_config(*extra: str) -> Config:
    """Smoke sizes, 3 epochs; the agent uses the dlstm+bilstm ensemble (walk-forward)."""
    return _smoke_config("ppo.prediction_model=ensemble", *extra)


@pytest.fixture(scope="session")
def write_dataset() -> Callable[..., Path]:
    """``write_dataset(root, name, signal, seed, n=N_BARS)``: a CSV in ``root/datasets``."""
    return _write_dataset


@pytest.fixture(scope="session")
def smoke_config() -> Callable[..., Config]:
    """``smoke_config(*settings)``: the ``Config`` the trained roots use, plus ``settings``."""
    return _smoke_config


@pytest.fixture(scope="session")
def signal_config() -> Callable[..., Config]:
    """``signal_config(*settings)``: ``signal_run``'s ``Config`` plus ``settings``."""
    return _signal_config


@pytest.fixture(scope="session")
def signal_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainingSummary, Config]:
    """Every model (the four networks, logreg, window_logreg, lightgbm) trained on a
    planted-signal dataset (signal 1.0), walk-forward tables:
    ``(root, training summary, config)`` with the dataset ``SIG``. Read only: copy to change."""
    root = tmp_path_factory.mktemp("signal")
    _write_dataset(root, "SIG", signal=1.0, seed=0)
    cfg = _signal_config()
    summary = train_models.train_classifiers(cfg, "SIG", Paths.from_root(root), list(MODEL_NAMES))
    return root, summary, cfg


@pytest.fixture(scope="session")
def rw_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainingSummary, Config]:
    """Every model (the four networks, the logistic regressions, lightgbm) on a pure random walk
    (signal 0), in-sample prediction tables:
    ``(root, training summary, config)`` with the dataset ``RW``. Read only: copy to change."""
    root = tmp_path_factory.mktemp("rw")
    _write_dataset(root, "RW", signal=0.0, seed=0)
    cfg = _smoke_config("ppo_prediction_source=in_sample")
    summary = train_models.train_classifiers(cfg, "RW", Paths.from_root(root), list(MODEL_NAMES))
    return root, summary, cfg


@pytest.fixture(scope="session")
def ppo_source_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-walk dataset ``PPO_DATASET`` + the real DLSTM walk-forward prediction table (smoke
    preset), for the agent tests to copy into their own roots. Read only: copy to change."""
    root = tmp_path_factory.mktemp("ppo_src")
    (root / "datasets").mkdir()
    csv = root / "datasets" / f"{PPO_DATASET}.csv"
    write_ohlcv_csv(generate_ohlcv(4000, signal=0.0, seed=3), csv)
    argv = ["--dataset", PPO_DATASET, "--root", str(root), "--models", "dlstm"]
    code = train_models.main([*argv, "--preset", "smoke", "--set", "num_threads=1"])
    # train_models sets its own thread count; the agent tests run on one thread.
    torch.set_num_threads(1)
    assert code == 0
    assert (root / "results" / f"predictions_dlstm_{PPO_DATASET}.csv").is_file()
    return root
