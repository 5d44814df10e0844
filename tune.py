"""Hyperparameter tuning with Optuna (issue 11): one machine or many, resumable, never touching
the test block.

Usage::

    python tune.py --dataset NAME --stage classifier --model dlstm --trials 50 --preset demo
    python tune.py --dataset NAME --stage agent --trials 100 --timeout 120 \\
        --storage postgresql://user:pw@host/optuna        # the same command on every pod

``--trials N`` is the study's target: workers (``--jobs``, other pods) stop once the study has N
complete or pruned trials, so rerunning the command after a stop continues where it was. The
objective is maximised on the development data only:

* ``classifier``: the validation macro-F1 of one architecture (``--model``) at its best epoch
  (the lowest validation loss, as step 5 picks it). Macro-F1 rather than log loss: it is the
  number step 5 reports and the cross-dataset table compares classifiers on, it weighs the three
  classes equally (log loss rewards well-calibrated "stationary" calls that the agent cannot
  trade on), and the loss already decides early stopping inside each trial. Each epoch's
  validation macro-F1 goes to the pruner. The dataset is cut before the first row any test
  window reads (for every lookback in the space) and split into train and validation only.
* ``agent``: the best validation mean episode reward (``evaluator.best_reward``: the score that
  picks the best checkpoint and the best of several seeds in step 7); each evaluation's mean
  reward goes to the pruner. It reads step 5's prediction table (run step 5 first) and keeps
  only the agent's train and val blocks: the test block is dropped before any trial starts.

Outputs (``results/tuning_{stage}_{dataset}/``, the classifier's in a ``{model}/`` folder):
``best_params.txt`` (a ``--set-file`` that ``runpod_main.py`` and every step accept),
``optimization_history.png``, ``param_importances.png``, ``top_trials.md``, ``command.txt`` (the
full pipeline with the best parameters) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.common import (
    EXIT_OK,
    CliParser,
    Paths,
    PipelineError,
    run_cli,
    setup_logging,
)
from pipeline.config.files import add_config_args, config_from_args
from pipeline.config.schema import NETWORK_NAMES, Config
from pipeline.run.lock import absolute_dataset
from pipeline.store import artifacts as art
from pipeline.store.artifacts import Artifacts, dataset_name
from pipeline.tuning.space import (
    SearchSpace,
    default_space_path,
    read_search_space,
    stage_space,
    trial_config,
)
from pipeline.tuning.study import check_study_name, make_study, remove_inside
from pipeline.tuning.trials import METRICS, STAGES

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("tune")


# ================================================================ classifier objective


def classifier_objective(
    args: argparse.Namespace, cfg: Config, paths: Paths, space: SearchSpace, model: str
) -> Callable[[optuna.Trial], float]:
    """Load the dataset once, cut it to the development rows, and return the objective."""
    import optuna

    from pipeline.classifiers.nets import arch_config, build_classifier
    from pipeline.classifiers.report import labelled_bars
    from pipeline.classifiers.windows import WindowData
    from pipeline.device import configure_cpu_threads, resolve_device, seed_everything
    from pipeline.tuning.development import development_arrays, development_frame
    from pytorch_train import train_classifier

    dev, features = development_frame(args.dataset, cfg, paths.datasets, space)
    device = resolve_device(cfg.training.device)
    if device.type == "cpu":
        configure_cpu_threads(cfg.training.num_threads)

    def objective(trial: optuna.Trial) -> float:
        tcfg = trial_config(args, space.suggest(trial)).training
        arrays = development_arrays(dev, tcfg, features)
        s = arrays.splits
        fit = labelled_bars(s.train, arrays.labels)
        es = labelled_bars(s.val, arrays.labels)
        train = WindowData.create(arrays.scaled, fit, arrays.labels[fit], tcfg.lookback, device)
        val = WindowData.create(arrays.scaled, es, arrays.labels[es], tcfg.lookback, device)
        seed_everything(tcfg.seed)
        net = build_classifier(arch_config(model, len(arrays.feature_names), tcfg))

        def on_epoch(epoch: int, record: dict[str, float]) -> None:
            trial.report(float(record["val_macro_f1"]), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: val macro-F1 {record['val_macro_f1']}")

        result = train_classifier(
            net, train, val, tcfg, epoch_callback=on_epoch, desc=f"trial {trial.number}",
            progress=False,
        )  # fmt: skip
        best = result.history[result.best_epoch - 1]
        trial.set_user_attr("best_epoch", int(result.best_epoch))
        trial.set_user_attr("epochs_run", int(result.epochs_run))
        trial.set_user_attr("val_loss", float(best["val_loss"]))
        trial.set_user_attr("last_train_bar", int(s.train.stop - 1))
        trial.set_user_attr("last_val_bar", int(s.val.stop - 1))
        return float(best["val_macro_f1"])

    return objective


# ================================================================ agent objective


@dataclasses.dataclass(frozen=True)
class _TrialPaths(Paths):
    """The run's paths with SB3's TensorBoard folder inside the trial's scratch folder."""

    scratch: Path = Path()

    @property
    def ppo_logs(self) -> Path:
        return self.scratch / "tensorboard"


