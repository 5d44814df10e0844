"""PPO construction, vectorised environments and the training callbacks (checkpoint, eval, stop).

What lives here and why:

* :func:`make_vec_env` builds ``n_envs`` copies of the trading env as a ``SubprocVecEnv``
  (``forkserver`` start method: safe after CUDA is initialised, unlike ``fork``) with one torch
  thread per worker and SIGINT ignored in the workers (a Ctrl-C in the terminal reaches the whole
  process group; only the parent should react, by checkpointing). If the workers cannot start it
  falls back to ``DummyVecEnv`` and logs why. The result is wrapped in ``VecMonitor`` so SB3 logs
  episode rewards and lengths.
* :func:`build_model` creates SB3's PPO (Schulman et al. 2017) with SEPARATE policy and value
  networks (``net_arch=dict(pi=..., vf=...)``) and every hyperparameter from
  :class:`pipeline.config.PPOConfig` (SB3 meanings: ``n_steps`` per environment).
* The callbacks act at ROLLOUT BOUNDARIES (``_on_rollout_start``), not at arbitrary steps: only
  there do the weights reflect exactly ``num_timesteps`` of experience (SB3 trains after each full
  rollout, and a stopped rollout is discarded). A checkpoint named ``checkpoint_{T}.zip`` therefore
  holds the weights after ``T`` timesteps, and resuming from it loses nothing. A checkpoint is
  written at the first boundary at or after each multiple of ``checkpoint_freq``; the same holds
  for evaluations and ``eval_freq``.
* :class:`StopRequest` + :func:`stop_signals` turn SIGINT / SIGTERM during ``learn()`` into a flag;
  :class:`StopOnRequestCallback` then ends ``learn()`` and remembers the last rollout boundary, so
  the caller can write the interrupt checkpoint (see ``train_ppo_agent.train_agent``).
* Saved models are trusted only as data (issue 8 item 7): :func:`save_model_atomic` records each
  checkpoint's SHA-256 in ``checksums.json`` beside it BEFORE renaming it into place, and
  :func:`load_model` never unpickles: SB3 stores some attributes as ``:serialized:`` cloudpickle
  blobs in the zip's ``data``; every one we know is replaced by an object built here
  (``custom_objects``), any other is refused, and the bytes hashed are the bytes loaded.
* :class:`CheckpointCallback` keeps only the newest ``keep`` checkpoints (issue 8 item 16).
* :class:`ProgressLogCallback` logs ``timesteps done/total, ETA`` every 30 s when there is no
  progress bar (issue 8 item 26).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import signal
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

from pipeline.artifacts import (
    PPO_BEST_META_NAME,
    PPO_BEST_MODEL_NAME,
    PPO_CHECKSUMS_NAME,
    ppo_checkpoint_file,
    ppo_checkpoint_timesteps,
)
from pipeline.common import (
    PipelineError,
    ProgressLog,
    atomic_path,
    atomic_write_json,
    sha256_file,
)
from pipeline.config_schema import PPOConfig
from pipeline.process import handle_signals
from ppo_approach.backtest import run_episode, sharpe_ratio
from ppo_approach.reward_functions import RewardConfig
from ppo_approach.trading_env import EnvConfig, EnvFactory, MarketData, TradingEnv

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 3
"""Default of ``keep_checkpoints`` in ppo_config.txt: checkpoints kept per run (issue 8 item 16;
the best model is kept besides). More than one, so ``--resume`` can fall back past a
damaged newest checkpoint (item 4)."""
PROGRESS_INTERVAL_S = 30.0
"""Without a progress bar, a line with timesteps done, total and ETA at least this often."""
EVAL_SEED_OFFSET = 10_000
"""Evaluation episode ``i`` resets with ``seed + EVAL_SEED_OFFSET + i``: every evaluation sees the
same validation windows, so successive scores differ only by the policy, not by the windows."""


class AgentError(PipelineError):
    """PPO setup failed (bad checkpoint, unusable device, ...); the message says what and where."""


class CorruptModelError(AgentError):
    """A model file that cannot be read (truncated, not a zip, not a PPO save): ``--resume`` skips
    it and falls back to an older checkpoint (issue 8 item 4)."""


class UntrustedModelError(AgentError):
    """A well-formed model file that is not the one this run wrote (SHA-256 differs from the
    recorded one, not recorded, or holds a pickled entry we do not replace): refused outright
    (issue 8 item 7)."""


# ---------------------------------------------------------------- checkpoint folders


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


def save_model_atomic(model: PPO, path: Path, record_checksum: bool = False) -> Path:
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


# ---------------------------------------------------------------- device and PPO settings


def batch_size_warnings(n_steps: int, n_envs: int, batch_size: int) -> list[str]:
    """Warnings about ``batch_size`` vs the rollout size ``n_steps * n_envs`` (SB3's check, and
    the case SB3 does not report: a minibatch larger than the whole rollout)."""
    buffer = n_steps * n_envs
    out = []
    if batch_size > buffer:
        out.append(
            f"ppo batch_size = {batch_size} is larger than the rollout n_steps * n_envs = "
            f"{n_steps} * {n_envs} = {buffer}; every update uses one minibatch of {buffer}"
        )
    elif buffer % batch_size:
        out.append(
            f"ppo batch_size = {batch_size} does not divide n_steps * n_envs = {n_steps} * "
            f"{n_envs} = {buffer}: after {buffer // batch_size} full minibatches each epoch ends "
            f"with a truncated one of {buffer % batch_size}"
        )
    return out


def ppo_kwargs(cfg: PPOConfig) -> dict[str, Any]:
    """Keyword arguments of ``PPO(...)`` from the config (policy networks separate)."""
    return {
        "n_steps": cfg.n_steps,
        "batch_size": cfg.batch_size,
        "n_epochs": cfg.n_epochs,
        "learning_rate": cfg.learning_rate,
        "gamma": cfg.gamma,
        "gae_lambda": cfg.gae_lambda,
        "clip_range": cfg.clip_range,
        "ent_coef": cfg.ent_coef,
        "vf_coef": cfg.vf_coef,
        "max_grad_norm": cfg.max_grad_norm,
        "seed": cfg.seed,
        "policy_kwargs": {"net_arch": {"pi": list(cfg.net_arch), "vf": list(cfg.net_arch)}},
    }


def build_model(
    cfg: PPOConfig,
    env: VecEnv,
    device: str,
    tensorboard_log: Path | None,
    verbose: int = 0,
) -> PPO:
    """A fresh ``PPO("MlpPolicy", env, ...)`` with the config's hyperparameters."""
    for msg in batch_size_warnings(cfg.n_steps, env.num_envs, cfg.batch_size):
        log.warning(msg)
    with _quiet_sb3_batch_warning():
        return PPO(
            "MlpPolicy",
            env,
            device=device,
            tensorboard_log=str(tensorboard_log) if tensorboard_log is not None else None,
            verbose=verbose,
            **ppo_kwargs(cfg),
        )


