"""Step 5: train the classifiers, report honest metrics, write the agent's prediction tables.

For each selected model (``--models``, else the PPO config's ensemble members when
``prediction_model = ensemble``, else all four):

* the main model is trained on the train block with early stopping on the val block and saved to
  ``models/{model}_{dataset}_classification.pth`` (with the resolved config beside it);
* metrics on val and on the test block (touched once, for the report) sit next to two baselines
  computed on the same rows: the train block's majority class and a logistic regression on the last
  bar's features; history, curves and a confusion-matrix plot go to ``results/``;
* with ``ppo_prediction_source = walk_forward`` the walk-forward fold models are trained
  (``models/walkforward/``), and the prediction tables for the agent are written
  (``results/predictions_{model}_{dataset}.csv``, plus the ensemble table).

A model is skipped when its file loads and records the same dataset SHA-256 and config hash as now
(``TrainingConfig.hash_for_model``); ``--force`` always retrains.

The headline of each model (``training_summary_{dataset}.json``, ``models[name]["headline"]``)
compares its test macro-F1 with chance (1/3) and with the logistic regression on the same rows,
and adds the directional hit rate (see :func:`test_comparison`).

torch, sklearn and the feature code are imported inside the functions that use them, so that
``--help`` and usage errors answer at once.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.checks.leak_alarms import Alarm, alarm_lines, permutation_alarms, raise_if_strict
from pipeline.classifiers.fit_plan import (
    FitPlan,
    fold_plan,
    main_plan,
    model_payload,
    select_models,
    up_to_date,
)
from pipeline.classifiers.report import (
    baseline_metrics,
    format_summary_table,
    labelled_bars,
    plot_training,
)
from pipeline.classifiers.step5_cli import (
    build_parser,
    interrupt_hint,
    interrupted_outside_epoch,
    reworded,
)
from pipeline.classifiers.training_records import (
    agent_models,
    control_record,
    evaluate_bars,
    history_record,
    main_metrics,
    merge_summary,
    read_metrics,
    record_artifacts,
    summary_entry,
)
from pipeline.common import Paths, atomic_write_json, run_cli, setup_logging
from pipeline.config.files import Config, TrainingConfig, config_from_args, write_resolved
from pipeline.config.schema import MODEL_NAMES  # noqa: F401 (read as train_models.MODEL_NAMES)
from pipeline.run.step_results import TrainingSummary
from pipeline.store.artifacts import Artifacts

if TYPE_CHECKING:
    import torch

    from pipeline.classifiers.prepare import ClassifierData
    from pipeline.data.splits import Block
    from pytorch_train import TrainResult

log = logging.getLogger("train_models")

# ================================================================ fitting one model


def fit_model(
    cfg: TrainingConfig,
    prep: ClassifierData,
    name: str,
    plan: FitPlan,
    device: torch.device,
    ckpt: Path,
    resume: bool,
    desc: str,
) -> TrainResult:
    """Build ``name`` (seeded) and train it on ``plan``; checkpoints go to ``ckpt``."""
    from pipeline.classifiers.nets import arch_config, build_classifier
    from pipeline.classifiers.tabular import TABULAR_MODELS, fit_tabular
    from pipeline.classifiers.windows import WindowData
    from pipeline.device import seed_everything
    from pytorch_train import TrainResult, train_classifier

    fit_bars = labelled_bars(plan.fit, plan.labels)
    es_bars = labelled_bars(plan.early_stop, plan.labels)
    if name in TABULAR_MODELS:  # scikit-learn / LightGBM, one "epoch"
        return TrainResult(**fit_tabular(cfg, prep, name, plan, (fit_bars, es_bars), device))
    lookback = prep.arrays.lookback
    train = WindowData.create(plan.scaled, fit_bars, plan.labels[fit_bars], lookback, device)
    val = WindowData.create(plan.scaled, es_bars, plan.labels[es_bars], lookback, device)
    seed_everything(cfg.seed)
    model = build_classifier(arch_config(name, len(prep.feature_names), cfg))
    fingerprint = f"{cfg.hash_for_model(name)}:{prep.info.sha256}:{plan.tag}"
    return train_classifier(
        model,
        train,
        val,
        cfg,
        checkpoint_path=ckpt,
        resume=resume,
        fingerprint=fingerprint,
        desc=desc,
    )


def evaluate_block(
    model: torch.nn.Module, prep: ClassifierData, block: Block, device: torch.device
) -> dict[str, Any]:
    """Metrics of the main model on the labelled bars of ``block`` (:func:`evaluate_bars`)."""
    return evaluate_bars(model, prep, labelled_bars(block, prep.arrays.labels), device)


# ================================================================ one model, all models


def train_main_model(
    cfg: Config,
    prep: ClassifierData,
    name: str,
    paths: Paths,
    device: torch.device,
    baselines: dict[str, dict[str, Any]],
    resume: bool,
) -> dict[str, Any]:
    """Train, save and report the main model of ``name``; returns its metrics dict."""
    from pipeline.classifiers.nets import save_model_file

    train_cfg = cfg.training
    dataset = prep.info.name
    plan = main_plan(prep)
    art = Artifacts(paths, dataset)
    ckpt = art.classifier_checkpoint(name)
    result = fit_model(train_cfg, prep, name, plan, device, ckpt, resume, desc=f"{name}")
    payload = model_payload(train_cfg, prep, name, plan, result)
    save_model_file(art.classifier_model(name), payload)
    write_resolved(cfg, art.classifier_config(name))

    s = prep.arrays.splits
    # the validation rows' labels and predictions are kept for auto's paired rule (model_choice)
    val = evaluate_bars(result.model, prep, labelled_bars(s.val, prep.arrays.labels), device, True)
    # The test block is touched here once, for the report; nothing above looked at it.
    test = evaluate_block(result.model, prep, s.test, device)
    n_parameters = payload["n_parameters"]
    metrics = main_metrics(train_cfg, prep, name, result, n_parameters, (val, test), baselines)
    cmp = metrics["comparison"]
    # A verdict is a finding, not a fault: "no better than chance" is the honest result on a
    # random walk, so it is INFO like the others.
    log.info("%s: %s", name, cmp["headline"])
    atomic_write_json(art.history(name), history_record(name, dataset, result))
    plot_training(
        result.history,
        val["confusion"],
        art.training_plot(name),
        title=f"{name} on {dataset}: best epoch {result.best_epoch} of {result.epochs_run} "
        f"(lowest loss on the early-stopping block)\n{cmp['headline']}",
        best_epoch=result.best_epoch,
    )
    atomic_write_json(art.metrics(name), metrics)
    # Only now: a kill before the metrics file exists must leave the checkpoint, so that
    # --resume finishes this model from its last epoch instead of from epoch 1.
    ckpt.unlink(missing_ok=True)
    return metrics


def train_fold_models(
    cfg: Config,
    prep: ClassifierData,
    name: str,
    paths: Paths,
    device: torch.device,
    force: bool,
    resume: bool,
) -> dict[str, str]:
    """Walk-forward models for folds 1..F-1 (fold 0 is only ever trained on); same skip rule."""
    from pipeline.classifiers.nets import save_model_file

    train_cfg = cfg.training
    art = Artifacts(paths, prep.info.name)
    status: dict[str, str] = {}
    for fold in range(1, len(prep.arrays.splits.folds)):
        path = art.fold_model(name, fold)
        ok, reason = up_to_date(path, prep.info.sha256, train_cfg.hash_for_model(name))
        if ok and not force:
            status[f"fold{fold}"] = "skipped"
            log.info("%s fold %d: skipped, %s", name, fold, reason)
            continue
        log.info("%s fold %d: training (%s)", name, fold, "--force" if force else reason)
        plan = fold_plan(prep, train_cfg, fold)
        ckpt = art.classifier_checkpoint(name, plan.tag)
        result = fit_model(
            train_cfg, prep, name, plan, device, ckpt, resume, desc=f"{name}/fold{fold}"
        )
        save_model_file(path, model_payload(train_cfg, prep, name, plan, result))
        ckpt.unlink(missing_ok=True)
        status[f"fold{fold}"] = "trained"
    return status


def _train_all(
    cfg: Config,
    dataset: str,
    paths: Paths,
    models: list[str] | None = None,
    force: bool = False,
    resume: bool = False,
) -> TrainingSummary:
    """Step 5: train (or skip) each selected model, write metrics, summary and prediction tables.

    Returns the training summary (also written to ``results/training_summary_{dataset}.json``).
    """
    from pipeline.classifiers.prepare import load_classifier_data

    train_cfg = cfg.training
    names = select_models(cfg, models)
    device = _training_device(train_cfg)
    prep = load_classifier_data(train_cfg, dataset, paths)
    paths.models.mkdir(parents=True, exist_ok=True)
    paths.results.mkdir(parents=True, exist_ok=True)
    baselines = baseline_metrics(prep, train_cfg.seed)
    entries, table_models = _train_models(cfg, prep, names, paths, device, baselines, force, resume)
    return _write_summary(cfg, prep, paths, device, entries, table_models)


def _training_device(train_cfg: TrainingConfig) -> torch.device:
    """The device ``training.device`` resolves to, logged (on the CPU with its thread count)."""
    import torch

    from pipeline.device import configure_cpu_threads, resolve_device

    device = resolve_device(train_cfg.device)
    if device.type == "cpu":
        threads = configure_cpu_threads(train_cfg.num_threads)
        log.info("device cpu, %d threads, float32", threads)
    else:
        log.info("device %s (%s)", device, torch.cuda.get_device_name(device))
    return device


def _train_models(
    cfg: Config,
    prep: ClassifierData,
    names: list[str],
    paths: Paths,
    device: torch.device,
    baselines: dict[str, dict[str, Any]],
    force: bool,
    resume: bool,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each model of ``names`` (trained or skipped) with its fold models: their summary entries
    and the models whose prediction tables are written. An interrupt names the models kept."""
    from pipeline.common import TrainingInterrupted

    # the oracle source keeps the walk-forward layout of blocks
    walk_forward = cfg.ppo.ppo_prediction_source != "in_sample"
    # walk_forward_models = agent trains fold models only for what feeds the agent
    every_fold = walk_forward and cfg.training.walk_forward_models == "all"
    table_models = names

    entries: dict[str, dict[str, Any]] = {}
    try:
        for name in names:
            entries[name] = _train_or_skip(
                cfg, prep, name, paths, device, baselines, force, resume, every_fold
            )
        if walk_forward and not every_fold:
            table_models = _agent_fold_models(
                cfg, prep, names, paths, device, entries, force, resume
            )
    except TrainingInterrupted as exc:
        if not entries:
            raise
        # Say which models are safe on disk: a rerun skips them.
        kept = f"{exc}; finished before the interrupt and kept: {', '.join(entries)}"
        raise reworded(exc, kept) from None
    return entries, table_models


