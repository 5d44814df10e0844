"""The run summary's parts: step names, the row of a step, rows carried over from an earlier
run (marked with the config they came from), the console table, the one-line results of steps 5-7
and the secret masking of the JSON.

The driver (``runpod_train.py``) owns the summary file; this module holds what does not depend
on the steps themselves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.common import EXIT_INTERRUPTED, EXIT_OK
from pipeline.config.schema import Config
from pipeline.run.report_names import HEADLINE_METRICS
from pipeline.run.step_results import BacktestReport
from pipeline.secrets import mask_secrets
from pipeline.tables import format_table

STEP_NAMES: dict[int, str] = {
    1: "paths and environment",
    2: "dependencies",
    3: "GPU",
    4: "dataset",
    5: "train classifiers",
    6: "validate models",
    7: "train PPO agent",
    8: "push",
}
ALL_STEPS: tuple[int, ...] = tuple(STEP_NAMES)


@dataclass
class StepOutcome:
    """What a step reports: ``ok`` / ``warn`` / ``skipped``, a key-result line and details."""

    status: str = "ok"
    result: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepRecord:
    """One row of the run summary."""

    number: int
    name: str
    status: str  # ok | warn | skipped | failed | interrupted | not run | (earlier run)
    seconds: float | None = None
    result: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    earlier: bool = False
    earlier_config_hash: str | None = None  # the config of the run a carried-over row is from
    earlier_started: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        out = {
            "number": self.number,
            "name": self.name,
            "status": self.status,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "result": self.result,
            "details": self.details,
            "earlier_run": self.earlier,
        }
        if self.earlier:
            out["earlier_config_hash"] = self.earlier_config_hash
            out["earlier_started"] = self.earlier_started
        return out


def config_overrides(cfg: Config) -> dict[str, str]:
    """Keys set by ``--preset`` or ``--set`` (not by the config files) and where from."""
    return {k: v for k, v in cfg.sources.items() if v.startswith("preset ") or v == "--set"}


def describe_overrides(overrides: dict[str, str]) -> str:
    """``preset smoke: 26 values; --set: training.epochs`` (or ``config files only``)."""
    by_source: dict[str, list[str]] = {}
    for key, source in overrides.items():
        by_source.setdefault(source, []).append(key)
    parts = []
    for source, keys in by_source.items():
        if source == "--set":
            parts.append(f"--set: {', '.join(keys)}")
        else:
            parts.append(f"{source}: {len(keys)} values")
    return "; ".join(parts) or "config files only"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fmt_f1(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def _fmt_pct(value: Any) -> str:
    return f"{value:+.2%}" if isinstance(value, (int, float)) else "n/a"


def _fmt_num(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "n/a"


def classifier_line(summary: dict[str, Any]) -> str:
    """``dlstm test F1 0.412 vs majority 0.167; ...`` (failed models say why).

    A model's ``headline`` (written by train_models from the same block as its summary table)
    is used as is when present, so the step line and the table never quote different blocks.
    """
    parts = []
    for name, m in (summary.get("models") or {}).items():
        if not isinstance(m, dict):
            continue
        if m.get("status") not in (None, "trained", "ok", "skipped", "reused", "up to date"):
            parts.append(f"{name} {m.get('status')}: {m.get('reason') or ''}".strip())
            continue
        headline = m.get("headline")
        if isinstance(headline, str) and headline.strip():
            text = " ".join(headline.split())
            parts.append(text if text.startswith(f"{name} ") else f"{name} {text}")
            continue
        parts.append(
            f"{name} test F1 {_fmt_f1(m.get('test_macro_f1'))} vs majority "
            f"{_fmt_f1(m.get('majority_test_macro_f1'))}"
        )
    return "; ".join(parts) or "no models in the training summary"


def agent_results(report: BacktestReport) -> dict[str, Any]:
    """Agent vs buy-and-hold on the test block, from step 7's report."""
    strategies = report["strategies"]
    agent = strategies.get("agent") or {}
    bh = strategies.get("buy_and_hold") or {}
    return {
        "model": report["model"],
        "prediction_source": report["prediction_source"],
        **{f"agent_{m}": agent.get(m) for m in HEADLINE_METRICS},
        **{f"buy_and_hold_{m}": bh.get(m) for m in HEADLINE_METRICS},
        "in_sample_predictions": bool(report["in_sample_predictions"]),
        "oracle": (report.get("oracle") or {}).get("label"),
        "seeds": _seed_spread(report.get("seeds")),
        # which classifier fed the agent and why, and what happened in plain words
        "model_choice": (report.get("agent") or {}).get("model_choice"),
        "verdict": report.get("verdict"),
        "alarms": report.get("alarms") or [],  # step 7's leak alarms
    }


def _seed_spread(seeds: dict[str, Any] | None) -> dict[str, Any] | None:
    """``seeds > 1``: how many agents, the selected seed and the test-return spread."""
    if not seeds:
        return None
    return {
        "n": len(seeds.get("runs", [])),
        "selected_seed": seeds.get("selected_seed"),
        "median": seeds.get("test_total_return_median"),
        "min": seeds.get("test_total_return_min"),
        "max": seeds.get("test_total_return_max"),
    }


