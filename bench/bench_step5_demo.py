"""The demo's step 5: fold models for every classifier vs the agent's only.

``walk_forward_models = all`` trains 4 main models + 3 walk-forward fold models each (16
networks); ``agent`` (the demo preset's setting) trains the 4 main models and the fold models of
the one classifier that feeds the agent (7). Both variants run step 5 (``train_models.py``, the
demo preset, the bundled dataset) from an empty artifact root, alternating, ``--runs`` times each;
the report gives the medians and their ratio, measured side by side.

    python bench/bench_step5_demo.py --runs 2
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
VARIANTS = ("all", "agent")


def run_once(variant: str) -> tuple[float, int]:
    """Seconds of one step-5 run from an empty root, and the networks it saved."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "datasets").mkdir()
        shutil.copy(ROOT / "datasets" / f"{DATASET}.csv", root / "datasets")
        cmd = [sys.executable, str(ROOT / "train_models.py"), "--dataset", DATASET]
        cmd += ["--root", str(root), "--preset", "demo", "--set", f"walk_forward_models={variant}"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        seconds = time.perf_counter() - t0
        return seconds, len(list((root / "models").rglob("*.pth")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2, help="runs of each variant (median reported)")
    args = p.parse_args(argv)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    nets: dict[str, int] = {}
    for i in range(args.runs):
        for v in VARIANTS if i % 2 == 0 else VARIANTS[::-1]:
            seconds, nets[v] = run_once(v)
            times[v].append(seconds)
            print(f"run {i + 1} {v}: {seconds:.1f} s, {nets[v]} networks", flush=True)
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


if __name__ == "__main__":
    raise SystemExit(main())
