"""Vectorised environments: dummy, subproc and batched side by side, and what PPO gains.

Parts (``--parts``, default all):

* ``steps``: raw ``VecEnv.step`` throughput (env steps per second summed over the copies; random
  actions drawn once; the default env config, so every target action is valid) of ``dummy``,
  ``subproc`` and ``batched`` at 16, 256 and 1,024 copies, each wrapped in ``VecMonitor`` as in
  training; median of ``--runs``, ratios to ``dummy`` at the same size. ``subproc`` runs one
  process per copy (each imports torch): only up to ``--subproc-max`` copies.
* ``ppo``: ``PPO.learn()`` timesteps per second of the demo preset's PPO settings and of the
  defaults' (network, epochs, minibatch), the rollout (``n_envs x n_steps``) kept: dummy as
  configured before (``dummy``, the fewest copies) and ``batched`` with more copies and shorter
  rollouts per copy (same rollout size, so the same number and size of updates); median of
  ``--runs`` (``--default-runs`` for the defaults: minutes on a CPU).
* ``e2e``: step 7 (``train_agent``: warm start, PPO with its validation and checkpoint callbacks,
  backtest) with the demo preset on a 4,000-bar mean-reversion series (DLSTM table from step 5),
  as the demo preset had it (``dummy``, 8 x 1,024) and as it has it now; the tuning trials per
  hour at the demo budget follow (one agent trial is this training).

The block of ``steps`` and ``ppo`` is a seeded 5,000-bar random walk (P = 5, K = 5).

    python bench/bench_vec_env.py                         # writes bench/results/vec_env.md
    python bench/bench_vec_env.py --parts steps --runs 3 --out -
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import cpu_model, load_average

from pipeline.common import atomic_write_text
from pipeline.config.files import load_config
from pipeline.config.schema import PPOConfig
from ppo_approach import ppo_trading_agent as agent
from ppo_approach.reward_functions import RewardConfig
from ppo_approach.trading_env import EnvConfig, MarketData

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "vec_env.md"
SIZES = (16, 256, 1024)


def make_block(n_bars: int = 5000, seed: int = 0) -> MarketData:
    """A seeded random-walk block (1 % per-bar volatility), P = 5 and K = 5 columns."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n_bars)))  # (n,)
    open_ = np.r_[close[0], close[:-1]]  # (n,)
    pred = rng.random((n_bars, 5)).astype(np.float32)  # (n, 5)
    price = rng.normal(0.0, 1.0, (n_bars, 5)).astype(np.float32)  # (n, 5)
    return MarketData(open_, close, pred, price)


def steps_per_second(venv: Any, seconds: float, seed: int) -> float:
    """Env steps per second (all copies) of ``venv`` over about ``seconds`` of stepping."""
    rng = np.random.default_rng(seed)
    venv.reset()
    actions = rng.integers(0, venv.action_space.n, (64, venv.num_envs))
    for a in actions[:4]:  # warm-up
        venv.step(a)
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        venv.step(actions[steps % len(actions)])
        steps += 1
    return steps * venv.num_envs / (time.perf_counter() - t0)


def part_steps(data: MarketData, runs: int, subproc_max: int) -> list[dict[str, Any]]:
    """Median env steps/s per (kind, copies)."""
    rows = []
    for n in SIZES:
        for kind in ("dummy", "subproc", "batched"):
            if kind == "subproc" and n > subproc_max:
                rows.append({"copies": n, "kind": kind, "steps_s": None})
                continue
            venv, used = agent.make_vec_env(data, EnvConfig(), RewardConfig(), n, 0, kind)
            with agent.parent_threads(used, n):
                rates = [steps_per_second(venv, 2.0, r) for r in range(runs)]
            venv.close()
            rows.append({"copies": n, "kind": used, "steps_s": statistics.median(rates)})
    return rows