def _agent_fold_models(
    cfg: Config,
    prep: ClassifierData,
    names: list[str],
    paths: Paths,
    device: torch.device,
    entries: dict[str, dict[str, Any]],
    force: bool,
    resume: bool,
) -> list[str]:
    """``walk_forward_models = agent``: fold models for the models of ``names`` that feed the
    agent (:func:`agent_models`), which it returns; the others' entries say so."""
    table_models = agent_models(cfg, paths, prep.info.name, entries)
    if not table_models:
        log.warning(
            "walk_forward_models = agent: the agent's classifier is not among this run's "
            "models (%s); no fold models or prediction table written now",
            ", ".join(names),
        )
    for name in names:
        if name not in table_models:
            entries[name]["walk_forward"] = "not trained (walk_forward_models = agent)"
            continue
        t0 = time.perf_counter()
        folds = train_fold_models(cfg, prep, name, paths, device, force, resume)
        entries[name]["walk_forward"] = folds
        entries[name]["wall_seconds"] += time.perf_counter() - t0
    return table_models


def _write_summary(
    cfg: Config,
    prep: ClassifierData,
    paths: Paths,
    device: torch.device,
    entries: dict[str, dict[str, Any]],
    table_models: list[str],
) -> TrainingSummary:
    """The leak alarms and the prediction tables of ``table_models``; the training summary
    (written, listed in the manifest with the models' files, printed as a table), returned."""
    from pipeline.classifiers.prediction_table import write_prediction_tables

    name_ds = prep.info.name
    alarms, control = step5_alarms(cfg, prep, paths, device, entries)
    written = write_prediction_tables(cfg, prep, paths, table_models, device)
    tables = written.paths
    summary: TrainingSummary = {
        "dataset": name_ds,
        "dataset_sha256": prep.info.sha256,
        "device": str(device),
        "prediction_source": cfg.ppo.ppo_prediction_source,
        "models": merge_summary(paths, name_ds, entries),
        "prediction_tables": {k: str(v) for k, v in tables.items()},
        "auto_ensemble": written.auto_ensemble,
        "alarms": [a.to_dict() for a in alarms],
        "permutation_control": control,
    }
    art = Artifacts(paths, name_ds)
    atomic_write_json(art.training_summary, summary)
    record_artifacts(art, entries, tables)
    print(format_summary_table(entries))
    print("\n".join(alarm_lines(alarms) or ["leak alarms: none"]))
    raise_if_strict(alarms, cfg.training.strict_alarms, str(art.training_summary))
    return summary


