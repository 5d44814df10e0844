"""The learnability ladder: does the PPO agent learn what there is to learn?

Each row trains the agent ``--seeds`` times (``ppo.seed`` = 42, 7, 13, 1, 2, ...) through the real
step 7 (``ppo_approach.train_ppo_agent.train_agent``: train, pick the validation-best model,
backtest once on the test block) and reports the agent's test-block total return after fees
(median, min, max over the seeds) and its median trade count, beside the deterministic baselines
of the same backtest report (buy-and-hold, flat, the classifier rule) and the wall time.

Rows (``--rows``, comma list; default all):

* ``oracle``: ``ppo_prediction_source = oracle``, ``oracle_accuracy = 1``: the prediction
  features are the true future class of each bar (a diagnostic of the RL machinery; it uses
  future data). Its classifier rule is the oracle rule (long while the true class is Rise, flat
  otherwise); the target is at least half of its test-block log return, so the row prints
  ``log(1 + agent) / log(1 + rule)``.
* ``degraded_0.9``, ``degraded_0.7``, ``degraded_0.5``: the oracle with each bar keeping its true
  class with that probability and otherwise getting a uniformly drawn class (which may be the
  true one), so the class is right on ``a + (1 - a) / 3`` of the bars. The classifier rule
  column is then the rule on the degraded input.
* ``chance``: ``oracle_accuracy = 0``: every class drawn at random (right on 1/3 of the bars).
* ``real_bundled``: the real pipeline (walk-forward predictions, as a user runs it) on the
  bundled dataset.
* ``real_random_walk``: the real pipeline on a pure random walk from
  ``pipeline.data.synthetic.generate_ohlcv(..., signal=0.0)`` (nothing to learn).

The oracle and degraded rows use the bundled dataset. Step 5 (``train_models.train_classifiers``,
same config) runs once per dataset into a temporary root; each run of step 7 gets a fresh copy of
that root's dataset and prediction tables, so no run sees another's agent artifacts.

    python bench/bench_agent_learning.py                          # demo preset, 3 seeds, all rows
    OMP_NUM_THREADS=1 python bench/bench_agent_learning.py --preset smoke --seeds 2 \\
        --rows oracle,degraded_0.7,chance,real_random_walk
"""

from __future__ import annotations

import contextlib
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
DEFAULT_OUT = HERE / "results" / "agent_learning.md"
BUNDLED = "SYNTH-BTC-EUR_1H_20240101-20251231"
RANDOM_WALK = "RW-LADDER_1H"
SEEDS = (42, 7, 13, 1, 2, 3, 4, 5, 6, 8)
"""``ppo.seed`` of the runs, in order (the first probe used 42, 7, 13)."""


@dataclass(frozen=True)
class Row:
    """One rung of the ladder: which dataset and which step-7 settings."""

    name: str
    dataset: str
    overrides: tuple[str, ...]
    keep: float | None = None  # oracle_accuracy (share of bars keeping the true class), or None

    @property
    def input_label(self) -> str:
        """What the agent's prediction features are, in words."""
        if self.keep is None:
            return "walk-forward predictions"
        right = self.keep + (1.0 - self.keep) / 3.0
        return f"ORACLE, {self.keep:.0%} kept (class right on {right:.0%})"


def _oracle(name: str, keep: float) -> Row:
    over = ("ppo_prediction_source=oracle", f"oracle_accuracy={keep!r}")
    return Row(name, BUNDLED, over, keep)


ROWS: dict[str, Row] = {
    r.name: r
    for r in (
        _oracle("oracle", 1.0),
        _oracle("degraded_0.9", 0.9),
        _oracle("degraded_0.7", 0.7),
        _oracle("degraded_0.5", 0.5),
        _oracle("chance", 0.0),
        Row("real_bundled", BUNDLED, ()),
        Row("real_random_walk", RANDOM_WALK, ()),
    )
}


@dataclass
class RowResult:
    """The per-seed numbers of one row."""

    row: Row
    agent: list[float] = field(default_factory=list)
    trades: list[float] = field(default_factory=list)
    buy_and_hold: list[float] = field(default_factory=list)
    flat: list[float] = field(default_factory=list)
    rule: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    timesteps: list[int] = field(default_factory=list)


