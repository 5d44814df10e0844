"""How much is there to learn on the ladder's sequential rows beyond what logreg already sees?

The classifier ladder (``bench_classifier_ladder.py``) asks the model ``prediction_model = auto``
chooses to score ABOVE the best of logreg and LightGBM where the signal is sequential. That only
makes sense where a model can get above them. On ``echo``, ``echo_blip`` and ``vol_echo`` the
generator's planted signal is a function of past shocks
(:func:`pipeline.data.synthetic.planted_signal`), so it can be handed to a model as an oracle
feature. Each oracle here is logreg's own view (the window's last bar and mean of the 26 features)
plus what the generator planted, a multinomial logistic regression fitted like logreg on the same
fit block: the next bar's volatility alone (what knowing the volatility adds); that and the planted
part of the label return from the true shocks (an upper reference: it sees shocks older than the
window); and the same part rebuilt from the shocks as the candles show them (each still carrying
the echo of a shock older than the window): a reference for what a model reading the window can
reach (not a bound: a model may weigh the bars better). The window oracle's lead over the best of
logreg and LightGBM is the room a sequential model has; where that room is about one standard
error, no chooser that leaves the test block alone can be expected to land above both.

Per row, bars and seed (the ladder's series, demo preset, the pipeline's own splits, scaler,
labels and fitting code): test macro-F1 of logreg, LightGBM, ``window_logreg`` and the oracles,
the room, and the room in overlap-corrected standard errors.

    python bench/bench_ladder_headroom.py                       # 8,000 and 40,000 bars, 3 seeds
    python bench/bench_ladder_headroom.py --bars 8000 --seeds 1 --kinds echo_blip
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import cpu_model, gpu_description
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from pipeline.classifiers.fit_plan import main_plan
from pipeline.classifiers.metrics import classification_metrics
from pipeline.classifiers.prepare import load_classifier_data
from pipeline.classifiers.report import labelled_bars, macro_f1_standard_error
from pipeline.classifiers.tabular import (
    fit_lightgbm,
    fit_logreg,
    fit_window_logreg,
    window_summary,
)
from pipeline.classifiers.windows import WindowData, predict_proba
from pipeline.common import Paths
from pipeline.config.files import load_config
from pipeline.data.synthetic import PLANTED_KINDS, generate_ohlcv, planted_signal, write_ohlcv_csv

HERE = Path(__file__).resolve().parent
SIGNAL = 1.0
"""The ladder's signal strength on its ``echo``, ``echo_blip`` and ``vol_echo`` rows."""
SETTINGS = ["leak_controls=false", "training.device=cpu"]


def score(model: torch.nn.Module, scaled: np.ndarray, bars: np.ndarray, y: np.ndarray, lb: int):
    """Test macro-F1 of a fitted pipeline model on ``bars`` (its own windows and predictor)."""
    data = WindowData.create(scaled, bars, None, lb, torch.device("cpu"))
    return classification_metrics(y, predict_proba(model, data).argmax(axis=1))["macro_f1"]


