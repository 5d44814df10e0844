"""Performance metrics, baseline policies and the backtest report of a trained agent.

Every strategy (the agent, buy-and-hold, always-flat, a random policy, a rule on the classifier's
probabilities, and the agent at 0x and 2x the transaction cost) runs through the SAME
:class:`ppo_approach.trading_env.TradingEnv` over the test block: decision at bar ``t``, fill at
``open[t+1]``, the same fees and slippage, equity marked at ``close[t+1]``. The numbers are
therefore comparable: a baseline is never given a cheaper fill than the agent. A position still
open after the last step is valued at liquidation: closed at the last bar's close with the same
slippage and exit fee, for every strategy alike, so buy-and-hold pays two fees and the last equity
point is cash an investor could actually have.

The metrics, the episode runner and the baseline policies are :mod:`ppo_approach.evaluation`'s
(shared with the validation callback and the tuner); this module runs every strategy over the
test block and writes the report and the table; :mod:`ppo_approach.backtest_plot` draws the plot.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common import atomic_write_json
from pipeline.run.report_names import (
    COUNT_METRICS,
    PCT_METRICS,
    TABLE_COLUMNS,
)
from pipeline.tables import format_table
from ppo_approach.evaluation import (
    ClassifierRulePolicy,
    EpisodeRecord,
    Policy,
    RandomPolicy,
    buy_and_hold_policy,
    flat_policy,
    mean_metrics,
    run_episode,
    strategy_metrics,
)
from ppo_approach.reward_functions import RewardConfig, RewardFunction
from ppo_approach.trading_env import EnvConfig, MarketData, TradingEnv

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the report


def backtest_env_config(env_config: EnvConfig, cost_multiplier: float = 1.0) -> EnvConfig:
    """The env config of a backtest: whole block, no ruin stop, fees times ``cost_multiplier``.

    ``ruin_threshold = 0`` so that every strategy covers the same bars (an early stop would make
    the curves incomparable); ``episode_length = 0`` runs to the block's last bar.
    """
    return replace(
        env_config,
        episode_length=0,
        ruin_threshold=0.0,
        transaction_cost=float(env_config.transaction_cost) * cost_multiplier,
    )


def block_env(data: MarketData, config: EnvConfig, reward: RewardConfig) -> TradingEnv:
    """A fresh env over a whole block from its first bar (``random_start=False``)."""
    return TradingEnv(data, config, RewardFunction(reward), random_start=False)


BACKTEST_PROGRESS_INTERVAL_S = 30.0
"""Inside a strategy run longer than this, a line with the bar reached at least this often."""


class StrategyProgress:
    """Progress lines of :func:`run_strategies` (no silent minute in the final backtest):
    ``backtest: running <name> (k of n)`` as each run starts, and inside a run, after ``interval_s``
    without a line, ``backtest: <name> at bar b of N, s s into this run``."""

    def __init__(
        self,
        n_runs: int,
        n_bars: int,
        interval_s: float = BACKTEST_PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.n_runs, self.n_bars = n_runs, n_bars
        self.interval_s, self.clock = interval_s, clock
        self.k = 0
        self.name = ""
        self.started = self.last = clock()

    def start(self, name: str) -> None:
        """Log the line of the next run, ``name``."""
        self.k += 1
        self.name = name
        self.started = self.last = self.clock()
        log.info("backtest: running %s (%d of %d)", name, self.k, self.n_runs)

    def watch(self, policy: Policy) -> Policy:
        """``policy``, logging the bar reached whenever ``interval_s`` passed since a line."""

        def watched(obs: np.ndarray, info: dict[str, Any]) -> int:
            now = self.clock()
            if now - self.last >= self.interval_s:
                self.last = now
                log.info(
                    "backtest: %s at bar %d of %d, %.0f s into this run",
                    self.name,
                    int(info.get("bar", 0)) + 1,
                    self.n_bars,
                    now - self.started,
                )
            return policy(obs, info)

        return watched


def run_strategies(
    data: MarketData,
    env_config: EnvConfig,
    reward_config: RewardConfig,
    agent_policy: Policy,
    probs: np.ndarray,
    random_seeds: Sequence[int],
    progress: StrategyProgress | None = None,
) -> dict[str, list[EpisodeRecord]]:
    """Run every strategy of :data:`STRATEGY_NAMES` once over the block (random: once per seed).

    Each run gets a fresh env over ``data`` (:func:`block_env`) with :func:`backtest_env_config`
    of ``env_config``, so every strategy trades through the same fills and fees. ``progress``
    (default: a :class:`StrategyProgress` on the clock) logs a line per run and at least every
    30 s inside one.
    """
    base = backtest_env_config(env_config)
    # The baselines speak orders, whatever the agent's action set (orders or target).
    orders = replace(base, action_set="orders")
    if progress is None:
        progress = StrategyProgress(6 + len(random_seeds), len(data.open))

    def run(name: str, policy: Policy, config: EnvConfig = orders) -> EpisodeRecord:
        progress.start(name)
        return run_episode(block_env(data, config, reward_config), progress.watch(policy))

    return {
        "agent": [run("agent", agent_policy, base)],
        "buy_and_hold": [run("buy_and_hold", buy_and_hold_policy)],
        "flat": [run("flat", flat_policy)],
        "random": [run(f"random (seed {s})", RandomPolicy(s)) for s in random_seeds],
        "classifier_rule": [run("classifier_rule", ClassifierRulePolicy(probs))],
        "agent_cost_0x": [run("agent_cost_0x", agent_policy, backtest_env_config(env_config, 0.0))],
        "agent_cost_2x": [run("agent_cost_2x", agent_policy, backtest_env_config(env_config, 2.0))],
    }


def summarise_runs(
    runs: dict[str, list[EpisodeRecord]], bars_per_year: float
) -> dict[str, dict[str, Any]]:
    """Metrics per strategy (the random policy: mean over its seeds)."""
    out: dict[str, dict[str, Any]] = {}
    for name, recs in runs.items():
        metrics = [strategy_metrics(r, bars_per_year) for r in recs]
        out[name] = metrics[0] if len(metrics) == 1 else mean_metrics(metrics)
    return out


SIGNIFICANCE_STRATEGIES = ("agent", "classifier_rule", "buy_and_hold")


def significance_section(
    runs: dict[str, list[EpisodeRecord]],
    bars_per_year: float,
    seeds: dict[str, Any] | None = None,
    configurations_tried: int = 1,
) -> dict[str, dict[str, Any]]:
    """Is it luck? For the agent, the classifier rule and buy-and-hold on the test block: PSR, 95 %
    block-bootstrap intervals of total return and annualised Sharpe, and a verdict
    (:mod:`pipeline.checks.significance`). The agent's DSR deflates for ``configurations_tried``
    (tuning trials) times the seeds, with the variance of the seeds' test-block Sharpe ratios when
    there are several, else the estimation variance of one Sharpe ratio."""
    from pipeline.checks.significance import significance

    rows = (seeds or {}).get("runs") or []
    srs = [
        float(r["test_sharpe"]) / math.sqrt(bars_per_year)
        for r in rows
        if r.get("test_sharpe") is not None
    ]
    var_sr = float(np.var(srs, ddof=1)) if len(srs) > 1 else None
    out: dict[str, dict[str, Any]] = {}
    for name in SIGNIFICANCE_STRATEGIES:
        if not runs.get(name):
            continue
        rec = runs[name][0]
        agent = name == "agent"
        out[name] = significance(
            rec.equity,
            bars_per_year,
            n_trials=max(1, int(configurations_tried)) * max(1, len(rows)) if agent else 1,
            var_sr=var_sr if agent else None,
            traded=rec.trades > 0,
        ).as_dict()
    return out


def significance_lines(section: dict[str, Any]) -> list[str]:
    """One line per strategy for the console summary."""
    out = []
    for name, s in section.items():
        lo, hi = s.get("total_return_ci95") or (None, None)
        slo, shi = s.get("sharpe_annualised_ci95") or (None, None)
        dsr = s.get("dsr")
        deflated = f", DSR {dsr:.2f} over {s['n_trials']} configurations" if dsr is not None else ""
        psr = s.get("psr")
        out.append(
            f"{name}: {s['verdict']} (PSR {_fmt(psr, False)}{deflated}; 95 % interval of the "
            f"total return [{_pct(lo)}, {_pct(hi)}], of the Sharpe [{_fmt(slo, False)}, "
            f"{_fmt(shi, False)}], block bootstrap over {s['n_returns']:,} bars)"
        )
    return out


def json_safe(obj: Any) -> Any:
    """Replace NaN / infinite floats by ``None`` (strict JSON has neither), recursively."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _fmt(value: Any, pct: bool, count: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if count:
        v = float(value)
        return str(int(v)) if v.is_integer() else f"{v:.1f}"
    return f"{100 * value:.2f}%" if pct else f"{value:.3f}"


