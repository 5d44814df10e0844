"""One owner for a PPO run's checkpoint folder: which settings its checkpoints were trained
with (``run_config.json``), what ``--resume`` may continue from (newest first, a damaged file
skipped), and the earlier run's files set aside by a fresh run until it has written its own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.common import Paths, PipelineError, atomic_write_json, sha256_file
from pipeline.config.schema import Config, PPOConfig
from pipeline.store import artifacts as art
from pipeline.store.artifacts import Artifacts

if TYPE_CHECKING:
    from ppo_approach import model_files

log = logging.getLogger(__name__)


class ResumeMismatchError(PipelineError):
    """``--resume`` with settings (or data) other than the checkpoint was trained with."""


PREVIOUS_RUN_DIR = art.PPO_PREVIOUS_RUN_DIR
"""Inside the checkpoint folder: the previous run's files while a fresh run has not yet written
its first checkpoint."""


def _run_files(checkpoint_dir: Path) -> list[Path]:
    """Checkpoints, best model, checksums and run config of the run in ``checkpoint_dir``."""
    from ppo_approach import model_files

    files = [p for _, p in model_files.list_checkpoints(checkpoint_dir)]
    names = (
        art.PPO_BEST_MODEL_NAME,
        art.PPO_BEST_META_NAME,
        art.PPO_CHECKSUMS_NAME,
        RUN_CONFIG_NAME,
    )
    return files + [checkpoint_dir / n for n in names if (checkpoint_dir / n).is_file()]


def set_aside_previous_run(checkpoint_dir: Path) -> None:
    """A fresh (non-resume) run: move the earlier run's files to ``.previous_run/``.

    They are deleted by :func:`drop_previous_run` once this run has written a checkpoint or its
    final model, and put back by :func:`recover_previous_run` when it fails before (a crashing
    setup must not cost the earlier run).
    """
    files = _run_files(checkpoint_dir)
    if not files:
        return
    aside = checkpoint_dir / PREVIOUS_RUN_DIR
    aside.mkdir(exist_ok=True)
    for p in files:
        os.replace(p, aside / p.name)
    log.warning(
        "fresh run: moved %d file(s) of an earlier run to %s; they are deleted when this run "
        "writes its first checkpoint (use --resume to continue the earlier run instead)",
        len(files),
        aside,
    )


def drop_previous_run(checkpoint_dir: Path) -> None:
    """This run has saved something: the earlier run's set-aside files go."""
    aside = checkpoint_dir / PREVIOUS_RUN_DIR
    if aside.is_dir():
        shutil.rmtree(aside)
        log.info("removed the earlier run's files from %s", aside)


def recover_previous_run(checkpoint_dir: Path) -> None:
    """After a fresh run that failed (or was killed) before its first checkpoint, put the earlier
    run's files back; when it did write one, delete them (the cleanup was all that was left)."""
    from ppo_approach import model_files

    aside = checkpoint_dir / PREVIOUS_RUN_DIR
    if not aside.is_dir():
        return
    if model_files.list_checkpoints(checkpoint_dir):
        drop_previous_run(checkpoint_dir)
        return
    for p in _run_files(
        checkpoint_dir
    ):  # the failed run's partial files (no checkpoint of its own)
        p.unlink()
    moved = list(aside.iterdir())
    for p in moved:
        os.replace(p, checkpoint_dir / p.name)
    aside.rmdir()
    log.warning(
        "restored %d file(s) of the earlier run in %s (the fresh run wrote no checkpoint)",
        len(moved),
        checkpoint_dir,
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
        # each agent of a multi-seed run resumes on its own; adding seeds keeps the finished ones
        "seeds",
    }
)
"""PPO keys a resumed run may change: how long, how often, where it runs, or only the backtest.
Every other key changes what the saved weights were trained for (a checkpoint loads with its own
hyperparameters from its ``agent.json``, so a changed one would silently be ignored)."""


