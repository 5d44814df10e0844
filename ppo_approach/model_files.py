"""Saving and loading SB3 PPO / sb3-contrib MaskablePPO agents as data, through SB3's public
API (``get_parameters`` / ``set_parameters``).

An agent file (``checkpoint_{T}.zip``, ``best_model.zip``, ``ppo_*.zip``) is a zip of two
entries: ``agent.json`` (the format, the algorithm, the keyword arguments the model was built
with, its observation and action spaces, the timesteps it was trained on, library versions) and
``parameters.pth`` (``torch.save`` of ``get_parameters()``: the policy's and the optimizer's state
dicts). :func:`load_model` builds the model as a fresh one is built (:func:`new_model`) and puts
the weights back with ``set_parameters``; the weights load with ``torch.load(weights_only=True)``.
Nothing is unpickled and nothing reads SB3's private save layout, so an SB3 upgrade cannot break
loading. SB3's own zip (what earlier versions wrote, with pickled ``:serialized:`` attributes) is
refused in one line (:class:`OldModelFormatError`).

:func:`save_model_atomic` writes a file through an atomic, fsynced temp file and records its
SHA-256 in ``checksums.json`` beside it BEFORE renaming it into place; the bytes hashed are the
bytes loaded. A damaged file is a :class:`CorruptModelError` (``--resume`` skips it), a replaced
one an :class:`UntrustedModelError` (refused). Only the newest ``keep_checkpoints`` checkpoints
are kept. The config's ``algorithm`` says which class a file must be (``ppo`` or
``maskable_ppo``); a file of the other one is refused in one line.
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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from sb3_contrib import __version__ as sb3_contrib_version
from stable_baselines3 import PPO
from stable_baselines3 import __version__ as sb3_version
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from pipeline.common import PipelineError, atomic_path, atomic_write_json, sha256_file
from pipeline.store.artifacts import PPO_CHECKSUMS_NAME, ppo_checkpoint_timesteps

log = logging.getLogger(__name__)

SpacePair = tuple[Any, Any]
"""(observation space, action space) a saved model must match."""

AgentModel: TypeAlias = PPO | MaskablePPO
"""A trading agent: SB3 PPO or sb3-contrib MaskablePPO (``algorithm`` in ppo_config.txt)."""

ALGORITHMS: dict[str, type[PPO] | type[MaskablePPO]] = {"ppo": PPO, "maskable_ppo": MaskablePPO}
"""``algorithm`` value -> model class."""

AGENT_FORMAT = "ppo-agent/1"
"""``format`` in ``agent.json``: changes when the file's layout does."""
META_ENTRY = "agent.json"
PARAMS_ENTRY = "parameters.pth"

KEEP_CHECKPOINTS = 3
"""Default of ``keep_checkpoints`` in ppo_config.txt: checkpoints kept per run (the best model is
kept besides). More than one, so ``--resume`` can fall back past a damaged newest checkpoint."""


class AgentError(PipelineError):
    """PPO setup failed (bad checkpoint, unusable device, ...); the message says what and where."""


class CorruptModelError(AgentError):
    """A model file that cannot be read (truncated, not a zip, not a PPO save): ``--resume`` skips
    it and falls back to an older checkpoint."""


class OldModelFormatError(AgentError):
    """SB3's own zip, written by an older version: it holds pickled attributes and is no longer
    loaded (one clear line; not skipped on resume, so the user learns why)."""


class UntrustedModelError(AgentError):
    """A well-formed model file that is not the one this run wrote (SHA-256 differs from the
    recorded one, not recorded, or holds a pickled entry we do not replace): refused outright
    (loading it could run code)."""


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
    """The agent file (:func:`agent_file_bytes`) to a temp name in the same folder, then fsync +
    ``os.replace`` onto ``path`` (:func:`pipeline.common.atomic_path` fsyncs the file before the
    rename and the folder after, so a crash leaves the old file or the new one). With
    ``record_checksum`` the file's SHA-256 goes into ``checksums.json`` in the same folder BEFORE
    the rename: a crash in between leaves a recorded name without a file (harmless), never a file
    the manifest does not vouch for.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(agent_file_bytes(model))
        if record_checksum:
            _update_checksums(path.parent, {path.name: sha256_file(tmp)})
    return path


def prune_checkpoints(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (and their checksums); returns the deleted.

    The best model has another name and is never pruned.
    """
    old = [p for _, p in list_checkpoints(directory)][: -max(int(keep), 1)]
    for p in old:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    if old and (directory / PPO_CHECKSUMS_NAME).is_file():
        _update_checksums(directory, {}, [p.name for p in old])
    return old


