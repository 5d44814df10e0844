"""The ladder that does not flatter: does the agent use a REAL classifier's edge?

Rows run the real step 7 (``train_ppo_agent.train_agent``: warm start, PPO, validation-best
model, one backtest on the test block) ``--seeds`` times each and compare the agent with the
classifier rule on the validation block (where the defaults may look) and the test block:

* ``real_<dataset>``: the real pipeline (step 5's walk-forward predictions of ``--classifier``)
  on planted-signal series of several kinds from :func:`pipeline.data.synthetic.generate_ohlcv`
  (momentum, regime-switched momentum, mean reversion, pure noise). The datasets are split into a
  DEVELOPMENT set (defaults were chosen on these) and a CONFIRMATION set (other seeds, never
  tuned on; reported separately). The confirmation set also has real candles: the hourly EURUSD
  and daily GOOG sample data of the ``backtesting`` package (``pip install backtesting``).
* ``noisy_<acc>`` (on the development momentum series): ``ppo_prediction_source =
  noisy_oracle``, calibrated soft probabilities whose most probable class is right on ``acc`` of
  the bars (what real classifiers look like: a few points apart), from 0.40 up; ``chance`` is
  ``acc = 1/3``. ``oracle``: the true class (the old ladder's top rung). These use future data:
  diagnostics of the RL machinery only.

Targets, checked per row: where the rule made money on validation, on every seed the agent's test
log return is at least half the rule's (where the rule gains on test) or no worse than the rule's
(where it loses), and the median over seeds at least matches the rule's; where the rule lost on
validation, the agent stays within 2 % of flat on every seed.

    python bench/bench_agent_ladder.py                    # demo preset, 3 seeds, every row
    python bench/bench_agent_ladder.py --rows real_MOM-DEV,noisy_0.45 --seeds 1 --timesteps 20000
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _common import cpu_model, gpu_description, load_average

import train_models
from pipeline.common import CliParser, Paths, atomic_write_text
from pipeline.config.files import load_config
from pipeline.config.schema import Config
from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
from ppo_approach import train_ppo_agent

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "agent_ladder.md"
SEEDS = (42, 7, 13, 1, 2)
FLAT_BAND = 0.02
"""Where the rule lost on validation, the agent's test return must stay within this of 0."""


@dataclass(frozen=True)
class Series:
    """A generated dataset: kind and strength of the planted signal, seed, and which set."""

    name: str
    kind: str
    signal: float
    seed: int
    role: str  # development | confirmation
    candles: str | None = None
    """Real candles: a CSV of the ``backtesting`` package's sample data (``pip install
    backtesting``; read as the file it is, written by pandas with an index column)."""

    @property
    def dataset(self) -> str:
        return f"LADDER-{self.name}" + ("_1H" if self.candles is None else "")

    @property
    def label(self) -> str:
        if self.candles is not None:
            return f"real candles: {self.candles} (backtesting.py sample data)"
        what = "pure noise" if self.signal == 0 else f"{self.kind} {self.signal:g}"
        return f"{what}, seed {self.seed}"


def candles_file(name: str) -> Path:
    """The sample CSV ``name`` of the installed ``backtesting`` package (found without importing
    it: its ``__init__`` needs bokeh); one line saying how to get it when it is missing."""
    spec = importlib.util.find_spec("backtesting")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"error: the real-candles rows need the backtesting package's sample data ({name}); "
            "pip install backtesting (no other dependency is needed for its CSV files)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "test" / name


SERIES = {
    s.name: s
    for s in (
        Series("MOM-DEV", "momentum", 0.25, 1, "development"),
        Series("REG-DEV", "regime", 0.4, 1, "development"),
        Series("MR-DEV", "mean_reversion", 1.0, 1, "development"),
        Series("NOISE-DEV", "momentum", 0.0, 1, "development"),
        Series("MOM-CONF", "momentum", 0.25, 2, "confirmation"),
        Series("REG-CONF", "regime", 0.4, 2, "confirmation"),
        Series("MR-CONF", "mean_reversion", 1.0, 2, "confirmation"),
        Series("NOISE-CONF", "momentum", 0.0, 2, "confirmation"),
        Series("EURUSD-1H", "real", 0.0, 0, "confirmation", "EURUSD.csv"),
        Series("GOOG-1D", "real", 0.0, 0, "confirmation", "GOOG.csv"),
    )
}