def agent_line(a: dict[str, Any]) -> str:
    """``agent return +1.20% Sharpe 0.50 vs buy-and-hold ...`` (test block).

    A run whose agent saw in-sample classifier predictions says so: those inputs are better than
    anything available live, so the return would look too good for the wrong reason.
    """
    line = (
        f"agent return {_fmt_pct(a.get('agent_total_return'))} Sharpe "
        f"{_fmt_num(a.get('agent_sharpe'))} vs buy-and-hold "
        f"{_fmt_pct(a.get('buy_and_hold_total_return'))} Sharpe "
        f"{_fmt_num(a.get('buy_and_hold_sharpe'))} (test block)"
    )
    spread = a.get("seeds")
    if spread:
        line += (
            f"; seed {spread['selected_seed']} of {spread['n']} chosen on validation, test return "
            f"over the seeds: median {_fmt_pct(spread['median'])} [{_fmt_pct(spread['min'])}, "
            f"{_fmt_pct(spread['max'])}]"
        )
    if a.get("oracle"):
        line += f" [{a['oracle']}]"
    line += " [IN-SAMPLE predictions]" if a.get("in_sample_predictions") else ""
    if a.get("model_choice"):
        line += f"; classifier {a['model_choice']}"
    return line + (f"; {a['verdict']}" if a.get("verdict") else "")


def validation_line(report: dict[str, Any]) -> str:
    """``dlstm (+2 walk-forward models) ok; prediction table 1,745 rows`` from step 6's report."""
    parts = []
    for name, d in report.items():
        if name == "table" or not isinstance(d, dict):
            continue
        wf = d.get("walk_forward_models")
        parts.append(f"{name} (+{wf} walk-forward models)" if wf else name)
    text = (", ".join(parts) or "no models") + " load and predict"
    table = report.get("table")
    if isinstance(table, dict) and isinstance(table.get("rows"), int):
        text += f"; prediction table {table['rows']:,} rows"
        if table.get("in_sample_rows"):
            text += f" ({table['in_sample_rows']:,} in-sample)"
    return text


_NOT_CARRIED = {"not run", "not selected", "pending", "in progress"}
"""Row statuses of an earlier summary that are no result and are not carried over."""


def _earlier_records(earlier: dict[str, Any]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for s in earlier.get("steps") or []:
        if isinstance(s, dict) and isinstance(s.get("number"), int):
            out[s["number"]] = s
    return out


def carried_record(n: int, earlier: dict[str, Any]) -> StepRecord:
    """Step ``n`` (not selected now) as the earlier summary on disk recorded it, marked so.

    The row keeps the config hash and start time of the run it came from (a row that earlier
    run itself carried over keeps its own origin), so a summary never passes an older run's
    result off as this invocation's.
    """
    prev = _earlier_records(earlier).get(n)
    if prev is None or prev.get("status") in _NOT_CARRIED:
        return StepRecord(n, STEP_NAMES[n], "not selected")
    origin_hash = earlier.get("config_hash") if not prev.get("earlier_run") else None
    origin_started = earlier.get("started") if not prev.get("earlier_run") else None
    return StepRecord(
        n,
        STEP_NAMES[n],
        str(prev.get("status")),
        prev.get("seconds"),
        str(prev.get("result") or ""),
        prev.get("details") or {},
        earlier=True,
        earlier_config_hash=prev.get("earlier_config_hash") or origin_hash,
        earlier_started=prev.get("earlier_started") or origin_started,
    )


def format_summary(records: Sequence[StepRecord], config_hash: str | None = None) -> str:
    """The end-of-run table: step, status, time, key result.

    A carried-over row says ``(earlier run)``, and also ``other config`` when it came from a run
    with a different config hash than ``config_hash``.
    """
    rows = []
    for r in records:
        secs = "" if r.seconds is None else f"{r.seconds:.1f} s"
        status = r.status
        if r.earlier:
            other = (
                config_hash is not None
                and r.earlier_config_hash is not None
                and r.earlier_config_hash != config_hash
            )
            status += (
                f" (earlier run, config {r.earlier_config_hash})" if other else " (earlier run)"
            )
        rows.append((f"{r.number} {r.name}", status, secs, r.result))
    return format_table(("step", "status", "time", "key result"), rows)


def mask_payload(obj: Any, secrets: Sequence[str]) -> Any:
    """Every string in a JSON-able structure with secrets (tokens, URL passwords) masked."""
    if isinstance(obj, str):
        return mask_secrets(obj, secrets)
    if isinstance(obj, dict):
        return {k: mask_payload(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [mask_payload(v, secrets) for v in obj]
    if isinstance(obj, Path):
        return mask_secrets(str(obj), secrets)
    return obj


def run_status(exit_code: int | None) -> str:
    if exit_code is None:
        return "running"
    if exit_code == EXIT_OK:
        return "ok"
    if exit_code == EXIT_INTERRUPTED:
        return "interrupted"
    return "failed"


def carried_over(
    config_hash: str, records: Sequence[StepRecord], earlier: dict[str, Any]
) -> dict[str, Any] | None:
    """Which earlier results this summary repeats, from which run and config.

    ``None`` when every row is this invocation's. The classifier and agent numbers of carried
    steps 5 and 7 are the earlier summary's (its own or those it carried itself), never the
    reports now on disk, which a later partial run may have rewritten.
    """
    carried = [r for r in records if r.earlier]
    if not carried:
        return None
    prev_carry = (
        earlier.get("carried_over") if isinstance(earlier.get("carried_over"), dict) else {}
    )
    numbers = {r.number for r in carried}

    def earlier_value(key: str, step: int) -> Any:
        if step not in numbers:
            return None
        value = earlier.get(key)
        return value if value is not None else (prev_carry or {}).get(key)

    hashes = sorted({r.earlier_config_hash for r in carried if r.earlier_config_hash})
    return {
        "steps": sorted(numbers),
        "config_hashes": hashes,
        "same_config": hashes == [config_hash],
        "from_run_started": sorted({r.earlier_started for r in carried if r.earlier_started}),
        "classifiers": earlier_value("classifiers", 5),
        "agent": earlier_value("agent", 7),
    }