def development_run(args: argparse.Namespace, cfg: Config, paths: Paths) -> Any:
    """Step 7's run with the agent's blocks built once, keeping only train and val."""
    from ppo_approach import train_ppo_agent as step7

    try:
        run0 = step7.setup_agent_run(cfg, args.dataset, paths)
    except PipelineError as exc:
        raise PipelineError(
            f"{exc}; the agent stage trains on step 5's prediction table: run step 5 first "
            f"(python runpod_train.py --dataset {args.dataset} --steps 1,2,3,4,5 with the same "
            "config flags)"
        ) from None
    # The test block never reaches a trial: only train and val are kept (the run holds no other
    # copy of the test bars' prices: step 7 reads them from the prediction table only; issue 11).
    blocks = {name: run0.blocks[name] for name in ("train", "val")}
    run0 = dataclasses.replace(run0, blocks=blocks)
    assert "test" not in run0.blocks
    for name, b in blocks.items():
        d = b.describe()
        log.info("agent trials use the %s block: %s .. %s (%d bars)", name, d["start"],
                 d["end"], d["bars"])  # fmt: skip
    return run0


def trial_run(run0: Any, tcfg: Config, paths: Paths, scratch: Path, number: int) -> Any:
    """``run0`` with trial ``number``'s config, its files in its ``scratch`` folder."""
    from pipeline.device import resolve_device
    from ppo_approach import run_folder
    from ppo_approach.reward_functions import RewardConfig
    from ppo_approach.trading_env import EnvConfig

    sha = run0.dataset.sha256
    run = dataclasses.replace(
        run0,
        cfg=tcfg,
        paths=_TrialPaths(paths.root, scratch=scratch),
        env_cfg=EnvConfig.from_ppo_config(tcfg.ppo),
        reward_cfg=RewardConfig.from_ppo_config(tcfg.ppo),
        device=str(resolve_device(tcfg.ppo.device, key="ppo device")),
        checkpoint_dir=scratch,
        fingerprint=run_folder.run_fingerprint(tcfg, sha, run0.dataset.classifier_settings),
        final_path=scratch / "final_model.zip",
        meta_path=scratch / "final_model.json",
        tb_name=f"trial_{number}",
        eval_seed=tcfg.ppo.seed,
    )
    assert "test" not in run.blocks
    return run


def agent_objective(
    args: argparse.Namespace, cfg: Config, paths: Paths, space: SearchSpace, out_dir: Path
) -> Callable[[optuna.Trial], float]:
    """Build the agent's blocks once, drop the test block, and return the objective."""
    import optuna

    from pipeline.config.checks import MAX_INT
    from ppo_approach import train_ppo_agent as step7

    run0 = development_run(args, cfg, paths)
    scratch_root = out_dir / art.TUNING_TRIALS_DIR

    def objective(trial: optuna.Trial) -> float:
        sampled = space.suggest(trial)
        # No checkpoints inside a trial: a dead trial is retried from the start.
        tcfg = trial_config(args, [*sampled, f"ppo.checkpoint_freq={MAX_INT}"])
        # Per study and trial: several studies (and their workers) may share the folder.
        scratch = scratch_root / f"{check_study_name(trial.study.study_name)}_trial_{trial.number}"
        remove_inside(scratch, scratch_root)
        run = trial_run(run0, tcfg, paths, scratch, trial.number)

        def on_evaluation(res: dict[str, float]) -> None:
            trial.report(float(res["mean_reward"]), int(res["timesteps"]))
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"{int(res['timesteps'])} timesteps: validation reward {res['mean_reward']}"
                )

        try:
            trained = step7.train(run, resume=False, on_evaluation=on_evaluation)
            ev = trained.evaluator
            trial.set_user_attr("best_timesteps", ev.best_timesteps)
            trial.set_user_attr("best_trades", ev.best_trades)
            if ev.history:
                best = max(ev.history, key=lambda r: r["mean_reward"])
                trial.set_user_attr("val_return", float(best["mean_return"]))
            if not math.isfinite(ev.best_reward):
                raise PipelineError(f"trial {trial.number}: no finite validation reward")
            return float(ev.best_reward)
        finally:
            remove_inside(scratch, scratch_root)

    return objective


