"""PPO ``learn()`` on CUDA vs CPU with the default PPO settings (net 1280x640, 16 envs x 1024).

Times ``learn()`` of ``--rollouts`` full rollouts + updates on each device in the same process, on
the seeded 5,000-bar block of ``bench_ppo.py``; reports the median of ``--runs`` and the ratio.
Run it on a GPU pod (``bench/gpu_check.sh`` does)::

    python bench/bench_ppo_device.py --runs 2 --rollouts 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from _common import cpu_model, gpu_description
from bench_ppo import default_ppo, make_block, trading_venv

from pipeline.common import atomic_write_text
from ppo_approach import ppo_trading_agent as agent


def time_learn(device: str, timesteps: int) -> float:
    """Seconds of ``learn(timesteps)`` of a fresh default-config model on ``device``."""
    cfg = default_ppo()
    venv, _ = trading_venv(make_block(), cfg, "dummy")
    model = agent.build_model(cfg, venv, device, None)
    t0 = time.perf_counter()
    model.learn(timesteps)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    venv.close()
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Time both devices and print/write a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2, help="runs per device (median reported)")
    p.add_argument("--rollouts", type=int, default=2, help="rollouts (+ updates) per run")
    p.add_argument("--devices", default="cuda,cpu", help="comma list of devices to time")
    p.add_argument("--out", default="-", help="markdown file, or - for stdout only")
    args = p.parse_args(argv)
    cfg = default_ppo()
    steps = args.rollouts * cfg.n_steps * cfg.n_envs
    rows = [
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores, {gpu_description()}; "
        f"torch {torch.__version__} ({torch.get_num_threads()} CPU threads)",
        f"- Command: `python bench/bench_ppo_device.py {' '.join(argv or sys.argv[1:])}`",
        f"- learn() of {steps:,} timesteps ({args.rollouts} rollouts of 16 envs x 1024 + "
        "20-epoch updates, batch 2048, net 1280x640), DummyVecEnv; median of "
        f"{args.runs} runs after one warm-up rollout",
        "",
        "| device | learn() s (median) | min | max | timesteps/s |",
        "|---|---:|---:|---:|---:|",
    ]
    medians = {}
    for device in args.devices.split(","):
        if device == "cuda" and not torch.cuda.is_available():
            rows.append("| cuda | not available | | | |")
            continue
        time_learn(device, cfg.n_steps * cfg.n_envs)  # warm-up (cuDNN/cuBLAS init)
        times = [time_learn(device, steps) for _ in range(args.runs)]
        med = statistics.median(times)
        medians[device] = med
        rows.append(
            f"| {device} | {med:.1f} | {min(times):.1f} | {max(times):.1f} | {steps / med:,.0f} |"
        )
        print(rows[-1], flush=True)
    if "cuda" in medians and "cpu" in medians:
        rows += ["", f"- cpu / cuda time ratio: {medians['cpu'] / medians['cuda']:.2f}"]
    text = "\n".join(rows) + "\n"
    print(text)
    if args.out != "-":
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
