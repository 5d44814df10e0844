"""The export folder ``exports/{dataset}/``: the trained agent as data that runs without torch.

:func:`export_agent` writes, into a fresh folder that replaces the old one only when complete:

* ``classifier_{model}.onnx``: each classifier the agent reads (one, or an ensemble's members),
  raw feature windows ``(B, lookback, F)`` -> probabilities ``(B, 3)``, the train-block scaler in
  the graph (:func:`ppo_approach.export.export_classifier_onnx`);
* ``policy.onnx``: observation -> action logits (:func:`ppo_approach.export.export_policy_onnx`);
* ``export.json``: the format, each file's SHA-256, versions, the dataset it was trained on, the
  feature names, lookback and scaler numbers, the ensemble's combination, the agent's
  observation names, its prediction/price z-score numbers (train block), the action table, the
  fee model (the backtest's env settings), the history the runtime needs, the test block the
  backtest covered, the resolved config the agent came from, and the parity measured here
  (ONNX Runtime vs PyTorch over the whole test block).

:class:`ppo_approach.runtime.Decider` reads it with numpy, pandas and onnxruntime only.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.common import Paths, PipelineError, atomic_write_json
from pipeline.config.schema import Config
from pipeline.data.features import AGENT_PRICE_WARMUP, warmup_bars
from pipeline.store.artifacts import Artifacts, dataset_name
from ppo_approach import export
from ppo_approach.runtime import (
    EXPORT_FORMAT,
    MANIFEST_NAME,
    POLICY_NAME,
    classifier_file,
    sha256_bytes,
)

log = logging.getLogger(__name__)

SETTLE_BARS = 1000
"""Candles the runtime reads before the first window: the features' EMAs are recursive from the
first bar, and after 1,000 bars the slowest (span 50) keeps ``(49/51)^1000 ~ 1e-17`` of its
start, below float32's resolution: the features equal those computed from the dataset's start."""
VERSIONED = ("numpy", "pandas", "torch", "stable-baselines3", "sb3-contrib", "onnx", "onnxruntime")


@dataclass
class ExportResult:
    """What :func:`export_agent` wrote."""

    folder: Path
    files: list[Path]
    manifest: dict[str, Any]


def _versions() -> dict[str, str]:
    out = {}
    for dist in VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _agent_config(cfg: Config, dataset: str, paths: Paths) -> tuple[Config, str]:
    """The resolved config the final agent was trained with and its artifact name."""
    from pipeline.classifiers.model_choice import resolve_prediction_model
    from pipeline.config.files import load_resolved
    from ppo_approach.agent_blocks import DIAGNOSTIC_SOURCES

    cfg, _ = resolve_prediction_model(cfg, paths, dataset)
    p = cfg.ppo
    if p.ppo_prediction_source in DIAGNOSTIC_SOURCES:
        raise export.ExportError(
            f"ppo_prediction_source = {p.ppo_prediction_source}: that agent reads the future "
            "(a diagnostic); only an agent fed a classifier can be exported"
        )
    art = Artifacts(paths, dataset_name(dataset))
    model = p.prediction_model
    config_path = art.ppo_config(model)
    if not art.ppo_model(model).is_file() or not config_path.is_file():
        raise export.ExportError(
            f"{art.ppo_model(model)}: no trained agent (with its {config_path.name}); run step 7 "
            "(train_ppo_agent.py) first"
        )
    return load_resolved(config_path), model


def agent_file(art: Artifacts, model: str) -> tuple[Path, str, str | None]:
    """``(path, "best" | "final", sha256)`` of the agent the backtest report evaluated: the
    validation-best checkpoint when its ``chosen_model`` says so (checksum from the checkpoint
    folder), else the final model."""
    import json

    from ppo_approach.model_files import read_checksums

    report_path = art.backtest_report(model)
    try:
        chosen = json.loads(report_path.read_text(encoding="utf-8")).get("chosen_model", "final")
    except (OSError, ValueError):
        chosen = "final"  # no report (step 7 stopped before it): the final model
    if chosen != "best":
        return art.ppo_model(model), "final", None
    best = art.ppo_best_model(model)
    if not best.is_file():
        raise export.ExportError(
            f"{report_path}: the backtest evaluated the validation-best model, but {best} is "
            "gone; rerun step 7 (train_ppo_agent.py)"
        )
    checksums = read_checksums(art.ppo_checkpoint_dir(model)) or {}
    return best, "best", checksums.get(best.name)


def agent_blocks(agent_cfg: Config, dataset: str, paths: Paths, scaled: bool) -> dict[str, Any]:
    """The agent's blocks from its prediction table, as the agent sees them (``scaled``) or
    before any z-scoring."""
    from pipeline.classifiers.prediction_table import load_prediction_table, load_table_meta
    from ppo_approach.agent_blocks import build_blocks

    p = agent_cfg.ppo
    if not scaled:
        p = dataclasses.replace(p, price_feature_scaling="none", prediction_feature_scaling="none")
    name = dataset_name(dataset)
    table = load_prediction_table(paths, p.prediction_model, name)
    return build_blocks(table, load_table_meta(paths, p.prediction_model, name), p)


def _zscores(agent_cfg: Config, blocks: dict[str, Any]) -> dict[str, Any]:
    from ppo_approach.agent_blocks import zscore_stats

    out: dict[str, Any] = {}
    for key, setting, field in (
        ("prediction_zscore", agent_cfg.ppo.prediction_feature_scaling, "pred_features"),
        ("price_zscore", agent_cfg.ppo.price_feature_scaling, "price_features"),
    ):
        mean, std = zscore_stats(blocks, field)
        out[key] = (
            {"mean": mean.tolist(), "std": std.tolist()} if setting == "train_zscore" else None
        )
    return out


def _classifier_part(agent_cfg: Config, dataset: str, paths: Paths, folder: Path) -> dict[str, Any]:
    """Write each member's graph; the manifest's ``classifier`` section."""
    import json

    from pipeline.classifiers.nets import load_model_file

    p = agent_cfg.ppo
    art = Artifacts(paths, dataset_name(dataset))
    members = list(p.ensemble_models) if p.prediction_model == "ensemble" else [p.prediction_model]
    scalers, archs, first = {}, {}, None
    for m in members:
        payload = load_model_file(art.classifier_model(m))  # read once: graph and manifest
        export.classifier_payload_onnx(payload, folder / classifier_file(m))
        scalers[m] = {k: list(payload["scaler"][k]) for k in ("mean", "scale")}
        archs[m] = payload["arch"]
        first = first or payload
    assert first is not None
    fit = None
    if p.prediction_model == "ensemble" and art.ensemble_report.is_file():
        fit = json.loads(art.ensemble_report.read_text(encoding="utf-8"))
        if list(fit.get("members", [])) != members:
            fit = None  # the pipeline's predictor then averages the members
    return {
        "members": members,
        "feature_names": list(first["feature_names"]),
        "lookback": int(first["lookback"]),
        "scalers": scalers,
        "architectures": archs,
        "ensemble": fit,
        "dataset_sha256": str(first["dataset_sha256"]),
        "table_model": p.prediction_model,
    }


def _agent_part(agent_cfg: Config, model: Any, blocks: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``agent`` section (observation, actions, fee model, z-scores)."""
    from ppo_approach.agent_blocks import prediction_feature_names
    from ppo_approach.backtest import backtest_env_config
    from ppo_approach.env_portfolio import PORTFOLIO_NAMES, action_names
    from ppo_approach.model_files import algorithm_of
    from ppo_approach.trading_env import EnvConfig

    p = agent_cfg.ppo
    env = dataclasses.asdict(backtest_env_config(EnvConfig.from_ppo_config(p)))
    price_names = list(blocks["test"].data.price_names)
    return {
        "algorithm": algorithm_of(model),
        "prediction_model": p.prediction_model,
        "observation_names": [*prediction_feature_names(p), *price_names, *PORTFOLIO_NAMES],
        "action_names": list(action_names(env["action_set"], env["allow_short"])),
        "member_columns": p.prediction_model == "ensemble",
        "edge_feature": bool(p.edge_feature),
        **_zscores(agent_cfg, blocks),
        "env": env,
        "fee_model": (
            "an order decided at a candle's close fills at the next candle's open: buys at "
            f"open * (1 + {env['slippage']}), sells at open * (1 - {env['slippage']}); fee "
            f"{env['transaction_cost']} * |traded notional|, taken from cash"
        ),
    }