# ================================================================ study, workers, outputs


def build_parser() -> argparse.ArgumentParser:
    """The command line (usage errors exit 1)."""
    p = CliParser(
        prog="tune.py",
        description="Tune hyperparameters with Optuna on the development data (never the test "
        "block): the classifier (validation macro-F1 of one architecture) or the agent (best "
        "validation mean episode reward). Several workers and pods can share one study.",
    )
    _add_task_args(p)
    _add_study_args(p)
    _add_worker_args(p)
    p.add_argument(
        "--root",
        type=Path,
        help="folder holding datasets/, models/, results/ (default: $PIPELINE_HOME or the "
        "project folder)",
    )
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    add_config_args(p)
    return p


def _add_task_args(p: argparse.ArgumentParser) -> None:
    """What to tune, on which data, and for how long."""
    p.add_argument(
        "--dataset",
        required=True,
        help="dataset name (datasets/NAME.csv under --root) or a path to an OHLCV CSV",
    )
    p.add_argument(
        "--stage",
        required=True,
        choices=STAGES,
        help="classifier: one architecture's validation macro-F1; agent: the PPO agent's best "
        "validation mean episode reward (needs step 5's prediction table)",
    )
    p.add_argument(
        "--trials",
        required=True,
        type=int,
        metavar="N",
        help="the study's target of complete or pruned trials, over every worker and pod; a rerun "
        "continues until the study has N",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="MIN",
        help="stop starting new trials after this many minutes (this command only)",
    )


def _add_study_args(p: argparse.ArgumentParser) -> None:
    """Where the study lives, its name, the architecture and the search space."""
    p.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage shared by the workers: an RDB URL (sqlite:///PATH, postgresql://..., "
        "mysql://...), journal:PATH (a journal file, e.g. on a shared volume) or PATH.db "
        "(default: results/tuning_{stage}_{dataset}/optuna.db)",
    )
    p.add_argument(
        "--study",
        metavar="NAME",
        help="study name (default: agent_{dataset}, or classifier_{model}_{dataset})",
    )
    p.add_argument(
        "--model",
        choices=NETWORK_NAMES,
        help="classifier stage: the architecture to tune (one study each; default: the agent's "
        "prediction_model)",
    )
    p.add_argument(
        "--space",
        type=Path,
        metavar="FILE",
        help="search-space file (default: pipeline/tuning/search_spaces/{stage}.txt)",
    )


def _add_worker_args(p: argparse.ArgumentParser) -> None:
    """How this machine's workers run the trials."""
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="worker processes on this machine, sharing its device (several small classifier "
        "trials on one GPU); default 1",
    )
    p.add_argument(
        "--pruner",
        choices=("median", "halving", "none"),
        default="median",
        help="stop bad trials early from their intermediate values: median (MedianPruner, after "
        "5 trials), halving (SuccessiveHalvingPruner) or none (default: median)",
    )
    p.add_argument(
        "--seed",
        type=int,
        help="seed of the TPE sampler (each worker and rerun offsets it); default: random",
    )
    p.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        metavar="S",
        help="RDB storages: a running trial's heartbeat interval; a trial without one for twice "
        "this long is marked failed and retried (default 60)",
    )


def check_args(args: argparse.Namespace) -> None:
    """Refuse counts, times and a study name the study cannot run with."""
    if args.trials < 1:
        raise PipelineError(f"--trials {args.trials}: expected an integer >= 1")
    if args.jobs < 1:
        raise PipelineError(f"--jobs {args.jobs}: expected an integer >= 1")
    if args.timeout is not None and not args.timeout > 0:
        raise PipelineError(f"--timeout {args.timeout}: expected minutes > 0")
    if args.heartbeat < 1:
        raise PipelineError(f"--heartbeat {args.heartbeat}: expected seconds >= 1")
    if args.study is not None:
        check_study_name(args.study)