def run_fingerprint(
    cfg: Config, dataset_sha256: str, classifier_settings: dict[str, Any]
) -> dict[str, Any]:
    """The settings a checkpoint depends on, key by key: the dataset's SHA-256, every PPO key but
    :data:`RESUME_FREE_KEYS`, and the classifier settings the prediction table came from (the
    keys of ``TrainingConfig.model_keys`` of the model(s) feeding the agent: data, training loop,
    own sizes), as step 5 recorded them beside the table."""
    out: dict[str, Any] = {"dataset_sha256": dataset_sha256}
    for key in sorted(classifier_settings):
        out[f"training.{key}"] = classifier_settings[key]
    for key, value in cfg.to_dict()["ppo"].items():
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


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class ResumeCandidate:
    """A file ``--resume`` may continue from (newest first in :func:`resume_candidates`)."""

    timesteps: int
    path: Path
    sha256: str | None
    """The SHA-256 recorded when the file was written; ``None`` when nothing was recorded."""


def resume_candidates(
    paths: Paths,
    checkpoint_dir: Path,
    model_name: str,
    dataset: str,
    fingerprint: dict[str, Any],
    final_files: tuple[Path, Path] | None = None,
) -> list[ResumeCandidate]:
    """What ``--resume`` may continue from, newest first: the checkpoints (all of them, so a
    damaged newest one can be skipped) and the final model, each trained with the same
    :func:`run_fingerprint` (resuming a finished run trains no further and only re-runs the
    backtest).

    Raises :class:`ResumeMismatchError` naming the changed keys when something could be resumed
    but every candidate was trained with other settings; a checkpoint folder without
    ``run_config.json`` (written by older versions) is resumed with a warning. ``final_files``:
    the final model and its meta JSON when they are not the dataset's (one agent of a multi-seed
    run keeps them in its own folder).
    """
    from ppo_approach import model_files

    found: list[tuple[int, Path, dict[str, Any] | None, Path]] = []
    checkpoints = model_files.list_checkpoints(checkpoint_dir)
    run_cfg = checkpoint_dir / RUN_CONFIG_NAME
    saved_cfg = read_json(run_cfg) if checkpoints else None
    found += [(ts, path, saved_cfg, run_cfg) for ts, path in checkpoints]
    files = Artifacts(paths, dataset)
    final, meta_path = final_files or (files.ppo_model(model_name), files.ppo_meta(model_name))
    meta = read_json(meta_path) if final.is_file() else None
    # A final model counts only with its fingerprint (older metas have none: resume a checkpoint).
    if meta is not None and isinstance(meta.get("timesteps"), int) and "run_config" in meta:
        found.append((meta["timesteps"], final, meta["run_config"], meta_path))
    if not found:
        return []
    matching = [c for c in found if c[2] is None or not fingerprint_changes(c[2], fingerprint)]
    if not matching:
        _refuse_mismatch(paths, dataset, found, fingerprint)
        return []
    if any(c[2] is None for c in matching):
        log.warning(
            "--resume: %s has no %s; cannot check that the current config matches the checkpoint's",
            checkpoint_dir,
            RUN_CONFIG_NAME,
        )
    checksums = model_files.read_checksums(checkpoint_dir)
    out = []
    for ts, path, _, _ in sorted(matching, key=lambda c: (c[0], c[1] == final), reverse=True):
        if path == final:
            sha = meta.get("sha256") if meta is not None else None
        else:
            sha = None if checksums is None else checksums.get(path.name, "")
        out.append(ResumeCandidate(ts, path, sha if isinstance(sha, str) else None))
    return out


def _refuse_mismatch(
    paths: Paths,
    dataset: str,
    found: list[tuple[int, Path, dict[str, Any] | None, Path]],
    fingerprint: dict[str, Any],
) -> None:
    """Every candidate was trained with other settings: :class:`ResumeMismatchError` naming the
    changes of the newest, unless all of them predate the fresh run this ``--resume`` continues
    (then return: step 7 starts from scratch)."""
    ts, path, saved, source = max(found, key=lambda c: c[0])
    assert saved is not None
    fresh = fresh_run_started(paths, dataset)
    if fresh is not None and all(_mtime(c[1]) < fresh for c in found):
        # An earlier run's agent, older than the fresh run this --resume continues (that run
        # was stopped before step 7): not this run's to resume nor to judge it by. Step 7
        # starts fresh; the old files are set aside as for a fresh run.
        log.warning(
            "--resume: %s (%d timesteps) is an earlier run's, trained with other settings "
            "before this run started afresh (%s); step 7 starts from scratch",
            path.name,
            ts,
            fresh_run_path(paths, dataset),
        )
        return
    changes = fingerprint_changes(saved, fingerprint)
    shown = "; ".join(changes[:6])
    if len(changes) > 6:
        shown += f"; and {len(changes) - 6} more"
    raise ResumeMismatchError(
        f"--resume: {path.name} ({ts} timesteps) was trained with other settings ({source}): "
        f"{shown}; run without --resume to start over, or --set the old values"
    )


