"""Step 7: train the PPO trading agent on the classifier's predictions, then backtest it.

Usage::

    python ppo_approach/train_ppo_agent.py --dataset SYNTH-BTC-EUR_1H_20240101-20251231
    python -m ppo_approach.train_ppo_agent --dataset NAME --resume --preset smoke --set n_envs=4

What happens (:func:`train_agent`):

1. The dataset is loaded and its features built once in this process (``prepare_dataset``); the
   prediction table ``results/predictions_{model}_{dataset}.csv`` is read and split by its
   ``agent_block`` column into the agent's train / val / test blocks, each a
   :class:`~ppo_approach.trading_env.MarketData` of plain numpy arrays (the only thing the
   environment workers receive).
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
(:func:`ppo_approach.ppo_trading_agent.load_model`). Only the newest few checkpoints are kept.

Heavy libraries (torch, stable_baselines3, sklearn) are imported inside the functions that need
them, so ``--help`` and usage errors answer at once (issue 8 item 29).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline import artifacts as art
from pipeline.artifacts import Artifacts
from pipeline.common import (
    EXIT_OK,
    CliParser,
    Paths,
    PipelineError,
    TrainingInterrupted,
    atomic_write_json,
    progress_bars_wanted,
    run_cli,
    setup_logging,
    sha256_file,
)
from pipeline.config import add_config_args, config_from_args, write_resolved
from pipeline.config_schema import Config, PPOConfig
from pipeline.runlock import step_lock
from pipeline.step_results import BacktestReport
from ppo_approach import backtest
from ppo_approach.reward_functions import RewardConfig, RewardFunction
from ppo_approach.trading_env import EnvConfig, MarketData, TradingEnv

if TYPE_CHECKING:  # torch / SB3 / sklearn only when a function needs them (issue 8 item 29)
    from pipeline.prepare import Prepared
    from ppo_approach import ppo_trading_agent as agent_module

log = logging.getLogger(__name__)

BLOCK_NAMES = ("train", "val", "test")
PRED_BASE_COLUMNS = ("pred_class", "confidence", "p_fall", "p_stationary", "p_rise")


class PredictionTableError(PipelineError):
    """The prediction table is missing, malformed or does not match the dataset."""


class ResumeMismatchError(PipelineError):
    """``--resume`` with settings (or data) other than the checkpoint was trained with."""


# ---------------------------------------------------------------- prediction table -> blocks


def load_table(paths: Paths, model: str, dataset: str) -> pd.DataFrame:
    """The validated prediction table of ``model`` (``prediction_wrapper.load_prediction_table``),
    with its path in ``attrs["path"]`` for error messages."""
    from pipeline.prediction_table import load_prediction_table

    table = load_prediction_table(paths, model, dataset)
    table.attrs["path"] = str(Artifacts(paths, dataset).prediction_table(model))
    return table


def prediction_feature_names(cfg: PPOConfig) -> tuple[str, ...]:
    """Observation names of the prediction features (ensemble: + each member's probabilities)."""
    names = list(PRED_BASE_COLUMNS)
    if cfg.prediction_model == "ensemble":
        for m in cfg.ensemble_models:
            names += [f"p_fall_{m}", f"p_stationary_{m}", f"p_rise_{m}"]
    return tuple(names)


def prediction_features(table: pd.DataFrame, cfg: PPOConfig) -> np.ndarray:
    """Per-row prediction features ``(n, P)`` float32 in :func:`prediction_feature_names` order.

    ``pred_class`` enters centred as ``class - 1`` (Fall -1, Stationary 0, Rise +1), so the
    network sees an ordered, zero-mean input rather than a label code 0..2.
    """
    where = table.attrs.get("path", "prediction table")
    cols = prediction_feature_names(cfg)
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise PredictionTableError(
            f"{where}: missing column(s) {', '.join(missing)} needed for prediction_model = "
            f"{cfg.prediction_model}"
        )
    x = table.loc[:, list(cols)].to_numpy(dtype=np.float64)  # (n, P)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise PredictionTableError(
            f"{where}: column {cols[col]} has a non-finite value at data row {row + 1}"
        )
    x[:, 0] -= 1.0
    return x.astype(np.float32)