def export_agent(
    cfg: Config, dataset: str, paths: Paths, folder: Path | None = None
) -> ExportResult:
    """Export the final agent of ``dataset`` (the one step 7 trained with ``cfg``'s settings)
    to ``folder`` (default :attr:`Artifacts.export_dir`), replacing it only once complete."""
    from ppo_approach.export_parity import measure_parity
    from ppo_approach.model_files import load_model

    agent_cfg, model_name = _agent_config(cfg, dataset, paths)
    art = Artifacts(paths, dataset_name(dataset))
    target = Path(folder) if folder is not None else art.export_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        agent_path, chosen, sha = agent_file(art, model_name)
        agent = load_model(agent_path, None, "cpu", expected_sha256=sha)
        blocks = agent_blocks(agent_cfg, dataset, paths, scaled=False)
        classifier = _classifier_part(agent_cfg, dataset, paths, work)
        export.export_policy_onnx(agent, work / POLICY_NAME)
        parity = measure_parity(agent_cfg, agent, dataset, paths, work)  # + backtest.csv
        manifest = _manifest(agent_cfg, agent, blocks, classifier, work)
        manifest["dataset"] = _dataset_part(dataset, paths, classifier)
        manifest["parity"] = parity
        manifest["agent"]["model_file"] = {"chosen": chosen, "path": agent_path.name, "sha256": sha}
        atomic_write_json(work / MANIFEST_NAME, manifest)
        _replace_folder(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    files = sorted(target.iterdir())
    log.info("export: %s (%d files); %s", target, len(files), parity_line(manifest))
    policy = manifest["parity"]["policy"]
    if policy["same_action"] < policy["bars"]:
        log.warning(
            "export: the ONNX policy takes another action than PyTorch on %d of %d test bars "
            "(near-ties of the logits); the runtime will not match the backtest there",
            policy["bars"] - policy["same_action"],
            policy["bars"],
        )
    return ExportResult(target, files, manifest)


def _dataset_part(dataset: str, paths: Paths, classifier: dict[str, Any]) -> dict[str, Any]:
    """The dataset the agent was trained on, as its prediction table's .json records it."""
    from pipeline.classifiers.prediction_table import load_table_meta

    meta = load_table_meta(paths, classifier["table_model"], dataset_name(dataset))
    keys = ("dataset", "dataset_sha256", "n_bars", "interval_seconds", "periods_per_year")
    return {k: meta[k] for k in keys}


def _manifest(
    agent_cfg: Config,
    agent: Any,
    blocks: dict[str, Any],
    classifier: dict[str, Any],
    work: Path,
) -> dict[str, Any]:
    test = blocks["test"]
    lookback = int(classifier["lookback"])
    warm = max(warmup_bars(classifier["feature_names"]), AGENT_PRICE_WARMUP)
    return {
        "format": EXPORT_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "trust": "data only: ONNX graphs and JSON; nothing in this folder is code",
        "files": {f.name: sha256_bytes(f) for f in sorted(work.iterdir()) if f.is_file()},
        "versions": _versions(),
        "history_bars": int(warm + lookback + SETTLE_BARS),
        "classifier": classifier,
        "agent": _agent_part(agent_cfg, agent, blocks),
        "backtest": {
            **test.describe(),
            "note": "replaying the dataset from 'start' to 'end' reproduces the backtest",
        },
        "config": agent_cfg.to_dict(),
    }


def parity_line(manifest: dict[str, Any]) -> str:
    """``parity over the test block: classifier dlstm max |dp| 6.5e-08, same class 791 of 791;
    policy max |dlogit| 9.5e-07, same action 790 of 790``."""
    parity = manifest["parity"]
    parts = [
        f"classifier {m} max |dp| {c['max_abs_diff']:.2g}, same class {c['same_class']} of "
        f"{c['windows']}"
        for m, c in parity["classifiers"].items()
    ]
    pol = parity["policy"]
    parts.append(
        f"policy max |dlogit| {pol['max_abs_logit_diff']:.2g}, same action {pol['same_action']} "
        f"of {pol['bars']}"
    )
    return "parity over the test block (ONNX Runtime vs PyTorch): " + "; ".join(parts)


def _replace_folder(work: Path, target: Path) -> None:
    """``work`` becomes ``target``; an old ``target`` is removed only after the rename."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(work, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_after_training(cfg: Config, dataset: str, paths: Paths) -> tuple[str, dict[str, Any]]:
    """The driver's export after step 7: :func:`export_agent`, its files recorded in the run
    manifest (so step 8 pushes them); ``(line, details)``. A diagnostic agent (fed the future)
    is not exported; an export that fails is a warning, not a failed training step."""
    from pipeline.store.manifest import STEP_AGENT
    from ppo_approach.agent_blocks import DIAGNOSTIC_SOURCES

    if cfg.ppo.ppo_prediction_source in DIAGNOSTIC_SOURCES:
        return "not exported (a diagnostic agent)", {"status": "skipped"}
    try:
        result = export_agent(cfg, dataset, paths)
    except PipelineError as exc:
        log.warning("export skipped: %s", exc)
        return f"export failed ({exc})", {"status": "failed", "error": str(exc)}
    manifest = Artifacts(paths, dataset_name(dataset)).manifest()
    manifest.record_many([(f, "export") for f in result.files if f.is_file()], STEP_AGENT)
    policy = result.manifest["parity"]["policy"]
    details = {"status": "ok", "folder": str(result.folder), "parity": result.manifest["parity"]}
    return (
        f"exported to {result.folder.name}/ (ONNX, same action on {policy['same_action']} of "
        f"{policy['bars']} test bars)",
        details,
    )
