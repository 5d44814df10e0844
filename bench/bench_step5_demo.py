"""The demo's step 5: fold models for every classifier vs the agent's only.

``walk_forward_models = all`` trains 4 main models + 3 walk-forward fold models each (16
networks); ``agent`` (the demo preset's setting) trains the 4 main models and the fold models of
the one classifier that feeds the agent (7). Both variants run step 5 (``train_models.py``, the
demo preset, the bundled dataset) from an empty artifact root, alternating, ``--runs`` times each;
the report gives the medians and their ratio, measured side by side. ``--key K --values A,B``
compares two values of another setting instead (``--key min_steps_per_epoch --values 1,50``: the
configured batch against the batch cut to keep 50 optimizer steps per epoch).

    python bench/bench_step5_demo.py --runs 2
    python bench/bench_step5_demo.py --runs 3 --key min_steps_per_epoch --values 1,50
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import cpu_model, gpu_description, load_average

ROOT = Path(__file__).resolve().parent.parent
DATASET = "SYNTH-BTC-EUR_1H_20240101-20251231"
KEY = "walk_forward_models"
VARIANTS = ("all", "agent")


def run_once(setting: str) -> tuple[float, int]:
    """Seconds of one step-5 run from an empty root, and the networks it saved."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "datasets").mkdir()
        shutil.copy(ROOT / "datasets" / f"{DATASET}.csv", root / "datasets")
        cmd = [sys.executable, str(ROOT / "train_models.py"), "--dataset", DATASET]
        cmd += ["--root", str(root), "--preset", "demo", "--set", setting]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        seconds = time.perf_counter() - t0
        return seconds, len(list((root / "models").rglob("*.pth")))


def time_variants(
    key: str, values: tuple[str, ...], runs: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Step 5 at each ``key = value``, alternating the order run by run: seconds per value and
    the networks each saved."""
    times: dict[str, list[float]] = {v: [] for v in values}
    nets: dict[str, int] = {}
    for i in range(runs):
        for v in values if i % 2 == 0 else values[::-1]:
            seconds, nets[v] = run_once(f"{key}={v}")
            times[v].append(seconds)
            print(f"run {i + 1} {key}={v}: {seconds:.1f} s, {nets[v]} networks", flush=True)
    return times, nets


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2, help="runs of each variant (median reported)")
    p.add_argument("--key", default=KEY, help="the setting the variants differ in")
    p.add_argument("--values", default=",".join(VARIANTS), help="its two values, comma-separated")
    args = p.parse_args(argv)
    variants = tuple(args.values.split(","))
    if len(variants) != 2:
        p.error(f"--values: expected two comma-separated values, got {args.values!r}")
    if (args.key, variants) != (KEY, VARIANTS):
        return compare_setting(args.key, variants, args.runs)
    times, nets = time_variants(KEY, VARIANTS, args.runs)
    med = {v: statistics.median(t) for v, t in times.items()}
    lines = [
        "# The demo's step 5: fold models for the agent's classifier only "
        "(`bench/bench_step5_demo.py`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores, {gpu_description()}; Python "
        f"{platform.python_version()}; 1-min load average at the end: {load_average():.2f}.",
        f"Command: `python bench/bench_step5_demo.py --runs {args.runs}` (step 5, demo preset, "
        f"bundled dataset, empty root each run, variants alternating; median of {args.runs}).",
        "",
        "| walk_forward_models | networks saved | step 5 wall time (median) | runs |",
        "|---|---|---|---|",
    ]
    for v in VARIANTS:
        runs = ", ".join(f"{t:.1f}" for t in times[v])
        lines.append(f"| {v} | {nets[v]} | {med[v]:.1f} s | {runs} |")
    lines += [
        "",
        f"`agent` takes {med['agent'] / med['all']:.2f}x the time of `all` "
        f"({med['all'] / med['agent']:.2f}x faster); the demo preset uses `agent`, the default "
        "config `all` (every model the user listed gets its fold models and prediction table).",
    ]
    text = "\n".join(lines) + "\n"
    (Path(__file__).resolve().parent / "results" / "step5_demo.md").write_text(text)
    print(text)
    return 0


def compare_setting(key: str, values: tuple[str, str], runs: int) -> int:
    """Step 5 of the demo at ``key = values[0]`` and ``values[1]``, alternating; medians and
    ratio in ``results/step5_demo_{key}.md``."""
    times, _nets = time_variants(key, values, runs)
    med = {v: statistics.median(t) for v, t in times.items()}
    a, b = values
    lines = [
        f"# The demo's step 5 at {key} = {a} and {b} (`bench/bench_step5_demo.py`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores, {gpu_description()}; Python "
        f"{platform.python_version()}; 1-min load average at the end: {load_average():.2f}.",
        f"Command: `python bench/bench_step5_demo.py --runs {runs} --key {key} --values {a},{b}` "
        f"(step 5, demo preset, bundled dataset, empty root each run, variants alternating; "
        f"median of {runs}).",
        "",
        f"| {key} | step 5 wall time (median) | runs |",
        "|---|---|---|",
        *(f"| {v} | {med[v]:.1f} s | {', '.join(f'{t:.1f}' for t in times[v])} |" for v in values),
        "",
        f"`{key} = {b}` takes {med[b] / med[a]:.2f}x the time of `{a}`.",
    ]
    text = "\n".join(lines) + "\n"
    (Path(__file__).resolve().parent / "results" / f"step5_demo_{key}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
