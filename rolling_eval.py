"""Rolling-origin evaluation: more than one test block, one number per block.

The single evaluation tests the agent once, on the last ``test_fraction`` of the bars. With
``evaluation = rolling`` (or this script) that same final stretch is cut into ``rolling_folds``
consecutive test blocks; for each block the classifiers (step 5) and the agent (step 7) are
trained again from scratch on everything before it (an expanding window, with the usual
validation block and purge gaps) and tested on it once. The report is the distribution over the
blocks: each block's agent, classifier rule, buy-and-hold and classifier scores, and the median,
range and the count of blocks where the agent made money or beat buy-and-hold.

    python rolling_eval.py --dataset NAME --preset demo --set rolling_folds=3

Each fold is a dataset of its own, the CSV cut after its test block (``results/rolling_{NAME}/
{NAME}-origin{j}.csv``), so its artifacts (``models/*_{NAME}-origin{j}*``, reports, checkpoints)
are the pipeline's usual files under that name, reused when up to date (a rerun after a stop
continues with the fold it stopped in). Nothing of fold ``j`` sees bars after its test block;
no fold's test block is tuned on (validation picks epochs, checkpoints and seeds, as always).
Writes ``results/rolling_{NAME}.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

from pipeline.common import (
    CliParser,
    Paths,
    PipelineError,
    atomic_write_json,
    atomic_write_text,
    run_cli,
)
from pipeline.config.files import add_config_args, config_from_args
from pipeline.config.schema import Config
from pipeline.store.artifacts import Artifacts, dataset_name
from pipeline.tables import format_table

log = logging.getLogger("rolling_eval")


@dataclasses.dataclass(frozen=True)
class OriginFold:
    """Fold ``index`` (1-based): the dataset's first ``rows`` rows. The agent is tested on bars
    ``test_start .. rows - 1``, the classifiers on ``test_start .. rows - smoothing_k - 1`` (the
    bars with a full label horizon: ``test_fraction`` of the usable span gives exactly them)."""

    index: int
    rows: int
    test_start: int
    test_fraction: float


def origin_folds(n_rows: int, cfg: Config, k: int) -> list[OriginFold]:
    """The ``k`` folds over the single evaluation's test stretch (equal parts, the rest to the
    last): the agents' test blocks tile it without overlap, the classifiers' leave the
    ``smoothing_k`` bars of each label horizon between them.

    Raises :class:`PipelineError` when a part is too short to test on.
    """
    from pipeline.data.features import warmup_bars
    from pipeline.data.splits import MIN_BLOCK_SAMPLES, make_splits

    train_cfg = cfg.training
    warm = warmup_bars(train_cfg.resolved_features())
    full = make_splits(
        n_rows,
        warm,
        train_cfg.lookback,
        train_cfg.smoothing_k,
        train_cfg.test_fraction,
        train_cfg.val_fraction,
        train_cfg.purge_gap,
        train_cfg.walk_forward_folds,
    )
    size = (n_rows - full.test.start) // k
    if size - train_cfg.smoothing_k < MIN_BLOCK_SAMPLES:
        raise PipelineError(
            f"rolling_folds = {k}: the test stretch has {n_rows - full.test.start} bars, so each "
            f"fold would test the classifiers on {size - train_cfg.smoothing_k} (needs at least "
            f"{MIN_BLOCK_SAMPLES}); use fewer folds or more rows"
        )
    folds = []
    for j in range(1, k + 1):
        start = full.test.start + (j - 1) * size
        rows = n_rows if j == k else start + size
        labelled = rows - train_cfg.smoothing_k  # classifier test bars start .. labelled - 1
        span = labelled - full.first_bar  # usable bars of the cut dataset
        folds.append(OriginFold(j, rows, start, (labelled - start) / span))
    return folds


def fold_config(cfg: Config, fold: OriginFold) -> Config:
    """``cfg`` with the fold's test fraction, single evaluation inside a fold."""
    training = dataclasses.replace(
        cfg.training, test_fraction=fold.test_fraction, evaluation="single"
    )
    return dataclasses.replace(cfg, training=training)


def fold_result(
    fold: OriginFold, summary: dict[str, Any], report: dict[str, Any]
) -> dict[str, Any]:
    """One row of the report: the fold's test period, classifier and strategies."""
    s = report["strategies"]
    chosen = (report.get("agent") or {}).get("model_choice") or report["model"]
    classifier = summary["models"].get(str(chosen).split()[0]) or {}
    test = report["blocks"]["test"]
    return {
        "fold": fold.index,
        "test_bars": [fold.test_start, fold.rows],
        "test_start": test["start"],
        "test_end": test["end"],
        "classifier": str(chosen).split()[0],  # "gru (auto: best validation ...)" -> "gru"
        "classifier_test_macro_f1": classifier.get("test_macro_f1"),
        "classifier_direction": classifier.get("direction_accuracy"),
        "classifier_verdict": classifier.get("verdict"),
        **{
            f"{name}_{key}": (s.get(name) or {}).get(key)
            for name in ("agent", "classifier_rule", "buy_and_hold")
            for key in ("total_return", "sharpe")
        },
        "agent_trades": (s.get("agent") or {}).get("trades"),
        "agent_luck": ((report.get("significance") or {}).get("agent") or {}).get("verdict"),
        "verdict": report.get("verdict"),
        "alarms": len(summary.get("alarms") or []) + len(report.get("alarms") or []),
    }


