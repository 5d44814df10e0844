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

Checkpoints: a fresh run moves the previous run's checkpoints and best model aside
(``.previous_run/``) and deletes them only once it has written its first checkpoint (or its final
model); if it fails before, they are put back. ``--resume`` falls back from a damaged checkpoint to
the newest one that loads, refuses one whose SHA-256 is not the one recorded when it was written,
and never unpickles anything from the file (:func:`ppo_approach.model_files.load_model`). Only the
newest few checkpoints are kept.

Heavy libraries (torch, stable_baselines3, sklearn) are imported inside the functions that need
them, so ``--help`` and usage errors answer at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.common import (
    EXIT_OK,
    CliParser,
    Paths,
    TrainingInterrupted,
    atomic_write_json,
    run_cli,
    setup_logging,
    sha256_file,
)
from pipeline.config.files import add_config_args, config_from_args, write_resolved
from pipeline.config.schema import Config
from pipeline.run.lock import step_lock
from pipeline.run.step_results import BacktestReport
from pipeline.store import artifacts as art
from pipeline.store.artifacts import Artifacts, dataset_name
from ppo_approach import agent_report, learn_phase, multi_seed, run_folder
from ppo_approach.agent_blocks import TableDataset, build_blocks, check_table_dataset
from ppo_approach.agent_run import AgentRun, Trained
from ppo_approach.reward_functions import RewardConfig
from ppo_approach.run_folder import ResumeCandidate
from ppo_approach.trading_env import EnvConfig

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- training


def setup_agent_run(cfg: Config, dataset: str, paths: Paths) -> AgentRun:
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


def train(
    run: AgentRun,
    resume: bool,
    on_evaluation: Callable[[dict[str, float]], None] | None = None,
) -> Trained:
    """Phase 2: build (or resume) PPO on the train block, learn with the checkpoint, validation
    and progress callbacks, save the final model. An interrupt writes a checkpoint and raises
    :class:`TrainingInterrupted`; a failure before the first save puts the earlier run's files
    back. ``on_evaluation`` gets each validation evaluation's metrics (see
    :class:`~ppo_approach.callbacks.ValidationEvalCallback`)."""
    from ppo_approach import model_files
    from ppo_approach import ppo_trading_agent as agent

    ppo_cfg, checkpoint_dir = run.cfg.ppo, run.checkpoint_dir
    # a fresh run killed before its first checkpoint
    run_folder.recover_previous_run(checkpoint_dir)
    cands = _resume_candidates(run) if resume else []
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
            model = _start_model(run, loaded, vec_env, vec_kind)
            val_env, evaluator, warm = learn_phase.learn(
                run, model, vec_kind, vec_env.num_envs, new_run=start is None,
                on_evaluation=on_evaluation,
            )  # fmt: skip
            model_files.save_model_atomic(model, run.final_path)
            run_folder.drop_previous_run(checkpoint_dir)
        except BaseException:
            # nothing saved yet: the earlier files return
            run_folder.recover_previous_run(checkpoint_dir)
            raise
    finally:
        vec_env.close()
    return Trained(model, evaluator, val_env, start.path if start else None, vec_kind, warm)


def _resume_candidates(run: AgentRun) -> list[ResumeCandidate]:
    """What ``--resume`` may continue from (:func:`ppo_approach.run_folder.resume_candidates`):
    this run's checkpoints, or a finished run's final model."""
    return run_folder.resume_candidates(
        run.paths,
        run.checkpoint_dir,
        run.model_name,
        run.files.dataset,
        run.fingerprint,
        final_files=(run.final_path, run.meta_path),
    )


def _start_model(
    run: AgentRun, loaded: tuple[Any, ResumeCandidate] | None, vec_env: Any, vec_kind: str
) -> Any:
    """The model to learn: the resumed one (``loaded``), else a new PPO on ``vec_env``."""
    from ppo_approach import ppo_trading_agent as agent

    ppo_cfg = run.cfg.ppo
    if loaded is not None:
        model, start = loaded
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
    return model


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
        # an oracle agent saw the future: the push step refuses to publish it
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

    With ``seeds = N > 1`` N agents train one after the other
    (:func:`ppo_approach.multi_seed.train_seeds`); the one with the best validation result
    becomes the final model and the report lists every seed.
    Returns the backtest report (also written to ``results/backtest_{model}_{dataset}.json``).
    Raises :class:`TrainingInterrupted` (exit code 130) after writing a checkpoint when SIGINT,
    SIGTERM or SIGHUP arrives during training.
    """
    run = setup_agent_run(cfg, dataset, paths)  # 1. data, blocks, settings
    if cfg.ppo.seeds > 1:
        # 2-4 per seed, then the winner's backtest
        report = multi_seed.train_seeds(run, resume, train, save_final)
    else:
        trained = train(run, resume)  # 2. PPO on the train block, validated on the val block
        save_final(run, trained)  # 3. final model, config and meta
        chosen, chosen_model = agent_report.model_to_backtest(  # 4. backtest once on the test block
            trained.evaluator,
            run.checkpoint_dir,
            trained.model,
            trained.val_env,
            run.device,
            cfg.ppo,
        )
        agent_report.log_backtesting(chosen, trained)
        report = agent_report.run_backtest(
            chosen_model,
            run.cfg,
            run.files.dataset,
            paths,
            run.dataset,
            run.blocks,
            chosen=chosen,
            timesteps=int(trained.model.num_timesteps),
            in_sample=run.in_sample,
            agent=agent_report.agent_info(run, trained),
        )
    record_artifacts(run.files, run.model_name)  # 5. what the push step will push
    return report


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


# ---------------------------------------------------------------- CLI


def build_parser() -> CliParser:
    """Arguments of step 7 (usage errors exit 1)."""
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
            # A full run holding this dataset's lock makes a hand-run step refuse; inside the
            # driver (which holds it) this is a no-op.
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