# ---------------------------------------------------------------- the agent file (SB3's public API)


def algorithm_of(model: AgentModel) -> str:
    """``ppo`` or ``maskable_ppo``: the ``algorithm`` value of ``model``'s class."""
    for name, cls in ALGORITHMS.items():
        if type(model) is cls:
            return name
    raise AgentError(f"not a PPO or MaskablePPO model: {type(model).__name__}")


def agent_settings(model: AgentModel) -> dict[str, Any]:
    """The keyword arguments ``model`` was built with, read from SB3's public attributes: the
    same keys and values as :func:`ppo_approach.ppo_trading_agent.ppo_kwargs` of its config.

    ``clip_range`` is a schedule once the model is set up; ours is constant, so its value at
    progress 1.0 is the number that was given."""
    clip = model.clip_range
    return {
        "n_steps": int(model.n_steps),
        "batch_size": int(model.batch_size or 0),
        "n_epochs": int(model.n_epochs),
        "learning_rate": float(model.learning_rate),  # type: ignore[arg-type]
        "gamma": float(model.gamma),
        "gae_lambda": float(model.gae_lambda),
        "clip_range": float(clip(1.0) if callable(clip) else clip),
        "ent_coef": float(model.ent_coef),
        "vf_coef": float(model.vf_coef),
        "max_grad_norm": float(model.max_grad_norm),
        "seed": model.seed,
        "policy_kwargs": json.loads(json.dumps(model.policy_kwargs)),
    }


def _number(x: float) -> float | str:
    """A float for JSON: infinities as the strings ``inf`` / ``-inf`` (strict JSON has none)."""
    return float(x) if np.isfinite(x) else ("inf" if x > 0 else "-inf")


def space_to_json(space: Any) -> dict[str, Any]:
    """A ``Box`` or ``Discrete`` space as plain JSON (the only kinds the trading env has)."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": [_number(x) for x in np.asarray(space.low, dtype=float).ravel()],
            "high": [_number(x) for x in np.asarray(space.high, dtype=float).ravel()],
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    raise AgentError(f"cannot save a {type(space).__name__} space; expected Box or Discrete")


def space_from_json(data: Any) -> Any:
    """The space :func:`space_to_json` wrote; ``ValueError`` for anything else."""
    if not isinstance(data, dict):
        raise ValueError("a space must be a JSON object")
    if data.get("type") == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    if data.get("type") == "Box":
        shape = tuple(int(n) for n in data["shape"])
        dtype = np.dtype(str(data["dtype"]))
        low = np.asarray([float(x) for x in data["low"]], dtype=dtype).reshape(shape)
        high = np.asarray([float(x) for x in data["high"]], dtype=dtype).reshape(shape)
        return spaces.Box(low=low, high=high, dtype=dtype)
    raise ValueError(f"unknown space type {data.get('type')!r}")


class _SpacesOnly(gym.Env[np.ndarray, Any]):
    """An environment that only has spaces: lets SB3 build a model to predict with, where no
    market data is at hand (the backtest's best model, an export). Never stepped."""

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Discrete) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self._zeros = np.zeros(observation_space.shape, dtype=observation_space.dtype)
        self._all_valid = np.ones(int(action_space.n), dtype=bool)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return self._zeros.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        raise AgentError("a model loaded without an environment cannot train")

    def action_masks(self) -> np.ndarray:
        return self._all_valid.copy()


