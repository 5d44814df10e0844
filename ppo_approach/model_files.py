"""Saving and loading SB3 PPO / sb3-contrib MaskablePPO models as data (issue 8 items 4, 7, 16,
17; MaskablePPO: issue 10).

:func:`save_model_atomic` writes a model through an atomic, fsynced temp file and records its
SHA-256 in ``checksums.json`` beside it BEFORE renaming it into place; :func:`load_model` never
unpickles: SB3 stores some attributes as ``:serialized:`` cloudpickle blobs in the zip's ``data``;
every one we know is replaced by an object built here (``custom_objects``), any other is refused,
as is a ``.pth`` entry that holds more than tensors (issue 22 item 11), and the bytes hashed are
the bytes loaded. A damaged file is a :class:`CorruptModelError`
(``--resume`` skips it), a replaced one an :class:`UntrustedModelError` (refused). Only the newest
``keep_checkpoints`` checkpoints are kept. The config's ``algorithm`` says which class a file must
be (``ppo`` or ``maskable_ppo``); a file of the other one is refused in one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import pickle
import re
import zipfile
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv

from pipeline.artifacts import (
    PPO_CHECKSUMS_NAME,
    ppo_checkpoint_timesteps,
)
from pipeline.common import (
    PipelineError,
    atomic_path,
    atomic_write_json,
    sha256_file,
)

log = logging.getLogger(__name__)

SpacePair = tuple[Any, Any]
"""(observation space, action space) a saved model must match."""

AgentModel: TypeAlias = PPO | MaskablePPO
"""A trading agent: SB3 PPO or sb3-contrib MaskablePPO (``algorithm`` in ppo_config.txt)."""

ALGORITHMS: dict[str, type[PPO] | type[MaskablePPO]] = {"ppo": PPO, "maskable_ppo": MaskablePPO}
"""``algorithm`` value -> model class (issue 10)."""

_POLICY_CLASSES: dict[str, type[ActorCriticPolicy]] = {
    "ppo": ActorCriticPolicy,
    "maskable_ppo": MaskableActorCriticPolicy,
}
_POLICY_MODULES = {
    "stable_baselines3.common.policies": "ppo",
    "sb3_contrib.common.maskable.policies": "maskable_ppo",
}
"""Module of the policy class (plain JSON beside its pickle in a save's ``data``) -> algorithm."""

KEEP_CHECKPOINTS = 3
"""Default of ``keep_checkpoints`` in ppo_config.txt: checkpoints kept per run (issue 8 item 16;
the best model is kept besides). More than one, so ``--resume`` can fall back past a
damaged newest checkpoint (item 4)."""


class AgentError(PipelineError):
    """PPO setup failed (bad checkpoint, unusable device, ...); the message says what and where."""


class CorruptModelError(AgentError):
    """A model file that cannot be read (truncated, not a zip, not a PPO save): ``--resume`` skips
    it and falls back to an older checkpoint (issue 8 item 4)."""


class UntrustedModelError(AgentError):
    """A well-formed model file that is not the one this run wrote (SHA-256 differs from the
    recorded one, not recorded, or holds a pickled entry we do not replace): refused outright
    (issue 8 item 7)."""


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(timesteps, path)`` of every ``checkpoint_{T}.zip`` in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        timesteps = ppo_checkpoint_timesteps(p.name)
        if timesteps is not None:
            found.append((timesteps, p))
    return sorted(found)


def latest_checkpoint(directory: Path) -> tuple[int, Path] | None:
    """The checkpoint with the most timesteps, or ``None``."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def read_checksums(directory: Path) -> dict[str, str] | None:
    """``{file name: sha256}`` of ``checksums.json`` in ``directory``; ``None`` when it is absent
    (a folder written by an older version). An unreadable manifest is an error: it cannot vouch
    for anything, and silently ignoring it would let a file past the check."""
    path = directory / PPO_CHECKSUMS_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UntrustedModelError(
            f"{path}: unreadable checksum manifest ({exc}); delete the checkpoint folder "
            f"{directory} or run without --resume"
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise UntrustedModelError(
            f"{path}: expected a JSON object of file name -> sha256; delete the checkpoint folder "
            f"{directory} or run without --resume"
        )
    return data


def _update_checksums(directory: Path, set_: dict[str, str], drop: Sequence[str] = ()) -> None:
    data = read_checksums(directory) or {}
    data.update(set_)
    for name in drop:
        data.pop(name, None)
    atomic_write_json(directory / PPO_CHECKSUMS_NAME, dict(sorted(data.items())))


def save_model_atomic(model: AgentModel, path: Path, record_checksum: bool = False) -> Path:
    """``model.save`` to a temp name in the same folder, then fsync + ``os.replace`` onto ``path``.

    The temp name ends in ``.tmp`` (has a suffix), so SB3 writes exactly there and does not append
    ``.zip``; :func:`pipeline.common.atomic_path` fsyncs it before the rename and the folder after
    (issue 8 item 17). With ``record_checksum`` the file's SHA-256 goes into ``checksums.json``
    in the same folder BEFORE the rename: a crash in between leaves a recorded name without a file
    (harmless), never a file the manifest does not vouch for.
    """
    with atomic_path(path) as tmp:
        model.save(tmp)
        if record_checksum:
            _update_checksums(path.parent, {path.name: sha256_file(tmp)})
    return path


def prune_checkpoints(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (and their checksums); returns the deleted.

    The best model has another name and is never pruned (issue 8 item 16).
    """
    old = [p for _, p in list_checkpoints(directory)][: -max(int(keep), 1)]
    for p in old:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    if old and (directory / PPO_CHECKSUMS_NAME).is_file():
        _update_checksums(directory, {}, [p.name for p in old])
    return old


def _replacements(
    data: dict[str, Any],
    spaces: SpacePair,
    n_envs: int,
    clip_range: float,
    algorithm: str = "ppo",
) -> dict[str, Any]:
    """Objects built here for every attribute SB3 (2.x) pickles into a PPO save's ``data``.

    MaskablePPO (sb3-contrib 2.x) pickles the same attributes; only its policy class differs
    (``MaskableActorCriticPolicy``), and ``rollout_buffer_class = None`` makes it pick its
    ``MaskableRolloutBuffer`` (issue 10).

    None of them carries learned state: the weights and optimizer live in the ``.pth`` entries
    (read by SB3 with ``torch.load(weights_only=True)``). ``_last_obs`` / episode starts are reset
    by SB3 anyway when an env is attached; the schedules are rebuilt from the (plain JSON)
    ``learning_rate`` and the config's ``clip_range``; ``rollout_buffer_class = None`` lets PPO
    pick its rollout buffer as it did when the model was created; the episode-statistics buffers
    start empty (they only feed the ``rollout/ep_*`` log lines).
    """
    window = data.get("_stats_window_size")
    maxlen = window if isinstance(window, int) and window > 0 else 100
    return {
        "policy_class": _POLICY_CLASSES[algorithm],
        "observation_space": spaces[0],
        "action_space": spaces[1],
        "lr_schedule": None,
        "clip_range": float(clip_range),
        "clip_range_vf": None,
        "rollout_buffer_class": None,
        "_last_obs": None,
        "_last_original_obs": None,
        "_last_episode_starts": np.ones((n_envs,), dtype=bool),
        "ep_info_buffer": deque(maxlen=maxlen),
        "ep_success_buffer": deque(maxlen=maxlen),
        "env": None,
        "action_noise": None,
    }


def saved_algorithm(data: dict[str, Any]) -> str | None:
    """``ppo`` / ``maskable_ppo`` from the ``__module__`` that SB3 writes as plain JSON beside the
    pickled policy class in a save's ``data``; ``None`` when absent or another module."""
    entry = data.get("policy_class")
    module = entry.get("__module__") if isinstance(entry, dict) else None
    return _POLICY_MODULES.get(module) if isinstance(module, str) else None


def _check_saved_spaces(path: Path, data: dict[str, Any], spaces: SpacePair) -> None:
    """The file's observation / action space (its JSON description) must be the expected one."""
    obs, act = data.get("observation_space"), data.get("action_space")
    want_shape = list(spaces[0].shape)
    got_shape = obs.get("_shape") if isinstance(obs, dict) else None
    if got_shape is not None and list(got_shape) != want_shape:
        raise AgentError(
            f"{path}: observations of shape {got_shape}, but the environment has {want_shape} "
            "(saved with other prediction features?)"
        )
    want_n = getattr(spaces[1], "n", None)
    got_n = act.get("n") if isinstance(act, dict) else None
    if want_n is not None and got_n is not None and str(got_n) != str(int(want_n)):
        raise AgentError(f"{path}: {got_n} actions, but the environment has {int(want_n)}")


def load_model(
    path: Path,
    env: VecEnv | None,
    device: str,
    tensorboard_log: Path | None = None,
    *,
    clip_range: float,
    spaces: SpacePair | None = None,
    expected_sha256: str | None = None,
    algorithm: str = "ppo",
) -> AgentModel:
    """Load a saved PPO or MaskablePPO (checkpoint or final model) onto ``device``, attached to
    ``env``, without ever unpickling (issue 8 item 7).

    The file is read once; with ``expected_sha256`` those bytes must hash to it. Every
    ``:serialized:`` (cloudpickle) entry of the zip's ``data`` is replaced by an object built here
    (:func:`_replacements`, passed to SB3 as ``custom_objects``, so SB3 never decodes it); a
    pickled entry we do not know is refused. ``spaces`` (default: the env's) are the observation
    and action spaces the model must have; ``clip_range`` and ``algorithm`` (``ppo`` |
    ``maskable_ppo``) are the config's: a file saved by the other algorithm is an
    :class:`AgentError` (issue 10).

    Raises :class:`CorruptModelError` for a file that cannot be read as a PPO save and
    :class:`UntrustedModelError` for a well-formed file that is not the recorded one.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AgentError(f"{path}: PPO model file not found") from None
    # Structure first (reads no pickle): a truncated or bit-flipped file is damage, skippable.
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise CorruptModelError(f"{path}: damaged (CRC error in its entry {bad})")
            data = json.loads(archive.read("data").decode("utf-8"))
    except CorruptModelError:
        raise
    except (zipfile.BadZipFile, KeyError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise CorruptModelError(
            f"{path}: damaged or not a PPO model file ({type(exc).__name__}: {exc})"
        ) from None
    # A well-formed file with other bytes than recorded was replaced: refuse, never skip.
    if expected_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected_sha256:
            raise UntrustedModelError(
                f"{path}: sha256 {actual[:16]}... differs from {expected_sha256[:16]}... recorded "
                "when this run wrote it; refusing to load a model file that was changed since "
                "(delete it, or run without --resume to start over)"
            )
    if not isinstance(data, dict):
        raise CorruptModelError(f"{path}: damaged or not a PPO model file (data is not an object)")
    if spaces is None:
        if env is None:
            raise AgentError(f"{path}: load_model needs an env or the expected spaces")
        spaces = (env.observation_space, env.action_space)
    if algorithm not in ALGORITHMS:
        raise AgentError(f"algorithm = {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    saved = saved_algorithm(data)
    if saved is not None and saved != algorithm:
        raise AgentError(
            f"{path}: a {saved} model, but the config says algorithm = {algorithm} (set "
            f"algorithm = {saved}, or run without --resume to start over)"
        )
    _check_saved_spaces(path, data, spaces)
    n_envs = env.num_envs if env is not None else 1
    custom = _replacements(data, spaces, n_envs, clip_range, algorithm)
    pickled = sorted(
        k
        for k, v in data.items()
        if isinstance(v, dict) and ":serialized:" in v and k not in custom
    )
    if pickled:
        raise UntrustedModelError(
            f"{path}: holds pickled entries this pipeline never writes ({', '.join(pickled)}); "
            "refusing to load it (loading would run code from the file)"
        )
    _check_tensor_entries(path, raw)
    try:
        with quiet_sb3_batch_warning():
            model = ALGORITHMS[algorithm].load(
                io.BytesIO(raw),
                env=env,
                device=device,
                custom_objects=custom,
                tensorboard_log=str(tensorboard_log) if tensorboard_log is not None else None,
            )
    except Exception as exc:  # any failure to rebuild the model: the file is not usable
        raise CorruptModelError(
            f"{path}: cannot load PPO model ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    return model


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (PyTorch's run over several lines), at most 200 chars."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


def _check_tensor_entries(path: Path, raw: bytes) -> None:
    """Every ``.pth`` entry of the zip (``policy.pth``, ``policy.optimizer.pth``,
    ``pytorch_variables.pth``) must load with ``torch.load(weights_only=True)``: plain tensors and
    containers. One that holds another pickled Python object is refused like a pickled ``data``
    entry, in one line (issue 22 item 11), never skipped as damage; PyTorch's several-line
    message does not reach the console."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        names = [n for n in archive.namelist() if n.endswith(".pth")]
        for name in names:
            try:
                torch.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
                what = f"the Python object {found.group(1)}" if found else "other Python objects"
                raise UntrustedModelError(
                    f"{path}: its {name} holds {what}, not only tensors; refusing to load it "
                    "(loading would run code from the file)"
                ) from None
            except Exception as exc:
                raise CorruptModelError(
                    f"{path}: damaged entry {name} ({type(exc).__name__}: {_first_line(exc)})"
                ) from None


@contextlib.contextmanager
def quiet_sb3_batch_warning() -> Iterator[None]:
    """SB3 ``warnings.warn``s about truncated minibatches; we log our own line with the numbers."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You have specified a mini-batch size")
        yield
