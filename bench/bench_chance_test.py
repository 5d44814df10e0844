"""Is it luck, or a leak? The chance test and the leak alarms on honest data.

Step 5 (all four classifiers, the logistic regression, the permuted-label control) on GARCH
random walks with no direction signal (``signal = 0``: volatility clusters only, the case where
"macro-F1 above 1/3" called honest data an edge) and on planted-signal series
(``pipeline.data.synthetic``, momentum), several seeds each. Per series: each model's test macro-F1,
the shuffled-label baseline, direction and its p-value on the effective sample size, the verdict,
and every leak alarm raised. The honest rows must all read "chance" with no alarm.

    python bench/bench_chance_test.py                  # 5 honest walks + 2 signal series, 12k bars
    python bench/bench_chance_test.py --bars 6000 --seeds 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

from _common import cpu_model, gpu_description

HERE = Path(__file__).resolve().parent

SETTINGS = [
    "epochs=8",
    "patience=4",
    "lookback=32",
    "training.device=cpu",
    "ppo_prediction_source=in_sample",  # no walk-forward folds: step 5's test block is the point
]


def run_series(signal: float, seed: int, bars: int) -> dict:
    """Step 5 on one generated series; its summary."""
    import train_models
    from pipeline.common import Paths
    from pipeline.config.files import load_config
    from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv = root / "datasets" / "S.csv"
        write_ohlcv_csv(generate_ohlcv(bars, signal=signal, seed=seed), csv)
        cfg = load_config(None, None, "smoke", SETTINGS)
        with contextlib.redirect_stdout(io.StringIO()):
            return dict(
                train_models.train_classifiers(
                    cfg, "S", Paths.from_root(root), list(train_models.MODEL_NAMES)
                )
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bars", type=int, default=12000, help="bars per series")
    p.add_argument("--seeds", type=int, default=5, help="honest random walks (seeds 100..)")
    p.add_argument("--signals", default="0.3,1.0", help="planted-signal strengths (seed 200)")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    series = [(0.0, 100 + i) for i in range(args.seeds)]
    series += [(float(s), 200) for s in args.signals.split(",") if s.strip()]
    lines = [
        "# Is it luck, or a leak? (`bench/bench_chance_test.py`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores, {gpu_description()}; Python "
        f"{platform.python_version()}.",
        f"Command: `python bench/bench_chance_test.py --bars {args.bars} --seeds {args.seeds} "
        f"--signals {args.signals}`; step 5 with the smoke preset and {' '.join(SETTINGS)}.",
        "",
        "| series | model | test F1 | shuffled labels (95 %) | logreg F1 | direction | "
        "independent calls | p | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    alarm_lines = []
    honest_ok = True
    t0 = time.perf_counter()
    for signal, seed in series:
        s = run_series(signal, seed, args.bars)
        name = f"{'GARCH walk' if signal == 0 else f'signal {signal}'} seed {seed}"
        for model, e in s["models"].items():
            perm = f"{e['chance_macro_f1']:.3f}"
            lines.append(
                f"| {name} | {model} | {e['test_macro_f1']:.3f} | {perm} | "
                f"{e['logreg_test_macro_f1']:.3f} | {e['direction_accuracy']:.1%} | "
                f"{e['direction_calls'] / e['label_horizon']:.0f} | {e['direction_p_value']:.2g} "
                f"| {e['verdict']} |"
            )
            if signal == 0 and e["beats_chance_on_test"]:
                honest_ok = False
        c = s.get("permutation_control") or {}
        alarm_lines.append(
            f"- {name}: {len(s['alarms'])} alarm(s)"
            + "".join(f"; `{a['check']}` {a['subject']}" for a in s["alarms"])
            + f". Permuted-label control ({c.get('model')}): "
            f"{'ABOVE chance' if c.get('beats_chance_on_test') else 'at chance'}."
        )
        if signal == 0 and s["alarms"]:
            honest_ok = False
        print(name, "done", flush=True)
    lines += ["", "Leak alarms:", "", *alarm_lines, ""]
    lines.append(
        "Reading: on the honest walks the logistic regression and the networks score above 1/3 "
        "macro-F1 (volatility clusters make the Stationary class partly predictable, and the "
        "shuffled-label baseline shows the models beat their own class shares), yet direction "
        "stays at chance on the effective sample size, so every verdict reads chance. The "
        "planted signals pass the direction test; the signal-1.0 series (stronger than any "
        "market) also trips the direction alarm (default 65 %), the 0.3 series does not."
    )
    lines.append(
        f"Honest walks: {'every model at chance and no alarm' if honest_ok else 'FAILED'}. "
        f"Wall time {time.perf_counter() - t0:.0f} s."
    )
    out = HERE / "results" / "chance_test.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if honest_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
