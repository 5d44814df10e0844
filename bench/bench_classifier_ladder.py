"""The classifier ladder: where does each model's edge come from?

Step 5 (every model of ``MODEL_NAMES``: the four networks, ``logreg``, ``window_logreg`` and
``lightgbm``) on series
whose signal lives in different places (``pipeline.data.synthetic`` kinds): ``momentum`` (past
returns, per-bar features see it), ``vol_trend`` (an interaction of trend and volatility: a linear
model cannot see it), ``echo`` (each shock repeats 24 bars later: an ordering a per-bar summary
blurs, a model reading the window bar by bar can use; linear in past returns, so logreg's
multi-bar returns see most of it: ``bench_ladder_headroom.py``), ``echo_blip`` (each shock back 24
bars later for one bar and taken back the next: multi-bar sums net it out), ``echo_ar`` (the
same blip of the bar's return as the candles show it: all of it inside the window, so a model
reading the window has the most to find), ``vol_echo`` (each shock's SIZE comes back 24
bars later: no linear view of past returns sees it), pure noise, and real candles (the
``backtesting`` package's hourly EURUSD and daily GOOG samples, when installed). ``--seeds``
seeds each. Per row: each model's test macro-F1 and direction, which model ``prediction_model =
auto`` chose (best validation macro-F1), and whether that choice is within one standard error of
the best of ``logreg`` and ``lightgbm`` on the test block (the target), and how many models beat
chance by the corrected test (on noise none may). ``--ensembles``: every model's walk-forward table,
so ``auto`` may choose an ensemble (weighted voting or stacking fitted on out-of-fold rows,
:mod:`pipeline.classifiers.ensembles`).

    python bench/bench_classifier_ladder.py                 # 3 seeds, 8,000 bars, demo preset
    python bench/bench_classifier_ladder.py --seeds 1 --bars 4000
    python bench/bench_classifier_ladder.py --ensembles     # auto may choose an ensemble
    python bench/bench_classifier_ladder.py --replay bench/results/runs/classifier_ladder.jsonl.gz

Every run's step-5 summary is saved as it ends (``bench/results/runs/``), so ``--replay`` rebuilds
the table with another rule of ``prediction_model = auto`` without training again, and ``--resume``
finishes a run that was cut short, training only the runs it had not ended.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.util
import io
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import cpu_model, gpu_description

import train_models
from pipeline.classifiers.model_choice import best_on_validation
from pipeline.common import Paths
from pipeline.config.files import load_config
from pipeline.config.schema import MODEL_NAMES, NETWORK_NAMES
from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv

HERE = Path(__file__).resolve().parent
RUNS = HERE / "results" / "runs"
"""Each run's step-5 summary, one gzipped JSON line per run (``--replay`` rebuilds a table)."""
ROWS = (
    ("momentum 0.5", "momentum", 0.5),
    ("vol_trend 1.0", "vol_trend", 1.0),
    ("echo 1.0", "echo", 1.0),
    ("echo_blip 1.0", "echo_blip", 1.0),
    ("echo_ar 1.0", "echo_ar", 1.0),
    ("vol_echo 1.0", "vol_echo", 1.0),
    ("pure noise", "momentum", 0.0),
)
CONFIRM_ROWS = (
    ("regime 0.5", "regime", 0.5),
    ("mean_reversion 1.0", "mean_reversion", 1.0),
    ("momentum 0.5, other seeds", "momentum", 0.5),
    ("vol_trend 1.0, other seeds", "vol_trend", 1.0),
    ("echo_blip 1.0, other seeds", "echo_blip", 1.0),
    ("echo_ar 1.0, other seeds", "echo_ar", 1.0),
    ("vol_echo 1.0, other seeds", "vol_echo", 1.0),
)
"""``--confirm``: series no default was chosen on (kinds the ladder never ran, and seeds
``CONFIRM_SEED0 + 1 ...`` of five of its kinds: the sequential rows of one seed share their
noise, so seeds 1-3 are three draws for all four, not twelve), plus the bundled dataset: a
setting chosen on the ladder's rows is kept only if it holds here too."""
CONFIRM_SEED0 = 100
BUNDLED = "SYNTH-BTC-EUR_1H_20240101-20251231"
SETTINGS = ["ppo_prediction_source=in_sample", "leak_controls=false", "training.device=cpu"]
ENSEMBLE_SETTINGS = [
    "ppo_prediction_source=walk_forward",
    "walk_forward_models=all",
    "prediction_model=auto",
    "leak_controls=false",
    "training.device=cpu",
]
"""``--ensembles``: out-of-fold tables for every model, so auto's ensembles are candidates."""
SEQUENTIAL = ("echo", "echo_blip", "echo_ar", "vol_echo")
"""Rows whose signal is an ordering inside the window: there the target is the auto choice ABOVE
the best tabular model, not only within one s.e."""
TABULAR = ("logreg", "lightgbm")
"""The baselines of the target: the issue's "best of logreg and LightGBM" (``window_logreg``, a
candidate of auto like the networks, is not one of them)."""