COLUMN_NOTES: tuple[str, ...] = (
    "n_trades: fills, the final liquidation included; n_round_trips: closed trips win_rate is over",
    "turnover: traded notional / mean equity; time_in_market: share of bars ending with a position",
    "open positions at the end are valued at liquidation (exit fee and slippage paid)",
    "invalid_actions: decisions the env refused (e.g. SELL while flat) and executed as HOLD;"
    " the order counts count them as HOLD",
)
"""Lines under the backtest table that explain its less obvious columns."""


def _pct(value: Any) -> str:
    return f"{100 * float(value):+.1f} %" if isinstance(value, (int, float)) else "n/a"


def agent_verdict(report: dict[str, Any]) -> str:
    """What happened, in plain words, from the report's strategies and its ``agent`` section: "did
    not learn" when the classifier rule made money on validation and the agent never traded; "no
    edge" only when the rule did not make money on validation either; otherwise the agent's test
    return beside the rule's and buy-and-hold's, and whether the agent is still its warm start (PPO
    did not beat it on validation)."""
    strategies = report.get("strategies") or {}
    agent = strategies.get("agent") or {}
    agent_section = report.get("agent") or {}
    val = agent_section.get("validation") or {}
    rule_val = val.get("rule_return")
    trades = agent.get("n_trades")
    if trades == 0:
        if isinstance(rule_val, (int, float)) and rule_val > 0:
            return (
                f"the agent did not learn: the classifier rule made {_pct(rule_val)} on "
                "validation, the agent never traded"
            )
        if isinstance(rule_val, (int, float)):
            return (
                f"no edge: the classifier rule made {_pct(rule_val)} on validation after fees, "
                "and the agent stayed flat (0 trades on the test block)"
            )
        return "the agent never traded on the test block"
    rule_test = (strategies.get("classifier_rule") or {}).get("total_return")
    bh = (strategies.get("buy_and_hold") or {}).get("total_return")
    n = f"{trades:.0f}" if isinstance(trades, (int, float)) else "some"
    out = (
        f"the agent traded ({n} trades): test return {_pct(agent.get('total_return'))} vs the "
        f"classifier rule {_pct(rule_test)}, buy-and-hold {_pct(bh)}, flat +0.0 %"
    )
    warm = agent_section.get("warm_start") or {}
    if warm and agent_section.get("best_timesteps") == 0:
        behaviour = warm.get("behaviour")
        out += f"; it is its warm start ({behaviour}): PPO did not beat that on validation"
    return out