@dataclass(frozen=True)
class Row:
    """One row: a series and the step-7 settings of its agent."""

    name: str
    series: Series
    overrides: tuple[str, ...] = ()
    input_label: str = "walk-forward predictions"


def _noisy(name: str, acc: float) -> Row:
    over = ("ppo_prediction_source=noisy_oracle", f"oracle_accuracy={acc!r}")
    label = f"NOISY ORACLE, right on {acc:.0%} (soft, calibrated)"
    return Row(name, SERIES["MOM-DEV"], over, label)


ROWS: dict[str, Row] = {
    r.name: r
    for r in (
        *(Row(f"real_{s.name}", s) for s in SERIES.values()),
        Row(
            "oracle",
            SERIES["MOM-DEV"],
            ("ppo_prediction_source=oracle", "oracle_accuracy=1.0"),
            "ORACLE (true class)",
        ),
        _noisy("noisy_0.55", 0.55),
        _noisy("noisy_0.45", 0.45),
        _noisy("noisy_0.40", 0.40),
        _noisy("chance", 1.0 / 3.0),
    )
}


@dataclass
class RowResult:
    """Per-seed numbers of one row."""

    row: Row
    agent: list[float] = field(default_factory=list)
    trades: list[float] = field(default_factory=list)
    rule: list[float] = field(default_factory=list)
    rule_val: list[float] = field(default_factory=list)
    agent_val: list[float] = field(default_factory=list)
    buy_and_hold: list[float] = field(default_factory=list)
    improved: list[bool] = field(default_factory=list)  # PPO beat the warm start on validation
    start: list[str] = field(default_factory=list)  # rule | flat | random
    wall: list[float] = field(default_factory=list)

    def seed_ok(self, i: int) -> bool:
        """The target (module docstring) for seed ``i``."""
        if self.rule_val[i] > 0:
            a, r = math.log1p(self.agent[i]), math.log1p(self.rule[i])
            return a >= 0.5 * r if r > 0 else a >= r - 1e-12
        return abs(self.agent[i]) <= FLAT_BAND

    def verdict(self) -> str:
        ok = [self.seed_ok(i) for i in range(len(self.agent))]
        text = f"{sum(ok)}/{len(ok)} seeds"
        if statistics.median(self.rule_val) > 0:
            med_ok = statistics.median(self.agent) >= statistics.median(self.rule) - 1e-12
            text += ", median " + ("matches the rule" if med_ok else "BELOW the rule")
            return ("met: " if all(ok) and med_ok else "MISSED: ") + text
        return ("met: " if all(ok) else "MISSED: ") + text + " within 2 % of flat"


def make_config(preset: str, sets: list[str], timesteps: int | None, *extra: str) -> Config:
    """The shipped config files, then ``preset``, then ``--set`` values, then the row's."""
    over = list(sets)
    if timesteps is not None:
        over.append(f"total_timesteps={timesteps}")
    return load_config(preset=preset, overrides=[*over, *extra])


def prepare_source(root: Path, series: Series, cfg: Config, bars: int, model: str) -> float:
    """The series into ``root/datasets`` and step 5 (``model`` only) on it; wall seconds."""
    (root / "datasets").mkdir(parents=True)
    csv = root / "datasets" / f"{series.dataset}.csv"
    if series.candles is not None:
        shutil.copy(candles_file(series.candles), csv)
    else:
        df = generate_ohlcv(bars, signal=series.signal, seed=series.seed, kind=series.kind)
        write_ohlcv_csv(df, csv)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        train_models.train_classifiers(cfg, series.dataset, Paths.from_root(root), [model])
    return time.perf_counter() - t0