REAL = (("EURUSD hourly (real)", "EURUSD.csv"), ("GOOG daily (real)", "GOOG.csv"))
"""Real candles: the ``backtesting`` package's sample CSVs (``pip install backtesting``)."""


def sample_csv(name: str) -> Path | None:
    """A sample CSV of the backtesting package (found without importing it), or None."""
    spec = importlib.util.find_spec("backtesting")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "test" / name
    return path if path.is_file() else None


def run(csv_writer: object, name: str, sets: list[str]) -> dict:
    """Step 5 on one dataset in a temp root; the training summary."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "datasets").mkdir()
        csv_writer(root / "datasets" / f"{name}.csv")  # type: ignore[operator]
        cfg = load_config(None, None, "demo", sets)
        with contextlib.redirect_stdout(io.StringIO()):
            return dict(
                train_models.train_classifiers(cfg, name, Paths.from_root(root), list(MODEL_NAMES))
            )


def validation_leaders(summary: dict, k: int = 3) -> str:
    """The ``k`` best models on each block a chooser could look at: step 5's validation block and,
    with ``--ensembles``, the out-of-fold agent-val rows its ensembles are fitted on."""

    def top(scores: dict[str, float]) -> str:
        best = sorted(scores.items(), key=lambda kv: -kv[1])[:k]
        return ", ".join(f"{m} {v:.3f}" for m, v in best)

    val = {n: m["val_macro_f1"] for n, m in summary["models"].items() if "val_macro_f1" in m}
    out = f"validation block {top(val)}"
    oof = ((summary.get("auto_ensemble") or {}).get("scores") or {}).get("val") or {}
    oof = {n: v for n, v in oof.items() if n != "ensemble"}
    return out + (f"; out-of-fold agent-val rows {top(oof)}" if oof else "")


def auto_choice(summary: dict) -> tuple[str, float, float]:
    """What ``prediction_model = auto`` feeds the agent: ``(name, test macro-F1, s.e.)``. An
    ensemble that step 5 chose (``auto_ensemble.used``) is named by its combination; its s.e. is
    the largest of its members' (the same test rows)."""
    models = summary["models"]
    ens = summary.get("auto_ensemble") or {}
    if ens.get("used"):
        se = max(models[m]["macro_f1_standard_error"] for m in ens["members"])
        return f"ensemble ({ens['choice']})", float(ens["scores"]["test"]["ensemble"]), se
    best = best_on_validation(summary)
    if best is None:
        return "?", 0.0, 0.0
    e = models[best[0]]
    return best[0], float(e["test_macro_f1"]), float(e["macro_f1_standard_error"])