def one(
    kind: str, bars_n: int, seed: int, signal: float = SIGNAL, lookback: int | None = None
) -> dict[str, float]:
    """Test macro-F1 of logreg, LightGBM, window_logreg and the three oracles, and the s.e., on
    one series; ``lookback`` overrides the demo preset's window."""
    sets = SETTINGS + ([f"lookback={lookback}"] if lookback else [])
    cfg = load_config(None, None, "demo", sets).training
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "datasets").mkdir()
        df = generate_ohlcv(bars_n, signal=signal, seed=seed, kind=kind)
        write_ohlcv_csv(df, root / "datasets" / "HEADROOM_1H.csv")
        prep = load_classifier_data(cfg, "HEADROOM_1H", Paths.from_root(root), save_scaler=False)
    plan, a = main_plan(prep), prep.arrays
    fit_b = labelled_bars(plan.fit, plan.labels)
    es_b = labelled_bars(plan.early_stop, plan.labels)
    test_b = labelled_bars(a.splits.test, a.labels)
    y_fit, y_test = a.labels[fit_b].astype(np.int64), a.labels[test_b].astype(np.int64)
    lb = a.lookback
    out: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        out["logreg"] = score(
            fit_logreg(cfg, prep, plan, (fit_b, es_b)), a.scaled, test_b, y_test, lb
        )
        out["lightgbm"] = score(
            fit_lightgbm(cfg, prep, plan, (fit_b, es_b))[0], a.scaled, test_b, y_test, lb
        )
        out["window_logreg"] = score(
            fit_window_logreg(cfg, prep, plan, (fit_b, es_b))[0], a.scaled, test_b, y_test, lb
        )
    # (N,) each: the planted label part from the true shocks, from the shocks as the candles
    # show them, and each bar's volatility (the label's class needs their ratio)
    planted, sigma = planted_signal(bars_n, signal, seed, kind, a.k)
    seen = np.log(df["close"].to_numpy() / df["open"].to_numpy()) / sigma  # (N,)
    planted_seen, _ = planted_signal(bars_n, signal, seed, kind, a.k, shocks=seen)
    inv_vol = 1.0 / np.concatenate((sigma[1:], sigma[-1:]))  # (N,) 1 / sigma_{t+1}
    c = cfg.model_params("logreg")["c"]
    for name, extra in (
        ("vol_oracle", [inv_vol]),
        ("window_oracle", [planted_seen, inv_vol]),
        ("oracle", [planted, inv_vol]),
    ):
        cols = np.column_stack(extra)  # (N, 1 or 2)
        scaler = StandardScaler().fit(cols[fit_b])

        def view(b: np.ndarray, cols: np.ndarray = cols, sc: StandardScaler = scaler) -> np.ndarray:
            return np.hstack([window_summary(plan.scaled, b, lb), sc.transform(cols[b])])

        sk = LogisticRegression(C=c, max_iter=3000, class_weight="balanced", random_state=cfg.seed)
        sk.fit(view(fit_b), y_fit)
        out[name] = classification_metrics(y_test, sk.predict(view(test_b)))["macro_f1"]
    out["se"] = macro_f1_standard_error(len(test_b), a.k)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="seeds per row (1, 2, ...), as the ladder")
    p.add_argument("--bars", default="8000,40000", help="comma-separated series lengths")
    p.add_argument(
        "--kinds", default=",".join(PLANTED_KINDS), help="comma-separated generator kinds"
    )
    p.add_argument(
        "--signals",
        default=str(SIGNAL),
        help="comma-separated signal strengths (the ladder's rows use 1.0 and its strong rows "
        "the strength this bench chose: see STRONG in bench_classifier_ladder.py)",
    )
    p.add_argument(
        "--lookbacks",
        default="",
        help="comma-separated window lengths (default: the demo preset's, 32; the default config "
        "uses 60: a window past the 24-bar echo's own echo, 48 bars back)",
    )
    args = p.parse_args(argv)
    signals = [float(s) for s in args.signals.split(",")]
    lookbacks = [int(b) for b in args.lookbacks.split(",")] if args.lookbacks else [None]
    logging.disable(logging.WARNING)
    lengths = [int(b) for b in args.bars.split(",")]
    lines = [
        "# Headroom on the ladder's sequential rows"
        + (f", {' against '.join(args.lookbacks.split(','))} bars" if args.lookbacks else "")
        + " (`bench/bench_ladder_headroom.py`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores, {gpu_description()}; Python "
        f"{platform.python_version()}.",
        f"Command: `python bench/bench_ladder_headroom.py --seeds {args.seeds} --bars "
        f"{args.bars} --kinds {args.kinds} --signals {args.signals}"
        + (f" --lookbacks {args.lookbacks}" if args.lookbacks else "")
        + "`: the ladder's series, "
        "demo preset, "
        f"{' '.join(SETTINGS)}. Cells: test macro-F1 of the main model fitted on the train "
        "block. Each oracle is logreg's view plus what the generator planted, fitted like logreg: "
        "'volatility' adds the next bar's volatility only; 'true shocks' adds it and the planted "
        "part of the label return; 'window' the same part rebuilt from the shocks as the candles "
        "show them (each still carrying the echo of a shock older than the window): about the "
        "best a model reading the window can do. Room = the window oracle minus the best of "
        "logreg and LightGBM, also in overlap-corrected standard errors; window_logreg's share = "
        "its lead over that best as a share of the room; lead = window_logreg minus that best.",
        "",
        "| row | signal | bars | lookback | seed | logreg | lightgbm | window_logreg | lead | "
        "oracle: volatility | true shocks | window | room | s.e. | room / s.e. | "
        "window_logreg's share |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rooms: dict[tuple[str, float, int, int | None], list[float]] = {}
    leads: dict[tuple[str, float, int, int | None], list[float]] = {}
    t0 = time.perf_counter()
    for kind, sig, n, lb in itertools.product(args.kinds.split(","), signals, lengths, lookbacks):
        for seed in range(1, args.seeds + 1):
            r = one(kind, n, seed, sig, lb)
            tab = max(r["logreg"], r["lightgbm"])
            room = r["window_oracle"] - tab
            lead = r["window_logreg"] - tab
            share = f"{lead / room:.0%}" if room > 0 else "-"
            rooms.setdefault((kind, sig, n, lb), []).append(room / r["se"])
            leads.setdefault((kind, sig, n, lb), []).append(lead / r["se"])
            lines.append(
                f"| {kind} | {sig:g} | {n:,} | {lb or 'demo'} | {seed} | {r['logreg']:.3f} | "
                f"{r['lightgbm']:.3f} | {r['window_logreg']:.3f} | {lead:+.3f} | "
                f"{r['vol_oracle']:.3f} | {r['oracle']:.3f} | "
                f"{r['window_oracle']:.3f} | {room:+.3f} | {r['se']:.3f} | "
                f"{room / r['se']:+.1f} | {share} |"
            )
            print(lines[-1], flush=True)

    def at(k: str, sig: float, n: int, lb: int | None) -> str:
        return f"{k} {sig:g} at {n:,} bars" + (f", lookback {lb}" if lb else "")

    lines += [
        "",
        "Mean room over the best tabular model, in standard errors: "
        + "; ".join(f"{at(*key)} {sum(v) / len(v):+.1f}" for key, v in rooms.items())
        + ".",
        "Mean lead of window_logreg over the best tabular model, in standard errors: "
        + "; ".join(f"{at(*key)} {sum(v) / len(v):+.1f}" for key, v in leads.items())
        + f". Wall time {time.perf_counter() - t0:.0f} s.",
    ]
    suffix = "" if signals == [SIGNAL] else f"_signals-{args.signals.replace(',', '-')}"
    suffix += f"_lookbacks-{args.lookbacks.replace(',', '-')}" if args.lookbacks else ""
    (HERE / "results" / f"ladder_headroom{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
