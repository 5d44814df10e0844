"""The start-of-run estimate against what step 5 takes: the cost model's reference points.

``pipeline.run.estimate`` says at a run's start about how long it will take. Its step-5 model
charges each network ``NET_SECONDS * params**NET_EXPONENT`` seconds per training window, epoch
and lookback bar. This runs step 5 (``train_models.train_classifiers``, every model of the config)
from an empty root on two configurations, the demo preset on the bundled dataset and the default
config (its full-size networks) on a 4,000-bar synthetic series with ``epochs = 2``, and reads
each network's own train seconds and epochs from the training summary: per network its
parameters, the measured seconds per window-epoch-bar and the model's, then step 5's wall time
against the estimate's step 5. ``--runs`` repeats each (median).

    python bench/bench_estimate.py --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import cpu_model, gpu_description, load_average

import train_models
from pipeline.classifiers.prepare import load_classifier_data
from pipeline.classifiers.report import labelled_bars
from pipeline.common import Paths
from pipeline.config.files import load_config
from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
from pipeline.run import estimate

HERE = Path(__file__).resolve().parent
BUNDLED = HERE.parent / "datasets" / "SYNTH-BTC-EUR_1H_20240101-20251231.csv"
CASES = (
    ("demo preset, bundled dataset", "demo", 0, []),
    ("default config, epochs = 2, 4,000 bars", None, 4000, ["epochs=2"]),
)
SETTINGS = ["training.device=cpu"]


def run_case(preset: str | None, bars: int, sets: list[str]) -> dict:
    """Step 5 once from an empty root: wall seconds, rows, train windows, per-network results."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "datasets").mkdir()
        csv = root / "datasets" / "EST_1H.csv"
        if bars:
            write_ohlcv_csv(generate_ohlcv(bars, signal=0.5, seed=1), csv)
        else:
            shutil.copy(BUNDLED, csv)
        cfg = load_config(None, None, preset, [*SETTINGS, *sets])
        paths = Paths.from_root(root)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            summary = train_models.train_classifiers(
                cfg, "EST_1H", paths, list(cfg.training.models)
            )
        wall = time.perf_counter() - t0
        prep = load_classifier_data(cfg.training, "EST_1H", paths, save_scaler=False)
    windows = len(labelled_bars(prep.arrays.splits.train, prep.arrays.labels))
    nets = {}
    for name, params in estimate.network_parameters(cfg).items():
        m = summary["models"][name]
        per_bar = m["train_seconds"] / (windows * m["epochs_run"] * cfg.training.lookback)
        nets[name] = (params, m["epochs_run"], m["train_seconds"], per_bar)
    predicted = estimate.estimate_seconds(cfg, prep.arrays.n_bars, [5], cuda=False)["5"]
    return {"wall": wall, "rows": prep.arrays.n_bars, "windows": windows, "nets": nets,
            "predicted": predicted}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="runs of each case (median)")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    lines = [
        "# The start-of-run estimate against step 5 (`bench/bench_estimate.py`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores, {gpu_description()}; Python "
        f"{platform.python_version()}.",
        f"Command: `python bench/bench_estimate.py --runs {args.runs}` (step 5 from an empty "
        f"root, every model of the config, {' '.join(SETTINGS)}; medians of {args.runs} runs). "
        f"The cost model (pipeline/run/estimate.py): {estimate.NET_SECONDS:g} x params^"
        f"{estimate.NET_EXPONENT:g} seconds per network, training window, epoch and lookback "
        "bar.",
        "",
        "| case | network | parameters | epochs run | train s | measured us per window-epoch-"
        "bar | model's us |",
        "|---|---|---|---|---|---|---|",
    ]
    totals = []
    for label, preset, bars, sets in CASES:
        runs = [run_case(preset, bars, sets) for _ in range(args.runs)]
        for name in runs[0]["nets"]:
            params = runs[0]["nets"][name][0]
            epochs = statistics.median(r["nets"][name][1] for r in runs)
            secs = statistics.median(r["nets"][name][2] for r in runs)
            per_bar = statistics.median(r["nets"][name][3] for r in runs)
            model = estimate.NET_SECONDS * params**estimate.NET_EXPONENT
            lines.append(
                f"| {label} | {name} | {params:,} | {epochs:g} | {secs:.1f} | "
                f"{per_bar * 1e6:.2f} | {model * 1e6:.2f} |"
            )
            print(lines[-1], flush=True)
        wall = statistics.median(r["wall"] for r in runs)
        each = ", ".join(f"{r['wall']:.1f}" for r in runs)
        totals.append(
            f"{label} ({runs[0]['rows']:,} rows, {runs[0]['windows']:,} train windows): step 5 "
            f"took {wall:.1f} s (runs: {each}), the "
            f"estimate says {runs[0]['predicted']:.1f} s"
        )
    lines += ["", "Step 5 against its estimate: " + "; ".join(totals) + "."]
    lines.append(f"1-min load average at the end: {load_average():.2f}.")
    (HERE / "results" / "estimate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