def ensemble_candidate(summary: dict) -> tuple[str, float] | None:
    """``(what, test macro-F1)`` of auto's ensemble candidate whether or not auto used it: the
    combination (or model alone) that scored best on the agent-val rows; ``None`` without one."""
    ens = summary.get("auto_ensemble") or {}
    test = (ens.get("scores") or {}).get("test") or {}
    if "ensemble" not in test:
        return None
    return str(ens.get("choice")), float(test["ensemble"])


def _network_f1(path: Path) -> dict[str, float]:
    """Per row of a results file: the four networks' test macro-F1, mean over models and seeds."""
    per_row: dict[str, list[float]] = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if (
            len(cells) not in (len(MODEL_NAMES) + 4, len(MODEL_NAMES) + 6)
            or not cells[2][:1].isdigit()
        ):
            continue
        nets = [float(c.split("/")[0]) for c in cells[2:6]]  # lstm, gru, bilstm, dlstm
        per_row.setdefault(cells[0], []).append(sum(nets) / len(nets))
    return {k: sum(v) / len(v) for k, v in per_row.items()}


def compare(base: Path, variant: Path) -> int:
    """``--compare BASE VARIANT``: the networks' mean test macro-F1 per row, side by side."""
    a, b = _network_f1(base), _network_f1(variant)
    lines = [
        f"# The classifier ladder: {variant.stem.removeprefix('classifier_ladder_')} against the "
        "defaults",
        "",
        f"Command: `python bench/bench_classifier_ladder.py --compare {base.name} {variant.name}`"
        " (both files from this machine, same seeds and bars).",
        "",
        "| row | networks' mean test macro-F1, base | variant | variant / base |",
        "|---|---|---|---|",
    ]
    for k in a:
        if k in b:
            lines.append(f"| {k} | {a[k]:.4f} | {b[k]:.4f} | {b[k] / a[k]:.3f} |")
    out = (
        HERE
        / "results"
        / f"classifier_ladder_compare_{variant.stem.removeprefix('classifier_ladder_')}.md"
    )
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def selection_shifts(models: dict) -> dict[str, float]:
    """Per model: (its validation macro-F1 - logreg's) - (its test macro-F1 - logreg's), what
    choosing on validation gains or loses against logreg by the time it reaches the test block."""
    lr = models["logreg"]
    out = {}
    for name, m in models.items():
        if name != "logreg" and m.get("val_macro_f1") is not None:
            out[name] = (m["val_macro_f1"] - lr["val_macro_f1"]) - (
                m["test_macro_f1"] - lr["test_macro_f1"]
            )
    return out


