"""PPO training cost: the environment's share, SubprocVecEnv vs DummyVecEnv, 150k-step wall time.

Parts (``--parts``, default all three):

* ``ratio``: ``PPO.learn()`` on the trading env vs on a trivial env with the SAME observation and
  action spaces (constant observation, zero reward, 1000-step episodes), same network, rollout
  and update settings, both in ``DummyVecEnv`` + ``VecMonitor``. ``ratio = t(trading) /
  t(trivial)``; the target is <= 1.10 (the env costs under 10 % of training time). Measured with
  the demo preset's PPO settings (net 128x128, 4 envs x 512 steps, 5 epochs; median of
  ``--runs``) and with the default settings (net 1280x640, 16 envs x 1024 steps, 20 epochs; one
  rollout + update, ``--default-runs`` each: it takes minutes on a CPU). A second, load-robust
  estimate times raw vector steps of both envs (no policy) and divides the difference by the
  trading learn() time.
* ``vec``: raw ``VecEnv.step`` throughput (random actions, no policy) and ``learn()`` time of the
  demo settings, for ``DummyVecEnv`` and ``SubprocVecEnv`` (forkserver, one torch thread per
  worker, parent threads limited by ``ppo_trading_agent.parent_threads``).
* ``wall``: wall time of ``total_timesteps = 150,000`` with the DEFAULT config (16 envs with the
  configured ``vec_env``, net 1280x640, evaluation and checkpoint callbacks as in training).

The block is a seeded 5,000-bar random walk with P = 5 prediction and 5 price features.

    python bench/bench_ppo.py                                # all parts -> bench/results/ppo.md
    python bench/bench_ppo.py --parts ratio,vec --runs 3 --out -
    nohup python bench/bench_ppo.py > /tmp/bench_ppo.log 2>&1 &   # the wall part takes long
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from _common import cpu_model, gpu_description, load_average
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from pipeline.common import atomic_write_text
from pipeline.config.files import load_config
from pipeline.config.schema import PPOConfig
from pipeline.device import resolve_device
from ppo_approach import callbacks
from ppo_approach import ppo_trading_agent as agent
from ppo_approach.reward_functions import RewardConfig
from ppo_approach.trading_env import EnvConfig, MarketData, TradingEnv

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "ppo.md"


def make_block(n_bars: int = 5000, n_pred: int = 5, seed: int = 0) -> MarketData:
    """A seeded random-walk block (1 % per-bar volatility)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n_bars)))  # (n,)
    open_ = np.r_[close[0], close[:-1]]  # (n,)
    pred = rng.random((n_bars, n_pred)).astype(np.float32)  # (n, P)
    price = rng.normal(0.0, 1.0, (n_bars, 5)).astype(np.float32)  # (n, 5)
    return MarketData(open_, close, pred, price)


class TrivialEnv(gym.Env):
    """Same spaces as the trading env; constant observation, zero reward, fixed-length episodes."""

    def __init__(self, like: TradingEnv, episode_length: int = 1000) -> None:
        super().__init__()
        self.observation_space = like.observation_space
        self.action_space = like.action_space
        self._obs = np.zeros(like.observation_space.shape, dtype=np.float32)
        self._len = episode_length
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode."""
        super().reset(seed=seed)
        self._t = 0
        return self._obs.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance one step; truncate after ``episode_length`` steps."""
        self._t += 1
        return self._obs.copy(), 0.0, False, self._t >= self._len, {}


class TrivialFactory:
    """Picklable thunk for :class:`TrivialEnv`."""

    def __init__(self, data: MarketData, config: EnvConfig) -> None:
        self.data = data
        self.config = config

    def __call__(self) -> TrivialEnv:
        """Build the env."""
        return TrivialEnv(TradingEnv(self.data, self.config), max(1, self.config.episode_length))


def demo_ppo() -> PPOConfig:
    """PPO settings of the demo preset (what the README's demo trains with)."""
    return load_config(None, None, "demo").ppo


def default_ppo() -> PPOConfig:
    """The dataclass defaults (= ppo_config.txt as shipped)."""
    return load_config(None, None).ppo


def time_learn(cfg: PPOConfig, venv: Any, timesteps: int) -> float:
    """Seconds of ``learn(timesteps)`` on a fresh model (model construction not timed)."""
    model = agent.build_model(cfg, venv, "cpu", None)
    t0 = time.perf_counter()
    model.learn(timesteps)
    return time.perf_counter() - t0