def format_summary(report: dict[str, Any]) -> str:
    """The report's strategies as an aligned text table (one row per strategy)."""
    cols = TABLE_COLUMNS
    rows = [
        [name, *(_fmt(m.get(c), c in PCT_METRICS, c in COUNT_METRICS) for c in cols)]
        for name, m in report["strategies"].items()
    ]
    table = format_table(["strategy", *cols], rows, right=range(1, len(cols) + 1))
    blocks = report.get("blocks", {})
    head = (
        f"backtest {report.get('model')} on {report.get('dataset')}: "
        f"{report.get('chosen_model')} model, predictions {report.get('prediction_source')}"
        + (" (IN-SAMPLE rows present)" if report.get("in_sample_predictions") else "")
        + (f" [{report['oracle']['label']}]" if report.get("oracle") else "")
    )
    if "test" in blocks:
        test = blocks["test"]
        head += f"; test block {test['start']} .. {test['end']} ({test['bars']} bars)"
    notes = []
    if "random" in report["strategies"]:
        seeds = report.get("random_policy_seeds")
        n = f"{int(seeds)} seeds" if seeds else "its seeds"
        notes.append(f"random: mean of {n} (so its counts can be fractional)")
    notes.extend(COLUMN_NOTES)
    agent = report["strategies"].get("agent") or {}
    if agent.get("action_counts"):
        notes.append(agent_actions_line(agent))
    if report.get("periods_per_year_basis"):
        notes.append(f"annualised with {report['periods_per_year_basis']}")
    elif report.get("periods_per_year"):
        notes.append(f"annualised with {float(report['periods_per_year']):.1f} bars/year")
    agent_section = report.get("agent") or {}
    if agent_section.get("model_choice"):
        notes.insert(0, f"the agent's classifier: {agent_section['model_choice']}")
    out = head + "\n" + table + "\n" + "\n".join(f"  note: {x}" for x in notes)
    if report.get("verdict"):
        out += f"\n  verdict: {report['verdict']}"
    for line in significance_lines(report.get("significance") or {}):
        out += f"\n  is it luck? {line}"
    if report.get("seeds"):
        out += "\n" + format_seeds(report["seeds"])
    return out


