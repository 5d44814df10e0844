"""Raw TradingEnv throughput: steps per second on one core, median of several runs.

The block is a seeded 5,000-bar random walk with P = 5 prediction features and 5 price features.
Actions are random *valid* actions chosen once from ``env.action_masks()`` over a whole episode
(untimed) and replayed in the timed runs; the env is deterministic, so the replay takes the same
path and every replayed action is valid. Each timed run steps ``--steps`` times (resetting at the
end of each episode) and calls nothing but ``env.step`` / ``env.reset``.

    python bench/bench_env.py                      # prints the table, writes bench/results/env.md
    python bench/bench_env.py --steps 50000 --runs 3 --out -   # quick look, no file
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import cpu_model, load_average

from pipeline.common import atomic_write_text
from ppo_approach.trading_env import EnvConfig, MarketData, TradingEnv

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "env.md"


def make_block(n_bars: int, n_pred: int, seed: int) -> MarketData:
    """A seeded random-walk block (1 % per-bar volatility) with ``n_pred`` prediction features."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n_bars)))  # (n,)
    open_ = np.r_[close[0], close[:-1]]  # (n,)
    pred = rng.random((n_bars, n_pred)).astype(np.float32)  # (n, P)
    price = rng.normal(0.0, 1.0, (n_bars, 5)).astype(np.float32)  # (n, 5)
    return MarketData(open_, close, pred, price)


def valid_action_sequence(env: TradingEnv, seed: int) -> list[int]:
    """Random valid actions for one whole episode from bar 0 (untimed)."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    actions: list[int] = []
    done = False
    while not done:
        valid = np.flatnonzero(env.action_masks())
        a = int(valid[rng.integers(0, valid.size)])
        actions.append(a)
        _, _, terminated, truncated, _ = env.step(a)
        done = terminated or truncated
    return actions


def time_run(env: TradingEnv, actions: list[int], steps: int) -> tuple[float, int]:
    """Step ``steps`` times replaying ``actions`` per episode; returns (steps/s, invalid count)."""
    env.reset(seed=0)
    invalid = 0
    i = 0
    n_act = len(actions)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(actions[i])
        i += 1
        if terminated or truncated or i == n_act:
            invalid += info["invalid_actions"]
            env.reset(seed=0)
            i = 0
    elapsed = time.perf_counter() - t0
    return steps / elapsed, invalid


def run_bench(
    n_bars: int, n_pred: int, steps: int, runs: int, seed: int
) -> list[dict[str, object]]:
    """Median steps/s for long-only and allow_short envs."""
    rows: list[dict[str, object]] = []
    data = make_block(n_bars, n_pred, seed)
    for allow_short in (False, True):
        cfg = EnvConfig(allow_short=allow_short, episode_length=0, ruin_threshold=0.0)
        env = TradingEnv(data, cfg, random_start=False)
        actions = valid_action_sequence(env, seed)
        time_run(env, actions, min(steps, 5000))  # warm-up
        results = [time_run(env, actions, steps) for _ in range(runs)]
        rates = [r for r, _ in results]
        rows.append(
            {
                "env": f"allow_short={allow_short}",
                "median": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
                "invalid": sum(inv for _, inv in results),
            }
        )
    return rows


def render(rows: list[dict[str, object]], args: argparse.Namespace, command: str) -> str:
    """Markdown report: machine, command, one row per env variant."""
    lines = [
        "## TradingEnv raw step throughput",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores (benchmark uses one: "
        "single-threaded Python, pinned to CPU 0 where the OS allows)",
        f"- Python {platform.python_version()}, numpy {np.__version__}; load average before the "
        f"runs: {args.load:.2f} (other processes share the machine; min/max show the spread)",
        f"- Command: `{command}`",
        f"- Block: {args.bars} bars, P = {args.pred} prediction + 5 price features "
        f"(obs size {args.pred + 9}); episodes from bar 0 to the block's end; "
        "random valid actions replayed",
        f"- {args.steps} steps per run, median of {args.runs} runs (after a warm-up run)",
        "",
        "| env | median steps/s | min | max | invalid actions replayed |",
        "|-----|---------------:|----:|----:|------------------------:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['median']:,.0f} | {r['min']:,.0f} | {r['max']:,.0f} "
            f"| {r['invalid']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the markdown table and write it to ``--out`` (``-``: don't)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=5000)
    parser.add_argument("--pred", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="markdown file, or - for none")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {0})
        except OSError:
            pass
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python bench/bench_env.py", *given])
    args.load = load_average()
    rows = run_bench(args.bars, args.pred, args.steps, args.runs, args.seed)
    text = render(rows, args, command)
    print(text)
    if args.out != "-":
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