def make_config(preset: str, sets: list[str], timesteps: int | None, *extra: str) -> Config:
    """The shipped config files, then ``preset``, then ``--set`` values, then the row's settings."""
    over = list(sets)
    if timesteps is not None:
        over.append(f"total_timesteps={timesteps}")
    return load_config(preset=preset, overrides=[*over, *extra])


def prepare_source(root: Path, dataset: str, cfg: Config, rw_bars: int) -> float:
    """Dataset into ``root/datasets`` and step 5 on it; returns the step's wall seconds."""
    (root / "datasets").mkdir(parents=True)
    csv = root / "datasets" / f"{dataset}.csv"
    if dataset == BUNDLED:
        shutil.copy(HERE.parent / "datasets" / f"{BUNDLED}.csv", csv)
    else:
        write_ohlcv_csv(generate_ohlcv(rw_bars, signal=0.0, seed=0), csv)
    model = cfg.ppo.prediction_model
    models = None if model == "ensemble" else [model]  # only what step 7 reads
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the step's console table
        train_models.train_classifiers(cfg, dataset, Paths.from_root(root), models)
    return time.perf_counter() - t0


def fresh_root(src: Path, dst: Path) -> Path:
    """A root with the dataset and the prediction tables only (no agent artifacts)."""
    shutil.copytree(src / "datasets", dst / "datasets")
    (dst / "results").mkdir(parents=True)
    for p in (src / "results").glob("predictions_*"):  # each table (.csv) and its .json
        shutil.copy(p, dst / "results" / p.name)
    return dst


def run_row(
    row: Row, src: Path, work: Path, seeds: int, preset: str, sets: list[str], ts: int | None
) -> RowResult:
    """Step 7 once per seed on a fresh copy of ``src``; the report's numbers per seed."""
    res = RowResult(row)
    for seed in SEEDS[:seeds]:
        cfg = make_config(preset, sets, ts, *row.overrides, f"ppo.seed={seed}")
        root = fresh_root(src, work / f"{row.name}_{seed}")
        torch.set_num_threads(1)  # step 5 set its own count; tiny nets gain nothing from more
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the step's console table
            report = train_ppo_agent.train_agent(cfg, row.dataset, Paths.from_root(root), False)
        res.wall.append(time.perf_counter() - t0)
        s = report["strategies"]
        res.agent.append(float(s["agent"]["total_return"]))
        res.trades.append(float(s["agent"]["n_trades"]))
        res.buy_and_hold.append(float(s["buy_and_hold"]["total_return"]))
        res.flat.append(float(s["flat"]["total_return"]))
        res.rule.append(float(s["classifier_rule"]["total_return"]))
        res.timesteps.append(int(report["timesteps"]))
        shutil.rmtree(root, ignore_errors=True)
        print(
            f"{row.name} seed {seed}: agent {100 * res.agent[-1]:+.2f} % "
            f"({res.trades[-1]:.0f} trades), buy-and-hold {100 * res.buy_and_hold[-1]:+.2f} %, "
            f"rule {100 * res.rule[-1]:+.2f} %, {res.wall[-1]:.0f} s",
            flush=True,
        )
    return res


def pct(values: list[float], spread: bool = True) -> str:
    """Median in percent, with ``[min, max]`` when the values differ."""
    med = f"{100 * statistics.median(values):+.2f} %"
    if spread and max(values) != min(values):
        med += f" [{100 * min(values):+.2f}, {100 * max(values):+.2f}]"
    return med


def log_ratio(agent: float, rule: float) -> float:
    """``log(1 + agent) / log(1 + rule)`` (NaN when the rule's log return is 0)."""
    denom = math.log1p(rule)
    return math.log1p(agent) / denom if denom != 0 else float("nan")