def _utc_iso(value: Any) -> str:
    """ISO 8601 with an explicit UTC offset (dataset timestamps are naive UTC datetime64)."""
    t = pd.Timestamp(value)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.isoformat()


@dataclass
class AgentBlock:
    """One block of the agent: its env data, the bars it covers and the classifier's probs."""

    name: str
    data: MarketData
    bars: np.ndarray  # (n,) int64 dataset bars, consecutive
    probs: np.ndarray  # (n, 3) p_fall, p_stationary, p_rise
    in_sample: bool

    def describe(self) -> dict[str, Any]:
        """``{"start", "end", "bars", "first_bar", "last_bar"}`` (ISO timestamps)."""
        ts = self.data.timestamps
        assert ts is not None
        return {
            "start": _utc_iso(ts[0]),
            "end": _utc_iso(ts[-1]),
            "bars": int(self.bars.size),
            "first_bar": int(self.bars[0]),
            "last_bar": int(self.bars[-1]),
        }


def build_blocks(prepared: Prepared, table: pd.DataFrame, cfg: PPOConfig) -> dict[str, AgentBlock]:
    """Split the table by ``agent_block`` into train / val / test :class:`AgentBlock`s.

    Checks that each block's bars are consecutive, inside the dataset, past the price-feature
    warm-up, in chronological order train < val < test, and that the table's timestamps are the
    dataset's (a table left over from another version of the CSV is refused).
    """
    from pipeline.features import AGENT_PRICE_FEATURE_NAMES

    where = table.attrs.get("path", "prediction table")
    arrays = prepared.arrays
    feats = prediction_features(table, cfg)  # (rows, P)
    bars_all = table["bar"].to_numpy()
    if not np.issubdtype(bars_all.dtype, np.integer):
        raise PredictionTableError(f"{where}: column bar must hold integers, got {bars_all.dtype}")
    out_of_range = np.flatnonzero((bars_all < 0) | (bars_all >= arrays.n_bars))
    if out_of_range.size:
        i = int(out_of_range[0])
        raise PredictionTableError(
            f"{where}: data row {i + 1} has bar {bars_all[i]}, outside the dataset's "
            f"0..{arrays.n_bars - 1}"
        )
    try:
        parsed = pd.to_datetime(table["timestamp"], utc=True)
    except (ValueError, TypeError) as exc:
        raise PredictionTableError(f"{where}: column timestamp is not parseable ({exc})") from None
    stamps = parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")  # (rows,) naive UTC
    expected = arrays.timestamps[bars_all].astype("datetime64[ns]")
    differ = np.flatnonzero(stamps != expected)
    if differ.size:
        i = int(differ[0])
        raise PredictionTableError(
            f"{where}: data row {i + 1} (bar {bars_all[i]}) has timestamp "
            f"{_utc_iso(stamps[i])} but the dataset has {_utc_iso(expected[i])}; the table belongs "
            "to other data, rebuild it"
        )
    pred_names = prediction_feature_names(cfg)
    in_sample_col = table["in_sample"].to_numpy(dtype=bool)  # (rows,)
    blocks: dict[str, AgentBlock] = {}
    for name in BLOCK_NAMES:
        rows = np.flatnonzero((table["agent_block"] == name).to_numpy())
        if rows.size < 2:
            raise PredictionTableError(
                f"{where}: {rows.size} row(s) with agent_block = {name}; expected at least 2"
            )
        rows = rows[np.argsort(bars_all[rows], kind="stable")]
        bars = bars_all[rows].astype(np.int64)
        steps = np.diff(bars)
        if (steps < 1).any():
            g = int(np.flatnonzero(steps < 1)[0])
            raise PredictionTableError(
                f"{where}: agent_block = {name} lists bar {bars[g]} twice; expected one row per bar"
            )
        # The agent's train block spans several walk-forward folds with purge gaps between them
        # (no fold model predicts a purged bar): each run of consecutive bars is a segment, and
        # the env never steps across a gap.
        segment_starts = (0, *(int(i) + 1 for i in np.flatnonzero(steps > 1)))
        if name != "train" and len(segment_starts) > 1:
            g = segment_starts[1] - 1
            raise PredictionTableError(
                f"{where}: agent_block = {name} is not consecutive: bar {bars[g]} is followed by "
                f"bar {bars[g + 1]}"
            )
        price = arrays.price_features[bars]  # (n, 5)
        if not np.isfinite(price).all():
            first = int(bars[np.flatnonzero(~np.isfinite(price).all(axis=1))[0]])
            raise PredictionTableError(
                f"{where}: agent_block = {name} starts in the price-feature warm-up (bar {first} "
                "has no price features); the agent's blocks must start later"
            )
        data = MarketData(
            open=arrays.open[bars],
            close=arrays.close[bars],
            pred_features=feats[rows],
            price_features=price,
            timestamps=arrays.timestamps[bars],
            pred_names=pred_names,
            price_names=AGENT_PRICE_FEATURE_NAMES,
            segment_starts=segment_starts,
        )
        probs = feats[rows][:, 2:5]
        blocks[name] = AgentBlock(name, data, bars, probs, bool(in_sample_col[rows].any()))
    for a, b in zip(BLOCK_NAMES, BLOCK_NAMES[1:], strict=False):
        if blocks[a].bars[-1] >= blocks[b].bars[0]:
            raise PredictionTableError(
                f"{where}: agent_block {a} ends at bar {blocks[a].bars[-1]} but {b} starts at bar "
                f"{blocks[b].bars[0]}; expected {a} before {b}"
            )
    return blocks


