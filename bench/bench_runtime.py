"""The exported agent's runtime: what it costs to install and how long one decision takes.

Install: the wheels ``pip download numpy pandas onnxruntime`` fetches for this machine (with
their dependencies), each with its size, against the torch wheel alone (the CPU build here)
that the training side needs.
Latency: :meth:`ppo_approach.runtime.Decider.decide` on consecutive candles of the bundled dataset
(each call gets the last ``history_bars`` candles, as ``paper_trade.py`` does), timed one by one;
the median, the 90th percentile and the parts (features from raw candles, classifier graph,
policy graph and account) over ``--candles`` decisions.

Without ``--export``, the agent is the smoke preset's (steps 5 and 7 with ``--preset smoke``) on
the bundled dataset, trained in a temporary root first (about a minute; untimed).

    python bench/bench_runtime.py                 # writes bench/results/runtime.md
    python bench/bench_runtime.py --export exports/NAME --no-wheels --out -
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import cpu_model, load_average

from pipeline.common import atomic_write_text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "runtime.md"
DATASET = "SYNTH-BTC-EUR_1H_20240101-20251231"
RUNTIME_PACKAGES = ("numpy", "pandas", "onnxruntime")


def build_export(work: Path) -> Path:
    """The smoke agent of the bundled dataset, exported (steps 5 and 7 in ``work``)."""
    import shutil

    (work / "datasets").mkdir(parents=True)
    shutil.copy(ROOT / "datasets" / f"{DATASET}.csv", work / "datasets")
    for script in ("train_models.py", "ppo_approach/train_ppo_agent.py"):
        subprocess.run(
            [sys.executable, str(ROOT / script), "--dataset", DATASET, "--root", str(work),
             "--preset", "smoke"],
            check=True, capture_output=True,
        )  # fmt: skip
    subprocess.run(
        [sys.executable, str(ROOT / "export.py"), "--dataset", DATASET, "--root", str(work),
         "--preset", "smoke"],
        check=True, capture_output=True,
    )  # fmt: skip
    return work / "exports" / DATASET


def wheel_sizes(packages: tuple[str, ...], work: Path, deps: bool = True) -> list[tuple[str, int]]:
    """``(wheel file, bytes)`` of what ``pip download`` fetches for ``packages`` here."""
    dest = work / "wheels"
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(dest),
         *([] if deps else ["--no-deps"]), *packages],
        check=True, capture_output=True, cwd=work,
    )  # fmt: skip
    return sorted(((p.name, p.stat().st_size) for p in dest.iterdir()), key=lambda r: -r[1])


def time_decisions(export: Path, n: int) -> dict[str, list[float]]:
    """Seconds per decision and per part over ``n`` consecutive candles."""
    from pipeline.data.features import agent_price_features, compute_features
    from pipeline.data.load import load_dataset
    from ppo_approach.runtime import Decider

    decider = Decider.load(export)
    candles, _ = load_dataset(str(ROOT / "datasets" / f"{DATASET}.csv"), ROOT / "datasets")
    h = decider.history_bars
    start = len(candles) - n
    parts: dict[str, list[float]] = {"decide": [], "features": [], "classifier": [], "rest": []}
    for t in range(start, len(candles)):
        window = candles.iloc[t + 1 - h : t + 1]
        t0 = time.perf_counter()
        decider.decide(window)
        t1 = time.perf_counter()
        feats = compute_features(window, decider.feature_names)
        agent_price_features(window, feats)
        t2 = time.perf_counter()
        decider.probabilities(feats.to_numpy(dtype=np.float32)[-decider.lookback :])
        t3 = time.perf_counter()
        parts["decide"].append(t1 - t0)
        parts["features"].append(t2 - t1)
        parts["classifier"].append(t3 - t2)
        parts["rest"].append(max(0.0, (t1 - t0) - (t3 - t1)))
    return parts


def _ms(values: list[float], q: float | None = None) -> str:
    v = statistics.median(values) if q is None else float(np.quantile(values, q))
    return f"{1000.0 * v:.2f}"


def render(
    parts: dict[str, list[float]],
    wheels: list[tuple[str, int]] | None,
    torch_wheels: list[tuple[str, int]] | None,
    export: str,
    command: str,
) -> str:
    """The markdown section of BENCHMARKS.md."""
    lines = [
        "## The exported agent's runtime (numpy, pandas, onnxruntime only)",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores, Python "
        f"{platform.python_version()}, load average {load_average():.2f} at the end",
        f"- command: `{command}`; export: {export}",
        "",
        f"Decision latency over {len(parts['decide']):,} consecutive candles (one call each, the "
        "last `history_bars` candles passed; ms):",
        "",
        "| part | median | p90 |",
        "|------|-------:|----:|",
    ]
    names = {
        "decide": "whole `Decider.decide`",
        "features": "features from raw candles",
        "classifier": "classifier graph(s)",
        "rest": "policy graph, account, decision",
    }
    for key, label in names.items():
        lines.append(f"| {label} | {_ms(parts[key])} | {_ms(parts[key], 0.9)} |")
    for title, rows in (
        ("runtime install", wheels),
        ("training side, for comparison: torch alone", torch_wheels),
    ):
        if rows is None:
            continue
        total = sum(size for _, size in rows) / 2**20
        lines += ["", f"Wheels of the {title} (`pip download`, this platform): {total:.1f} MiB",
                  "", "| wheel | MiB |", "|-------|----:|"]  # fmt: skip
        lines += [f"| {name} | {size / 2**20:.1f} |" for name, size in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the markdown and write it to ``--out`` (``-``: don't)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, default=None, help="an export folder to time")
    parser.add_argument("--candles", type=int, default=1000, help="decisions timed")
    parser.add_argument("--no-wheels", action="store_true", help="skip the pip download part")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="markdown file, or - for none")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export = args.export or build_export(work / "root")
        parts = time_decisions(export, args.candles)
        wheels = torch_wheels = None
        if not args.no_wheels:
            wheels = wheel_sizes(RUNTIME_PACKAGES, work / "runtime")
            try:
                torch_wheels = wheel_sizes(("torch==2.13.0",), work / "torch", deps=False)
            except subprocess.CalledProcessError:
                torch_wheels = None  # no torch wheel reachable: the comparison is left out
    label = str(args.export) if args.export else f"smoke agent on {DATASET} (built first)"
    text = render(parts, wheels, torch_wheels, label, "python bench/bench_runtime.py")
    print(text)
    if args.out != "-":
        atomic_write_text(Path(args.out), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
