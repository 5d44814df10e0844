"""Step 7: train the PPO trading agent on the classifier's predictions, then backtest it.

Usage::

    python ppo_approach/train_ppo_agent.py --dataset SYNTH-BTC-EUR_1H_20240101-20251231
    python -m ppo_approach.train_ppo_agent --dataset NAME --resume --preset smoke --set n_envs=4

What happens (:func:`train_agent`):

1. The prediction table ``results/predictions_{model}_{dataset}.csv`` (step 5 wrote each bar's
   predictions, prices, price features and true class) and its ``.json`` (the dataset's SHA-256,
   bars per year, the classifier settings) are read; the dataset CSV is only hashed, to check the
   table was written from it. The table is split by its ``agent_block`` column into the agent's
   train / val / test blocks, each a :class:`~ppo_approach.trading_env.MarketData` of plain numpy
   arrays (the only thing the environment workers receive). No classifier feature, label, split
   or config is needed here.
2. PPO trains on the TRAIN block in ``n_envs`` environments, evaluating on the VALIDATION block
   every ``eval_freq`` timesteps (best model kept) and checkpointing every ``checkpoint_freq``.
   SIGINT / SIGTERM write a checkpoint and exit 130; ``--resume`` continues from the newest one
   (or from a finished run's final model), and refuses with one line naming the changed keys when
   the settings or the data differ from the ones it was trained with (:func:`run_fingerprint`;
   ``total_timesteps``, ``checkpoint_freq`` and other run-only keys may change).
3. The final model is saved as ``ppo_approach/models/ppo_{model}_{dataset}.zip`` with the resolved
   config and a meta JSON beside it, and the chosen model (best on validation, else final) is
   backtested once on the untouched TEST block against the baselines of ``ppo_approach.backtest``,
   annualised with the periods per year inferred from the dataset's bars.

Checkpoints (issue 8 items 3, 4, 7, 16): a fresh run moves the previous run's checkpoints and best
model aside (``.previous_run/``) and deletes them only once it has written its first checkpoint
(or its final model); if it fails before, they are put back. ``--resume`` falls back from a
damaged checkpoint to the newest one that loads, refuses one whose SHA-256 is not the one
recorded when it was written, and never unpickles anything from the file
(:func:`ppo_approach.model_files.load_model`). Only the newest few checkpoints are kept.

Heavy libraries (torch, stable_baselines3, sklearn) are imported inside the functions that need
them, so ``--help`` and usage errors answer at once (issue 8 item 29).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import logging
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.checks.leak_alarms import Alarm, alarm_lines, raise_if_strict
from pipeline.common import (
    EXIT_OK,
    CliParser,
    Paths,
    TrainingInterrupted,
    atomic_write_json,
    progress_bars_wanted,
    run_cli,
    setup_logging,
    sha256_file,
)
from pipeline.config.files import add_config_args, config_from_args, write_resolved
from pipeline.config.schema import Config, PPOConfig
from pipeline.run.lock import step_lock
from pipeline.run.step_results import BacktestReport
from pipeline.store import artifacts as art
from pipeline.store.artifacts import Artifacts, dataset_name
from ppo_approach import backtest, evaluation, run_folder
from ppo_approach.agent_blocks import (
    DIAGNOSTIC_SOURCES,
    ORACLE_LABEL,
    AgentBlock,
    TableDataset,
    build_blocks,
    check_table_dataset,
)
from ppo_approach.reward_functions import RewardConfig, RewardFunction
from ppo_approach.trading_env import EnvConfig, MarketData, TradingEnv

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- training


def _progress_bar_wanted() -> bool:
    """SB3's bar: when :func:`pipeline.common.progress_bars_wanted` (a terminal, or one forwarded by
    the entry point) and tqdm + rich are installed; otherwise a log line every 30 s (item 26)."""
    if not progress_bars_wanted():
        return False
    return all(importlib.util.find_spec(m) is not None for m in ("tqdm", "rich"))


@dataclass
class AgentRun:
    """What the phases of :func:`train_agent` share: the data, the blocks and the settings."""

    cfg: Config
    paths: Paths
    files: Artifacts
    dataset: TableDataset
    """The dataset the prediction table was written from (its ``.json``)."""
    blocks: dict[str, AgentBlock]
    in_sample: bool
    bars_per_year: float
    env_cfg: EnvConfig
    reward_cfg: RewardConfig
    device: str
    checkpoint_dir: Path
    fingerprint: dict[str, Any]
    final_path: Path
    """Where :func:`train` saves the final model (a seed's own folder when ``seeds > 1``)."""
    meta_path: Path
    tb_name: str
    eval_seed: int
    """Seed of the validation episodes: the base seed for every agent of a multi-seed run, so
    all are compared on the same episodes (issue 10)."""
    model_choice: str = ""
    """Which classifier feeds the agent, and why (``prediction_model = auto``: issue 16)."""

    @property
    def model_name(self) -> str:
        """The agent's artifact name (:func:`pipeline.store.artifacts.agent_name`)."""
        p = self.cfg.ppo
        return art.agent_name(p.prediction_model, p.ppo_prediction_source, p.oracle_accuracy)


@dataclass
class Trained:
    """The outcome of the training phase: the final model and what chose the backtested one."""

    model: Any
    evaluator: Any
    val_env: TradingEnv
    resumed_from: Path | None
    vec_kind: str
    warm_start: dict[str, Any] | None = None
    """What ``agent_init = rule`` did (:class:`~ppo_approach.warm_start.WarmStart`), or None."""


def prepare_run(cfg: Config, dataset: str, paths: Paths) -> AgentRun:
    """Phase 1: the agent's blocks from the prediction table and its ``.json`` (the CSV is only
    hashed: the table must have been written from it), the annualisation and the env, reward and
    device settings."""
    from pipeline.classifiers.model_choice import resolve_prediction_model
    from pipeline.classifiers.prediction_table import load_prediction_table, load_table_meta
    from pipeline.data.load import resolve_dataset_path
    from pipeline.device import resolve_device

    cfg, choice = resolve_prediction_model(cfg, paths, dataset)  # auto -> the validation-best
    log.info("the agent's classifier: %s", choice)
    ppo_cfg = cfg.ppo
    paths.ensure()
    files = Artifacts(paths, dataset_name(dataset))  # named by the dataset's name, even for a path
    table = load_prediction_table(paths, ppo_cfg.prediction_model, files.dataset)
    meta = load_table_meta(paths, ppo_cfg.prediction_model, files.dataset)
    csv_sha256 = sha256_file(resolve_dataset_path(dataset, paths.datasets))
    check_table_dataset(meta, csv_sha256, table.attrs["path"])
    data = TableDataset.from_meta(meta)
    blocks = build_blocks(table, meta, ppo_cfg)
    agent = art.agent_name(
        ppo_cfg.prediction_model, ppo_cfg.ppo_prediction_source, ppo_cfg.oracle_accuracy
    )
    in_sample = any(b.in_sample for b in blocks.values())
    if in_sample and ppo_cfg.ppo_prediction_source != "in_sample":
        log.warning(
            "prediction table has in_sample rows although ppo_prediction_source = walk_forward"
        )
    bars_per_year, ppy_how = data.bars_per_year, data.bars_per_year_basis
    log.info("annualisation: %s", ppy_how)
    for name, b in blocks.items():
        d = b.describe()
        log.info("agent %s block: %s .. %s (%d bars)", name, d["start"], d["end"], d["bars"])
    return AgentRun(
        cfg=cfg,
        paths=paths,
        files=files,
        dataset=data,
        blocks=blocks,
        in_sample=in_sample,
        bars_per_year=bars_per_year,
        env_cfg=EnvConfig.from_ppo_config(ppo_cfg),
        reward_cfg=RewardConfig.from_ppo_config(ppo_cfg),
        device=str(resolve_device(ppo_cfg.device, key="ppo device")),
        checkpoint_dir=files.ppo_checkpoint_dir(agent),
        fingerprint=run_folder.run_fingerprint(cfg, data.sha256, data.classifier_settings),
        final_path=files.ppo_model(agent),
        meta_path=files.ppo_meta(agent),
        tb_name=files.tensorboard_name(agent),
        eval_seed=ppo_cfg.seed,
        model_choice=choice,
    )


def for_seed(run: AgentRun, seed: int) -> AgentRun:
    """One agent of a multi-seed run (``seeds > 1``, issue 10): the same data and settings with
    ``ppo.seed = seed``, in its own checkpoint folder (checkpoints, best model, final model), its
    own TensorBoard run, and its own resume fingerprint."""
    cfg = dataclasses.replace(run.cfg, ppo=dataclasses.replace(run.cfg.ppo, seed=seed))
    checkpoint_dir = run.files.ppo_seed_checkpoint_dir(run.model_name, seed)
    return dataclasses.replace(
        run,
        cfg=cfg,
        checkpoint_dir=checkpoint_dir,
        fingerprint=run_folder.run_fingerprint(
            cfg, run.dataset.sha256, run.dataset.classifier_settings
        ),
        final_path=checkpoint_dir / art.PPO_SEED_FINAL_MODEL_NAME,
        meta_path=checkpoint_dir / art.PPO_SEED_FINAL_META_NAME,
        tb_name=run.files.tensorboard_seed_name(run.model_name, seed),
    )


def train(
    run: AgentRun,
    resume: bool,
    on_evaluation: Callable[[dict[str, float]], None] | None = None,
) -> Trained:
    """Phase 2: build (or resume) PPO on the train block, learn with the checkpoint, validation
    and progress callbacks, save the final model. An interrupt writes a checkpoint and raises
    :class:`TrainingInterrupted`; a failure before the first save puts the earlier run's files
    back (issue 8 item 3). ``on_evaluation`` gets each validation evaluation's metrics (see
    :class:`~ppo_approach.callbacks.ValidationEvalCallback`)."""
    from ppo_approach import model_files
    from ppo_approach import ppo_trading_agent as agent

    ppo_cfg, checkpoint_dir = run.cfg.ppo, run.checkpoint_dir
    run_folder.recover_previous_run(
        checkpoint_dir
    )  # a fresh run killed before its first checkpoint
    cands = (
        run_folder.resume_candidates(
            run.paths,
            checkpoint_dir,
            run.model_name,
            run.files.dataset,
            run.fingerprint,
            final_files=(run.final_path, run.meta_path),
        )
        if resume
        else []
    )
    vec_env, vec_kind = agent.make_vec_env(
        run.blocks["train"].data,
        run.env_cfg,
        run.reward_cfg,
        ppo_cfg.n_envs,
        ppo_cfg.seed,
        ppo_cfg.vec_env,
    )
    try:
        loaded = run_folder.load_resume_point(cands, vec_env, run.device, run.paths, ppo_cfg)
        start = loaded[1] if loaded is not None else None
        if resume and start is None:
            log.info("--resume: no usable checkpoint in %s; starting from scratch", checkpoint_dir)
        if start is None:
            run_folder.set_aside_previous_run(checkpoint_dir)
        elif resume:
            run_folder.adopt_unrecorded_files(checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write_json(checkpoint_dir / art.PPO_RUN_CONFIG_NAME, run.fingerprint)
            if loaded is not None:
                model = loaded[0]
                log.info("resuming from %s (%d of %d timesteps)", start.path, start.timesteps,
                         ppo_cfg.total_timesteps)  # fmt: skip
            else:
                model = agent.build_model(ppo_cfg, vec_env, run.device, run.paths.ppo_logs)
            log.info(
                "PPO on %s, %d %s env(s), net %s, %d timesteps",
                run.device,
                vec_env.num_envs,
                vec_kind,
                list(ppo_cfg.net_arch),
                ppo_cfg.total_timesteps,
            )
            val_env, evaluator, warm = _learn(
                run, model, vec_kind, vec_env.num_envs, new_run=start is None,
                on_evaluation=on_evaluation,
            )  # fmt: skip
            model_files.save_model_atomic(model, run.final_path)
            run_folder.drop_previous_run(checkpoint_dir)
        except BaseException:
            run_folder.recover_previous_run(
                checkpoint_dir
            )  # nothing saved yet: the earlier files return
            raise
    finally:
        vec_env.close()
    return Trained(model, evaluator, val_env, start.path if start else None, vec_kind, warm)


def _learn(
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
    val_env = TradingEnv(
        run.blocks["val"].data, run.env_cfg, RewardFunction(run.reward_cfg), random_start=True
    )
    evaluator = callbacks.ValidationEvalCallback(
        val_env,
        checkpoint_dir,
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
    warm = None
    if new_run and ppo_cfg.agent_init == "rule":
        from ppo_approach.warm_start import warm_start

        rule = evaluator.rule_metrics()
        warm = warm_start(
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


def save_final(run: AgentRun, trained: Trained, extra: dict[str, Any] | None = None) -> None:
    """Phase 3: the meta JSON (sha256, timesteps, run config) beside the final model, and the
    resolved config beside the dataset's final model (not beside one seed's own final model)."""
    final_path = run.final_path
    model = trained.model
    if final_path == run.files.ppo_model(run.model_name):
        write_resolved(run.cfg, run.files.ppo_config(run.model_name))
    meta = {
        "model": run.model_name,
        "dataset": run.files.dataset,
        "dataset_sha256": run.dataset.sha256,
        # an oracle agent saw the future: the push step refuses to publish it (issue 10)
        "prediction_source": run.cfg.ppo.ppo_prediction_source,
        "command": shlex.join([sys.executable, *sys.argv]),
        "timesteps": int(model.num_timesteps),
        "resumed_from": str(trained.resumed_from) if trained.resumed_from else None,
        "sha256": sha256_file(final_path),
        "device": run.device,
        "vec_env": trained.vec_kind,
        "config_hash": run.cfg.hash(),
        "run_config": run.fingerprint,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    atomic_write_json(run.meta_path, meta)
    log.info("final model saved to %s (%d timesteps)", final_path, model.num_timesteps)


def train_agent(cfg: Config, dataset: str, paths: Paths, resume: bool) -> BacktestReport:
    """Train (or resume) the agent of ``cfg.ppo.prediction_model`` on ``dataset``, then backtest.

    With ``seeds = N > 1`` N agents train one after the other (:func:`train_seeds`); the one
    with the best validation result becomes the final model and the report lists every seed.
    Returns the backtest report (also written to ``results/backtest_{model}_{dataset}.json``).
    Raises :class:`TrainingInterrupted` (exit code 130) after writing a checkpoint when SIGINT,
    SIGTERM or SIGHUP arrives during training.
    """
    run = prepare_run(cfg, dataset, paths)  # 1. data, blocks, settings
    if cfg.ppo.seeds > 1:
        report = train_seeds(run, resume)  # 2-4 per seed, then the winner's backtest
    else:
        trained = train(run, resume)  # 2. PPO on the train block, validated on the val block
        save_final(run, trained)  # 3. final model, config and meta
        chosen, chosen_model = _model_to_backtest(  # 4. backtest once on the test block
            trained.evaluator,
            run.checkpoint_dir,
            trained.model,
            trained.val_env,
            run.device,
            cfg.ppo,
        )
        _log_backtesting(chosen, trained)
        report = run_backtest(
            chosen_model,
            run.cfg,
            run.files.dataset,
            paths,
            run.dataset,
            run.blocks,
            chosen=chosen,
            timesteps=int(trained.model.num_timesteps),
            in_sample=run.in_sample,
            agent=agent_info(run, trained),
        )
    record_artifacts(run.files, run.model_name)  # 5. what the push step will push
    return report


def agent_info(run: AgentRun, trained: Trained) -> dict[str, Any]:
    """The report's ``agent`` section (issue 16): which classifier fed the agent and why, how it
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


def _log_backtesting(chosen: str, trained: Trained) -> None:
    log.info(
        "backtesting the %s model%s on the test block",
        chosen,
        f" (validation best at {trained.evaluator.best_timesteps} timesteps)"
        if chosen == "best"
        else "",
    )


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


def train_seeds(run: AgentRun, resume: bool) -> BacktestReport:
    """``seeds = N``: train N agents (seeds ``seed .. seed+N-1``, each in its own folder, each
    resumable), pick the one with the best validation result (never the test block) as the final
    model, backtest it against the baselines, and add every seed's test-block result, median and
    spread to the report, so a user can see whether a result is luck (issue 10)."""
    from ppo_approach import callbacks

    ppo_cfg = run.cfg.ppo
    seeds = [ppo_cfg.seed + i for i in range(ppo_cfg.seeds)]
    outcomes: list[SeedOutcome] = []
    for i, seed in enumerate(seeds):
        sub = for_seed(run, seed)
        log.info("agent %d of %d: seed %d (%s)", i + 1, len(seeds), seed, sub.checkpoint_dir)
        trained = train(sub, resume)
        save_final(sub, trained)
        chosen, model = _model_to_backtest(
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
        outcomes.append(SeedOutcome(sub, trained, chosen, model, val))
    # Ties go to the earlier seed; NaN never wins (max over a key that maps NaN to -inf). The
    # score is the one that chose each seed's best model (selection_metric, issue 16).
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
        len(seeds),
    )
    from ppo_approach import model_files

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
    seed_rows = [_seed_row(o, run, o is best) for o in outcomes]
    _log_backtesting(best.chosen, best.trained)
    return run_backtest(
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
        agent=agent_info(best.run, best.trained),
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


def record_artifacts(files: Artifacts, model_name: str) -> None:
    """List what step 7 wrote in the run manifest: the final model, its meta and resolved
    config, the TensorBoard runs, the backtest report and plot (checkpoints stay local)."""
    from pipeline.store.manifest import STEP_AGENT

    manifest = files.manifest()
    written = [
        (files.ppo_model(model_name), "ppo_model"),
        (files.ppo_meta(model_name), "ppo_meta"),
        (files.ppo_config(model_name), "config"),
        (files.backtest_report(model_name), "backtest"),
        (files.backtest_plot(model_name), "plot"),
    ]
    manifest.record_many([(p, k) for p, k in written if p.is_file()], STEP_AGENT)
    for run_dir in files.tensorboard_runs(model_name):
        manifest.record_tree(
            run_dir, "tensorboard", STEP_AGENT, pattern=art.TENSORBOARD_EVENTS_GLOB
        )


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


def _model_to_backtest(
    evaluator: Any,
    checkpoint_dir: Path,
    model: Any,
    val_env: TradingEnv,
    device: str,
    ppo_cfg: PPOConfig,
) -> tuple[str, Any]:
    """``("best", model)`` from ``best_model.zip`` (checksum verified), else ``("final", model)``.

    A damaged best model falls back to the final one with a warning; one that is not the file
    this run recorded stops the step (issue 8 item 7).
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
    bars_per_year, ppy_how = data.bars_per_year, data.bars_per_year_basis
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
    alarms = step7_alarms(report, test.data, ppo_cfg, reward_cfg)
    report["alarms"] = [a.to_dict() for a in alarms]
    json_path = Artifacts(paths, dataset).backtest_report(model_name)
    png_path = Artifacts(paths, dataset).backtest_plot(model_name)
    backtest.write_report(report, json_path)
    flag = " [IN-SAMPLE]" if in_sample else ""
    if ppo_cfg.ppo_prediction_source in DIAGNOSTIC_SOURCES:
        flag = (
            f" [{ORACLE_LABEL}, {ppo_cfg.ppo_prediction_source} accuracy "
            f"{ppo_cfg.oracle_accuracy:.0%}]"
        )
    title = (
        f"PPO ({model_name} predictions, {chosen} model) on {dataset}: test block, "
        f"predictions {ppo_cfg.ppo_prediction_source}{flag}"
    )
    backtest.plot_backtest(
        runs, test.data.timestamps, png_path, title, backtest.json_safe(report["significance"])
    )
    print(backtest.format_summary(backtest.json_safe(report)))
    print("\n".join(alarm_lines(alarms) or ["leak alarms: none"]))
    log.info("backtest written to %s and %s", json_path, png_path)
    raise_if_strict(alarms, cfg.training.strict_alarms, str(json_path))
    return report


def step7_alarms(
    report: BacktestReport, data: MarketData, ppo_cfg: PPOConfig, reward_cfg: RewardConfig
) -> list[Alarm]:
    """Issue 18 item 1: the env probed for the future on the test block (observations from bars
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


# ---------------------------------------------------------------- CLI


def build_parser() -> CliParser:
    """Arguments of step 7 (usage errors exit 1, issue 8 item 12)."""
    p = CliParser(
        prog="train_ppo_agent.py",
        description="Train the PPO trading agent on a dataset's prediction table, then backtest.",
    )
    p.add_argument("--dataset", required=True, help="dataset name (datasets/NAME.csv)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint of this run"
    )
    p.add_argument("--root", type=Path, default=None, help="artifact root (default: project)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    add_config_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train, backtest; 130 after an interrupt (checkpoint written)."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        setup_logging(args.verbose)
        cfg = config_from_args(args)
        paths = Paths.from_root(args.root)
        try:
            # A full run holding this dataset's lock makes a hand-run step refuse (issue 8 item
            # 14); inside the driver (which holds it) this is a no-op.
            with step_lock(paths, args.dataset):
                train_agent(cfg, args.dataset, paths, args.resume)
        except TrainingInterrupted as exc:
            argv_used = list(sys.argv[1:] if argv is None else argv)
            if "--resume" not in argv_used:
                argv_used.append("--resume")
            print(str(exc), file=sys.stderr)
            if not exc.has_checkpoint:
                return exc.exit_code
            print(
                "resume with: "
                + shlex.join([sys.executable, "-m", "ppo_approach.train_ppo_agent", *argv_used]),
                file=sys.stderr,
            )
            return exc.exit_code
        return EXIT_OK

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
