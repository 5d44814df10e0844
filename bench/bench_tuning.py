"""Tuning benchmark: trials per hour with one and two workers, and what a 20-trial agent study gains
over the defaults on the bundled dataset.

Part 1, throughput: the agent stage with the bundled PPO space (``pipeline/tuning/search_spaces/
agent.txt``) and the smoke preset (2,048 timesteps per trial) on the bundled dataset. The same
``--trials`` parameter sets (drawn once from the space with a seeded random sampler) are queued in
a fresh study for each run, so one and two workers run exactly the same trials; pruning is off.
Each repetition runs one worker, then ``--jobs 2``, back to back: the ratio is taken inside a
repetition, the table shows medians over ``--reps``. Trials per hour count from the first trial's
start to the last trial's end (the storage's timestamps); the wall time adds process start-up.

Part 2, gain: ``tune.py --stage agent --trials 20`` (TPE, median pruner, sampler seed 0) at a small
budget (smoke preset sizes, ``total_timesteps`` 20,000, an evaluation every 5,000) on the bundled
dataset, after step 5 (DLSTM, smoke preset) wrote its prediction table into a scratch root. The
validation metric (best validation mean episode reward, what the study maximises) of the defaults
(the same config without tuned values) and of the winner are then measured on three PPO seeds
(42 = the study's seed, 43, 44), since the study's best value is the maximum of 20 noisy draws.
Finally the winner runs step 7 once (train, pick the validation-best checkpoint, backtest on the
test block): its test-block result is reported once, after tuning.

    OMP_NUM_THREADS=1 python bench/bench_tuning.py            # writes bench/results/tuning.md
    python bench/bench_tuning.py --reps 1 --trials 4 --study-trials 6   # quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from _common import cpu_model, gpu_description, load_average

from pipeline.tuning.space import SearchSpace, default_space_path, read_search_space

ROOT = Path(__file__).resolve().parent.parent
DATASET = "SYNTH-BTC-EUR_1H_20240101-20251231"
RESULTS = ROOT / "bench" / "results" / "tuning.md"
BUDGET = ["--preset", "smoke", "--set", "total_timesteps=20000", "--set", "eval_freq=5000"]
SMOKE = ["--preset", "smoke"]
SEEDS = (42, 43, 44)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PIPELINE_PROGRESS": "log", "MPLBACKEND": "Agg"}


def _run(cmd: list[str], log: Path) -> float:
    """Run ``cmd``, its output to ``log``; returns the wall seconds (exit on failure)."""
    t0 = time.perf_counter()
    with log.open("a") as out:
        code = subprocess.call(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if code != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {code}; see {log}")
    return time.perf_counter() - t0


def _tune(root: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "tune.py"), "--dataset", DATASET, "--root", str(root),
            "--stage", "agent", *extra]  # fmt: skip


def _study(root: Path, name: str) -> optuna.Study:
    db = root / "results" / f"tuning_agent_{DATASET}" / "optuna.db"
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def prepare_root(work: Path, log: Path) -> Path:
    """A scratch root with the bundled dataset and step 5's DLSTM prediction table (smoke)."""
    root = work / "root"
    (root / "datasets").mkdir(parents=True)
    shutil.copy(ROOT / "datasets" / f"{DATASET}.csv", root / "datasets")
    cmd = [sys.executable, str(ROOT / "train_models.py"), "--dataset", DATASET, "--root",
           str(root), "--models", "dlstm", *SMOKE, "--set", "num_threads=1"]  # fmt: skip
    secs = _run(cmd, log)
    print(f"step 5 (DLSTM, smoke) in {secs:.0f} s", flush=True)
    return root


def fixed_trials(space: SearchSpace, n: int) -> list[dict[str, Any]]:
    """``n`` parameter sets drawn from ``space`` with a seeded random sampler."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        space.suggest(trial)
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


def throughput(root: Path, trials: list[dict[str, Any]], jobs: int, rep: int, log: Path) -> dict:
    """One run of the queued ``trials`` with ``jobs`` workers: trials/hour and wall time."""
    name = f"bench_jobs{jobs}_rep{rep}"
    db = root / "results" / f"tuning_agent_{DATASET}" / "optuna.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{db}", direction="maximize")
    for params in trials:
        study.enqueue_trial(params)
    cmd = _tune(root, "--study", name, "--trials", str(len(trials)), "--jobs", str(jobs),
                "--pruner", "none", *SMOKE)  # fmt: skip
    wall = _run(cmd, log)
    done = [t for t in _study(root, name).trials if t.state.name == "COMPLETE"]
    span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    per_hour = len(done) / span.total_seconds() * 3600
    print(f"  {jobs} worker(s), rep {rep}: {len(done)} trials, {per_hour:.0f}/h, wall {wall:.0f} s",
          flush=True)  # fmt: skip
    return {"trials": len(done), "per_hour": per_hour, "wall": wall}


def seed_values(root: Path, extra: list[str], set_file: Path | None, log: Path) -> list[float]:
    """The study's metric (best validation mean episode reward) of one config on each seed."""
    import tune
    from pipeline.common import Paths

    values = []
    for seed in SEEDS:
        argv = ["--dataset", DATASET, "--root", str(root), "--stage", "agent", "--trials", "1",
                *BUDGET, *extra, "--set", f"ppo.seed={seed}"]  # fmt: skip
        if set_file is not None:
            argv += ["--set-file", str(set_file)]
        args = tune.build_parser().parse_args(argv)
        cfg = tune.config_from_args(args)
        empty = SearchSpace(default_space_path("agent"), ())
        objective = tune.agent_objective(args, cfg, Paths.from_root(root), empty, log.parent)
        study = optuna.create_study(direction="maximize")
        study.optimize(objective, n_trials=1)
        values.append(float(study.trials[0].value))
    return values


