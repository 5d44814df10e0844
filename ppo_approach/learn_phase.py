"""Step 7's learning phase (:func:`learn`): PPO's ``learn()`` on the train block with the
checkpoint, validation and progress callbacks, the warm start of ``agent_init = rule`` before the
first rollout, and the interrupt checkpoint (:func:`_interrupted`). Called by
:func:`ppo_approach.train_ppo_agent.train`, which builds or resumes the model and saves it."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.common import TrainingInterrupted, progress_bars_wanted
from ppo_approach import run_folder
from ppo_approach.agent_run import AgentRun
from ppo_approach.reward_functions import RewardFunction
from ppo_approach.trading_env import TradingEnv


def _progress_bar_wanted() -> bool:
    """SB3's bar: when :func:`pipeline.common.progress_bars_wanted` (a terminal, or one forwarded by
    the entry point) and tqdm + rich are installed; otherwise a log line every 30 s."""
    if not progress_bars_wanted():
        return False
    return all(importlib.util.find_spec(m) is not None for m in ("tqdm", "rich"))


def learn(
    run: AgentRun,
    model: Any,
    vec_kind: str,
    n_envs: int,
    new_run: bool,
    on_evaluation: Callable[[dict[str, float]], None] | None = None,
) -> tuple[TradingEnv, Any, dict[str, Any] | None]:
    """``learn()`` with the checkpoint, validation and progress callbacks; an interrupt writes a
    checkpoint and raises (see :func:`_interrupted`). A new run with ``agent_init = rule`` is
    first warm-started (:mod:`ppo_approach.warm_start`) and that policy evaluated on validation
    before the first rollout. Returns the validation env, the evaluator and the warm start."""
    from ppo_approach import callbacks
    from ppo_approach import ppo_trading_agent as agent

    ppo_cfg, checkpoint_dir = run.cfg.ppo, run.checkpoint_dir
    stopper = callbacks.StopOnRequestCallback(callbacks.StopRequest())
    val_env, evaluator = _validation(run, stopper, new_run, on_evaluation)
    warm = None
    if new_run and ppo_cfg.agent_init == "rule":
        warm = _warm_start(run, model, evaluator)
    checkpointer = callbacks.RolloutCheckpointCallback(
        checkpoint_dir,
        ppo_cfg.checkpoint_freq,
        ppo_cfg.keep_checkpoints,
        after_save=lambda _: run_folder.drop_previous_run(checkpoint_dir),
    )
    cbs: list[Any] = [checkpointer, evaluator]
    bars = _progress_bar_wanted()
    if not bars:
        cbs.append(callbacks.ProgressLogCallback(ppo_cfg.total_timesteps))
    tb_name = run.tb_name
    with agent.parent_threads(vec_kind, n_envs):
        result = agent.learn(
            model, ppo_cfg.total_timesteps, cbs, stopper, tb_name, bars, new_run=new_run
        )
    if result.interrupted:
        _interrupted(
            model, result, checkpoint_dir, ppo_cfg.keep_checkpoints, ppo_cfg.total_timesteps
        )
    return val_env, evaluator, warm


def _validation(
    run: AgentRun,
    stopper: Any,
    new_run: bool,
    on_evaluation: Callable[[dict[str, float]], None] | None,
) -> tuple[TradingEnv, Any]:
    """The validation env (random starts on the val block) and its evaluator; a resumed run's
    evaluator reads the best evaluation so far back."""
    from ppo_approach import callbacks

    ppo_cfg = run.cfg.ppo
    val_env = TradingEnv(
        run.blocks["val"].data, run.env_cfg, RewardFunction(run.reward_cfg), random_start=True
    )
    evaluator = callbacks.ValidationEvalCallback(
        val_env,
        run.checkpoint_dir,
        ppo_cfg.eval_freq,
        ppo_cfg.eval_episodes,
        run.eval_seed,
        run.bars_per_year,
        stopper,
        probs=run.blocks["val"].probs,  # raw probabilities, whatever the observation scaling
        on_evaluation=on_evaluation,
        evaluate_at_start=new_run and ppo_cfg.agent_init == "rule",
        metric=ppo_cfg.selection_metric,
    )
    if not new_run:
        evaluator.load_best_meta()
    return val_env, evaluator


def _warm_start(run: AgentRun, model: Any, evaluator: Any) -> dict[str, Any]:
    """``agent_init = rule``: ``model`` fitted on the train block to the classifier rule when it
    beat flat on validation, else to flat (:func:`ppo_approach.warm_start.warm_start`); what it
    did, as the report's ``warm_start`` entry."""
    from ppo_approach.warm_start import warm_start

    ppo_cfg = run.cfg.ppo
    rule = evaluator.rule_metrics()
    return warm_start(
        model,
        run.blocks["train"].data,
        run.blocks["train"].probs,
        run.env_cfg,
        run.reward_cfg,
        rule[evaluator.score_key] if rule is not None else None,
        evaluator.flat_metrics()[evaluator.score_key],
        ppo_cfg.agent_init_epochs,
        ppo_cfg.gamma,
        ppo_cfg.seed,
        ppo_cfg.selection_metric,
        ppo_cfg.agent_init_label_smoothing,
    ).as_dict()


def _interrupted(model: Any, result: Any, checkpoint_dir: Path, keep: int, total: int) -> None:
    """Write the interrupt checkpoint (when a rollout finished at all) and raise
    :class:`TrainingInterrupted`."""
    from ppo_approach import callbacks

    if result.timesteps == 0:
        # Not one update yet: nothing worth a checkpoint, and the earlier run's files (if any)
        # are put back by the caller rather than replaced by an untrained model.
        raise TrainingInterrupted(
            f"interrupted by {result.signal_name} before the first rollout finished; no "
            "checkpoint written (nothing was learned yet)"
        )
    # The interrupted rollout was thrown away: count only what the weights learned from.
    model.num_timesteps = result.timesteps
    path = callbacks.save_checkpoint(model, checkpoint_dir, result.timesteps, keep)
    run_folder.drop_previous_run(checkpoint_dir)
    raise TrainingInterrupted(
        f"interrupted by {result.signal_name} at {result.timesteps} of {total} timesteps; "
        f"checkpoint written to {path}; run the same command with --resume to continue",
        checkpoint_path=path,
    )