# ---------------------------------------------------------------- training


def _progress_bar_wanted() -> bool:
    """SB3's bar: when :func:`pipeline.common.progress_bars_wanted` (a terminal, or one forwarded by
    the entry point) and tqdm + rich are installed; otherwise a log line every 30 s (item 26)."""
    if not progress_bars_wanted():
        return False
    return all(importlib.util.find_spec(m) is not None for m in ("tqdm", "rich"))


PREVIOUS_RUN_DIR = art.PPO_PREVIOUS_RUN_DIR
"""Inside the checkpoint folder: the previous run's files while a fresh run has not yet written
its first checkpoint (issue 8 item 3)."""


def _run_files(ckdir: Path) -> list[Path]:
    """Checkpoints, best model, checksums and run config of the run in ``ckdir``."""
    from ppo_approach import ppo_trading_agent as agent

    files = [p for _, p in agent.list_checkpoints(ckdir)]
    names = (
        art.PPO_BEST_MODEL_NAME,
        art.PPO_BEST_META_NAME,
        art.PPO_CHECKSUMS_NAME,
        RUN_CONFIG_NAME,
    )
    return files + [ckdir / n for n in names if (ckdir / n).is_file()]


def _set_aside_previous_run(ckdir: Path) -> None:
    """A fresh (non-resume) run: move the earlier run's files to ``.previous_run/``.

    They are deleted by :func:`_drop_previous_run` once this run has written a checkpoint or its
    final model, and put back by :func:`_recover_previous_run` when it fails before (a crashing
    setup must not cost the earlier run, issue 8 item 3).
    """
    files = _run_files(ckdir)
    if not files:
        return
    aside = ckdir / PREVIOUS_RUN_DIR
    aside.mkdir(exist_ok=True)
    for p in files:
        os.replace(p, aside / p.name)
    log.warning(
        "fresh run: moved %d file(s) of an earlier run to %s; they are deleted when this run "
        "writes its first checkpoint (use --resume to continue the earlier run instead)",
        len(files),
        aside,
    )


