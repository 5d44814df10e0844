"""Shared test settings, the shared trained roots, and the test tiers.

Settings: a headless matplotlib backend, quiet progress bars, and logging restored after every
test (a step's ``setup_logging`` points the root logger at the stream of the test that called it;
a later test must not write to that closed stream).

Trained roots (session scope: built once for every module that asks, issue 9 item 7):
``signal_run`` / ``rw_run`` (all four classifiers, smoke sizes, 3 epochs, on a planted-signal and a
random-walk dataset) and ``ppo_source_root`` (the DLSTM walk-forward prediction table the agent
trains on). Tests must not change them: a test that writes copies the root first
(``shutil.copytree(root, tmp_path / "copy")``). The ``write_dataset``, ``smoke_config`` and
``signal_config`` fixtures hand out the helpers that build such roots.

Tiers (markers registered in pyproject.toml; every test carries exactly one of unit/integration,
checked by tests/test_markers.py):

- ``unit``: no subprocess, no training of a model or agent (nor a fixture that trains one), no
  git, and under about a second. ``make test-fast`` runs these (``-m "unit and not slow"``).
- ``integration``: the rest. ``slow`` tests (over ~20 s, left out of the default run) are
  integration tests too.

A module whose tests are all of one tier says so with ``pytestmark``; the others are listed in
``_MODULE_TIERS`` below (a tier per module and the tests of the other tier), and
``pytest_collection_modifyitems`` marks their tests. Tests that are slow or ask for a fixture
that trains or runs a subprocess (``INTEGRATION_FIXTURES``) are marked integration in any case.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Before the project imports below: tqdm reads its TQDM_* defaults when it is imported.
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch

import train_models
from pipeline.common import Paths
from pipeline.config import Config, load_config
from pipeline.config_schema import MODEL_NAMES
from pipeline.step_results import TrainingSummary
from pipeline.synthetic import generate_ohlcv, write_ohlcv_csv

# Fixtures that train a model or an agent, or run a subprocess or git (here or in a module): a
# test asking for one, even through another fixture, is an integration test.
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

# The tiers of modules without their own ``pytestmark`` (mixed modules, and modules edited
# elsewhere): module -> (its tier, the tests of the other tier by function name). A test asking
# for an integration fixture is integration whatever this says. Found by running each test with
# subprocess, git and training (backward passes, logreg fits) watched, and timing it.
_UNIT, _INTEGRATION = "unit", "integration"
TIERS = (_UNIT, _INTEGRATION)
_MODULE_TIERS: dict[str, tuple[str, frozenset[str]]] = {
    "test_artifacts": (_UNIT, frozenset()),
    "test_warm_start": (
        _UNIT,
        frozenset(
            {
                "test_behaviour_cloning_reproduces_the_rule",
                "test_warm_start_is_flat_when_the_rule_loses_on_validation",
            }
        ),
    ),
    "test_backtest": (_UNIT, frozenset({"test_plot_agent_on_top_and_one_colour_per_strategy"})),
    "test_data": (_UNIT, frozenset()),
    "test_oracle": (_UNIT, frozenset({"test_the_agent_blocks_carry_the_true_class"})),
    "test_driver": (
        _UNIT,
        frozenset(
            {
                "test_real_steps_1_to_4",
                "test_driver_fails_fast_on_live_lock",
                "test_driver_takes_over_stale_lock",
                "test_main_masks_the_token_in_the_log_and_returns_the_drivers_code",
                "test_stream_driver_masks_and_forwards_sigterm",
            }
        ),
    ),
    "test_end_to_end": (_INTEGRATION, frozenset()),
    "test_entry_point": (
        _UNIT,
        frozenset(
            {
                "test_entry_point_passes_absolute_paths_to_the_driver_from_another_cwd",
                "test_skip_validation_with_unwritable_root_is_one_line",
                "test_stream_driver_forwards_sighup",
                "test_driver_stops_with_an_interrupted_summary_when_its_parent_dies",
                "test_step_lock_is_a_noop_for_the_holder_and_refuses_another_live_run",
            }
        ),
    ),
    "test_github_push": (
        _INTEGRATION,
        frozenset(
            {
                "test_not_a_git_repo_raises_push_error",
                "test_help_documents_every_flag",
                "test_usage_errors_exit_1",
            }
        ),
    ),
    "test_layers": (_UNIT, frozenset()),
    "test_multi_dataset": (
        _UNIT,
        frozenset(
            {
                "test_two_datasets_one_broken_table_exit_code_and_one_push",
                "test_push_datasets_commits_every_manifest_and_the_table_in_one_commit",
            }
        ),
    ),
    "test_makefile": (
        _INTEGRATION,
        frozenset({"test_ci_runs_the_readme_test_command_then_lint_and_types"}),
    ),
    "test_manifest": (_UNIT, frozenset()),
    "test_models": (
        _UNIT,
        frozenset(
            {
                "test_training_learns_and_restores_the_best_epoch",
                "test_early_stopping_stops_after_patience",
                "test_resume_after_interrupt_equals_uninterrupted_run",
                "test_resume_ignores_a_checkpoint_of_another_run",
                "test_sigterm_in_first_epoch_says_no_checkpoint_exists",
                "test_sigterm_in_a_later_epoch_names_the_checkpoint_kept",
                "test_interrupt_without_checkpoints_says_they_are_off",
                "test_progress_lines_with_eta_without_a_terminal",
                "test_progress_bar_only_when_wanted",
            }
        ),
    ),
    "test_no_pickle": (_UNIT, frozenset({"test_step6_never_loads_a_booby_trapped_pkl"})),
    "test_packaging": (
        _INTEGRATION,
        frozenset(
            {
                "test_project_dependencies_mirror_requirements_txt",
                "test_every_package_and_top_level_script_is_listed",
                "test_presets_are_package_data",
                "test_no_sys_path_patches_or_e402_exemptions",
            }
        ),
    ),
    "test_ppo_agent": (
        _INTEGRATION,
        frozenset(
            {
                "test_sigterm_sets_the_stop_request_like_sigint",
                "test_resume_point_prefers_a_matching_candidate",
                "test_run_fingerprint_keys",
                "test_batch_size_warnings_name_the_numbers",
                "test_resolve_device",
                "test_prediction_features_single_and_ensemble",
                "test_cli_error_is_one_line",
                "test_usage_errors_exit_1",
            }
        ),
    ),
    "test_ppo_checkpoints": (
        _INTEGRATION,
        frozenset(
            {
                "test_files_set_aside_by_a_killed_run_come_back",
                "test_prune_keeps_n",
                "test_progress_callback_logs_every_interval",
                "test_progress_bar_only_when_wanted",
            }
        ),
    ),
    "test_prediction_wrapper": (_UNIT, frozenset()),  # the trained-root tests: by fixture
    "test_preflight": (
        _UNIT,
        frozenset(
            {
                "test_remote_unreachable_is_a_warning",
                "test_remote_reachable_local_bare_repo",
                "test_remote_check_imports_no_script",
                "test_remote_row_without_gitpython_is_one_row_not_a_crash",
                "test_push_destination_row_shows_remote_url_and_branch",
                "test_unreachable_push_destination_fails_only_when_push_was_requested",
                "test_push_destination_checked_with_the_push_credentials",
                "test_run_preflight_rows_and_network_only_when_pushing",
            }
        ),
    ),
    "test_tuning": (
        _UNIT,
        frozenset(
            {
                "test_run_worker_stops_at_the_study_target_and_a_rerun_continues",
                "test_no_test_block_row_reaches_a_classifier_trial",
                "test_two_workers_on_one_storage_complete_n_trials_none_twice",
                "test_outputs_and_the_best_parameter_file_changes_the_run",
                "test_a_worker_killed_mid_trial_leaves_a_trial_the_next_run_retries",
                "test_pruning_stops_a_deliberately_bad_trial",
                "test_sigterm_fails_the_running_trial_queues_it_again_and_exits_130",
            }
        ),
    ),
    "test_train_models": (
        _UNIT,
        frozenset(
            {
                "test_planted_leak_trips_the_random_walk_check",
                "test_cli_trains_with_preset",
                "test_cli_sigterm_in_first_epoch_does_not_promise_a_checkpoint",
                "test_interrupt_hint_names_the_models_already_saved",
                "test_help_does_not_import_torch_or_sklearn",
            }
        ),
    ),
}

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
    yield
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)
    logging.setLogRecordFactory(factory)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each test its tier where its module does not (see the module docstring)."""
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        if item.get_closest_marker("slow") or INTEGRATION_FIXTURES & set(item.fixturenames):
            # A module's unit mark as well shows as both tiers: tests/test_markers.py fails.
            if not item.get_closest_marker(_INTEGRATION):
                item.add_marker(_INTEGRATION)
        elif not any(item.get_closest_marker(t) for t in TIERS):
            module = item.module.__name__.rpartition(".")[2]
            if module in _MODULE_TIERS:
                tier, others = _MODULE_TIERS[module]
                if item.originalname in others:
                    tier = _INTEGRATION if tier == _UNIT else _UNIT
                item.add_marker(tier)


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
    """All four models trained on a planted-signal dataset (signal 1.0), walk-forward tables:
    ``(root, training summary, config)`` with the dataset ``SIG``. Read only: copy to change."""
    root = tmp_path_factory.mktemp("signal")
    _write_dataset(root, "SIG", signal=1.0, seed=0)
    cfg = _signal_config()
    summary = train_models.train_all(cfg, "SIG", Paths.from_root(root), list(MODEL_NAMES))
    return root, summary, cfg


@pytest.fixture(scope="session")
def rw_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainingSummary, Config]:
    """All four models on a pure random walk (signal 0), in-sample prediction tables:
    ``(root, training summary, config)`` with the dataset ``RW``. Read only: copy to change."""
    root = tmp_path_factory.mktemp("rw")
    _write_dataset(root, "RW", signal=0.0, seed=0)
    cfg = _smoke_config("ppo_prediction_source=in_sample")
    summary = train_models.train_all(cfg, "RW", Paths.from_root(root), list(MODEL_NAMES))
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