def fresh_root(src: Path, dst: Path) -> Path:
    """A root with the dataset, step 5's summary and the prediction tables (no agent files)."""
    shutil.copytree(src / "datasets", dst / "datasets")
    (dst / "results").mkdir(parents=True)
    for p in (src / "results").glob("*.csv"):
        shutil.copy(p, dst / "results" / p.name)
    for p in (src / "results").glob("predictions_*.json"):  # each table's dataset facts
        shutil.copy(p, dst / "results" / p.name)
    for p in (src / "results").glob("training_summary_*.json"):
        shutil.copy(p, dst / "results" / p.name)
    return dst


def run_row(row: Row, src: Path, work: Path, args: object) -> RowResult:
    """Step 7 once per seed on a fresh copy of ``src``."""
    res = RowResult(row)
    a = args
    for seed in SEEDS[: a.seeds]:  # type: ignore[attr-defined]
        cfg = make_config(
            a.preset,  # type: ignore[attr-defined]
            a.sets,  # type: ignore[attr-defined]
            a.timesteps,  # type: ignore[attr-defined]
            *row.overrides,
            f"ppo.seed={seed}",
        )
        root = fresh_root(src, work / f"{row.name}_{seed}")
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rep = train_ppo_agent.train_agent(cfg, row.series.dataset, Paths.from_root(root), False)
        res.wall.append(time.perf_counter() - t0)
        s = rep["strategies"]
        info = rep.get("agent") or {}
        val = info.get("validation") or {}
        res.agent.append(float(s["agent"]["total_return"]))
        res.trades.append(float(s["agent"]["n_trades"]))
        res.rule.append(float(s["classifier_rule"]["total_return"]))
        res.buy_and_hold.append(float(s["buy_and_hold"]["total_return"]))
        res.rule_val.append(float(val.get("rule_return") or 0.0))
        res.agent_val.append(float(val.get("agent_return") or 0.0))
        res.improved.append(bool(info.get("best_timesteps")))
        res.start.append(str((info.get("warm_start") or {}).get("behaviour", "random")))
        shutil.rmtree(root, ignore_errors=True)
        print(
            f"{row.name} seed {seed}: agent {100 * res.agent[-1]:+.2f} % ({res.trades[-1]:.0f} "
            f"trades, start {res.start[-1]}, PPO improved {res.improved[-1]}), rule test "
            f"{100 * res.rule[-1]:+.2f} %, rule val {100 * res.rule_val[-1]:+.2f} %, "
            f"{res.wall[-1]:.0f} s",
            flush=True,
        )
    return res


def pct(values: list[float]) -> str:
    """Median in percent, with ``[min, max]`` when the values differ."""
    med = f"{100 * statistics.median(values):+.2f} %"
    if max(values) != min(values):
        med += f" [{100 * min(values):+.2f}, {100 * max(values):+.2f}]"
    return med


