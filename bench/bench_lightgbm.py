"""LightGBM's settings on the classifier ladder's series (issue 17).

Each variant is fit on step 5's own windows, scaler, labels and blocks (demo preset, the main
model's train block) and scored like step 5 scores it: macro-F1 on the validation block (where
``prediction_model = auto`` compares the models) and on the test block. Variants: the settings
before 2026-12-07 (``learning rate 0.05, 15 leaves, 50 rows a leaf, no L2``) and the defaults
now (``0.02, 7, 200, L2 10``), each with its boosting rounds early-stopped on the validation
block (as before) or chosen on an inner split of the training block and refit on all of it (as
now, :func:`pipeline.classifiers.tabular.inner_split`). Per variant and set: the mean test
macro-F1 and the mean of validation minus test (how much the validation block flatters it).
Development set: the ladder's rows but pure noise, 3 seeds, and the real EURUSD / GOOG candles;
confirmation set: the ladder's ``--confirm`` series.

    python bench/bench_lightgbm.py
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import cpu_model, gpu_description
from bench_classifier_ladder import (
    BUNDLED,
    CONFIRM_ROWS,
    CONFIRM_SEED0,
    REAL,
    ROWS,
    SETTINGS,
    sample_csv,
)

from pipeline.classifiers.fit_plan import main_plan
from pipeline.classifiers.report import labelled_bars
from pipeline.classifiers.tabular import LIGHTGBM_EARLY_STOP, fit_lightgbm, tabular_data
from pipeline.classifiers.training_records import evaluate_bars
from pipeline.common import Paths
from pipeline.config.files import load_config
from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv

HERE = Path(__file__).resolve().parent
BEFORE = {
    "lightgbm_learning_rate": 0.05,
    "lightgbm_leaves": 15,
    "lightgbm_min_leaf_rows": 50,
    "lightgbm_l2": 0.0,
    "lightgbm_rounds": 400,
}
"""The LightGBM settings before 2026-12-07."""
VARIANTS = (
    ("before, stopped on validation", BEFORE, "validation"),
    ("before, inner stop", BEFORE, "inner"),
    ("now, stopped on validation", {}, "validation"),
    ("now (inner stop, the default)", {}, "inner"),
)


def fit_on_validation(cfg, prep, plan, bars):  # noqa: ANN001, ANN201
    """LightGBM as step 5 fit it before: rounds early-stopped on the validation block itself."""
    import lightgbm
    from sklearn.utils.class_weight import compute_sample_weight

    from pipeline.classifiers.nets import BoosterClassifier
    from pipeline.device import configure_cpu_threads

    x_fit, y_fit, x_es, y_es = tabular_data(prep, plan, bars, spread=True)
    own = cfg.model_params("lightgbm")
    params = {
        "objective": "multiclass",
        "num_class": 3,
        "learning_rate": own["learning_rate"],
        "num_leaves": own["leaves"],
        "min_data_in_leaf": own["min_leaf_rows"],
        "lambda_l2": own["l2"],
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": cfg.seed,
        "deterministic": True,
        "num_threads": configure_cpu_threads(cfg.num_threads),
        "verbosity": -1,
    }

    def data(x, y):  # noqa: ANN001, ANN202
        return lightgbm.Dataset(x, y, weight=compute_sample_weight("balanced", y))

    booster = lightgbm.train(
        params,
        data(x_fit, y_fit),
        num_boost_round=own["rounds"],
        valid_sets=[data(x_es, y_es)],
        callbacks=[lightgbm.early_stopping(LIGHTGBM_EARLY_STOP, verbose=False)],
    )
    return BoosterClassifier(booster.model_to_string(num_iteration=booster.best_iteration or None))


def score(write: Callable[[Path], None]) -> dict[str, tuple[float, float]]:
    """``{variant: (validation macro-F1, test macro-F1)}`` on one series."""
    import torch

    from pipeline.classifiers.prepare import load_classifier_data

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "datasets").mkdir()
        write(root / "datasets" / "X.csv")
        base = load_config(None, None, "demo", SETTINGS).training
        prep = load_classifier_data(base, "X", Paths.from_root(root), save_scaler=False)
        plan = main_plan(prep)
        bars = (labelled_bars(plan.fit, plan.labels), labelled_bars(plan.early_stop, plan.labels))
        test = labelled_bars(prep.arrays.splits.test, prep.arrays.labels)
        for name, changes, stop in VARIANTS:
            cfg = dataclasses.replace(base, **changes)
            if stop == "validation":
                model = fit_on_validation(cfg, prep, plan, bars)
            else:
                model = fit_lightgbm(cfg, prep, plan, bars)[0]
            cpu = torch.device("cpu")
            val_f1 = evaluate_bars(model, prep, bars[1], cpu)["macro_f1"]
            out[name] = (float(val_f1), float(evaluate_bars(model, prep, test, cpu)["macro_f1"]))
    return out


def series(confirm: bool) -> list[tuple[str, Callable[[Path], None]]]:
    """``(label, writer)`` of every series of the development or confirmation set."""
    jobs: list[tuple[str, Callable[[Path], None]]] = []
    seed0 = CONFIRM_SEED0 if confirm else 0
    for label, kind, signal in CONFIRM_ROWS if confirm else ROWS:
        if signal == 0.0:
            continue  # pure noise: nothing to score but chance
        for seed in range(seed0 + 1, seed0 + 4):

            def write(path: Path, k: str = kind, s: float = signal, sd: int = seed) -> None:
                write_ohlcv_csv(generate_ohlcv(8000, signal=s, seed=sd, kind=k), path)

            jobs.append((f"{label} seed {seed}", write))
    reals = [(BUNDLED, HERE.parent / "datasets" / f"{BUNDLED}.csv")] if confirm else []
    if not confirm:
        reals += [(label, sample_csv(name)) for label, name in REAL]
    for label, src in reals:
        if src is not None:
            jobs.append((label, lambda path, s=src: shutil.copy(s, path)))
    return jobs


def main() -> int:
    logging.disable(logging.WARNING)
    t0 = time.perf_counter()
    lines = [
        "# LightGBM's settings (`bench/bench_lightgbm.py`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores, {gpu_description()}; Python "
        f"{platform.python_version()}.",
        "Command: `python bench/bench_lightgbm.py`: LightGBM alone on step 5's windows, blocks "
        "and labels (demo preset, 8,000-bar synthetic series, 3 seeds a row; real candles as "
        "they are). Cells: mean test macro-F1 over the set; in brackets the mean of validation "
        "minus test macro-F1 (positive: the validation block flatters it).",
        "",
        "| variant | development set | confirmation set |",
        "|---|---|---|",
    ]
    labels = {c: [label for label, _ in series(c)] for c in (False, True)}
    results = {c: [score(w) for _, w in series(c)] for c in (False, True)}
    for name, _changes, _stop in VARIANTS:
        cells = []
        for confirm in (False, True):
            runs = [r[name] for r in results[confirm]]
            test = statistics.mean(t for _, t in runs)
            gap = statistics.mean(v - t for v, t in runs)
            cells.append(f"{test:.4f} ({gap:+.4f}, {len(runs)} series)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Each series' test macro-F1:",
        "",
        "| series | " + " | ".join(name for name, _c, _s in VARIANTS) + " |",
        "|---|" + "---|" * len(VARIANTS),
    ]
    for confirm in (False, True):
        for label, r in zip(labels[confirm], results[confirm], strict=True):
            cells = " | ".join(f"{r[name][1]:.3f}" for name, _c, _s in VARIANTS)
            lines.append(f"| {label}{' (confirmation)' if confirm else ''} | {cells} |")
    lines += ["", f"Wall time {time.perf_counter() - t0:.0f} s."]
    text = "\n".join(lines) + "\n"
    (HERE / "results" / "lightgbm.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