def fresh_run_path(paths: Paths, dataset: str) -> Path:
    """``ppo_approach/checkpoints/.fresh_run_{dataset}.json``: when the latest run without
    ``--resume`` that included step 7 started (:func:`mark_fresh_run`)."""
    return paths.ppo_checkpoints / f".fresh_run_{Artifacts(paths, dataset).dataset}.json"


def mark_fresh_run(paths: Paths, dataset: str) -> Path:
    """A run without ``--resume`` that includes step 7 starts now: every PPO checkpoint or final
    model of ``dataset`` older than this belongs to an earlier run. If this run stops before its
    step 7 and is then resumed, step 7 starts fresh instead of refusing the earlier run's agent
    for its other settings."""
    now = time.time()
    return atomic_write_json(
        fresh_run_path(paths, dataset),
        {
            "started_epoch": now,
            "started": datetime.fromtimestamp(now, tz=timezone.utc).isoformat(timespec="seconds"),
        },
    )


def fresh_run_started(paths: Paths, dataset: str) -> float | None:
    """The start (epoch seconds) recorded by :func:`mark_fresh_run`, or None."""
    data = read_json(fresh_run_path(paths, dataset))
    value = data.get("started_epoch") if data is not None else None
    return float(value) if isinstance(value, (int, float)) else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")  # unknown: never taken for an earlier run's


def _resume_point(
    paths: Paths, checkpoint_dir: Path, model_name: str, dataset: str, fingerprint: dict[str, Any]
) -> tuple[int, Path] | None:
    """The newest :func:`resume_candidates` entry as ``(timesteps, path)``, or ``None``."""
    cands = resume_candidates(paths, checkpoint_dir, model_name, dataset, fingerprint)
    return (cands[0].timesteps, cands[0].path) if cands else None


def unrecorded_error(path: Path, where: Path) -> model_files.UntrustedModelError:
    from ppo_approach import model_files

    return model_files.UntrustedModelError(
        f"{path}: not recorded in {where}, so not written by this run; refusing to load it "
        "(delete it, or run without --resume to start over)"
    )


def load_resume_point(
    cands: list[ResumeCandidate], vec_env: Any, device: str, paths: Paths, ppo_cfg: PPOConfig
) -> tuple[Any, ResumeCandidate] | None:
    """Load the newest candidate that loads; a damaged one is skipped with a warning naming it.
    One whose recorded SHA-256 differs (or that the checksum manifest does not list) stops the
    run: it was replaced, not damaged."""
    from ppo_approach import model_files

    for cand in cands:
        if cand.sha256 == "":
            raise unrecorded_error(cand.path, cand.path.parent / art.PPO_CHECKSUMS_NAME)
        if cand.sha256 is None:
            log.warning(
                "--resume: no SHA-256 recorded for %s (written by an older version); loading it "
                "unverified (nothing in it is unpickled)",
                cand.path,
            )
        try:
            model = model_files.load_model(
                cand.path,
                vec_env,
                device,
                paths.ppo_logs,
                expected_sha256=cand.sha256,
                algorithm=ppo_cfg.algorithm,
            )
        except model_files.CorruptModelError as exc:
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


def adopt_unrecorded_files(checkpoint_dir: Path) -> None:
    """Resuming a folder of an older version (no checksum manifest): record the hashes of what is
    there now, so this run's later checks (best model, fallback) have something to compare to."""
    from ppo_approach import model_files

    if model_files.read_checksums(checkpoint_dir) is not None:
        return
    names = [p for _, p in model_files.list_checkpoints(checkpoint_dir)] + [
        checkpoint_dir / art.PPO_BEST_MODEL_NAME
    ]
    recorded = {p.name: sha256_file(p) for p in names if p.is_file()}
    if recorded:
        atomic_write_json(checkpoint_dir / art.PPO_CHECKSUMS_NAME, dict(sorted(recorded.items())))
