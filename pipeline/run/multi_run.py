"""One ``runpod_main.py`` run over several datasets: the dataset list, the cross-dataset table
(console, JSON, one PNG) and the one push of every good dataset.

``runpod_main.py --dataset A --dataset B`` (or ``--dataset A,B``) runs one preflight (the machine
once, each dataset's file and run lock), then the driver for each dataset in turn with its push
deferred (:data:`PUSH_DEFERRED_ENV`): a dataset that fails does not stop the others. At the end
the table is built from what steps 5 and 7 wrote (``results/training_summary_{dataset}.json``,
``results/backtest_{model}_{dataset}.json``; nothing is recomputed), and, when pushing, every good
dataset's manifest files plus the table go into ONE commit (:func:`push_datasets`).

Why the entry point pushes rather than the last driver: each driver holds only its own dataset's
run lock and knows only its own manifest, and a dataset that fails must not keep the others'
artifacts from being pushed. The commit is built from the same pieces as
:func:`pipeline.publish.push.push_artifacts` (manifest files, size split, secret refusal, commit,
push with one rebase), over the union of the manifests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.classifiers.model_choice import best_on_validation
from pipeline.common import EXIT_INTERRUPTED, Paths, atomic_path, atomic_write_json
from pipeline.config.schema import Config
from pipeline.run.lock import RunLock, lock_path
from pipeline.run.report_names import COMPARED_STRATEGIES, STRATEGY_LABELS
from pipeline.run.summary import read_json
from pipeline.store.artifacts import Artifacts, dataset_name, multi_run_plot, multi_run_summary
from pipeline.store.manifest import STEP_ENTRY
from pipeline.tables import format_table

log = logging.getLogger(__name__)

PUSH_DEFERRED_ENV = "PIPELINE_PUSH_DEFERRED"
"""Set (``true``) for each driver of a several-dataset run: step 8 is skipped there because the
entry point pushes every good dataset once at the end."""

DEFERRED_REASON = "pushed once for all datasets at the end of runpod_main.py"


def split_datasets(values: Sequence[str]) -> list[str]:
    """``["A", "B,C", "A"]`` -> ``["A", "B", "C"]``: comma lists split, blanks and repeats out."""
    out: list[str] = []
    for value in values:
        for part in str(value).split(","):
            item = part.strip()
            if item and item not in out:
                out.append(item)
    return out


@dataclass
class DatasetOutcome:
    """How one dataset of the run ended: exit code 0 (ok) or the reason it failed."""

    dataset: str  # as given (a name, or an absolute CSV path)
    code: int | None = None  # None: not run (preflight failed, or the run was interrupted)
    reason: str = ""
    started: datetime | None = None
    log_file: Path | None = None

    @property
    def name(self) -> str:
        return dataset_name(self.dataset)

    @property
    def ok(self) -> bool:
        return self.code == 0


# ---------------------------------------------------------------- reading the step reports


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def best_classifier(training_summary: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The classifier best on the validation block (:func:`pipeline.classifiers.model_choice.
    best_on_validation`, what ``prediction_model = auto`` feeds the agent); the test block
    plays no part in the choice."""
    return best_on_validation(training_summary)


def _run_failure(paths: Paths, outcome: DatasetOutcome) -> str:
    """The first failed or interrupted step of this run's summary, else the exit code."""
    summary = read_json(Artifacts(paths, outcome.dataset).run_summary) or {}
    fresh = outcome.started is None or str(summary.get("started") or "") >= (
        outcome.started.isoformat(timespec="seconds")
    )
    if fresh:
        for step in summary.get("steps") or []:
            if isinstance(step, dict) and step.get("status") in ("failed", "interrupted"):
                return f"step {step.get('number')} ({step.get('name')}) {step.get('status')}: " + (
                    " ".join(str(step.get("result") or "").split())
                )
    return f"exit code {outcome.code}"


def _status(code: int | None) -> str:
    if code is None:
        return "not run"
    return {0: "ok", EXIT_INTERRUPTED: "interrupted"}.get(code, "failed")


