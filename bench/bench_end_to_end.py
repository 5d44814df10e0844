"""End-to-end wall time of ``runpod_main.py``: the smoke run and the README demo, per step.

Each run starts from an empty artifact root in a temp folder (nothing reused), runs
``runpod_main.py`` as a subprocess exactly as a user would, and reads the per-step times from
``results/run_summary_{dataset}.json``. The smoke run uses a generated 2,000-bar dataset (like
tests/test_end_to_end.py, without the push); the demo is ``make demo``'s command on the bundled
dataset.

    python bench/bench_end_to_end.py                    # smoke x3
    python bench/bench_end_to_end.py --demo-runs 1      # + the demo once (up to 15 min)

Writes a markdown table to ``bench/results/end_to_end.md`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import cpu_model, gpu_description, load_average

from pipeline.common import Paths, atomic_write_text
from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
from pipeline.store.artifacts import Artifacts, dataset_file
from runpod_train import STEP_NAMES

ROOT = Path(__file__).resolve().parent.parent

DEMO_DATASET = "SYNTH-BTC-EUR_1H_20240101-20251231"
SMOKE_DATASET = "SYNTH-BENCH_1H"


@dataclass
class Scenario:
    """One benchmarked command and its measured runs."""

    name: str
    dataset: str
    extra: list[str]
    walls: list[float] = field(default_factory=list)
    steps: list[dict[int, float]] = field(default_factory=list)

    def command(self) -> str:
        """The command as a user would type it (root shown as ROOT)."""
        return " ".join(
            ["python runpod_main.py", "--dataset", self.dataset, *self.extra, "--root ROOT"]
        )


def run_once(sc: Scenario, bars: int) -> None:
    """Run the scenario in a fresh temp root; record wall time and per-step seconds."""
    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as tmp:
        root = Path(tmp)
        target = dataset_file(root / "datasets", sc.dataset)
        if sc.dataset == DEMO_DATASET:
            target.parent.mkdir(parents=True)
            shutil.copy(dataset_file(ROOT / "datasets", DEMO_DATASET), target)
        else:
            write_ohlcv_csv(generate_ohlcv(bars, signal=1.0, seed=11), target)
        env = {k: v for k, v in os.environ.items() if k not in ("PIPELINE_HOME", "GITHUB_TOKEN")}
        cmd = [
            sys.executable,
            str(ROOT / "runpod_main.py"),
            "--dataset",
            sc.dataset,
            *sc.extra,
            "--root",
            str(root),
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            # The driver's lines are on stdout, runpod_main's own on stderr: show the errors.
            errors = [ln for ln in proc.stdout.splitlines() if "error" in ln.lower()]
            tail = "\n".join(errors[-10:]) + "\n" + proc.stderr[-1500:]
            raise SystemExit(f"{sc.name} run failed with exit code {proc.returncode}:\n{tail}")
        summary_file = Artifacts(Paths.from_root(root), sc.dataset).run_summary
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
        sc.walls.append(wall)
        sc.steps.append({s["number"]: float(s["seconds"] or 0.0) for s in summary["steps"]})
        print(f"{sc.name}: {wall:.1f} s", file=sys.stderr)


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


def report(scenarios: list[Scenario]) -> str:
    """The markdown page: machine, commands, per-step medians."""
    ran = [s for s in scenarios if s.walls]
    load = load_average()
    lines = [
        "# End-to-end run time (`bench/bench_end_to_end.py`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {gpu_description()}",
        f"Python {platform.python_version()}; 1-min load average at the end: {load:.2f} "
        "(other jobs on the machine inflate the numbers).",
        "",
        "Commands (each run from an empty artifact root `ROOT`, nothing reused):",
        "",
    ]
    for s in ran:
        lines.append(f"- {s.name} ({len(s.walls)} run(s)): `{s.command()}`")
    lines += [
        "",
        "Median seconds per step (from `results/run_summary_{dataset}.json`) and total wall "
        "time of `runpod_main.py` (preflight and interpreter start-up included):",
        "",
        "| step | " + " | ".join(s.name for s in ran) + " |",
        "|---|" + "---:|" * len(ran),
    ]
    for n, name in STEP_NAMES.items():
        cells = [_median([r.get(n, 0.0) for r in s.steps]) for s in ran]
        lines.append(f"| {n} {name} | " + " | ".join(cells) + " |")
    lines.append("| **total wall** | " + " | ".join(f"**{_median(s.walls)}**" for s in ran) + " |")
    lines.append("")
    for s in ran:
        if len(s.walls) > 1:
            runs = ", ".join(f"{w:.1f}" for w in s.walls)
            lines.append(f"{s.name} wall times: {runs} s.")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios and write bench/results/end_to_end.md."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke-runs", type=int, default=3, help="smoke runs (median reported)")
    p.add_argument("--demo-runs", type=int, default=0, help="demo runs (each up to 15 min)")
    p.add_argument("--bars", type=int, default=2000, help="bars of the smoke dataset")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override added to every command (shown in the report)",
    )
    p.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "end_to_end.md", help="report"
    )
    args = p.parse_args(argv)
    extra = [a for o in args.overrides for a in ("--set", o)]
    scenarios = [
        Scenario("smoke", SMOKE_DATASET, ["--preset", "smoke", "--no-push", *extra]),
        Scenario("demo", DEMO_DATASET, ["--preset", "demo", "--no-push", *extra]),
    ]
    for _ in range(args.smoke_runs):
        run_once(scenarios[0], args.bars)
    for _ in range(args.demo_runs):
        run_once(scenarios[1], args.bars)
    text = report(scenarios)
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
