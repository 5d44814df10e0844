"""Step 7's backtest phase: which model to backtest (:func:`model_to_backtest`: the validation
best, else the final one), the report's ``agent`` section (:func:`agent_info`), the one run over
the untouched test block against the baselines of :mod:`ppo_approach.backtest`
(:func:`run_backtest`: JSON, PNG and table) and its leak alarms (:func:`step7_alarms`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.checks.leak_alarms import Alarm, alarm_lines, raise_if_strict
from pipeline.common import Paths
from pipeline.config.schema import Config, PPOConfig
from pipeline.run.step_results import BacktestReport
from pipeline.store import artifacts as art
from pipeline.store.artifacts import Artifacts
from ppo_approach import backtest, backtest_plot, evaluation, run_folder
from ppo_approach.agent_blocks import DIAGNOSTIC_SOURCES, ORACLE_LABEL, AgentBlock, TableDataset
from ppo_approach.agent_run import AgentRun, Trained
from ppo_approach.evaluation import EpisodeRecord
from ppo_approach.reward_functions import RewardConfig
from ppo_approach.trading_env import EnvConfig, MarketData, TradingEnv

log = logging.getLogger(__name__)


def model_to_backtest(
    evaluator: Any,
    checkpoint_dir: Path,
    model: Any,
    val_env: TradingEnv,
    device: str,
    ppo_cfg: PPOConfig,
) -> tuple[str, Any]:
    """``("best", model)`` from ``best_model.zip`` (checksum verified), else ``("final", model)``.

    A damaged best model falls back to the final one with a warning; one that is not the file
    this run recorded stops the step.
    """
    from ppo_approach import model_files

    best = evaluator.best_path
    if not best.is_file():
        return "final", model
    checksums = model_files.read_checksums(checkpoint_dir)
    sha = checksums.get(best.name) if checksums is not None else None
    if checksums is not None and sha is None:
        raise run_folder.unrecorded_error(best, checkpoint_dir / art.PPO_CHECKSUMS_NAME)
    try:
        loaded = model_files.load_model(
            best,
            None,
            device,
            spaces=(val_env.observation_space, val_env.action_space),
            expected_sha256=sha,
            algorithm=ppo_cfg.algorithm,
        )
    except model_files.CorruptModelError as exc:
        log.warning("best model unusable (%s); backtesting the final model instead", exc)
        return "final", model
    return "best", loaded


def agent_info(run: AgentRun, trained: Trained) -> dict[str, Any]:
    """The report's ``agent`` section: which classifier fed the agent and why, how it
    started (the warm start), when its validation best was reached (0: the starting policy, PPO
    did not beat it on validation), and the validation returns of the agent, the classifier rule
    and flat on the same episodes (what the verdict line reads)."""
    ev = trained.evaluator
    rule = ev.rule_metrics()
    best = run_folder.read_json(ev.directory / art.PPO_BEST_META_NAME) or {}
    return {
        "prediction_model": run.cfg.ppo.prediction_model,
        "model_choice": run.model_choice,
        "agent_init": run.cfg.ppo.agent_init,
        "warm_start": trained.warm_start,
        "best_timesteps": ev.best_timesteps,
        "validation": {
            "episodes": ev.episodes,
            "agent_return": best.get("mean_return"),
            "agent_trades": best.get("total_trades"),
            "rule_return": rule["mean_return"] if rule is not None else None,
            "flat_return": ev.flat_metrics()["mean_return"],
        },
    }


def log_backtesting(chosen: str, trained: Trained) -> None:
    """Log which model is backtested (and when the validation best was reached)."""
    log.info(
        "backtesting the %s model%s on the test block",
        chosen,
        f" (validation best at {trained.evaluator.best_timesteps} timesteps)"
        if chosen == "best"
        else "",
    )


def run_backtest(
    model: Any,
    cfg: Config,
    dataset: str,
    paths: Paths,
    data: TableDataset,
    blocks: dict[str, AgentBlock],
    chosen: str,
    timesteps: int,
    in_sample: bool,
    seeds: dict[str, Any] | None = None,
    agent: dict[str, Any] | None = None,
) -> BacktestReport:
    """Run the agent and the baselines once over the test block; write JSON + PNG; print a table.

    ``seeds``: every agent's result of a multi-seed run (:func:`backtest.seed_summary`);
    ``agent``: :func:`agent_info` (with the strategies it gives the report's ``verdict``)."""
    ppo_cfg = cfg.ppo
    model_name = art.agent_name(
        ppo_cfg.prediction_model, ppo_cfg.ppo_prediction_source, ppo_cfg.oracle_accuracy
    )
    test = blocks["test"]
    reward_cfg = RewardConfig.from_ppo_config(ppo_cfg)

    agent_policy = evaluation.policy_for(model)  # MaskablePPO predicts with the env's mask

    runs = backtest.run_strategies(
        test.data,
        EnvConfig.from_ppo_config(ppo_cfg),
        reward_cfg,
        agent_policy,
        test.probs,
        [ppo_cfg.seed + i for i in range(ppo_cfg.random_policy_seeds)],
    )
    report = _report(
        runs, model_name, dataset, data, blocks, ppo_cfg, chosen, timesteps, in_sample, seeds, agent
    )
    alarms = step7_alarms(report, test.data, ppo_cfg, reward_cfg)
    report["alarms"] = [a.to_dict() for a in alarms]
    json_path = Artifacts(paths, dataset).backtest_report(model_name)
    png_path = Artifacts(paths, dataset).backtest_plot(model_name)
    backtest.write_report(report, json_path)
    title = _plot_title(model_name, chosen, dataset, ppo_cfg, in_sample)
    backtest_plot.plot_backtest(
        runs, test.data.timestamps, png_path, title, backtest.json_safe(report["significance"])
    )
    print(backtest.format_summary(backtest.json_safe(report)))
    print("\n".join(alarm_lines(alarms) or ["leak alarms: none"]))
    log.info("backtest written to %s and %s", json_path, png_path)
    raise_if_strict(alarms, cfg.training.strict_alarms, str(json_path))
    return report


def _report(
    runs: dict[str, list[EpisodeRecord]],
    model_name: str,
    dataset: str,
    data: TableDataset,
    blocks: dict[str, AgentBlock],
    ppo_cfg: PPOConfig,
    chosen: str,
    timesteps: int,
    in_sample: bool,
    seeds: dict[str, Any] | None,
    agent: dict[str, Any] | None,
) -> BacktestReport:
    """The report of :func:`run_backtest` before its alarms: the run, the blocks, the
    annualisation, every strategy's metrics, the verdict and the significance section."""
    bars_per_year, ppy_how = data.bars_per_year, data.bars_per_year_basis
    report: BacktestReport = {
        "model": model_name,
        "dataset": dataset,
        "dataset_sha256": data.sha256,
        "prediction_source": ppo_cfg.ppo_prediction_source,
        "in_sample_predictions": bool(in_sample),
        "oracle": (
            {"label": ORACLE_LABEL, "accuracy": ppo_cfg.oracle_accuracy}
            if ppo_cfg.ppo_prediction_source in DIAGNOSTIC_SOURCES
            else None
        ),
        "timesteps": int(timesteps),
        "chosen_model": chosen,
        "blocks": {name: b.describe() for name, b in blocks.items()},
        "interval_seconds": data.interval_seconds,
        "periods_per_year": bars_per_year,
        "periods_per_year_basis": ppy_how,
        "transaction_cost": ppo_cfg.transaction_cost,
        "random_policy_seeds": ppo_cfg.random_policy_seeds,
        "strategies": backtest.summarise_runs(runs, bars_per_year),
        "seeds": seeds,
        "agent": agent,
        "verdict": "",
        "significance": backtest.significance_section(
            runs, bars_per_year, seeds, ppo_cfg.configurations_tried
        ),
    }
    report["verdict"] = backtest.agent_verdict(report)
    return report


def _plot_title(
    model_name: str, chosen: str, dataset: str, ppo_cfg: PPOConfig, in_sample: bool
) -> str:
    """The PNG's title: which agent on which dataset, and what fed it (in-sample or oracle)."""
    flag = " [IN-SAMPLE]" if in_sample else ""
    if ppo_cfg.ppo_prediction_source in DIAGNOSTIC_SOURCES:
        flag = (
            f" [{ORACLE_LABEL}, {ppo_cfg.ppo_prediction_source} accuracy "
            f"{ppo_cfg.oracle_accuracy:.0%}]"
        )
    return (
        f"PPO ({model_name} predictions, {chosen} model) on {dataset}: test block, "
        f"predictions {ppo_cfg.ppo_prediction_source}{flag}"
    )


def step7_alarms(
    report: BacktestReport, data: MarketData, ppo_cfg: PPOConfig, reward_cfg: RewardConfig
) -> list[Alarm]:
    """Leak alarms: the env probed for the future on the test block (observations from bars
    <= t, fills at the next bar's open) and implausible test Sharpe ratios (``alarm_sharpe``)."""
    from ppo_approach.leak_probe import agent_alarms, env_probe_alarms

    config = backtest.backtest_env_config(EnvConfig.from_ppo_config(ppo_cfg))

    def make(d: MarketData) -> TradingEnv:
        return backtest.block_env(d, config, reward_cfg)

    from gymnasium.spaces import Discrete

    space = make(data).action_space
    n_actions = int(space.n) if isinstance(space, Discrete) else 2
    alarms = env_probe_alarms(make, data, n_actions, ppo_cfg.seed)
    alarms += agent_alarms(dict(report), ppo_cfg.alarm_sharpe)
    for alarm in alarms:
        log.warning("%s", alarm.line())
    return alarms