def shift_lines(shifts: dict[str, list[float]]) -> list[str]:
    """How far validation rankings move on the test block (is choosing on validation biased?)."""
    nets = [x for n, v in shifts.items() if n in NETWORK_NAMES for x in v]
    if len(nets) < 2:
        return []
    lgb = shifts.get("lightgbm", [])
    wl = shifts.get("window_logreg", [])

    def stat(v: list[float]) -> str:
        return (
            f"mean {statistics.mean(v):+.4f} (s.e. {statistics.stdev(v) / math.sqrt(len(v)):.4f}), "
            f"sd {statistics.stdev(v):.4f} over {len(v)}"
        )

    return [
        "Validation vs test, each model against logreg (its validation lead minus its test lead; "
        "a positive mean would say the early-stopping block flatters it): networks "
        + stat(nets)
        + (f"; lightgbm {stat(lgb)}" if len(lgb) > 1 else "")
        + (f"; window_logreg {stat(wl)}" if len(wl) > 1 else "")
        + "."
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="seeds per synthetic row (1, 2, ...)")
    p.add_argument("--bars", type=int, default=8000, help="bars per synthetic series")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every run (a variant); its results file is named after it",
    )
    p.add_argument(
        "--ensembles",
        action="store_true",
        help="walk-forward tables for every model: prediction_model = auto may pick an ensemble",
    )
    p.add_argument(
        "--rows",
        default="",
        help="comma-separated substrings: only the rows whose label contains one (e.g. echo,noise)",
    )
    p.add_argument(
        "--confirm",
        action="store_true",
        help="the confirmation set instead (kinds and seeds the defaults were not chosen on, and "
        "the bundled dataset); results file classifier_ladder_confirm*.md",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("BASE", "VARIANT"),
        help="only compare two results files (bench/results/...): the networks' mean test F1",
    )
    p.add_argument(
        "--replay",
        type=Path,
        metavar="RUNS",
        help="only rebuild a results table from saved runs (bench/results/runs/*.jsonl.gz) with "
        "this checkout's choice rule; no training",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs that an earlier, cut-short run of the same command on this machine "
        "saved in its runs file, and train only the rest",
    )
    args = p.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if args.replay:
        try:
            return write_report(args.replay)
        except OSError as e:  # missing, unreadable or not gzip (BadGzipFile is an OSError)
            print(
                f"error: --replay {args.replay}: cannot read it as a ladder runs file "
                f"(bench/results/runs/*.jsonl.gz): {e.strerror or e}",
                file=sys.stderr,
            )
            return 2
    logging.disable(logging.WARNING)
    jobs = []
    wanted = [w.strip() for w in args.rows.split(",") if w.strip()]

    def picked(label: str) -> bool:
        return not wanted or any(w in label for w in wanted)

    seed0 = CONFIRM_SEED0 if args.confirm else 0
    for label, kind, signal in CONFIRM_ROWS if args.confirm else ROWS:
        if not picked(label):
            continue
        for seed in range(seed0 + 1, seed0 + args.seeds + 1):

            def write(path: Path, k: str = kind, s: float = signal, sd: int = seed) -> None:
                write_ohlcv_csv(generate_ohlcv(args.bars, signal=s, seed=sd, kind=k), path)

            jobs.append((label, seed, write))
    real_rows = (("bundled dataset", BUNDLED),) if args.confirm else REAL
    for label, name in real_rows:
        real = (
            None
            if not picked(label)
            else (HERE.parent / "datasets" / f"{name}.csv" if args.confirm else sample_csv(name))
        )
        if real is not None:

            def copy(path: Path, src: Path = real) -> None:
                shutil.copy(src, path)

            jobs.append((label, 0, copy))
    base = ENSEMBLE_SETTINGS if args.ensembles else SETTINGS
    lines = [
        "# The classifier ladder (`bench/bench_classifier_ladder.py`)"
        + (", confirmation set" if args.confirm else "")
        + (", auto's ensembles" if args.ensembles else "")
        + "".join(f", {s}" for s in args.sets),
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores, {gpu_description()}; Python "
        f"{platform.python_version()}.",
        f"Command: `python bench/bench_classifier_ladder.py --seeds {args.seeds} --bars "
        f"{args.bars}{' --confirm' if args.confirm else ''}"
        f"{' --ensembles' if args.ensembles else ''}"
        f"{f' --rows {args.rows}' if args.rows else ''}"
        f"{''.join(f' --set {s}' for s in args.sets)}`: step 5, demo preset, "
        f"{' '.join(base)}.",
    ]
    suffix = "_confirm" if args.confirm else ""
    suffix += "_ensembles" if args.ensembles else ""
    suffix += f"_bars-{args.bars}" if args.bars != 8000 else ""
    suffix += "".join("_" + s.replace("=", "-").replace(".", "") for s in args.sets)
    suffix += f"_rows-{args.rows.replace(',', '-')}" if args.rows else ""
    dump = RUNS / f"classifier_ladder{suffix}.jsonl.gz"
    dump.parent.mkdir(parents=True, exist_ok=True)
    try:
        kept = resumable(dump, lines) if args.resume else []
    except ValueError as e:
        print(f"error: --resume {dump}: {e}", file=sys.stderr)
        return 2
    ended = {(r["label"], r["seed"]) for r in kept}
    part = dump.with_name(dump.name + ".part")
    with gzip.open(part, "wt") as f:  # one JSON line per run, written as it ends
        f.write(json.dumps({"header": lines, "ensembles": args.ensembles}) + "\n")
        for rec in kept:
            f.write(json.dumps(rec) + "\n")
            print(table_row(rec), flush=True)
        f.flush()
        os.replace(part, dump)  # the open file follows: kept runs are never lost to a kill
        for label, seed, write in jobs:
            if (label, seed) in ended:
                continue
            t0 = time.perf_counter()
            s = run(write, "LADDER_1H" if seed else "REAL", [*base, *args.sets])
            rec = {"label": label, "seed": seed, "seconds": time.perf_counter() - t0, "summary": s}
            f.write(json.dumps(rec, default=str) + "\n")
            f.flush()
            print(table_row(rec), flush=True)
    return write_report(dump)