def seed_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report's ``seeds`` entry of a multi-seed run: every seed's row (validation result,
    test-block result) and the median, min and max of the test-block total return over the seeds, so
    a reader sees the spread behind the selected agent's number."""
    rets = [float(r["test_total_return"]) for r in rows]
    return {
        "selection": "best validation score (selection_metric; the test block plays no part)",
        "selected_seed": next((r["seed"] for r in rows if r.get("selected")), None),
        "runs": list(rows),
        "test_total_return_median": float(np.median(rets)) if rets else None,
        "test_total_return_min": min(rets) if rets else None,
        "test_total_return_max": max(rets) if rets else None,
    }


def format_seeds(seeds: dict[str, Any]) -> str:
    """The ``seeds`` entry as a table: one row per seed, the selected one marked, then the median
    and spread of the test-block total return."""
    rows = [
        [
            f"{r['seed']}{' *' if r.get('selected') else ''}",
            _fmt(r.get("validation_reward"), False),
            _fmt(r.get("validation_return"), True),
            _fmt(r.get("test_total_return"), True),
            _fmt(r.get("test_sharpe"), False),
            _fmt(r.get("test_trades"), False, True),
        ]
        for r in seeds["runs"]
    ]
    table = format_table(
        ["seed", "val_reward", "val_return", "test_return", "test_sharpe", "test_trades"],
        rows,
        right=range(1, 6),
    )
    return (
        f"agents by seed (* = final model, chosen by {seeds['selection']}):\n{table}\n"
        f"  test total return over {len(rows)} seeds: median "
        f"{_fmt(seeds['test_total_return_median'], True)}, min "
        f"{_fmt(seeds['test_total_return_min'], True)}, max "
        f"{_fmt(seeds['test_total_return_max'], True)}"
    )


def agent_actions_line(metrics: dict[str, Any]) -> str:
    """``"agent orders: HOLD 57, BUY_100 1, CLOSE 1; 0 invalid orders executed as HOLD"``.

    Orders never executed are left out; an invalid order counts as the HOLD it became and is
    counted apart too.
    """
    counts = metrics.get("action_counts") or {}
    taken = [
        f"{name} {_fmt(n, False, True)}" for name, n in counts.items() if n is not None and n > 0
    ]
    invalid = _fmt(metrics.get("invalid_actions"), False, True)
    return f"agent orders: {', '.join(taken) or 'none'}; {invalid} invalid orders executed as HOLD"


def write_report(report: dict[str, Any], json_path: str | Path) -> Path:
    """Write the report as strict JSON (NaN / inf as null), atomically."""
    return atomic_write_json(json_path, json_safe(report))