def step5_alarms(
    cfg: Config, prep: ClassifierData, paths: Paths, device: torch.device, entries: dict[str, Any]
) -> tuple[list[Alarm], dict[str, Any] | None]:
    """Step 5's run-time leak alarms (``pipeline/checks/leak_alarms.py``) on the bars the main
    models really used, and the label-permutation control on the model with the best
    early-stopping F1 among those trained now (``leak_controls``)."""
    from pipeline.checks.leak_alarms import classifier_alarms

    plan = main_plan(prep)
    fit_bars = labelled_bars(plan.fit, plan.labels)
    es_bars = labelled_bars(plan.early_stop, plan.labels)
    metrics = {n: m for n in entries if (m := read_metrics(paths, n, prep.info.name))}
    limit = cfg.training.alarm_direction_accuracy
    alarms = classifier_alarms(prep, plan, fit_bars, es_bars, metrics, limit)
    trained = [n for n, e in entries.items() if e["status"] == "trained"]
    control = None
    if cfg.training.leak_controls and trained:
        name = max(trained, key=lambda n: float(entries[n]["val_macro_f1"]))
        control = permutation_control(cfg, prep, name, plan, paths, device)
        alarms += permutation_alarms(f"{name} (permuted-label control)", control)
    for alarm in alarms:
        log.warning("%s", alarm.line())
    return alarms, control