def rule_text(ensembles: bool) -> str:
    """What the table's cells and columns mean, with the choice rule of THIS checkout."""
    return (
        "Cells: test macro-F1 / direction; the auto choice is prediction_model = auto's: the "
        "simplest model within one standard error of the best validation macro-F1 (the paired "
        "s.e. of the best's lead over it on the validation rows), less the tabular models "
        "another beats by more than that s.e. on their out-of-fold chunks of the training block "
        "and the validation block, each scored alone and weighted by rows"
        + (
            " (or an ensemble more than one paired s.e. above every model alone on the"
            " agent-val rows)"
            if ensembles
            else ""
        )
        + "; 'within 1 s.e.' compares its test macro-F1 with the best of logreg and lightgbm "
        "(overlap-corrected s.e.); 'above chance': models whose test direction beats 50 % at "
        "p < 0.01 with one call per label horizon (the classifier report's overlap-corrected "
        "test)."
    )


def load_runs(dump: Path) -> tuple[dict, list[dict]]:
    """``(header record, run records)`` of a ``--replay`` file (a run cut short keeps its ended
    runs: a truncated last line is skipped)."""
    header: dict = {"header": [], "ensembles": False}
    records = []
    with gzip.open(dump, "rt") as f:
        try:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    break
                if "header" in rec:
                    header = rec
                else:
                    records.append(rec)
        except EOFError:
            pass
    return header, records


def resumable(dump: Path, lines: list[str]) -> list[dict]:
    """The ended runs that ``--resume`` keeps: those of ``dump`` when an earlier run of the same
    command on this machine wrote it (its header is ``lines``); none when it does not exist.
    Raises ``ValueError`` naming what differs when another command or machine wrote it."""
    if not dump.exists():
        return []
    try:
        head, records = load_runs(dump)
    except OSError as e:
        raise ValueError(f"cannot read it as a ladder runs file: {e.strerror or e}") from e
    if head["header"] != lines:
        theirs, ours = next(
            (a, b) for a, b in zip([*head["header"], ""], [*lines, ""], strict=False) if a != b
        )
        raise ValueError(
            f"another command or machine wrote it (its header has {theirs!r} where this run has "
            f"{ours!r}); move it away or run without --resume"
        )
    return records


def table_row(rec: dict) -> str:
    """One run's row of the table: each model's test cells and auto's choice."""
    s, models = rec["summary"], rec["summary"]["models"]
    chosen, f1, se = auto_choice(s)
    tab = max(models[m]["test_macro_f1"] for m in TABULAR)
    above = [n for n in MODEL_NAMES if models[n].get("beats_chance_on_test")]
    cells = [
        f"{m['test_macro_f1']:.3f} / {m['direction_accuracy']:.0%}"
        if m.get("direction_accuracy") is not None
        else f"{m['test_macro_f1']:.3f} / n/a"
        for m in (models[n] for n in MODEL_NAMES)
    ]
    return (
        f"| {rec['label']} | {rec['seed'] or '-'} | " + " | ".join(cells) + f" | {chosen} | "
        f"{f1:.3f} | {'yes' if f1 >= tab - se else 'NO'} | {len(above)} of {len(MODEL_NAMES)} |"
    )