def _drop_previous_run(ckdir: Path) -> None:
    """This run has saved something: the earlier run's set-aside files go."""
    aside = ckdir / PREVIOUS_RUN_DIR
    if aside.is_dir():
        shutil.rmtree(aside)
        log.info("removed the earlier run's files from %s", aside)


def _recover_previous_run(ckdir: Path) -> None:
    """After a fresh run that failed (or was killed) before its first checkpoint, put the earlier
    run's files back; when it did write one, delete them (the cleanup was all that was left)."""
    from ppo_approach import ppo_trading_agent as agent

    aside = ckdir / PREVIOUS_RUN_DIR
    if not aside.is_dir():
        return
    if agent.list_checkpoints(ckdir):
        _drop_previous_run(ckdir)
        return
    for p in _run_files(ckdir):  # the failed run's partial files (no checkpoint of its own)
        p.unlink()
    moved = list(aside.iterdir())
    for p in moved:
        os.replace(p, ckdir / p.name)
    aside.rmdir()
    log.warning(
        "restored %d file(s) of the earlier run in %s (the fresh run wrote no checkpoint)",
        len(moved),
        ckdir,
    )


RUN_CONFIG_NAME = art.PPO_RUN_CONFIG_NAME
"""Beside the checkpoints: the settings they were trained under (:func:`run_fingerprint`)."""

RESUME_FREE_KEYS = frozenset(
    {
        "total_timesteps",
        "checkpoint_freq",
        "keep_checkpoints",
        "eval_freq",
        "device",
        "vec_env",
        "random_policy_seeds",
    }
)
"""PPO keys a resumed run may change: how long, how often, where it runs, or only the backtest.
Every other key changes what the saved weights were trained for (SB3's ``PPO.load`` would
silently keep the checkpoint's own hyperparameters)."""


def run_fingerprint(cfg: Config, dataset_sha256: str) -> dict[str, Any]:
    """The settings a checkpoint depends on, key by key: the dataset's SHA-256, every PPO key but
    :data:`RESUME_FREE_KEYS`, and the training keys that change the prediction model(s) feeding
    the agent (the keys of ``TrainingConfig.hash_for_model``: data, training loop, own sizes)."""
    pc = cfg.ppo
    models = pc.ensemble_models if pc.prediction_model == "ensemble" else (pc.prediction_model,)
    as_dict = cfg.to_dict()
    out: dict[str, Any] = {"dataset_sha256": dataset_sha256}
    for key in sorted({k for m in models for k in cfg.training.model_keys(m)}):
        out[f"training.{key}"] = as_dict["training"][key]
    for key, value in as_dict["ppo"].items():
        if key not in RESUME_FREE_KEYS:
            out[f"ppo.{key}"] = value
    return out


