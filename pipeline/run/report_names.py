"""The one definition of the backtest report's strategies and metrics.

A new metric or strategy is one change here: :mod:`ppo_approach.evaluation` computes the metrics
in this order, the backtest table prints them with these formats, and the run summary
(:mod:`pipeline.run.summary`) and the cross-dataset table (:mod:`pipeline.run.multi_run`) read their
columns from :data:`HEADLINE_METRICS` and :data:`COMPARED_STRATEGIES`. It lives in ``pipeline/``
(and imports nothing) because the summaries are read on the pipeline side, which never imports
the agent's package.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric of a strategy's run over a block (formulas: :mod:`ppo_approach.evaluation`)."""

    name: str
    kind: str
    """``pct`` (a fraction printed as a percentage), ``ratio``, ``count`` (an integer, or a mean
    of integers over seeds), ``money`` (account currency) or ``dict`` (not a table column)."""


METRICS: tuple[Metric, ...] = (
    Metric("total_return", "pct"),
    Metric("annualised_return", "pct"),
    Metric("sharpe", "ratio"),
    Metric("sortino", "ratio"),
    Metric("max_drawdown", "pct"),
    Metric("calmar", "ratio"),
    Metric("n_trades", "count"),
    Metric("win_rate", "pct"),
    Metric("n_round_trips", "count"),
    Metric("turnover", "ratio"),
    Metric("fees_paid", "money"),
    Metric("time_in_market", "pct"),
    Metric("invalid_actions", "count"),
    Metric("action_counts", "dict"),
)
"""Every strategy's metrics, in the order the report prints them."""

METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
PCT_METRICS = frozenset(m.name for m in METRICS if m.kind == "pct")
COUNT_METRICS = frozenset(m.name for m in METRICS if m.kind == "count")
"""Integer counts: printed as integers (``1849``), or with one decimal when they are a mean over
the random policy's seeds (``1849.4``), never as ``1849.000``."""
TABLE_COLUMNS: tuple[str, ...] = tuple(m.name for m in METRICS if m.kind != "dict")
"""The metrics the backtest table prints as columns (``action_counts``, a dict, is a note)."""


@dataclass(frozen=True)
class Strategy:
    """One strategy run over the test block: its report key and labels."""

    name: str
    label: str
    """For plots and sentences."""
    short: str
    """For narrow table headers."""


STRATEGIES: tuple[Strategy, ...] = (
    Strategy("agent", "agent", "agent"),
    Strategy("buy_and_hold", "buy & hold", "buy&hold"),
    Strategy("flat", "flat", "flat"),
    Strategy("random", "random", "random"),
    Strategy("classifier_rule", "classifier rule", "clf rule"),
    Strategy("agent_cost_0x", "agent at 0x cost", "agent 0x"),
    Strategy("agent_cost_2x", "agent at 2x cost", "agent 2x"),
)
"""Keys of ``report["strategies"]``."""

STRATEGY_NAMES: tuple[str, ...] = tuple(s.name for s in STRATEGIES)
STRATEGY_LABELS: dict[str, Strategy] = {s.name: s for s in STRATEGIES}

COMPARED_STRATEGIES: tuple[str, ...] = ("agent", "buy_and_hold", "flat", "classifier_rule")
"""The strategies whose test-block return the cross-dataset table and plot show."""

HEADLINE_METRICS: tuple[str, ...] = ("total_return", "sharpe")
"""The metrics the run summary keeps for the agent and for buy-and-hold."""