def new_model(
    algorithm: str,
    settings: dict[str, Any],
    env: VecEnv | None,
    device: str,
    tensorboard_log: Path | None = None,
    verbose: int = 0,
    spaces_: SpacePair | None = None,
) -> AgentModel:
    """``PPO("MlpPolicy", env, **settings)`` (or ``MaskablePPO``): how every agent is built, fresh
    or from a file. Without ``env`` it is built on an env that only has ``spaces_`` and then
    detached (it can predict, not train)."""
    if algorithm not in ALGORITHMS:
        raise AgentError(f"algorithm = {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    build_env = env
    if build_env is None:
        if spaces_ is None:
            raise AgentError("new_model needs an env or the observation and action spaces")
        build_env = DummyVecEnv([lambda: _SpacesOnly(*spaces_)])
    with quiet_sb3_batch_warning():
        model = ALGORITHMS[algorithm](
            "MlpPolicy",
            build_env,
            device=device,
            tensorboard_log=str(tensorboard_log) if tensorboard_log is not None else None,
            verbose=verbose,
            **settings,
        )
    if env is None:
        model.env = None
    return model


def agent_file_bytes(model: AgentModel) -> bytes:
    """The agent file (a zip): ``agent.json`` (format, algorithm, settings, spaces, counters,
    versions) and ``parameters.pth`` (``torch.save`` of SB3's public ``get_parameters()``: the
    policy's and the optimizer's state dicts, tensors and plain values only)."""
    meta = {
        "format": AGENT_FORMAT,
        "algorithm": algorithm_of(model),
        "settings": agent_settings(model),
        "observation_space": space_to_json(model.observation_space),
        "action_space": space_to_json(model.action_space),
        "num_timesteps": int(model.num_timesteps),
        # SB3's update counter (logged as train/n_updates): a resumed run continues it.
        "n_updates": int(getattr(model, "_n_updates", 0)),
        "versions": {
            "stable_baselines3": sb3_version,
            "sb3_contrib": sb3_contrib_version,
            "torch": torch.__version__,
        },
    }
    params = io.BytesIO()
    torch.save(model.get_parameters(), params)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(META_ENTRY, json.dumps(meta, indent=1, sort_keys=True, allow_nan=False))
        archive.writestr(PARAMS_ENTRY, params.getvalue())
    return out.getvalue()


def _read_agent_file(path: Path, raw: bytes) -> tuple[dict[str, Any], bytes] | None:
    """``(agent.json, parameters.pth bytes)``, or ``None`` for SB3's own zip (an older save).
    :class:`CorruptModelError` when it is not a readable zip or misses an entry."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise CorruptModelError(f"{path}: damaged (CRC error in its entry {bad})")
            names = set(archive.namelist())
            if META_ENTRY not in names and "data" in names:
                return None
            meta = json.loads(archive.read(META_ENTRY).decode("utf-8"))
            params = archive.read(PARAMS_ENTRY)
    except CorruptModelError:
        raise
    except (zipfile.BadZipFile, KeyError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise CorruptModelError(
            f"{path}: damaged or not a PPO model file ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(meta, dict):
        raise CorruptModelError(f"{path}: damaged or not a PPO model file ({META_ENTRY})")
    return meta, params


def _check_spaces(path: Path, saved: SpacePair, want: SpacePair) -> None:
    """The file's observation / action spaces must be the environment's."""
    if tuple(saved[0].shape) != tuple(want[0].shape):
        raise AgentError(
            f"{path}: observations of shape {list(saved[0].shape)}, but the environment has "
            f"{list(want[0].shape)} (saved with other prediction features?)"
        )
    want_n, got_n = getattr(want[1], "n", None), getattr(saved[1], "n", None)
    if want_n is not None and got_n is not None and int(got_n) != int(want_n):
        raise AgentError(f"{path}: {int(got_n)} actions, but the environment has {int(want_n)}")


def _load_parameters(path: Path, raw: bytes, device: str) -> dict[str, Any]:
    """``parameters.pth`` with ``torch.load(weights_only=True)``: tensors and plain values only.
    One that holds another pickled Python object is refused in one line (never skipped as
    damage); PyTorch's several-line message does not reach the console."""
    try:
        params = torch.load(io.BytesIO(raw), map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f"the Python object {found.group(1)}" if found else "other Python objects"
        raise UntrustedModelError(
            f"{path}: its {PARAMS_ENTRY} holds {what}, not only tensors; refusing to load it "
            "(loading would run code from the file)"
        ) from None
    except Exception as exc:
        raise CorruptModelError(
            f"{path}: damaged entry {PARAMS_ENTRY} ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    if not isinstance(params, dict) or "policy" not in params:
        raise CorruptModelError(f"{path}: {PARAMS_ENTRY} holds no policy state dict")
    return params


def load_model(
    path: Path,
    env: VecEnv | None,
    device: str,
    tensorboard_log: Path | None = None,
    *,
    spaces: SpacePair | None = None,
    expected_sha256: str | None = None,
    algorithm: str | None = None,
) -> AgentModel:
    """Load an agent file (checkpoint, best or final model) onto ``device``, attached to ``env``.

    SB3's public API only: :func:`new_model` with the file's settings and spaces, then
    ``set_parameters`` with the weights (``torch.load(weights_only=True)``); the timestep counter
    comes from ``agent.json``. Nothing is unpickled, and nothing depends on how SB3 lays out its
    own zips. The file is read once; with ``expected_sha256`` those bytes must hash to it.
    ``spaces`` (default: the env's, else the file's) are the spaces the model must have;
    ``algorithm`` (``ppo`` | ``maskable_ppo``; ``None``: the file's) is the config's, and a file
    of the other algorithm is an :class:`AgentError` (not skipped on resume).

    Raises :class:`CorruptModelError` for a file that cannot be read, :class:`UntrustedModelError`
    for a well-formed file that is not the recorded one or holds pickled objects, and
    :class:`OldModelFormatError` for SB3's own zip written by an older version.
    """
    meta, params_raw = _read_checked(path, expected_sha256)
    saved = _check_algorithm(path, meta, algorithm)
    try:
        saved_spaces = (
            space_from_json(meta["observation_space"]),
            space_from_json(meta["action_space"]),
        )
        settings = dict(meta["settings"])
        timesteps, n_updates = int(meta["num_timesteps"]), int(meta.get("n_updates", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptModelError(
            f"{path}: damaged {META_ENTRY} ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    if spaces is None and env is not None:
        spaces = (env.observation_space, env.action_space)
    _check_spaces(path, saved_spaces, spaces or saved_spaces)
    params = _load_parameters(path, params_raw, device)
    try:
        model = new_model(
            saved, settings, env, device, tensorboard_log, spaces_=spaces or saved_spaces
        )
        model.set_parameters(params, exact_match=True, device=device)
    except AgentError:
        raise
    except Exception as exc:  # settings or weights that do not fit: the file is not usable
        raise CorruptModelError(
            f"{path}: cannot load PPO model ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    model.num_timesteps = timesteps
    model._n_updates = n_updates
    return model


def _read_checked(path: Path, expected_sha256: str | None) -> tuple[dict[str, Any], bytes]:
    """The file's ``agent.json`` and its parameter bytes: the structure read, the recorded
    SHA-256 matched, and not SB3's old zip."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AgentError(f"{path}: PPO model file not found") from None
    # Structure first (reads no pickle): a truncated or bit-flipped file is damage, skippable.
    read = _read_agent_file(path, raw)
    # A well-formed file with other bytes than recorded was replaced: refuse, never skip.
    if expected_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected_sha256:
            raise UntrustedModelError(
                f"{path}: sha256 {actual[:16]}... differs from {expected_sha256[:16]}... recorded "
                "when this run wrote it; refusing to load a model file that was changed since "
                "(delete it, or run without --resume to start over)"
            )
    if read is None:
        raise OldModelFormatError(
            f"{path}: a stable-baselines3 zip saved by an older version of this pipeline, which "
            "is no longer loaded (it stores pickled Python objects); train the agent again, or "
            "run without --resume to start over"
        )
    return read


def _check_algorithm(path: Path, meta: dict[str, Any], algorithm: str | None) -> str:
    """The file's format is this pipeline's and its algorithm the config's: that algorithm."""
    if meta.get("format") != AGENT_FORMAT:
        raise AgentError(f"{path}: format {meta.get('format')!r}; expected {AGENT_FORMAT!r}")
    saved = meta.get("algorithm")
    if saved not in ALGORITHMS:
        raise CorruptModelError(f"{path}: algorithm {saved!r}; expected {', '.join(ALGORITHMS)}")
    if algorithm is not None and saved != algorithm:
        raise AgentError(
            f"{path}: a {saved} model, but the config says algorithm = {algorithm} (set "
            f"algorithm = {saved}, or run without --resume to start over)"
        )
    return str(saved)


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (PyTorch's run over several lines), at most 200 chars."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


@contextlib.contextmanager
def quiet_sb3_batch_warning() -> Iterator[None]:
    """SB3 ``warnings.warn``s about truncated minibatches; we log our own line with the numbers."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You have specified a mini-batch size")
        yield