def fingerprint_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``"key = old (now new)"`` for every key whose value differs (sorted by key)."""
    missing = "<unset>"
    return [
        f"{k} = {saved.get(k, missing)} (now {now.get(k, missing)})"
        for k in sorted(set(saved) | set(now))
        if saved.get(k, missing) != now.get(k, missing)
    ]


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class ResumeCandidate:
    """A file ``--resume`` may continue from (newest first in :func:`_resume_candidates`)."""

    timesteps: int
    path: Path
    sha256: str | None
    """The SHA-256 recorded when the file was written; ``None`` when nothing was recorded."""


def _resume_candidates(
    paths: Paths, ckdir: Path, model_name: str, dataset: str, fingerprint: dict[str, Any]
) -> list[ResumeCandidate]:
    """What ``--resume`` may continue from, newest first: the checkpoints (all of them, so a
    damaged newest one can be skipped, issue 8 item 4) and the final model, each trained with the
    same :func:`run_fingerprint` (resuming a finished run trains no further and only re-runs the
    backtest).

    Raises :class:`ResumeMismatchError` naming the changed keys when something could be resumed
    but every candidate was trained with other settings; a checkpoint folder without
    ``run_config.json`` (written by older versions) is resumed with a warning.
    """
    from ppo_approach import ppo_trading_agent as agent

    found: list[tuple[int, Path, dict[str, Any] | None, Path]] = []
    checkpoints = agent.list_checkpoints(ckdir)
    run_cfg = ckdir / RUN_CONFIG_NAME
    saved_cfg = _read_json(run_cfg) if checkpoints else None
    found += [(ts, path, saved_cfg, run_cfg) for ts, path in checkpoints]
    final = Artifacts(paths, dataset).ppo_model(model_name)
    meta_path = Artifacts(paths, dataset).ppo_meta(model_name)
    meta = _read_json(meta_path) if final.is_file() else None
    # A final model counts only with its fingerprint (older metas have none: resume a checkpoint).
    if meta is not None and isinstance(meta.get("timesteps"), int) and "run_config" in meta:
        found.append((meta["timesteps"], final, meta["run_config"], meta_path))
    if not found:
        return []
    matching = [c for c in found if c[2] is None or not fingerprint_changes(c[2], fingerprint)]
    if not matching:
        ts, path, saved, source = max(found, key=lambda c: c[0])
        assert saved is not None
        changes = fingerprint_changes(saved, fingerprint)
        shown = "; ".join(changes[:6])
        if len(changes) > 6:
            shown += f"; and {len(changes) - 6} more"
        raise ResumeMismatchError(
            f"--resume: {path.name} ({ts} timesteps) was trained with other settings ({source}): "
            f"{shown}; run without --resume to start over, or --set the old values"
        )
    if any(c[2] is None for c in matching):
        log.warning(
            "--resume: %s has no %s; cannot check that the current config matches the checkpoint's",
            ckdir,
            RUN_CONFIG_NAME,
        )
    checksums = agent.read_checksums(ckdir)
    out = []
    for ts, path, _, _ in sorted(matching, key=lambda c: (c[0], c[1] == final), reverse=True):
        if path == final:
            sha = meta.get("sha256") if meta is not None else None
        else:
            sha = None if checksums is None else checksums.get(path.name, "")
        out.append(ResumeCandidate(ts, path, sha if isinstance(sha, str) else None))
    return out


def _resume_point(
    paths: Paths, ckdir: Path, model_name: str, dataset: str, fingerprint: dict[str, Any]
) -> tuple[int, Path] | None:
    """The newest :func:`_resume_candidates` entry as ``(timesteps, path)``, or ``None``."""
    cands = _resume_candidates(paths, ckdir, model_name, dataset, fingerprint)
    return (cands[0].timesteps, cands[0].path) if cands else None


def _unrecorded(path: Path, where: Path) -> agent_module.UntrustedModelError:
    from ppo_approach import ppo_trading_agent as agent

    return agent.UntrustedModelError(
        f"{path}: not recorded in {where}, so not written by this run; refusing to load it "
        "(delete it, or run without --resume to start over)"
    )


def _load_resume_point(
    cands: list[ResumeCandidate], vec_env: Any, device: str, paths: Paths, pc: PPOConfig
) -> tuple[Any, ResumeCandidate] | None:
    """Load the newest candidate that loads; a damaged one is skipped with a warning naming it
    (issue 8 item 4). One whose recorded SHA-256 differs (or that the checksum manifest does not
    list) stops the run: it was replaced, not damaged (item 7)."""
    from ppo_approach import ppo_trading_agent as agent

    for cand in cands:
        if cand.sha256 == "":
            raise _unrecorded(cand.path, cand.path.parent / art.PPO_CHECKSUMS_NAME)
        if cand.sha256 is None:
            log.warning(
                "--resume: no SHA-256 recorded for %s (written by an older version); loading it "
                "unverified (nothing in it is unpickled)",
                cand.path,
            )
        try:
            model = agent.load_model(
                cand.path,
                vec_env,
                device,
                paths.ppo_logs,
                clip_range=pc.clip_range,
                expected_sha256=cand.sha256,
            )
        except agent.CorruptModelError as exc:
            log.warning("--resume: skipping %s; trying the next older one", exc)
            continue
        if model.num_timesteps != cand.timesteps:
            log.warning(
                "--resume: skipping %s: holds %d timesteps but its name or meta says %d",
                cand.path,
                model.num_timesteps,
                cand.timesteps,
            )
            continue
        return model, cand
    return None


def _adopt_unrecorded_files(ckdir: Path) -> None:
    """Resuming a folder of an older version (no checksum manifest): record the hashes of what is
    there now, so this run's later checks (best model, fallback) have something to compare to."""
    from ppo_approach import ppo_trading_agent as agent

    if agent.read_checksums(ckdir) is not None:
        return
    names = [p for _, p in agent.list_checkpoints(ckdir)] + [ckdir / art.PPO_BEST_MODEL_NAME]
    recorded = {p.name: sha256_file(p) for p in names if p.is_file()}
    if recorded:
        atomic_write_json(ckdir / art.PPO_CHECKSUMS_NAME, dict(sorted(recorded.items())))