def ppo_variants(
    base: PPOConfig, label: str, copies: tuple[int, ...]
) -> list[tuple[str, PPOConfig]]:
    """``(name, config)``: the preset's rollout size (``n_envs x n_steps``) collected by
    ``dummy`` with the fewest copies, and by ``batched`` with each number of ``copies``."""
    rollout = base.n_envs * base.n_steps
    out = []
    for kind, sizes in (("dummy", copies[:1]), ("batched", copies)):
        for n in sizes:
            cfg = replace(base, vec_env=kind, n_envs=n, n_steps=rollout // n)
            out.append((f"{label}: {kind} {n} x {rollout // n}", cfg))
    return out


def part_ppo(data: MarketData, runs: int, default_runs: int) -> list[dict[str, Any]]:
    """``learn()`` timesteps/s of each variant (one rollout + update per run, twice for demo)."""
    rows = []
    for label, base, k, copies in (
        ("demo", load_config(None, None, "demo").ppo, runs, (8, 64, 256)),
        ("default", load_config(None, None).ppo, default_runs, (16, 128, 512)),
    ):
        for name, cfg in ppo_variants(base, label, copies):
            timesteps = cfg.n_envs * cfg.n_steps * (2 if label == "demo" else 1)
            rates = []
            for _ in range(k):
                venv, used = agent.make_vec_env(
                    data, EnvConfig.from_ppo_config(cfg), RewardConfig.from_ppo_config(cfg),
                    cfg.n_envs, 0, cfg.vec_env,
                )  # fmt: skip
                model = agent.build_model(cfg, venv, "cpu", None)
                t0 = time.perf_counter()
                model.learn(timesteps)
                rates.append(timesteps / (time.perf_counter() - t0))
                venv.close()
            rows.append({"variant": name, "timesteps_s": statistics.median(rates), "runs": k})
    return rows


def part_e2e(runs: int) -> list[dict[str, Any]]:
    """Step 7 with the demo preset, as it was (dummy 8 x 1,024) and as it is; seconds."""
    import train_models
    from pipeline.common import Paths
    from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
    from ppo_approach import train_ppo_agent

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "datasets").mkdir()
        # the agent ladder's mean-reversion series: the rule wins there, so the agent trades
        series = generate_ohlcv(4000, signal=1.0, seed=1, kind="mean_reversion")
        write_ohlcv_csv(series, root / "datasets" / "E2E.csv")
        args = ["--dataset", "E2E", "--root", str(root), "--models", "dlstm", "--preset", "demo"]
        assert train_models.main(args) == 0
        torch.set_num_threads(1)
        rows = []
        for label, sets in (
            ("before", ["vec_env=dummy", "n_envs=8", "ppo.n_steps=1024"]),
            ("now: the demo preset", []),
        ):
            cfg = load_config(None, None, "demo", ["ppo.prediction_model=dlstm", *sets])
            seconds = []
            for _ in range(runs):
                t0 = time.perf_counter()
                train_ppo_agent.train_agent(cfg, "E2E", Paths.from_root(root), resume=False)
                seconds.append(time.perf_counter() - t0)
            p = cfg.ppo
            rows.append({"variant": f"{label} ({p.vec_env} {p.n_envs} x {p.n_steps})",
                         "seconds": statistics.median(seconds), "runs": runs})  # fmt: skip
    return rows


def render(results: dict[str, list[dict[str, Any]]], command: str) -> str:
    """The markdown section of BENCHMARKS.md."""
    out = [
        "## Vectorised environments: dummy, subproc, batched",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}, CPU only, load average "
        f"{load_average():.2f} at the end",
        f"- command: `{command}`",
    ]
    if "steps" in results:
        rows = results["steps"]
        dummy = {r["copies"]: r["steps_s"] for r in rows if r["kind"] == "dummy"}
        out += ["", "Env steps per second (all copies; median of runs of ~2 s):", ""]
        out += ["| copies | vec_env | env steps/s | vs dummy |", "|---:|---|---:|---:|"]
        for r in rows:
            rate = r["steps_s"]
            if rate is None:
                out.append(f"| {r['copies']:,} | {r['kind']} | not run (one process per copy) | |")
                continue
            out.append(f"| {r['copies']:,} | {r['kind']} | {rate:,.0f} | "
                       f"{rate / dummy[r['copies']]:.1f}x |")  # fmt: skip
    if "ppo" in results:
        out += ["", "`PPO.learn()` timesteps per second (same rollout size within a preset):", "",
                "| settings | timesteps/s | runs |", "|---|---:|---:|"]  # fmt: skip
        out += [
            f"| {r['variant']} | {r['timesteps_s']:,.0f} | {r['runs']} |" for r in results["ppo"]
        ]
    if "e2e" in results:
        out += ["", "Step 7 with the demo preset (warm start, 100,000 PPO timesteps with "
                "validation and checkpoints, backtest), 4,000-bar mean-reversion series:",
                ""]  # fmt: skip
        out += ["| settings | seconds | agent trials per hour at this budget |", "|---|---:|---:|"]
        out += [f"| {r['variant']} | {r['seconds']:.1f} | {3600.0 / r['seconds']:.0f} |"
                for r in results["e2e"]]  # fmt: skip
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the parts, print the markdown and write it to ``--out`` (``-``: don't)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="steps,ppo,e2e", help="comma list of steps, ppo, e2e")
    p.add_argument("--runs", type=int, default=3, help="runs per env-steps cell and demo PPO")
    p.add_argument("--default-runs", type=int, default=1, help="runs of the default-size PPO")
    p.add_argument("--e2e-runs", type=int, default=1, help="runs of each step 7")
    p.add_argument("--subproc-max", type=int, default=16, help="most copies run as processes")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="markdown file, or - for none")
    args = p.parse_args(argv)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    torch.set_num_threads(1)
    data = make_block()
    results: dict[str, list[dict[str, Any]]] = {}
    if "steps" in parts:
        results["steps"] = part_steps(data, args.runs, args.subproc_max)
    if "ppo" in parts:
        results["ppo"] = part_ppo(data, args.runs, args.default_runs)
    if "e2e" in parts:
        results["e2e"] = part_e2e(args.e2e_runs)
    command = " ".join(
        ["python bench/bench_vec_env.py", *(argv if argv is not None else sys.argv[1:])]
    )
    text = render(results, command)
    print(text)
    if args.out != "-":
        atomic_write_text(Path(args.out), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