def stage_model(args: argparse.Namespace, cfg: Config) -> str | None:
    """The architecture a classifier study tunes (None for the agent stage)."""
    model = None
    if args.stage == "classifier":
        model = args.model or cfg.ppo.prediction_model
        if model not in NETWORK_NAMES:
            raise PipelineError(
                f"--model: the agent's prediction_model is {model}; name the architecture "
                f"to tune with --model ({', '.join(NETWORK_NAMES)})"
            )
    return model


def open_study(
    args: argparse.Namespace, files: Artifacts, space: SearchSpace, model: str | None, name_ds: str
) -> Any:
    """Open the storage and create or load the study; log what it maximises and how far it is."""
    from pipeline.tuning.storage import masked_url, open_storage, storage_url
    from pipeline.tuning.trials import finished

    stage = args.stage
    url = storage_url(args.storage, files.tuning_dir(stage) / art.TUNING_STORAGE_NAME)
    storage = open_storage(url, heartbeat_interval=args.heartbeat)
    study_name = args.study or "_".join(x for x in (stage, model, name_ds) if x)
    meta = {"stage": stage, "dataset": name_ds, "model": model or "", "metric": METRICS[stage]}
    study = make_study(args, storage, study_name, meta)
    log.info(
        "study %s (%s), maximising the %s over %s; %d of %d trials finished",
        study_name, masked_url(url), METRICS[stage], ", ".join(space.names()),
        finished(study), args.trials,
    )  # fmt: skip
    return study


def run_trials(
    args: argparse.Namespace,
    argv: list[str],
    study: Any,
    objective: Callable[[], Callable[[optuna.Trial], float]],
) -> None:
    """Run this worker's trials (``objective()`` builds the objective), or ``--jobs`` workers."""
    from pipeline.run.process import interrupt_on_signals
    from pipeline.tuning.jobs import run_jobs
    from pipeline.tuning.study import run_worker
    from pipeline.tuning.trials import StudyProgress, best_of, finished

    with interrupt_on_signals():
        if args.jobs > 1:
            run_jobs(args, argv, study)
            return
        run = objective()
        progress = StudyProgress(
            args.trials, finished(study), bar=None if args.worker_index == 0 else False
        )
        try:
            run_worker(
                study,
                run,
                args.trials,
                timeout_s=None if args.timeout is None else 60.0 * args.timeout,
                on_trial=lambda st, _t: progress.update(finished(st), *best_of(st)),
            )
        finally:
            progress.close()


def write_results(
    args: argparse.Namespace,
    study: Any,
    out_dir: Path,
    name_ds: str,
    space: SearchSpace,
    paths: Paths,
) -> None:
    """Write the output files and print the summary lines."""
    from pipeline.tuning.outputs import OUTPUT_NAMES, summary_lines, write_outputs

    base = [*(["--preset", args.preset] if args.preset else [])]
    for o in args.overrides:
        base += ["--set", o]
    summary = write_outputs(
        study,
        out_dir,
        args.stage,
        name_ds,
        space,
        base,
        OUTPUT_NAMES,
        run_dataset=absolute_dataset(args.dataset, paths.datasets),
        run_args=["--root", str(paths.root)] if args.root is not None else [],
    )
    for line in summary_lines(summary, out_dir):
        print(line)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the study, write the outputs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        check_args(args)
        cfg = config_from_args(args)
        paths = Paths.from_root(args.root)
        stage = args.stage
        model = stage_model(args, cfg)
        space = stage_space(
            read_search_space(args.space or default_space_path(stage)), stage, model
        )
        name_ds = dataset_name(args.dataset)
        files = Artifacts(paths, name_ds)
        out_dir = files.tuning_dir(stage, model)
        study = open_study(args, files, space, model, name_ds)

        def objective() -> Callable[[optuna.Trial], float]:
            if stage == "classifier":
                assert model is not None
                return classifier_objective(args, cfg, paths, space, model)
            return agent_objective(args, cfg, paths, space, out_dir)

        run_trials(args, argv, study, objective)
        if args.worker_index:
            return EXIT_OK  # the --jobs parent writes the outputs
        write_results(args, study, out_dir, name_ds, space, paths)
        return EXIT_OK

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