def write_report(dump: Path) -> int:
    """The results table of the runs in ``dump`` with THIS checkout's choice rule (so a change of
    ``prediction_model = auto``'s rule can be replayed on saved runs without training again):
    ``results/<dump's name>.md``."""
    head, records = load_runs(dump)
    lines = [*head["header"], "", rule_text(bool(head.get("ensembles"))), ""]
    lines += [
        "| row | seed | " + " | ".join(MODEL_NAMES) + " | auto chose | its test F1 | within 1 s.e. "
        "| above chance |",
        "|" + "---|" * (len(MODEL_NAMES) + 6),
    ]
    ok_rows: dict[str, list[bool]] = {}
    shifts: dict[str, list[float]] = {}
    what_if: dict[str, list[bool]] = {}
    above_rows: dict[str, list[bool]] = {}
    chance_rows: dict[str, list[int]] = {}
    misses: list[str] = []
    for rec in records:
        label, seed, s = rec["label"], rec["seed"], rec["summary"]
        models = s["models"]
        chosen, f1, se = auto_choice(s)
        tab = max(models[m]["test_macro_f1"] for m in TABULAR)
        within = f1 >= tab - se
        ok_rows.setdefault(label, []).append(within)
        if label.split()[0] in SEQUENTIAL:
            above_rows.setdefault(label, []).append(f1 > tab)
            if f1 <= tab:
                misses.append(f"{label} seed {seed}: {validation_leaders(s)}")
        above = [n for n in MODEL_NAMES if models[n].get("beats_chance_on_test")]
        chance_rows.setdefault(label, []).append(len(above))
        for name, shift in selection_shifts(models).items():
            shifts.setdefault(name, []).append(shift)
        candidate = ensemble_candidate(s)
        if candidate is not None:
            what_if.setdefault(label, []).append(candidate[1] >= tab - se)
            print(f"  auto's ensemble candidate: {candidate[0]}, test {candidate[1]:.3f}")
        lines.append(table_row(rec))
    lines += [
        "",
        "Per row, seeds where the auto choice is within one s.e. of the best tabular model: "
        + "; ".join(f"{k}: {sum(v)} of {len(v)}" for k, v in ok_rows.items())
        + f". Wall time {sum(r['seconds'] for r in records):.0f} s.",
    ]
    if above_rows:
        lines.append(
            "Sequential rows, seeds where the auto choice scores ABOVE the best tabular model: "
            + "; ".join(f"{k}: {sum(v)} of {len(v)}" for k, v in above_rows.items())
            + "."
        )
    if misses:
        lines.append(
            "Where it was not above, the best models on the blocks a chooser may look at (test "
            "unseen): " + "; ".join(misses) + "."
        )
    noise = {k: v for k, v in chance_rows.items() if "noise" in k}
    if noise:
        lines.append(
            "Pure noise, models above chance by the corrected test: "
            + "; ".join(f"{k}: {', '.join(str(n) for n in v)} per seed" for k, v in noise.items())
            + " (target 0)."
        )
    lines += shift_lines(shifts)
    if what_if:
        lines.append(
            "What if auto always took its ensemble candidate (the combination that won on the "
            "agent-val rows, needed or not; a model alone where none did): within one s.e. of the "
            "best tabular model on "
            + "; ".join(f"{k}: {sum(v)} of {len(v)}" for k, v in what_if.items())
            + "."
        )
    met = [k for k, v in ok_rows.items() if all(v)]
    lines.append(f"Rows meeting the target on every seed: {len(met)} of {len(ok_rows)}.")
    out = HERE / "results" / (dump.name.removesuffix(".jsonl.gz") + ".md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