SpacePair = tuple[Any, Any]
"""``(observation_space, action_space)`` a loaded model must have."""


def _replacements(
    data: dict[str, Any], spaces: SpacePair, n_envs: int, clip_range: float
) -> dict[str, Any]:
    """Objects built here for every attribute SB3 (2.x) pickles into a PPO save's ``data``.

    None of them carries learned state: the weights and optimizer live in the ``.pth`` entries
    (read by SB3 with ``torch.load(weights_only=True)``). ``_last_obs`` / episode starts are reset
    by SB3 anyway when an env is attached; the schedules are rebuilt from the (plain JSON)
    ``learning_rate`` and the config's ``clip_range``; ``rollout_buffer_class = None`` lets PPO
    pick ``RolloutBuffer`` as it did when the model was created; the episode-statistics buffers
    start empty (they only feed the ``rollout/ep_*`` log lines).
    """
    window = data.get("_stats_window_size")
    maxlen = window if isinstance(window, int) and window > 0 else 100
    return {
        "policy_class": ActorCriticPolicy,
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
) -> PPO:
    """Load a saved PPO (checkpoint or final model) onto ``device``, attached to ``env``, without
    ever unpickling (issue 8 item 7).

    The file is read once; with ``expected_sha256`` those bytes must hash to it. Every
    ``:serialized:`` (cloudpickle) entry of the zip's ``data`` is replaced by an object built here
    (:func:`_replacements`, passed to SB3 as ``custom_objects``, so SB3 never decodes it); a
    pickled entry we do not know is refused. ``spaces`` (default: the env's) are the observation
    and action spaces the model must have; ``clip_range`` is the config's.

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
    _check_saved_spaces(path, data, spaces)
    custom = _replacements(data, spaces, env.num_envs if env is not None else 1, clip_range)
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
    try:
        with _quiet_sb3_batch_warning():
            model = PPO.load(
                io.BytesIO(raw),
                env=env,
                device=device,
                custom_objects=custom,
                tensorboard_log=str(tensorboard_log) if tensorboard_log is not None else None,
            )
    except Exception as exc:  # any failure to rebuild the model: the file is not usable
        raise CorruptModelError(
            f"{path}: cannot load PPO model ({type(exc).__name__}: {exc})"
        ) from None
    return model


@contextlib.contextmanager
def _quiet_sb3_batch_warning() -> Iterator[None]:
    """SB3 ``warnings.warn``s about truncated minibatches; we log our own line with the numbers."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You have specified a mini-batch size")
        yield


