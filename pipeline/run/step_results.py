"""The typed results the steps return: the contract between the steps and the driver.

JSON-shaped typed dicts: each is exactly what its step also writes to ``results/`` (so the file a
user reads and the value the driver uses are the same thing), and mypy checks every key access.
"""

from __future__ import annotations

from typing import Any, TypedDict


class TrainingSummary(TypedDict):
    """What step 5 returns (and writes to ``results/training_summary_{dataset}.json``).

    ``models`` maps each model name to its entry: ``status`` (trained / skipped / failed),
    ``reason``, test and validation scores, the baselines on the same rows and the one-line
    ``headline``. A JSON-shaped typed dict, so the file and the value the driver gets are the same
    thing.
    """

    dataset: str
    dataset_sha256: str
    device: str
    prediction_source: str
    models: dict[str, dict[str, Any]]
    prediction_tables: dict[str, str]
    alarms: list[dict[str, str]]  # leak alarms: pipeline.checks.leak_alarms.Alarm.to_dict()
    permutation_control: dict[str, Any] | None  # the permuted-label model's test headline
    # prediction_model = auto's ensemble over every walk-forward table (None when not fitted);
    # "used": it beat every model alone on the agent-val rows by more than one s.e. and feeds
    # the agent
    auto_ensemble: dict[str, Any] | None


class BacktestReport(TypedDict):
    """What step 7 returns (and writes to ``results/backtest_{model}_{dataset}.json``): the
    test-block metrics of the agent and of every baseline (``strategies``), which model was
    backtested, the blocks, the annualisation used and whether the agent saw in-sample
    predictions. A JSON-shaped typed dict: the file and the driver's value are the same."""

    model: str
    dataset: str
    dataset_sha256: str
    prediction_source: str
    in_sample_predictions: bool
    oracle: dict[str, Any] | None  # label and accuracy when the oracle source fed the agent
    timesteps: int
    chosen_model: str
    blocks: dict[str, dict[str, Any]]
    interval_seconds: float
    periods_per_year: float
    periods_per_year_basis: str
    transaction_cost: float
    random_policy_seeds: int
    strategies: dict[str, dict[str, Any]]
    seeds: dict[str, Any] | None  # seeds > 1: every agent's validation and test result
    # which classifier fed the agent and why, the warm start, the validation returns of agent, rule
    # and flat; and the plain-words verdict every summary repeats
    agent: dict[str, Any] | None
    verdict: str
    # PSR, DSR (over the seeds), 95 % block-bootstrap intervals of total return and Sharpe, and an
    # edge / no edge / cannot tell verdict for the agent, the rule and buy-and-hold
    significance: dict[str, Any]
    alarms: list[dict[str, str]]  # leak alarms: pipeline.checks.leak_alarms.Alarm.to_dict()