def dataset_row(paths: Paths, outcome: DatasetOutcome) -> dict[str, Any]:
    """One row of the cross-dataset table, read from the reports steps 5 and 7 wrote."""
    row: dict[str, Any] = {
        "dataset": outcome.name,
        "status": _status(outcome.code),
        "exit_code": outcome.code,
        "reason": outcome.reason,
        "best_classifier": None,
        "test_macro_f1": None,
        "majority_test_macro_f1": None,
        "logreg_test_macro_f1": None,
        "agent_model": None,
        **{f"{name}_total_return": None for name in COMPARED_STRATEGIES},
        "agent_trades": None,
        "verdict": None,
        "log_file": str(outcome.log_file) if outcome.log_file else None,
    }
    if outcome.code not in (None, 0) and not outcome.reason:
        row["reason"] = _run_failure(paths, outcome)
    if not outcome.ok:
        return row
    artifacts = Artifacts(paths, outcome.dataset)
    training = read_json(artifacts.training_summary) or {}
    best = best_classifier(training)
    if best is not None:
        row["best_classifier"] = best[0]
    agent = (read_json(artifacts.run_summary) or {}).get("agent") or {}
    model = agent.get("model") if isinstance(agent, dict) else None
    report: dict[str, Any] = {}
    if isinstance(model, str):
        row["agent_model"] = model
        report = read_json(artifacts.backtest_report(model)) or {}
    # The F1 beside the agent is that of the classifier that fed it (never another model's),
    # else the validation-best model's.
    fed = (report.get("agent") or {}).get("prediction_model") or model
    models = training.get("models") or {}
    if isinstance(fed, str) and isinstance(models.get(fed), dict):
        row["best_classifier"] = fed
    ens = training.get("auto_ensemble") or {}
    if fed == "ensemble" and ens.get("used") and ens.get("members"):
        # auto's ensemble fed the agent: its test F1, the baselines of its members' rows (the
        # same test block)
        first = models.get(ens["members"][0]) or {}
        models = {
            **models,
            "ensemble": {**first, "test_macro_f1": ens["scores"]["test"]["ensemble"]},
        }
        row["best_classifier"] = "ensemble"
    chosen = models.get(row["best_classifier"]) if row["best_classifier"] else None
    if isinstance(chosen, dict):
        for key in ("test_macro_f1", "majority_test_macro_f1", "logreg_test_macro_f1"):
            row[key] = _number(chosen.get(key))
    if report:
        row.update(_agent_columns(report))
    return row


def _agent_columns(report: dict[str, Any]) -> dict[str, Any]:
    """The row's verdict, each compared strategy's test return and the agent's fills."""
    strategies = report.get("strategies") or {}

    def total(strategy: str) -> float | None:
        s = strategies.get(strategy)
        return _number(s.get("total_return")) if isinstance(s, dict) else None

    out: dict[str, Any] = {"verdict": report.get("verdict")}
    for name in COMPARED_STRATEGIES:
        out[f"{name}_total_return"] = total(name)
    agent_metrics = strategies.get("agent")
    if isinstance(agent_metrics, dict) and _number(agent_metrics.get("n_trades")) is not None:
        out["agent_trades"] = int(agent_metrics["n_trades"])
    return out


# ---------------------------------------------------------------- table, JSON, PNG


