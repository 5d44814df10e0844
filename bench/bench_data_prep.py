"""Data preparation timing: load + validate a CSV, then the full chain up to training windows.

For each size a seeded synthetic CSV (``pipeline.data.synthetic``, hourly, signal 0.3) is written
into a temporary folder (untimed); every stage is then run ``--repeats`` times and the median is
reported.

Stages (each timed on its own; the chain is timed end to end, not summed):
  load + validate      ``pipeline.data.load.load_dataset`` (parse, normalise, validate, sha256)
  features + labels    ``pipeline.classifiers.prepare.arrays_from_config`` with the default
                       TrainingConfig, the call ``load_classifier_data`` makes (features, labels,
                       splits, train-only scaler, scaled matrix)
  windows (train)      ``pipeline.classifiers.windows.WindowData.create(...)`` of the labelled
                       train bars on the CPU plus one ``batch`` over all of them: every train window
                       materialised as one ``(n, lookback, F)`` float32 tensor (an upper bound:
                       the trainer gathers windows per batch, on its device)
  full chain           load + validate + features + labels + windows, end to end

    python bench/bench_data_prep.py                        # prints the table, writes results
    python bench/bench_data_prep.py --sizes 17500 --repeats 3 --out -   # quick look, no file
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from _common import cpu_model

from pipeline.classifiers.prepare import ClassifierArrays, arrays_from_config
from pipeline.classifiers.windows import WindowData
from pipeline.common import atomic_write_text
from pipeline.config.schema import TrainingConfig
from pipeline.data.load import load_dataset
from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "data_prep.md"
TARGETS_S = {17_500: 0.5, 175_000: 5.0}
"""Targets for the full chain (seconds) at each size; other sizes are scaled linearly."""


def time_stage(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` in seconds (one untimed warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_windows(arrays: ClassifierArrays) -> torch.Tensor:
    """Every labelled train window, ``(n, lookback, F)``: WindowData on the CPU, one batch."""
    bars = arrays.splits.train.bars()
    bars = bars[arrays.labels[bars] >= 0]
    data = WindowData.create(
        arrays.scaled, bars, arrays.labels[bars], arrays.lookback, torch.device("cpu")
    )
    x, _ = data.batch(torch.arange(len(data)))
    return x


def bench_size(path: Path, repeats: int, cfg: TrainingConfig) -> dict[str, float]:
    """Median seconds of each stage for one CSV."""
    out = {"load + validate": time_stage(lambda: load_dataset(str(path)), repeats)}
    df, _ = load_dataset(str(path))
    arrays = arrays_from_config(df, cfg)
    out["features + labels + splits + scaler"] = time_stage(
        lambda: arrays_from_config(df, cfg), repeats
    )
    out["windows (train block)"] = time_stage(lambda: train_windows(arrays), repeats)

    def chain() -> None:
        frame, _ = load_dataset(str(path))
        prepared = arrays_from_config(frame, cfg)
        train_windows(prepared)

    out["full chain"] = time_stage(chain, repeats)
    return out


def run_bench(sizes: list[int], repeats: int, seed: int) -> dict[int, dict[str, float]]:
    """Write one CSV per size into a temp folder and time every stage on it."""
    cfg = TrainingConfig()
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_data_prep_") as tmp:
        for n in sizes:
            path = write_ohlcv_csv(
                generate_ohlcv(n, signal=0.3, seed=seed), Path(tmp) / f"SYNTH-BENCH-{n}.csv"
            )
            results[n] = bench_size(path, repeats, cfg)
            print(f"  {n:>9,} rows: " + ", ".join(f"{k} {v:.3f}s" for k, v in results[n].items()))
    return results


def render(
    results: dict[int, dict[str, float]], repeats: int, command: str, cfg: TrainingConfig
) -> str:
    """Markdown report: machine, command, one row per stage, one column per size."""
    sizes = sorted(results)
    stages = list(results[sizes[0]])
    lines = [
        "## Data preparation: load + validate, features, labels, windows",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores",
        f"- Python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}",
        f"- Command: `{command}`",
        "- Input: synthetic hourly CSV (`generate_ohlcv(n, signal=0.3)` written by "
        "`write_ohlcv_csv`: ISO timestamps, 6 columns)",
        f"- Chain settings: default TrainingConfig ({len(cfg.resolved_features())} features, "
        f"lookback {cfg.lookback}, k {cfg.smoothing_k}); windows = every labelled train window "
        "materialised at once (`WindowData.create` + one `batch`, CPU)",
        f"- Median of {repeats} runs after one warm-up run, seconds",
        "",
        "| stage | " + " | ".join(f"{n:,} rows" for n in sizes) + " |",
        "|-------|" + "|".join("-" * 12 + ":" for _ in sizes) + "|",
    ]
    for stage in stages:
        cells = " | ".join(f"{results[n][stage]:.3f}" for n in sizes)
        lines.append(f"| {stage} | {cells} |")
    key = "full chain" if "full chain" in stages else stages[0]
    lines.append("")
    for n in sizes:
        target = TARGETS_S.get(n, 5.0 * n / 175_000)
        ok = "meets" if results[n][key] < target else "MISSES"
        per_row = results[n][key] / n * 1e6
        lines.append(
            f"- {n:,} rows: {key} {results[n][key]:.3f} s = {per_row:.1f} us/row, "
            f"{ok} the {target:g} s target"
        )
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        ratio = results[hi][key] / results[lo][key]
        lines.append(
            f"- Scaling {lo:,} -> {hi:,} rows ({hi / lo:.0f}x rows): {key} took {ratio:.1f}x "
            "the time (1x per row = linear)"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the markdown table and write it to ``--out`` (``-``: don't)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[17_500, 175_000],
        help="rows of each synthetic CSV (default 17500 175000)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per stage (median)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help=f"markdown file to write, '-' for none (default {DEFAULT_OUT})",
    )
    args = parser.parse_args(argv)
    command = "python bench/bench_data_prep.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    results = run_bench(sorted(args.sizes), args.repeats, args.seed)
    report = render(results, args.repeats, command.strip(), TrainingConfig())
    print(report)
    if args.out != "-":
        atomic_write_text(args.out, report)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