def trading_venv(data: MarketData, cfg: PPOConfig, kind: str) -> tuple[Any, str]:
    """Training vec env of the trading env, as in train_ppo_agent."""
    return agent.make_vec_env(
        data, EnvConfig.from_ppo_config(cfg), RewardConfig.from_ppo_config(cfg), cfg.n_envs, 0, kind
    )


def trivial_venv(data: MarketData, cfg: PPOConfig) -> Any:
    """DummyVecEnv + VecMonitor of the trivial env."""
    env_cfg = EnvConfig.from_ppo_config(cfg)
    return VecMonitor(DummyVecEnv([TrivialFactory(data, env_cfg) for _ in range(cfg.n_envs)]))


def raw_step_seconds(venv: Any, steps: int) -> float:
    """Seconds for ``steps`` vector steps with random actions (no policy)."""
    return venv.num_envs * steps / step_throughput(venv, steps)


def part_ratio(data: MarketData, runs: int, default_runs: int) -> list[str]:
    """Markdown rows: learn() on trading env vs trivial env, plus the direct env-share estimate.

    The full-learn ratio is what the target is stated in, but with minutes-long runs it also
    carries the machine's load noise (the update phase does the same FLOPs for both envs). The
    last column isolates the env: the extra seconds the trading env needs over the trivial one
    for the same number of raw vector steps (no policy), as a share of the trading learn() time.
    """
    rows = [
        "| settings | timesteps | runs | trading env s (median) | trivial env s (median) "
        "| ratio | env share (raw-step estimate) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    settings: list[tuple[str, PPOConfig, int, int]] = [
        ("demo: net 128x128, 4 envs x 512, 5 epochs", demo_ppo(), 8 * 2048, runs)
    ]
    if default_runs > 0:
        d = default_ppo()
        label = "default: net 1280x640, 16 envs x 1024, 20 epochs"
        settings.append((label, d, d.n_steps * d.n_envs, default_runs))
    for label, cfg, steps, n in settings:
        t_trade, t_triv, extra = [], [], []
        for _ in range(n):  # interleaved so drifting machine load hits both alike
            venv, _ = trading_venv(data, cfg, "dummy")
            t_trade.append(time_learn(cfg, venv, steps))
            raw_trade = raw_step_seconds(venv, steps // cfg.n_envs)
            venv.close()
            venv = trivial_venv(data, cfg)
            t_triv.append(time_learn(cfg, venv, steps))
            extra.append(raw_trade - raw_step_seconds(venv, steps // cfg.n_envs))
            venv.close()
        a, b = statistics.median(t_trade), statistics.median(t_triv)
        share = statistics.median(extra) / a
        rows.append(
            f"| {label} | {steps:,} | {n} | {a:.2f} | {b:.2f} | {a / b:.3f} | {100 * share:.1f}% |"
        )
        print(rows[-1], flush=True)
    return rows


def step_throughput(venv: Any, steps: int) -> float:
    """Vector steps per second x n_envs (env steps/s) with random actions."""
    rng = np.random.default_rng(0)
    venv.reset()
    n = venv.num_envs
    actions = rng.integers(0, 9, size=(steps, n))
    t0 = time.perf_counter()
    for a in actions:
        venv.step(a)
    return steps * n / (time.perf_counter() - t0)


def part_vec(data: MarketData, runs: int) -> list[str]:
    """Markdown rows: DummyVecEnv vs SubprocVecEnv."""
    rows = [
        "| measurement | n_envs | DummyVecEnv | SubprocVecEnv | faster |",
        "|---|---:|---:|---:|---|",
    ]
    cfg = demo_ppo()
    env_cfg = EnvConfig.from_ppo_config(cfg)
    for n in (2, 4, 16):
        res = {}
        for kind in ("dummy", "subproc"):
            venv, used = agent.make_vec_env(data, env_cfg, RewardConfig(), n, 0, kind)
            assert used == kind
            res[kind] = statistics.median(step_throughput(venv, 2000) for _ in range(runs))
            venv.close()
        faster = "dummy" if res["dummy"] > res["subproc"] else "subproc"
        rows.append(
            f"| raw env steps/s (no policy) | {n} | {res['dummy']:,.0f} | "
            f"{res['subproc']:,.0f} | {faster} |"
        )
        print(rows[-1], flush=True)
    steps = 8 * 2048
    res = {}
    for kind in ("dummy", "subproc"):
        times = []
        for _ in range(runs):
            venv, _ = trading_venv(data, cfg, kind)
            with agent.parent_threads(kind, venv.num_envs):
                times.append(time_learn(cfg, venv, steps))
            venv.close()
        res[kind] = statistics.median(times)
    faster = "dummy" if res["dummy"] < res["subproc"] else "subproc"
    rows.append(
        f"| learn() {steps:,} steps, demo settings, s | {cfg.n_envs} | {res['dummy']:.2f} | "
        f"{res['subproc']:.2f} | {faster} |"
    )
    print(rows[-1], flush=True)
    return rows


def part_wall(data: MarketData, timesteps: int) -> list[str]:
    """Markdown rows: wall time of the default config for ``timesteps`` (with callbacks)."""
    cfg = default_ppo()
    bars_per_year = 8760.0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        venv, kind = trading_venv(data, cfg, cfg.vec_env)
        model = agent.build_model(cfg, venv, str(resolve_device(cfg.device)), None)
        val = TradingEnv(data, EnvConfig.from_ppo_config(cfg), random_start=True)
        stopper = callbacks.StopOnRequestCallback(callbacks.StopRequest())
        cbs = [
            callbacks.RolloutCheckpointCallback(Path(tmp), cfg.checkpoint_freq),
            callbacks.ValidationEvalCallback(
                val, Path(tmp), cfg.eval_freq, cfg.eval_episodes, 0, bars_per_year, stopper
            ),
        ]
        t1 = time.perf_counter()
        with agent.parent_threads(kind, venv.num_envs):
            agent.learn(model, timesteps, cbs, stopper, "bench", progress_bar=False)
        t2 = time.perf_counter()
        venv.close()
    done = int(model.num_timesteps)
    rows = [
        "| config | vec_env | timesteps run | setup s | learn() s | total min | steps/s |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| default (net 1280x640, 16 envs x 1024, batch 2048, 20 epochs, eval every "
        f"{cfg.eval_freq:,}) | {kind} | {done:,} | {t1 - t0:.1f} | {t2 - t1:.1f} | "
        f"{(t2 - t0) / 60:.1f} | {done / (t2 - t1):.0f} |",
    ]
    print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the selected parts and write the markdown report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="ratio,vec,wall", help="comma-separated: ratio,vec,wall")
    p.add_argument("--runs", type=int, default=3, help="repeats of the cheap measurements")
    p.add_argument("--wall-timesteps", type=int, default=150_000)
    p.add_argument(
        "--default-runs",
        type=int,
        default=1,
        help="runs of the slow default-settings ratio (minutes each; 0 = skip)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of this process (default 1: on a shared 2-core machine OpenMP threads "
        "spin-wait against other processes and make timings meaningless; 0 = torch's default)",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="markdown file, or - for stdout only")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    command = " ".join(["python bench/bench_ppo.py", *(argv if argv is not None else sys.argv[1:])])
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    data = make_block()
    load = load_average()
    sections: list[str] = [
        "## PPO training (bench/bench_ppo.py)",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores, {gpu_description()}; Python "
        f"{platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads in the parent)",
        f"- Load average before the runs: {load:.2f} (other processes share this machine)",
        f"- Command: `{command}`",
        "- Block: 5,000-bar random walk, P = 5 prediction + 5 price features (obs size 14)",
        "",
    ]
    parts_fn: dict[str, tuple[str, Callable[[], list[str]]]] = {
        "ratio": (
            "### Environment share of learn(): trading env vs trivial env (DummyVecEnv)",
            lambda: part_ratio(data, args.runs, args.default_runs),
        ),
        "vec": (
            "### SubprocVecEnv vs DummyVecEnv (median of runs)",
            lambda: part_vec(data, args.runs),
        ),
        "wall": (
            f"### Wall time of {args.wall_timesteps:,} timesteps, default config",
            lambda: part_wall(data, args.wall_timesteps),
        ),
    }
    for name in parts:
        title, fn = parts_fn[name]
        print(title, flush=True)
        sections += [title, "", *fn(), ""]
    text = "\n".join(sections)
    print(text)
    if args.out != "-":
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
