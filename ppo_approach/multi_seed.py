"""``seeds = N > 1``: N agents trained one after the other, the one with the best
validation result as the final model, and every seed's test-block result in the report
(:func:`train_seeds`). Step 7's training and saving phases are passed in by
:func:`ppo_approach.train_ppo_agent.train_agent`, which imports this module."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.run.step_results import BacktestReport
from pipeline.store import artifacts as art
from ppo_approach import agent_report, backtest, evaluation, run_folder
from ppo_approach.agent_run import AgentRun, Trained, for_seed

log = logging.getLogger(__name__)

TrainPhase = Callable[[AgentRun, bool], Trained]
"""Phase 2 of step 7: :func:`ppo_approach.train_ppo_agent.train` (``run``, ``resume``)."""


class SavePhase(Protocol):
    """Phase 3 of step 7: :func:`ppo_approach.train_ppo_agent.save_final`."""

    def __call__(
        self, run: AgentRun, trained: Trained, extra: dict[str, Any] | None = None
    ) -> None: ...


@dataclass
class SeedOutcome:
    """One agent of a multi-seed run: its training outcome, the model chosen for the backtest
    and its validation result (the selection score: mean validation episode reward, the same
    score that picks each agent's best checkpoint)."""

    run: AgentRun
    trained: Trained
    chosen: str
    model: Any
    validation: dict[str, float]


def _validation_of(
    outcome_run: AgentRun, trained: Trained, chosen: str, model: Any
) -> dict[str, float]:
    """The chosen model's validation metrics: the best evaluation's (``best_model.json``), or,
    for a final model that was never evaluated, one evaluation on the same episodes now."""

    ev = trained.evaluator
    meta = run_folder.read_json(ev.directory / art.PPO_BEST_META_NAME) if chosen == "best" else None
    if meta is not None and "mean_reward" in meta:
        return {k: float(v) for k, v in meta.items() if isinstance(v, (int, float))}
    cfg = outcome_run.cfg.ppo
    return evaluation.evaluate_on_block(
        model, trained.val_env, cfg.eval_episodes, outcome_run.eval_seed, outcome_run.bars_per_year
    )


def train_seeds(
    run: AgentRun, resume: bool, train: TrainPhase, save_final: SavePhase
) -> BacktestReport:
    """``seeds = N``: train N agents (seeds ``seed .. seed+N-1``, each in its own folder, each
    resumable), pick the one with the best validation result (never the test block) as the final
    model, backtest it against the baselines, and add every seed's test-block result, median and
    spread to the report, so a user can see whether a result is luck. ``train`` and
    ``save_final``: step 7's phases 2 and 3, run for every seed."""
    ppo_cfg = run.cfg.ppo
    seeds = [ppo_cfg.seed + i for i in range(ppo_cfg.seeds)]
    outcomes: list[SeedOutcome] = []
    for i, seed in enumerate(seeds):
        sub = for_seed(run, seed)
        log.info("agent %d of %d: seed %d (%s)", i + 1, len(seeds), seed, sub.checkpoint_dir)
        outcomes.append(_train_seed(run, sub, resume, train, save_final))
    best = _best(outcomes, run, len(seeds))
    _save_winner(run, best, seeds, save_final)
    seed_rows = [_seed_row(o, run, o is best) for o in outcomes]
    agent_report.log_backtesting(best.chosen, best.trained)
    return agent_report.run_backtest(
        best.model,
        run.cfg,
        run.files.dataset,
        run.paths,
        run.dataset,
        run.blocks,
        chosen=best.chosen,
        timesteps=int(best.trained.model.num_timesteps),
        in_sample=run.in_sample,
        seeds=backtest.seed_summary(seed_rows),
        agent=agent_report.agent_info(best.run, best.trained),
    )


def _train_seed(
    run: AgentRun, sub: AgentRun, resume: bool, train: TrainPhase, save_final: SavePhase
) -> SeedOutcome:
    """One seed's agent (``sub``, :func:`~ppo_approach.agent_run.for_seed`): trained, saved in its
    own folder, its model to backtest chosen and its validation result read."""
    seed = sub.cfg.ppo.seed
    trained = train(sub, resume)
    save_final(sub, trained)
    chosen, model = agent_report.model_to_backtest(
        trained.evaluator,
        sub.checkpoint_dir,
        trained.model,
        trained.val_env,
        run.device,
        sub.cfg.ppo,
    )
    val = _validation_of(sub, trained, chosen, model)
    log.info(
        "agent seed %d: validation reward %.3f, return %+.2f%% (%s model)",
        seed,
        val["mean_reward"],
        100 * val["mean_return"],
        chosen,
    )
    return SeedOutcome(sub, trained, chosen, model, val)


def _best(outcomes: list[SeedOutcome], run: AgentRun, n_seeds: int) -> SeedOutcome:
    """The seed with the best validation score of ``selection_metric``."""
    from ppo_approach import callbacks

    ppo_cfg = run.cfg.ppo
    # Ties go to the earlier seed; NaN never wins (max over a key that maps NaN to -inf). The
    # score is the one that chose each seed's best model (selection_metric).
    key = callbacks.SELECTION_KEYS[ppo_cfg.selection_metric]
    best = max(
        outcomes,
        key=lambda o: (
            o.validation[key] if o.validation[key] == o.validation[key] else -float("inf")
        ),
    )
    win = best.run
    log.info(
        "final model: seed %d (best validation %s of %d seeds)",
        win.cfg.ppo.seed,
        ppo_cfg.selection_metric,
        n_seeds,
    )
    return best


def _save_winner(run: AgentRun, best: SeedOutcome, seeds: list[int], save_final: SavePhase) -> None:
    """The winner's final model as the dataset's final model, its meta naming the seeds."""
    from ppo_approach import model_files

    ppo_cfg = run.cfg.ppo
    win = best.run
    # The winner's final model is the dataset's final model, with the config that trains it
    # (its seed, seeds = 1) and its meta beside it.
    final_run = dataclasses.replace(
        win,
        cfg=dataclasses.replace(win.cfg, ppo=dataclasses.replace(win.cfg.ppo, seeds=1)),
        final_path=run.final_path,
        meta_path=run.meta_path,
    )
    model_files.save_model_atomic(best.trained.model, run.final_path)
    save_final(
        final_run,
        best.trained,
        extra={
            "selected_from_seeds": seeds,
            "selection": f"best validation mean {ppo_cfg.selection_metric}",
        },
    )


def _seed_row(outcome: SeedOutcome, run: AgentRun, selected: bool) -> dict[str, Any]:
    """One seed's line of the report: validation result and its agent's test-block metrics."""

    test = run.blocks["test"]
    rec = evaluation.run_episode(
        backtest.block_env(test.data, backtest.backtest_env_config(run.env_cfg), run.reward_cfg),
        evaluation.policy_for(outcome.model),
    )
    m = evaluation.strategy_metrics(rec, run.bars_per_year)
    return {
        "seed": outcome.run.cfg.ppo.seed,
        "selected": selected,
        "chosen_model": outcome.chosen,
        "timesteps": int(outcome.trained.model.num_timesteps),
        "validation_reward": outcome.validation["mean_reward"],
        "validation_return": outcome.validation["mean_return"],
        "test_total_return": m["total_return"],
        "test_sharpe": m["sharpe"],
        "test_max_drawdown": m["max_drawdown"],
        "test_trades": m["n_trades"],
    }