def _f1(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"


def _pct(v: Any) -> str:
    return f"{v:+.2%}" if isinstance(v, (int, float)) else "n/a"


TABLE_HEADERS = (
    "dataset",
    "status",
    "agent's classifier",
    "test F1",
    "majority",
    "logreg",
    *(STRATEGY_LABELS[name].short for name in COMPARED_STRATEGIES),
    "trades",
)
"""The console table's columns: the test macro-F1 of the classifier that fed the agent (chosen
on validation with ``prediction_model = auto``) vs the majority and logreg
baselines on the same rows; the agent's test-block return vs buy-and-hold, flat and the
classifier rule; the agent's fills."""


def format_multi_table(rows: Sequence[dict[str, Any]]) -> str:
    """The cross-dataset console table (a failed dataset's reason on the line below it)."""
    lines = []
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f"{r['status'].upper()}"
        lines.append(
            (
                r["dataset"],
                status,
                r["best_classifier"] or "n/a",
                _f1(r["test_macro_f1"]),
                _f1(r["majority_test_macro_f1"]),
                _f1(r["logreg_test_macro_f1"]),
                *(_pct(r[f"{name}_total_return"]) for name in COMPARED_STRATEGIES),
                "n/a" if r["agent_trades"] is None else str(r["agent_trades"]),
            )
        )
    table = format_table(TABLE_HEADERS, lines, right=range(3, 11))
    reasons = [f"{r['dataset']}: {r['reason']}" for r in rows if r["status"] != "ok"]
    # What happened, in plain words, for every dataset whose agent ran.
    reasons += [f"{r['dataset']}: {r['verdict']}" for r in rows if r.get("verdict")]
    return table + ("\n" + "\n".join(reasons) if reasons else "")


def write_multi_summary(
    paths: Paths, rows: Sequence[dict[str, Any]], started: datetime, push: bool
) -> Path:
    """``results/multi_run_summary.json`` (atomic): the rows, which failed, when, push planned."""
    failed = [r["dataset"] for r in rows if r["status"] != "ok"]
    payload = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "datasets": [r["dataset"] for r in rows],
        "failed": failed,
        "push": "once for all good datasets" if push else "off",
        "columns": {
            "test_macro_f1": "test macro-F1 of the classifier that fed the agent (else the "
            "validation-best one)",
            "returns": "total return on the test block of the agent and the baselines",
            "agent_trades": "the agent's fills on the test block, the final liquidation included",
        },
        "rows": list(rows),
    }
    return atomic_write_json(multi_run_summary(paths), payload)


def _draw_group(
    ax: Any,
    title: str,
    keys: Sequence[str],
    labels: dict[str, str],
    rows: Sequence[dict[str, Any]],
) -> None:
    """One panel of the cross-dataset plot: a bar per key and dataset, zeros marked, failed
    datasets named, the legend outside the axes."""
    import numpy as np

    names = [r["dataset"] for r in rows]
    x = np.arange(len(rows))
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        values = [r[key] if isinstance(r[key], (int, float)) else 0.0 for r in rows]
        pos = x + (k - (len(keys) - 1) / 2) * width
        bars = ax.bar(pos, values, width, label=labels[key])
        # A zero (flat, an agent that never traded) is a result, not a missing bar: a short
        # tick in the bar's colour marks it.
        for p, v, r in zip(pos, values, rows, strict=True):
            if v == 0.0 and isinstance(r[key], (int, float)):
                ax.plot(
                    [p - width / 2, p + width / 2],
                    [0, 0],
                    color=bars.patches[0].get_facecolor(),
                    linewidth=3,
                )
    for i, r in enumerate(rows):
        if r["status"] != "ok":
            # x in data, y in axes units: the mark sits mid-panel whatever the value range.
            ax.text(
                i,
                0.5,
                r["status"].upper(),
                ha="center",
                va="center",
                color="tab:red",
                transform=ax.get_xaxis_transform(),
            )
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_title(title)
    ax.set_xticks(x, names, rotation=15, ha="right")
    # Outside the axes, so the legend never hides a bar.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def plot_multi_summary(paths: Paths, rows: Sequence[dict[str, Any]]) -> Path:
    """``results/multi_run_summary.png``: test macro-F1 (best, majority, logreg) and test returns
    (agent, buy-and-hold, flat, classifier rule) per dataset; failed datasets are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6.0, 1.8 * len(rows) + 2), 7))
    groups = (
        (ax1, "test macro-F1", ("test_macro_f1", "majority_test_macro_f1", "logreg_test_macro_f1")),
        (
            ax2,
            "test-block total return",
            tuple(f"{name}_total_return" for name in COMPARED_STRATEGIES),
        ),
    )
    labels = {
        "test_macro_f1": "agent's classifier",
        "majority_test_macro_f1": "majority",
        "logreg_test_macro_f1": "logreg",
        **{f"{n}_total_return": STRATEGY_LABELS[n].label for n in COMPARED_STRATEGIES},
    }
    for ax, title, keys in groups:
        _draw_group(ax, title, keys, labels, rows)
    fig.tight_layout()
    out = multi_run_plot(paths)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out


def failed_line(rows: Sequence[dict[str, Any]]) -> str | None:
    """``2 of 3 datasets failed: A (reason); B (reason)`` or None when none failed."""
    bad = [r for r in rows if r["status"] != "ok"]
    if not bad:
        return None
    listed = "; ".join(f"{r['dataset']} ({r['reason'] or r['status']})" for r in bad)
    return f"{len(bad)} of {len(rows)} datasets failed: {listed}"


# ---------------------------------------------------------------- the one push


def commit_metrics(row: dict[str, Any]) -> dict[str, object]:
    """A dataset's key numbers for the commit message."""
    keys = ("test_macro_f1", "agent_total_return", "buy_and_hold_total_return")
    out: dict[str, object] = {k: row[k] for k in keys if isinstance(row.get(k), float)}
    if row.get("best_classifier"):
        out = {"best_classifier": row["best_classifier"], **out}
    return out