def permutation_control(
    cfg: Config, prep: ClassifierData, name: str, plan: FitPlan, paths: Paths, device: torch.device
) -> dict[str, Any]:
    """``name`` trained like its main model but with the labels of the train and early-stopping
    blocks permuted; its test headline. Only a path from the test labels to the model survives
    the permutation (the early-stopping labels too: selecting epochs on true labels would pick the
    epoch whose random weights happen to align with the signal)."""
    from dataclasses import replace

    import numpy as np

    from pipeline.checks.leak_alarms import permuted_labels

    s = prep.arrays.splits
    seen = np.concatenate([labelled_bars(b, plan.labels) for b in (s.train, s.val)])
    labels = permuted_labels(plan.labels, seen, cfg.training.seed)
    control = replace(plan, tag="permuted", labels=labels)
    ckpt = Artifacts(paths, prep.info.name).classifier_checkpoint(name, control.tag)
    log.info("%s: label-permutation control (train labels permuted)", name)
    result = fit_model(cfg.training, prep, name, control, device, ckpt, False, f"{name}/permuted")
    ckpt.unlink(missing_ok=True)
    test = evaluate_block(result.model, prep, prep.arrays.splits.test, device)
    out = control_record(name, test, prep.arrays.k)
    log.info("%s", out["headline"])
    return out


def _train_or_skip(
    cfg: Config,
    prep: ClassifierData,
    name: str,
    paths: Paths,
    device: torch.device,
    baselines: dict[str, dict[str, Any]],
    force: bool,
    resume: bool,
    walk_forward: bool,
) -> dict[str, Any]:
    """The main model of ``name`` (trained or skipped) and its fold models; its summary entry."""
    t0 = time.perf_counter()
    name_ds = prep.info.name
    chash = cfg.training.hash_for_model(name)
    ok, reason = up_to_date(
        Artifacts(paths, name_ds).classifier_model(name), prep.info.sha256, chash
    )
    metrics = read_metrics(paths, name, name_ds) if ok else None
    if ok and metrics is None:
        ok, reason = False, "no metrics file"
    if ok and not force and metrics is not None:
        log.info("%s: skipped, %s", name, reason)
        entry = summary_entry("skipped", reason, metrics)
    else:
        reason = "--force" if force else reason
        log.info("%s: training (%s)", name, reason)
        metrics = train_main_model(cfg, prep, name, paths, device, baselines, resume)
        entry = summary_entry("trained", reason, metrics)
    if walk_forward:
        entry["walk_forward"] = train_fold_models(cfg, prep, name, paths, device, force, resume)
    entry["wall_seconds"] = time.perf_counter() - t0
    return entry


# ================================================================ CLI


def train_classifiers(
    cfg: Config,
    dataset: str,
    paths: Paths,
    models: list[str] | None = None,
    force: bool = False,
    resume: bool = False,
) -> TrainingSummary:
    """Step 5 as a function (the CLI and the driver both call it): :func:`_train_all`, and an
    interrupt outside a training epoch (data preparation, saving, prediction tables) said as
    what is on disk rather than assumed."""
    try:
        return _train_all(cfg, dataset, paths, models, force, resume)
    except KeyboardInterrupt:
        raise interrupted_outside_epoch(paths, dataset) from None


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run :func:`train_classifiers`; exit 130 with a true hint on interruption.

    Holds the dataset's run lock (``pipeline.run.lock.step_lock``) while training, so that a run
    by hand refuses to write while a full run on the same dataset and root is going; the driver,
    which holds the lock itself, passes through.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        from pipeline.common import TrainingInterrupted
        from pipeline.run.lock import step_lock
        from pipeline.run.process import interrupt_on_signals

        cfg = config_from_args(args)
        paths = Paths.from_root(args.root)
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        try:
            with interrupt_on_signals(), step_lock(paths, args.dataset):
                train_classifiers(cfg, args.dataset, paths, models, args.force, args.resume)
        except TrainingInterrupted as exc:
            raise reworded(exc, interrupt_hint(str(exc), exc.has_checkpoint, argv)) from None
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