def gain_section(
    root: Path, work: Path, label: str, extra: list[str], n_trials: int, log: Path
) -> list[str]:
    """An ``n_trials`` agent study (``extra`` settings on top of the budget), the defaults and
    the winner on three seeds, then the winner's step 7 with its test-block result (once)."""
    name = f"agent_{label.split()[0]}"
    t0 = time.perf_counter()
    _run(_tune(root, "--study", name, "--trials", str(n_trials), "--seed", "0", *BUDGET, *extra),
         log)  # fmt: skip
    study_secs = time.perf_counter() - t0
    study = _study(root, name)
    out_dir = root / "results" / f"tuning_agent_{DATASET}"
    best_file = work / f"best_params_{name}.txt"
    shutil.copy(out_dir / "best_params.txt", best_file)
    states: dict[str, int] = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    values = sorted((t.value for t in study.trials if t.value is not None), reverse=True)
    print(f"{label}: {states} in {study_secs:.0f} s, best {study.best_value:.3f}", flush=True)
    defaults = seed_values(root, extra, None, log)
    winner = seed_values(root, extra, best_file, log)
    print(f"  defaults {defaults}, winner {winner}", flush=True)
    step7 = [sys.executable, "-m", "ppo_approach.train_ppo_agent", "--dataset", DATASET,
             "--root", str(root), *BUDGET, *extra, "--set-file", str(best_file)]  # fmt: skip
    step7_secs = _run(step7, log)
    report = json.loads((root / "results" / f"backtest_dlstm_{DATASET}.json").read_text())
    strat = report["strategies"]
    test_block = report["blocks"]["test"]
    gain = statistics.mean(winner) - statistics.mean(defaults)
    setting = " ".join(extra[1::2]) if extra else "the real pipeline (walk-forward predictions)"
    lines = [
        f"### {label}",
        "",
        f"Settings: {setting}. Study: "
        f"{', '.join(f'{v} {k.lower()}' for k, v in sorted(states.items()))} in "
        f"{study_secs:.0f} s; trial values (best first): "
        f"{', '.join(f'{v:.3f}' for v in values[:8])}{' ...' if len(values) > 8 else ''}.",
        "",
        "| config | seed 42 (the study's) | seed 43 | seed 44 | mean |",
        "|---|---|---|---|---|",
        f"| defaults (no tuned value) | {' | '.join(f'{v:.3f}' for v in defaults)} | "
        f"{statistics.mean(defaults):.3f} |",
        f"| winner (trial {study.best_trial.number}) | {' | '.join(f'{v:.3f}' for v in winner)} | "
        f"{statistics.mean(winner):.3f} |",
        "",
        f"Gain of the winner over the defaults: **{gain:+.3f}** mean validation reward over the "
        f"three seeds (seed 42 alone: {winner[0] - defaults[0]:+.3f}; the study's best value "
        f"{study.best_value:.3f} is the maximum of its trials on seed 42, so seeds 43 and 44 are "
        "the fair check).",
        "",
        "Winner's parameters (`best_params.txt`, comment lines left out):",
        "",
        "```",
        *[ln for ln in best_file.read_text().splitlines() if ln and not ln.startswith("#")],
        "```",
        "",
        f"The winner on the test block, reported once, after tuning: step 7 with `--set-file` at "
        f"the same budget ({step7_secs:.0f} s), {report['chosen_model']} model, "
        f"{report['timesteps']} timesteps, test block {test_block.get('start', '')} .. "
        f"{test_block.get('end', '')}:",
        "",
        "| strategy | total return | Sharpe | max drawdown | trades |",
        "|---|---|---|---|---|",
    ]
    for key in ("agent", "buy_and_hold", "flat", "classifier_rule", "random"):
        if key in strat:
            m = strat[key]
            lines.append(
                f"| {key} | {100 * m['total_return']:+.2f} % | {m['sharpe']:.2f} | "
                f"{100 * m['max_drawdown']:.1f} % | {float(m.get('n_trades', 0)):.0f} |"
            )
    return [*lines, ""]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=2, help="repetitions of the throughput pair")
    p.add_argument("--trials", type=int, default=8, help="queued trials per throughput run")
    p.add_argument("--study-trials", type=int, default=20, help="trials of each agent study")
    p.add_argument("--keep", action="store_true", help="keep the scratch root (printed)")
    p.add_argument(
        "--no-oracle", action="store_true", help="skip the degraded-oracle diagnostic study"
    )
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench_tuning_"))
    log = work / "bench.log"
    t_all = time.perf_counter()
    load0 = load_average()
    root = prepare_root(work, log)

    # ---- part 1: throughput, one vs two workers
    space = read_search_space(default_space_path("agent"))
    trials = fixed_trials(space, args.trials)
    runs: dict[int, list[dict]] = {1: [], 2: []}
    ratios = []
    for rep in range(args.reps):
        one = throughput(root, trials, 1, rep, log)
        two = throughput(root, trials, 2, rep, log)
        runs[1].append(one)
        runs[2].append(two)
        ratios.append(two["per_hour"] / one["per_hour"])

    # ---- part 2: 20-trial agent studies at a small budget, defaults vs winner, test once
    sections = gain_section(root, work, "real pipeline", [], args.study_trials, log)
    if not args.no_oracle:
        oracle = ["--set", "ppo_prediction_source=oracle", "--set", "oracle_accuracy=0.7"]
        label = "degraded oracle 0.7 (diagnostic: uses future data)"
        sections += gain_section(root, work, label, oracle, args.study_trials, log)
    total = time.perf_counter() - t_all

    # ---- report
    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    ph1 = [r["per_hour"] for r in runs[1]]
    ph2 = [r["per_hour"] for r in runs[2]]
    lines = [
        "# Tuning benchmark",
        "",
        f"`python bench/bench_tuning.py` on {cpu_model()}, {os.cpu_count()} logical CPUs, "
        f"{gpu_description()}, 1-min load average at start {load0:.2f} (the machine is shared "
        f"with other benchmarks: timings are noisy), optuna {optuna.__version__}, whole bench "
        f"{total / 60:.1f} min.",
        "",
        "## Trials per hour, smoke space, one and two workers (CPU)",
        "",
        f"Agent stage, bundled PPO space (`pipeline/tuning/search_spaces/agent.txt`), smoke preset "
        f"(2,048 timesteps per trial, 2 envs), bundled dataset; the same {len(trials)} parameter "
        "sets queued for every run, pruning off, `OMP_NUM_THREADS=1`. Trials per hour from the "
        "first trial's start to the last one's end; wall time includes the start of the "
        f"processes. Median of {args.reps} repetition(s); the ratio is taken inside each "
        "repetition (two workers over one, back to back).",
        "",
        "| workers | trials/hour (median) | per repetition | wall s (median) |",
        "|---|---|---|---|",
        f"| 1 | {med(ph1):.0f} | {', '.join(f'{v:.0f}' for v in ph1)} | "
        f"{med([r['wall'] for r in runs[1]]):.0f} |",
        f"| 2 (`--jobs 2`) | {med(ph2):.0f} | {', '.join(f'{v:.0f}' for v in ph2)} | "
        f"{med([r['wall'] for r in runs[2]]):.0f} |",
        "",
        f"Two workers over one: x{med(ratios):.2f} (median; per repetition "
        f"{', '.join(f'x{r:.2f}' for r in ratios)}).",
        "",
        "GPU `--jobs N` (several classifier trials sharing one GPU) is implemented (N worker "
        "processes on one device, one study) but could not be measured here: this machine has "
        "no GPU.",
        "",
        f"## {args.study_trials}-trial agent studies vs the defaults (bundled dataset)",
        "",
        "Budget: smoke preset sizes (net 64, 64; 2 envs; episodes of 200 bars), "
        "`total_timesteps = 20000`, an evaluation every 5,000 timesteps (2 episodes); step 5 "
        "ran first (DLSTM, smoke preset) for the prediction table. Bundled PPO space, TPE "
        "sampler (seed 0), median pruner. Metric: the best validation mean episode reward "
        "(what the study maximises; higher is better). The defaults are the same config without "
        "tuned values (ppo_config.txt's PPO hyperparameters with the smoke sizes).",
        "",
        *sections,
    ]
    lines.append("")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")
    if args.keep:
        print(f"scratch root kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