def table(results: list[RowResult], oracle_rule: float | None) -> list[str]:
    """Markdown rows of the ladder."""
    rows = [
        "| row | dataset | agent input | agent total return: median [min, max] | agent trades "
        "(median) | buy-and-hold | flat | classifier rule | oracle rule | timesteps run (median) "
        "| wall s per seed (median) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        orule = "-"
        if r.row.keep is not None and oracle_rule is not None:
            orule = f"{100 * oracle_rule:+.2f} %"
        rows.append(
            f"| {r.row.name} | {r.row.dataset} | {r.row.input_label} | {pct(r.agent)} | "
            f"{statistics.median(r.trades):.0f} | {pct(r.buy_and_hold)} | {pct(r.flat)} | "
            f"{pct(r.rule)} | {orule} | {statistics.median(r.timesteps):,.0f} | "
            f"{statistics.median(r.wall):.0f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the selected rows and write the markdown report."""
    p = CliParser(prog="bench_agent_learning.py", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help=f"PPO seeds per row (1..{len(SEEDS)})")
    p.add_argument("--rows", default=",".join(ROWS), help="comma list of: " + ", ".join(ROWS))
    p.add_argument("--preset", default="demo", help="config preset (default: demo)")
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="config override passed to load_config (repeatable)",
    )  # fmt: skip
    p.add_argument("--timesteps", type=int, help="overrides total_timesteps")
    p.add_argument(
        "--rw-bars", type=int, default=17_520, help="bars of the random walk (default 17,520)"
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="markdown file, or - for stdout only")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.rows.split(",") if s.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown or not names:
        p.error(
            f"--rows: unknown row(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(ROWS)}"
        )
    if not 1 <= args.seeds <= len(SEEDS):
        p.error(f"--seeds {args.seeds}: expected 1..{len(SEEDS)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    command = " ".join(
        ["python bench/bench_agent_learning.py", *(argv if argv is not None else sys.argv[1:])]
    )
    base = make_config(args.preset, args.sets, args.timesteps)
    load = load_average()
    rows = [ROWS[n] for n in names]
    results: list[RowResult] = []
    step5: dict[str, float] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ladder_") as tmp:
        work = Path(tmp)
        for dataset in dict.fromkeys(r.dataset for r in rows):
            print(f"step 5 on {dataset} ...", flush=True)
            step5[dataset] = prepare_source(work / f"src_{dataset}", dataset, base, args.rw_bars)
        for row in rows:
            src = work / f"src_{row.dataset}"
            results.append(
                run_row(row, src, work, args.seeds, args.preset, args.sets, args.timesteps)
            )
    total_min = (time.perf_counter() - t_all) / 60
    oracle = next((r for r in results if r.row.name == "oracle"), None)
    oracle_rule = statistics.median(oracle.rule) if oracle else None
    ppo = base.ppo
    lines = [
        "## Learnability ladder (bench/bench_agent_learning.py)",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores, {gpu_description()}; Python "
        f"{platform.python_version()}, torch {torch.__version__} (1 torch thread)",
        f"- Load average before the runs: {load:.2f} (other processes share this machine)",
        f"- Command: `{command}`",
        f"- Budget: preset `{args.preset}`"
        + (f", --set {' '.join(args.sets)}" if args.sets else "")
        + f": total_timesteps {ppo.total_timesteps:,}, algorithm {ppo.algorithm}, net "
        f"{'x'.join(map(str, ppo.net_arch))}, {ppo.n_envs} envs x {ppo.n_steps}, "
        f"{ppo.n_epochs} epochs, prediction model {ppo.prediction_model}; seeds "
        f"{', '.join(map(str, SEEDS[: args.seeds]))}; step 5 "
        + ", ".join(f"{d} {s:.0f} s" for d, s in step5.items())
        + f"; {total_min:.1f} min in all",
        "- Returns are test-block total returns after fees from the backtest report of each run "
        "(the validation-best model). Buy-and-hold and flat do not depend on the seed; the "
        "classifier rule of a degraded row does (its random classes are drawn with the seed). "
        "ORACLE rows use future data: a diagnostic of the RL machinery only.",
        "",
        *table(results, oracle_rule),
        "",
    ]
    if oracle is not None:
        ratios = [log_ratio(a, r) for a, r in zip(oracle.agent, oracle.rule, strict=True)]
        lines += [
            "Oracle row, agent log return / oracle rule log return "
            "(`log(1 + agent) / log(1 + rule)`, target >= 0.5): median "
            f"{statistics.median(ratios):.2f}, per seed " + ", ".join(f"{x:.2f}" for x in ratios),
            "",
        ]
    text = "\n".join(lines)
    print(text)
    if args.out != "-":
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