def table(results: list[RowResult]) -> list[str]:
    """Markdown rows."""
    out = [
        "| row | series | agent input | rule, validation | rule, test | agent, test: median "
        "[min, max] | agent trades (median) | agent, validation | started from | PPO beat its "
        "start on validation | buy-and-hold | target |",
        "|---|---|---|---:|---:|---|---:|---:|---|---:|---:|---|",
    ]
    for r in results:
        starts = ", ".join(f"{k} x{r.start.count(k)}" for k in dict.fromkeys(r.start))
        out.append(
            f"| {r.row.name} | {r.row.series.label} | {r.row.input_label} | {pct(r.rule_val)} | "
            f"{pct(r.rule)} | {pct(r.agent)} | {statistics.median(r.trades):.0f} | "
            f"{pct(r.agent_val)} | {starts} | {sum(r.improved)}/{len(r.improved)} | "
            f"{pct(r.buy_and_hold)} | {r.verdict()} |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the selected rows and write the markdown report."""
    p = CliParser(prog="bench_agent_ladder.py", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help=f"PPO seeds per row (1..{len(SEEDS)})")
    p.add_argument("--rows", default=",".join(ROWS), help="comma list of: " + ", ".join(ROWS))
    p.add_argument("--preset", default="demo", help="config preset (default: demo)")
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="config override passed to load_config (repeatable)",
    )  # fmt: skip
    p.add_argument("--timesteps", type=int, help="overrides total_timesteps")
    p.add_argument("--bars", type=int, default=8_000, help="bars per series (default 8,000)")
    p.add_argument(
        "--classifier", default="gru", help="the one classifier step 5 trains (default gru)"
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="markdown file, or - for stdout only")
    p.add_argument(
        "--cache",
        type=Path,
        help="keep step 5's output per series in this folder and reuse it on the next run "
        "(same --bars, --classifier and preset): variants of step 7 then skip step 5",
    )
    args = p.parse_args(argv)
    names = [s.strip() for s in args.rows.split(",") if s.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown or not names:
        bad = ", ".join(unknown) or "(none)"
        p.error(f"--rows: unknown row(s) {bad}; choose from {', '.join(ROWS)}")
    if not 1 <= args.seeds <= len(SEEDS):
        p.error(f"--seeds {args.seeds}: expected 1..{len(SEEDS)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    command = " ".join(
        ["python bench/bench_agent_ladder.py", *(argv if argv is not None else sys.argv[1:])]
    )
    base = make_config(args.preset, args.sets, args.timesteps)
    load = load_average()
    rows = [ROWS[n] for n in names]
    results: list[RowResult] = []
    step5: dict[str, float] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ladder16_") as tmp:
        work = Path(tmp)
        for row in rows:
            s = row.series
            key = f"src_{s.name}_{args.bars}_{args.classifier}_{args.preset}"
            src = (args.cache or work) / key
            if s.name not in step5:
                if (src / "results" / f"training_summary_{s.dataset}.json").is_file():
                    step5[s.name] = 0.0  # reused from --cache
                else:
                    shutil.rmtree(src, ignore_errors=True)
                    print(f"step 5 ({args.classifier}) on {s.dataset} ...", flush=True)
                    step5[s.name] = prepare_source(src, s, base, args.bars, args.classifier)
            results.append(run_row(row, src, work, args))
    total_min = (time.perf_counter() - t_all) / 60
    ppo = base.ppo
    lines = [
        "## The ladder that does not flatter (bench/bench_agent_ladder.py)",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores, {gpu_description()}; Python "
        f"{platform.python_version()}, torch {torch.__version__} (1 torch thread)",
        f"- Load average before the runs: {load:.2f} (other processes share this machine)",
        f"- Command: `{command}`",
        f"- Budget: preset `{args.preset}`"
        + (f", --set {' '.join(args.sets)}" if args.sets else "")
        + f": total_timesteps {ppo.total_timesteps:,}, algorithm {ppo.algorithm}, action set "
        f"{ppo.action_set}, agent_init {ppo.agent_init}, selection by validation "
        f"{ppo.selection_metric}, net {'x'.join(map(str, ppo.net_arch))}, {ppo.n_envs} envs x "
        f"{ppo.n_steps}; step 5 trains {args.classifier} only ({args.bars:,} hourly bars per "
        f"series); seeds {', '.join(map(str, SEEDS[: args.seeds]))}; {total_min:.1f} min in all",
        "- Returns: total return after fees on the validation episodes (rule: the mean over "
        "the evaluation episodes) and on the whole test block (the backtest report).",
        "",
    ]
    for role in ("development", "confirmation"):
        part = [r for r in results if r.row.series.role == role]
        if part:
            lines += [f"**{role.capitalize()} set**", "", *table(part), ""]
    text = "\n".join(lines)
    print(text)
    if args.out != "-":
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