def annualisation(prepared: Prepared) -> tuple[float, str]:
    """Periods per year inferred from the dataset's bars, and how (issue 8 item 20)."""
    value, how = backtest.infer_periods_per_year(prepared.arrays.timestamps)
    return float(value), how


def train_agent(cfg: Config, dataset: str, paths: Paths, resume: bool) -> BacktestReport:
    """Train (or resume) the agent of ``cfg.ppo.prediction_model`` on ``dataset``, then backtest.

    Returns the backtest report (also written to ``results/backtest_{model}_{dataset}.json``).
    Raises :class:`TrainingInterrupted` (exit code 130) after writing a checkpoint when SIGINT or
    SIGTERM arrives during training.
    """
    from pipeline.device import resolve_device
    from pipeline.prepare import prepare_dataset
    from ppo_approach import ppo_trading_agent as agent

    pc = cfg.ppo
    model_name = pc.prediction_model
    paths.ensure()
    prepared = prepare_dataset(cfg.training, dataset, paths, save_scaler=False)
    dataset = prepared.info.name  # artifacts are named by the dataset's name, even for a path
    table = load_table(paths, model_name, dataset)
    blocks = build_blocks(prepared, table, pc)
    in_sample = any(b.in_sample for b in blocks.values())
    if in_sample and pc.ppo_prediction_source == "walk_forward":
        log.warning(
            "prediction table has in_sample rows although ppo_prediction_source = walk_forward"
        )
    ppy, ppy_how = annualisation(prepared)
    log.info("annualisation: %s", ppy_how)
    env_cfg = EnvConfig.from_ppo_config(pc)
    reward_cfg = RewardConfig.from_ppo_config(pc)
    device = str(resolve_device(pc.device, key="ppo device"))
    files = Artifacts(paths, dataset)
    ckdir = files.ppo_checkpoint_dir(model_name)
    tb_name = files.tensorboard_name(model_name)
    keep = pc.keep_checkpoints
    for name, b in blocks.items():
        d = b.describe()
        log.info("agent %s block: %s .. %s (%d bars)", name, d["start"], d["end"], d["bars"])

    _recover_previous_run(ckdir)  # leftovers of a fresh run killed before its first checkpoint
    fingerprint = run_fingerprint(cfg, prepared.info.sha256)
    cands = _resume_candidates(paths, ckdir, model_name, dataset, fingerprint) if resume else []

    vec_env, vec_kind = agent.make_vec_env(
        blocks["train"].data, env_cfg, reward_cfg, pc.n_envs, pc.seed, pc.vec_env
    )
    try:
        loaded = _load_resume_point(cands, vec_env, device, paths, pc) if cands else None
        start = loaded[1] if loaded is not None else None
        if resume and start is None:
            log.info("--resume: no usable checkpoint in %s; starting from scratch", ckdir)
        if start is None:
            _set_aside_previous_run(ckdir)
        elif resume:
            _adopt_unrecorded_files(ckdir)
        ckdir.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write_json(ckdir / RUN_CONFIG_NAME, fingerprint)
            if loaded is not None:
                model = loaded[0]
                log.info(
                    "resuming from %s (%d of %d timesteps)",
                    loaded[1].path,
                    loaded[1].timesteps,
                    pc.total_timesteps,
                )
            else:
                model = agent.build_model(pc, vec_env, device, paths.ppo_logs)
            log.info(
                "PPO on %s, %d %s env(s), net %s, %d timesteps",
                device,
                vec_env.num_envs,
                vec_kind,
                list(pc.net_arch),
                pc.total_timesteps,
            )
            stopper = agent.StopOnRequestCallback(agent.StopRequest())
            val_env = TradingEnv(
                blocks["val"].data, env_cfg, RewardFunction(reward_cfg), random_start=True
            )
            evaluator = agent.ValidationEvalCallback(
                val_env, ckdir, pc.eval_freq, pc.eval_episodes, pc.seed, ppy, stopper
            )
            if start is not None:
                evaluator.load_best_meta()
            checkpointer = agent.CheckpointCallback(
                ckdir, pc.checkpoint_freq, keep, after_save=lambda _: _drop_previous_run(ckdir)
            )
            callbacks: list[Any] = [checkpointer, evaluator]
            bars = _progress_bar_wanted()
            if not bars:
                callbacks.append(agent.ProgressLogCallback(pc.total_timesteps))
            with agent.parent_threads(vec_kind, vec_env.num_envs):
                result = agent.learn(
                    model,
                    pc.total_timesteps,
                    callbacks,
                    stopper,
                    tb_name,
                    bars,
                    new_run=start is None,
                )
            if result.interrupted:
                _interrupted(model, result, ckdir, keep, pc.total_timesteps)
            final_path = files.ppo_model(model_name)
            agent.save_model_atomic(model, final_path)
            _drop_previous_run(ckdir)
        except BaseException:
            _recover_previous_run(ckdir)  # nothing saved yet: the earlier run's files come back
            raise
    finally:
        vec_env.close()
    write_resolved(cfg, files.ppo_config(model_name))
    meta = {
        "model": model_name,
        "dataset": dataset,
        "dataset_sha256": prepared.info.sha256,
        "command": shlex.join([sys.executable, *sys.argv]),
        "timesteps": int(model.num_timesteps),
        "resumed_from": str(start.path) if start is not None else None,
        "sha256": sha256_file(final_path),
        "device": device,
        "vec_env": vec_kind,
        "config_hash": cfg.hash(),
        "run_config": fingerprint,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(files.ppo_meta(model_name), meta)
    log.info("final model saved to %s (%d timesteps)", final_path, model.num_timesteps)

    chosen, chosen_model = _model_to_backtest(evaluator, ckdir, model, val_env, device, pc)
    log.info(
        "backtesting the %s model%s on the test block",
        chosen,
        f" (validation best at {evaluator.best_timesteps} timesteps)" if chosen == "best" else "",
    )
    report = run_backtest(
        chosen_model,
        cfg,
        dataset,
        paths,
        prepared,
        blocks,
        chosen=chosen,
        timesteps=int(model.num_timesteps),
        in_sample=in_sample,
    )
    record_artifacts(files, model_name)
    return report


def record_artifacts(files: Artifacts, model_name: str) -> None:
    """List what step 7 wrote in the run manifest: the final model, its meta and resolved
    config, the TensorBoard runs, the backtest report and plot (checkpoints stay local)."""
    from pipeline.manifest import STEP_AGENT

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


def _interrupted(model: Any, result: Any, ckdir: Path, keep: int, total: int) -> None:
    """Write the interrupt checkpoint (when a rollout finished at all) and raise
    :class:`TrainingInterrupted`."""
    from ppo_approach import ppo_trading_agent as agent

    if result.timesteps == 0:
        # Not one update yet: nothing worth a checkpoint, and the earlier run's files (if any)
        # are put back by the caller rather than replaced by an untrained model.
        raise TrainingInterrupted(
            f"interrupted by {result.signal_name} before the first rollout finished; no "
            "checkpoint written (nothing was learned yet)"
        )
    # The interrupted rollout was thrown away: count only what the weights learned from.
    model.num_timesteps = result.timesteps
    path = agent.save_checkpoint(model, ckdir, result.timesteps, keep)
    _drop_previous_run(ckdir)
    raise TrainingInterrupted(
        f"interrupted by {result.signal_name} at {result.timesteps} of {total} timesteps; "
        f"checkpoint written to {path}; run the same command with --resume to continue",
        checkpoint_path=path,
    )


def _model_to_backtest(
    evaluator: Any, ckdir: Path, model: Any, val_env: TradingEnv, device: str, pc: PPOConfig
) -> tuple[str, Any]:
    """``("best", model)`` from ``best_model.zip`` (checksum verified), else ``("final", model)``.

    A damaged best model falls back to the final one with a warning; one that is not the file
    this run recorded stops the step (issue 8 item 7).
    """
    from ppo_approach import ppo_trading_agent as agent

    best = evaluator.best_path
    if not best.is_file():
        return "final", model
    checksums = agent.read_checksums(ckdir)
    sha = checksums.get(best.name) if checksums is not None else None
    if checksums is not None and sha is None:
        raise _unrecorded(best, ckdir / art.PPO_CHECKSUMS_NAME)
    try:
        loaded = agent.load_model(
            best,
            None,
            device,
            clip_range=pc.clip_range,
            spaces=(val_env.observation_space, val_env.action_space),
            expected_sha256=sha,
        )
    except agent.CorruptModelError as exc:
        log.warning("best model unusable (%s); backtesting the final model instead", exc)
        return "final", model
    return "best", loaded


def run_backtest(
    model: Any,
    cfg: Config,
    dataset: str,
    paths: Paths,
    prepared: Prepared,
    blocks: dict[str, AgentBlock],
    chosen: str,
    timesteps: int,
    in_sample: bool,
) -> BacktestReport:
    """Run the agent and the baselines once over the test block; write JSON + PNG; print a table."""
    pc = cfg.ppo
    model_name = pc.prediction_model
    test = blocks["test"]
    ppy, ppy_how = annualisation(prepared)
    reward_cfg = RewardConfig.from_ppo_config(pc)

    def agent_policy(obs: np.ndarray, info: dict[str, Any]) -> int:
        action, _ = model.predict(obs, deterministic=True)
        return int(action)

    runs = backtest.run_strategies(
        test.data,
        EnvConfig.from_ppo_config(pc),
        reward_cfg,
        agent_policy,
        test.probs,
        [pc.seed + i for i in range(pc.random_policy_seeds)],
    )
    report: BacktestReport = {
        "model": model_name,
        "dataset": dataset,
        "dataset_sha256": prepared.info.sha256,
        "prediction_source": pc.ppo_prediction_source,
        "in_sample_predictions": bool(in_sample),
        "timesteps": int(timesteps),
        "chosen_model": chosen,
        "blocks": {name: b.describe() for name, b in blocks.items()},
        "interval_seconds": float(prepared.info.interval_seconds),
        "periods_per_year": ppy,
        "periods_per_year_basis": ppy_how,
        "transaction_cost": pc.transaction_cost,
        "random_policy_seeds": pc.random_policy_seeds,
        "strategies": backtest.summarise_runs(runs, ppy),
    }
    json_path = Artifacts(paths, dataset).backtest_report(model_name)
    png_path = Artifacts(paths, dataset).backtest_plot(model_name)
    backtest.write_report(report, json_path)
    title = (
        f"PPO ({model_name} predictions, {chosen} model) on {dataset}: test block, "
        f"predictions {pc.ppo_prediction_source}" + (" [IN-SAMPLE]" if in_sample else "")
    )
    backtest.plot_backtest(runs, test.data.timestamps, png_path, title)
    print(backtest.format_summary(backtest.json_safe(report)))
    log.info("backtest written to %s and %s", json_path, png_path)
    return report


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