def _commit_message(rows: Sequence[dict[str, Any]], files: int, skipped: Sequence[str]) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    names = [r["dataset"] for r in rows]
    count = f"{len(names)} dataset{'s' if len(names) != 1 else ''}"
    subject = f"Run artifacts: {count} @ {stamp} ({', '.join(names)})"
    body = [f"time (UTC): {stamp}"]
    for r in rows:
        metrics = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in commit_metrics(r).items()
        )
        body.append(f"{r['dataset']}: {metrics or 'no metrics'}")
    body.append(f"artifact files: {files}")
    if skipped:
        body.append("skipped (over the per-file limit, kept locally): " + ", ".join(skipped))
    return subject + "\n\n" + "\n".join(body) + "\n"


def push_datasets(
    repo_dir: Path,
    rows: Sequence[dict[str, Any]],
    datasets: Sequence[str],
    extra_files: Sequence[Path],
    config: Any,
) -> Any:
    """Commit what the run manifests of ``datasets`` list, plus ``extra_files`` (the
    cross-dataset table), in ONE commit and push it.

    :func:`pipeline.publish.push.push_datasets` with this run's commit message: the same rules as a
    one-dataset push (token via askpass, masked errors, files holding a secret refused before
    anything is committed, oversized files left out, one rebase when the remote moved on).
    ``config`` is a :class:`pipeline.publish.push.PushConfig`; returns its ``PushResult``; raises
    ``PushError`` (exit code 3), the commit and files kept locally.
    """
    # Imported here: GitPython is needed only when pushing (preflight reports it when missing).
    from pipeline.publish import push as git_push

    names = [dataset_name(d) for d in datasets]
    return git_push.push_datasets(
        repo_dir,
        names,
        config,
        lambda files, skipped: _commit_message(rows, len(files), skipped),
        extra_files=extra_files,
    )


def push_run(
    cfg: Config,
    paths: Paths,
    datasets: Sequence[str],
    rows: Sequence[dict[str, Any]],
    extra_files: Sequence[Path],
) -> Any:
    """Push the good ``datasets`` of a run and the table (``extra_files``) in one commit, under
    their run locks, after recording each final run summary in its manifest (the drivers skipped
    step 8, which records it otherwise). Returns the ``PushResult``; raises ``PipelineError``."""
    from pipeline.publish.push import PushConfig

    train_cfg = cfg.training
    config = PushConfig(
        remote=train_cfg.git_remote,
        branch=train_cfg.git_branch,
        max_file_mb=train_cfg.push_max_file_mb,
    )
    names = {dataset_name(d) for d in datasets}
    locks: list[RunLock] = []
    try:
        for d in datasets:
            locks.append(RunLock(lock_path(paths, d)).acquire())
            files = Artifacts(paths, d)
            files.manifest().record(files.run_summary, "run_summary", STEP_ENTRY)
        good_rows = [r for r in rows if r.get("dataset") in names]
        return push_datasets(paths.root, good_rows, datasets, extra_files, config)
    finally:
        for lock in locks:
            lock.release()


@dataclass
class MultiRun:
    """The datasets of one run and how each ended, in the order given."""

    datasets: list[str]
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    outcomes: dict[str, DatasetOutcome] = field(default_factory=dict)

    def outcome(self, dataset: str) -> DatasetOutcome:
        return self.outcomes.setdefault(dataset, DatasetOutcome(dataset))

    def rows(self, paths: Paths) -> list[dict[str, Any]]:
        return [dataset_row(paths, self.outcome(d)) for d in self.datasets]