def distribution(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of each strategy's test return over the folds, and the counts."""
    out: dict[str, Any] = {"folds": len(rows)}
    for name in ("agent", "classifier_rule", "buy_and_hold"):
        values = [r[f"{name}_total_return"] for r in rows if r[f"{name}_total_return"] is not None]
        if values:
            out[name] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
    agent = [(r["agent_total_return"], r["buy_and_hold_total_return"]) for r in rows]
    out["agent_positive"] = sum(1 for a, _ in agent if a is not None and a > 0)
    out["agent_beats_buy_and_hold"] = sum(
        1 for a, b in agent if a is not None and b is not None and a > b
    )
    return out


def run_rolling(cfg: Config, dataset: str, paths: Paths) -> dict[str, Any]:
    """Train and test every fold (steps 5 and 7 on the cut dataset); the report, also written
    to ``results/rolling_{dataset}.json``."""
    import train_models
    from pipeline.data.load import load_dataset
    from ppo_approach import train_ppo_agent

    df, info = load_dataset(dataset, paths.datasets)
    k = cfg.training.rolling_folds
    art = Artifacts(paths, info.name)
    rows = []
    for fold in origin_folds(len(df), cfg, k):
        csv = art.rolling_fold_dataset(fold.index)
        csv.parent.mkdir(parents=True, exist_ok=True)
        # The same bytes every time, so a rerun finds the fold's models up to date.
        atomic_write_text(csv, df.iloc[: fold.rows].to_csv(index=False))
        log.info(
            "rolling origin: fold %d of %d, %s, trained on bars before %d, tested on %d..%d",
            fold.index,
            k,
            dataset_name(str(csv)),
            fold.test_start,
            fold.test_start,
            fold.rows - 1,
        )
        fcfg = fold_config(cfg, fold)
        summary = train_models.train_classifiers(fcfg, str(csv), paths)
        report = train_ppo_agent.train_agent(fcfg, str(csv), paths, resume=False)
        got = report["blocks"]["test"]
        if (got["first_bar"], got["last_bar"] + 1) != (fold.test_start, fold.rows):
            raise PipelineError(
                f"rolling fold {fold.index}: the agent was tested on bars {got['first_bar']}.."
                f"{got['last_bar']}, expected {fold.test_start}..{fold.rows - 1}"
            )
        rows.append(fold_result(fold, dict(summary), dict(report)))
    result = {
        "dataset": info.name,
        "dataset_sha256": info.sha256,
        "evaluation": "rolling",
        "rolling_folds": k,
        "folds": rows,
        "distribution": distribution(rows),
    }
    atomic_write_json(art.rolling_report, result)
    print(format_rolling(result))
    return result


def _pct(v: Any) -> str:
    return f"{v:+.2%}" if isinstance(v, (int, float)) else "n/a"


def format_rolling(result: dict[str, Any]) -> str:
    """The per-fold table and one line of the distribution."""
    headers = ("fold", "test period", "classifier", "F1", "dir%", "agent", "rule", "buy&hold")
    table = []
    for r in result["folds"]:
        d = r["classifier_direction"]
        f1 = r["classifier_test_macro_f1"]
        table.append(
            (
                r["fold"],
                f"{r['test_start'][:10]} .. {r['test_end'][:10]}",
                r["classifier"],
                f"{f1:.3f}" if isinstance(f1, (int, float)) else "n/a",
                f"{d:.1%}" if isinstance(d, (int, float)) else "n/a",
                _pct(r["agent_total_return"]),
                _pct(r["classifier_rule_total_return"]),
                _pct(r["buy_and_hold_total_return"]),
            )
        )
    d = result["distribution"]
    a = d.get("agent") or {}
    line = (
        f"rolling origin, {d['folds']} test blocks: agent median {_pct(a.get('median'))} "
        f"[{_pct(a.get('min'))}, {_pct(a.get('max'))}], made money in {d['agent_positive']} of "
        f"{d['folds']}, beat buy-and-hold in {d['agent_beats_buy_and_hold']} of {d['folds']}"
    )
    return format_table(headers, table) + "\n" + line


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the rolling-origin evaluation (usage errors exit 1)."""
    p = CliParser(
        prog="rolling_eval.py",
        description="Rolling-origin evaluation: retrain the classifiers and the agent on an "
        "expanding window before each of rolling_folds test blocks and test on each once.",
    )
    p.add_argument("--dataset", required=True, help="dataset name or path to an OHLCV CSV")
    p.add_argument("--root", type=Path, default=None, help="artifact root (default: project)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    add_config_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run :func:`run_rolling`."""
    from pipeline.common import setup_logging

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.verbose)

    def body() -> int:
        run_rolling(config_from_args(args), args.dataset, Paths.from_root(args.root))
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