# ---------------------------------------------------------------- vectorised environments


class WorkerEnvFn:
    """Picklable thunk run INSIDE a worker: one torch thread, SIGINT ignored, then build the env.

    One thread per worker because n workers x all cores of threads oversubscribe the CPU (the env
    itself uses none, but SB3 imports torch in the worker). SIGINT is ignored because Ctrl-C goes
    to the whole process group: the parent handles it (checkpoint, then closes the workers).
    """

    def __init__(self, inner: Any, in_subprocess: bool) -> None:
        self.inner = inner
        self.in_subprocess = in_subprocess

    def __call__(self) -> TradingEnv:
        """Set up the worker process and return the env."""
        if self.in_subprocess:
            torch.set_num_threads(1)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return self.inner()


def _start_method() -> str:
    import multiprocessing as mp

    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def make_vec_env(
    data: MarketData,
    env_config: EnvConfig,
    reward_config: RewardConfig,
    n_envs: int,
    seed: int,
    kind: str = "subproc",
) -> tuple[VecEnv, str]:
    """``n_envs`` seeded training envs over ``data``, wrapped in ``VecMonitor``.

    Returns ``(vec_env, kind_used)``; ``kind_used`` is ``"dummy"`` when ``kind = "subproc"`` could
    not start its workers (the reason is logged as a warning).
    """
    if kind not in ("subproc", "dummy"):
        raise AgentError(f"vec_env = {kind!r}; expected subproc or dummy")
    sub = kind == "subproc"
    fns = [
        WorkerEnvFn(EnvFactory(data, env_config, seed, rank, True, reward_config), sub)
        for rank in range(n_envs)
    ]
    venv: VecEnv
    if sub:
        try:
            venv = SubprocVecEnv(fns, start_method=_start_method())
        except Exception as exc:  # any failure to spawn/pickle: train anyway, say why
            log.warning(
                "SubprocVecEnv failed (%s: %s); falling back to DummyVecEnv (one process)",
                type(exc).__name__,
                exc,
            )
            fns = [WorkerEnvFn(f.inner, False) for f in fns]
            venv, kind = DummyVecEnv(fns), "dummy"
    else:
        venv = DummyVecEnv(fns)
    return VecMonitor(venv), kind


@contextlib.contextmanager
def parent_threads(kind: str, n_envs: int) -> Iterator[int]:
    """Limit the training process's torch threads while SubprocVecEnv workers run.

    The workers need the cores during rollouts; OpenMP threads of the parent spin-wait between
    parallel regions and steal those cores (measured in bench/results/ppo.md: 2 parent threads
    + 2 workers on 2 cores made learn() about 10x slower). The parent keeps ``cores - n_envs``
    threads, at least 1; with DummyVecEnv nothing changes. Restored on exit.
    """
    before = torch.get_num_threads()
    if kind != "subproc":
        yield before
        return
    n = max(1, min(before, (os.cpu_count() or 1) - n_envs))
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- evaluation


def evaluate_on_block(
    model: PPO,
    env: TradingEnv,
    episodes: int,
    seed: int,
    ppy: float,
) -> dict[str, float]:
    """Deterministic policy over ``episodes`` seeded episodes of ``env`` (validation block).

    Returns means over episodes of: ``mean_reward`` (summed env reward), ``mean_length`` (steps),
    ``mean_return`` (final equity / initial - 1) and ``mean_sharpe`` (annualised with ``ppy``).
    """

    def policy(obs: np.ndarray, info: dict[str, Any]) -> int:
        action, _ = model.predict(obs, deterministic=True)
        return int(action)

    rewards, lengths, returns, sharpes = [], [], [], []
    for i in range(episodes):
        rec = run_episode(env, policy, seed=seed + EVAL_SEED_OFFSET + i)
        rewards.append(float(rec.rewards.sum()))
        lengths.append(rec.n_steps)
        returns.append(float(rec.equity[-1] / rec.equity[0] - 1.0))
        sharpes.append(sharpe_ratio(rec.equity[1:] / rec.equity[:-1] - 1.0, ppy))
    return {
        "mean_reward": float(np.mean(rewards)),
        "mean_length": float(np.mean(lengths)),
        "mean_return": float(np.mean(returns)),
        "mean_sharpe": float(np.mean(sharpes)),
    }


# ---------------------------------------------------------------- stop requests


