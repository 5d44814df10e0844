"""PPO construction, the vectorised environments and ``learn()`` with stop signals.

What lives here and why:

* :func:`ppo_kwargs` / :func:`build_model` create SB3's PPO (Schulman et al. 2017), or
  sb3-contrib's MaskablePPO with ``algorithm = maskable_ppo`` (invalid actions masked out of the
  policy through the env's ``action_masks()``, which the vec envs forward), with SEPARATE policy
  and value networks (``net_arch=dict(pi=..., vf=...)``) and every hyperparameter from
  :class:`pipeline.config.schema.PPOConfig` (SB3 meanings: ``n_steps`` per environment);
  :func:`batch_size_warnings` says, with the numbers, when a minibatch does not divide a rollout.
* :func:`make_vec_env` builds ``n_envs`` copies of the trading env as a ``SubprocVecEnv``
  (``forkserver`` start method: safe after CUDA is initialised, unlike ``fork``) with one torch
  thread per worker and SIGINT ignored in the workers (a Ctrl-C in the terminal reaches the whole
  process group; only the parent should react, by checkpointing), or a ``DummyVecEnv``; if the
  workers cannot start it falls back to ``DummyVecEnv`` and logs why. The result is wrapped in
  ``VecMonitor`` so SB3 logs episode rewards and lengths. :func:`parent_threads` keeps the
  training process's torch threads off the workers' cores.
* :func:`learn` trains until the target timesteps or a SIGINT / SIGTERM, which the stop callback
  turns into an end at the last rollout boundary (:mod:`ppo_approach.callbacks`).

Elsewhere: the callbacks (checkpoints at rollout boundaries, evaluation, progress, stop) are in
:mod:`ppo_approach.callbacks`; saving and loading models as data (atomic, checksummed, never
unpickled) in :mod:`ppo_approach.model_files`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import PPO  # noqa: F401  (tests/test_ppo_checkpoints.py: agent.PPO.load)
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

from pipeline.config.schema import PPOConfig
from ppo_approach.callbacks import StopOnRequestCallback, stop_signals
from ppo_approach.model_files import AgentError, AgentModel, new_model
from ppo_approach.reward_functions import RewardConfig
from ppo_approach.trading_env import EnvConfig, EnvFactory, MarketData, TradingEnv

log = logging.getLogger(__name__)


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
    """Keyword arguments of ``PPO(...)`` / ``MaskablePPO(...)`` from the config (policy networks
    separate)."""
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
) -> AgentModel:
    """A fresh ``PPO("MlpPolicy", env, ...)`` with the config's hyperparameters, or the same
    ``MaskablePPO`` with ``algorithm = maskable_ppo`` (its ``MlpPolicy`` is
    ``MaskableActorCriticPolicy``; it reads each env's ``action_masks()`` through
    ``env_method``, which VecMonitor, DummyVecEnv and SubprocVecEnv forward). A saved
    agent is rebuilt the same way (:func:`ppo_approach.model_files.load_model`)."""
    for msg in batch_size_warnings(cfg.n_steps, env.num_envs, cfg.batch_size):
        log.warning(msg)
    return new_model(cfg.algorithm, ppo_kwargs(cfg), env, device, tensorboard_log, verbose)


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


VEC_ENVS = ("batched", "dummy", "subproc")
"""The ``vec_env`` choices (:func:`make_vec_env`)."""


def make_vec_env(
    data: MarketData,
    env_config: EnvConfig,
    reward_config: RewardConfig,
    n_envs: int,
    seed: int,
    kind: str = "subproc",
) -> tuple[VecEnv, str]:
    """``n_envs`` seeded training envs over ``data``, wrapped in ``VecMonitor``.

    ``batched`` holds every copy as arrays in one :class:`ppo_approach.batched_env.
    BatchedTradingEnv` (the same observations, rewards and infos as ``dummy``, stepped with numpy);
    ``dummy`` steps ``n_envs`` TradingEnvs in a loop; ``subproc`` runs them in worker processes.
    Returns ``(vec_env, kind_used)``; ``kind_used`` is ``"dummy"`` when ``kind = "subproc"`` could
    not start its workers (the reason is logged as a warning).
    """
    if kind not in VEC_ENVS:
        raise AgentError(f"vec_env = {kind!r}; expected one of {', '.join(VEC_ENVS)}")
    if kind == "batched":
        from ppo_approach.batched_env import BatchedTradingEnv

        # no VecMonitor: the batched env adds the same "episode" entries itself
        return BatchedTradingEnv(data, env_config, n_envs, seed, reward_config), kind
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


@dataclass
class LearnResult:
    """How ``learn()`` ended."""

    interrupted: bool
    timesteps: int
    """Timesteps the weights were trained on (on interrupt: the last rollout boundary)."""
    signal_name: str | None = None


def learn(
    model: AgentModel,
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