class StopRequest:
    """A flag set by a signal handler (or a test) and read by :class:`StopOnRequestCallback`."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    def set(self, signal_name: str = "request") -> None:
        """Ask training to stop at the next step."""
        self.signal_name = signal_name
        self._event.set()

    def is_set(self) -> bool:
        """Whether a stop was requested."""
        return self._event.is_set()


def stop_signals(
    request: StopRequest, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
) -> Any:
    """While inside, SIGINT / SIGTERM / SIGHUP set ``request`` instead of killing the process, so
    ``learn()`` ends at a step boundary and a checkpoint is written (through the pipeline's one
    signal mechanism, :func:`pipeline.process.handle_signals`)."""

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if not request.is_set():
            log.warning("%s received: stopping after this step and writing a checkpoint", name)
        request.set(name)

    return handle_signals(on_signal, signals)


# ---------------------------------------------------------------- callbacks


class StopOnRequestCallback(BaseCallback):
    """Ends ``learn()`` when the :class:`StopRequest` is set; records the last rollout boundary.

    ``trained_timesteps`` is ``num_timesteps`` at the start of the current rollout, i.e. the
    timesteps the weights have actually been trained on (a stopped rollout is thrown away).
    """

    def __init__(self, request: StopRequest) -> None:
        super().__init__()
        self.request = request
        self.trained_timesteps = 0
        self.stopped = False

    def _on_training_start(self) -> None:
        self.trained_timesteps = int(self.model.num_timesteps)

    def _on_rollout_start(self) -> None:
        self.trained_timesteps = int(self.model.num_timesteps)

    def _on_step(self) -> bool:
        if self.request.is_set():
            self.stopped = True
            return False
        return True


class CheckpointCallback(BaseCallback):
    """Saves ``checkpoint_{T}.zip`` at the first rollout boundary after each ``freq`` timesteps.

    Counted in timesteps (``num_timesteps`` crossing multiples of ``freq``), not in callback calls;
    written atomically with its SHA-256 recorded in ``checksums.json``; afterwards only the newest
    ``keep`` checkpoints are kept (issue 8 item 16). ``after_save(path)`` runs after each save
    (the trainer drops the set-aside files of the previous run after the first one, item 3).
    """

    def __init__(
        self,
        directory: Path,
        freq: int,
        keep: int = KEEP_CHECKPOINTS,
        after_save: Callable[[Path], None] | None = None,
    ) -> None:
        super().__init__()
        self.directory = directory
        self.freq = int(freq)
        self.keep = int(keep)
        self.after_save = after_save
        self.last_saved = 0
        self.saved: list[Path] = []

    def _on_training_start(self) -> None:
        self.last_saved = int(self.model.num_timesteps)

    def _on_rollout_start(self) -> None:
        t = int(self.model.num_timesteps)
        if t // self.freq > self.last_saved // self.freq:
            path = save_checkpoint(self.model, self.directory, t, self.keep)
            self.saved.append(path)
            self.last_saved = t
            log.info("checkpoint %s (%d timesteps)", path, t)
            if self.after_save is not None:
                self.after_save(path)

    def _on_step(self) -> bool:
        return True


def save_checkpoint(model: PPO, directory: Path, timesteps: int, keep: int) -> Path:
    """Write ``checkpoint_{timesteps}.zip`` (checksum recorded); prune to the newest ``keep``."""
    path = save_model_atomic(model, ppo_checkpoint_file(directory, timesteps), record_checksum=True)
    pruned = prune_checkpoints(directory, keep)
    if pruned:
        log.debug("pruned %s (keeping the newest %d)", ", ".join(p.name for p in pruned), keep)
    return path


class ProgressLogCallback(BaseCallback):
    """Logs ``PPO training: done/total timesteps (pct), elapsed, ETA`` at least every
    ``interval_s`` seconds and at the end: for pod logs and pipes, where SB3's progress bar is
    invisible (issue 8 item 26). ``total`` is the run's ``total_timesteps``."""

    def __init__(
        self,
        total: int,
        interval_s: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.progress = ProgressLog("PPO training", total, "timesteps", interval_s, log, clock)

    def _on_training_start(self) -> None:
        self.progress.update(int(self.model.num_timesteps))

    def _on_step(self) -> bool:
        self.progress.update(int(self.model.num_timesteps))
        return True


class ValidationEvalCallback(BaseCallback):
    """Evaluates on the VALIDATION block every ``freq`` timesteps and keeps the best model.

    Logs ``eval/mean_reward``, ``eval/mean_ep_length``, ``eval/mean_return`` and
    ``eval/mean_sharpe`` to TensorBoard and the log. The best score (mean reward) and its timesteps
    are saved in ``best_model.json`` beside ``best_model.zip`` so a resumed run keeps comparing
    against it.
    """

    def __init__(
        self,
        env: TradingEnv,
        directory: Path,
        freq: int,
        episodes: int,
        seed: int,
        ppy: float,
        stopper: StopOnRequestCallback | None = None,
    ) -> None:
        super().__init__()
        self.eval_env = env
        self.stopper = stopper
        self.directory = directory
        self.freq = int(freq)
        self.episodes = int(episodes)
        self.seed = int(seed)
        self.ppy = float(ppy)
        self.last_eval = 0
        self.best_reward = -float("inf")
        self.best_timesteps: int | None = None
        self.history: list[dict[str, float]] = []

    @property
    def best_path(self) -> Path:
        """``best_model.zip`` in the checkpoint folder."""
        return self.directory / PPO_BEST_MODEL_NAME

    def load_best_meta(self) -> None:
        """Continue from an earlier best (resume); silently nothing when there is none."""
        meta = self.directory / PPO_BEST_META_NAME
        if meta.is_file() and self.best_path.is_file():
            data = json.loads(meta.read_text(encoding="utf-8"))
            self.best_reward = float(data["mean_reward"])
            self.best_timesteps = int(data["timesteps"])

    def _on_training_start(self) -> None:
        self.last_eval = int(self.model.num_timesteps)

    def _on_rollout_start(self) -> None:
        self._maybe_evaluate()

    def _on_training_end(self) -> None:
        # The last rollout's weights reach a boundary only here; skip it after a stop request
        # (the stopped rollout was discarded and the weights are the ones already evaluated).
        if self.stopper is None or not self.stopper.stopped:
            self._maybe_evaluate()

    def _on_step(self) -> bool:
        return True

    def _maybe_evaluate(self) -> None:
        t = int(self.model.num_timesteps)
        if t // self.freq <= self.last_eval // self.freq:
            return
        self.last_eval = t
        res = evaluate_on_block(self.model, self.eval_env, self.episodes, self.seed, self.ppy)
        res["timesteps"] = t
        self.history.append(res)
        self.logger.record("eval/mean_reward", res["mean_reward"])
        self.logger.record("eval/mean_ep_length", res["mean_length"])
        self.logger.record("eval/mean_return", res["mean_return"])
        self.logger.record("eval/mean_sharpe", res["mean_sharpe"])
        self.logger.dump(t)
        better = res["mean_reward"] > self.best_reward
        log.info(
            "eval @%d on validation: reward %.3f, length %.0f, return %+.2f%%, Sharpe %.2f%s",
            t,
            res["mean_reward"],
            res["mean_length"],
            100 * res["mean_return"],
            res["mean_sharpe"],
            " (new best)" if better else "",
        )
        if better:
            self.best_reward = res["mean_reward"]
            self.best_timesteps = t
            save_model_atomic(self.model, self.best_path, record_checksum=True)
            atomic_write_json(
                self.directory / PPO_BEST_META_NAME, {"mean_reward": res["mean_reward"], **res}
            )


@dataclass
class LearnResult:
    """How ``learn()`` ended."""

    interrupted: bool
    timesteps: int
    """Timesteps the weights were trained on (on interrupt: the last rollout boundary)."""
    signal_name: str | None = None


def learn(
    model: PPO,
    total_timesteps: int,
    callbacks: list[BaseCallback],
    stopper: StopOnRequestCallback,
    tb_name: str,
    progress_bar: bool,
    new_run: bool | None = None,
) -> LearnResult:
    """Train until ``model.num_timesteps`` reaches ``total_timesteps`` or a stop is requested.

    Continues counting from ``model.num_timesteps`` (``reset_num_timesteps=False``: a resumed run
    logs into the same TensorBoard run). ``new_run`` (default: ``num_timesteps == 0``) starts a new
    TensorBoard run instead. SIGINT / SIGTERM are caught only while ``learn()`` runs.
    """
    remaining = int(total_timesteps) - int(model.num_timesteps)
    if remaining <= 0:
        return LearnResult(False, int(model.num_timesteps))
    fresh = model.num_timesteps == 0 if new_run is None else new_run
    with stop_signals(stopper.request):
        model.learn(
            total_timesteps=remaining,
            callback=[stopper, *callbacks],
            tb_log_name=tb_name,
            reset_num_timesteps=fresh,
            progress_bar=progress_bar,
        )
    if stopper.stopped:
        return LearnResult(True, stopper.trained_timesteps, stopper.request.signal_name)
    return LearnResult(False, int(model.num_timesteps))
