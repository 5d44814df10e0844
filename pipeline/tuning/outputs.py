"""The tuner's output files: the best-parameter file, the top-trials table, the plots, the full
pipeline's command and the summary (and the console lines that end a study)."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.common import atomic_write_json, atomic_write_text
from pipeline.config.values import format_value
from pipeline.store import artifacts as art
from pipeline.tuning.space import SearchSpace
from pipeline.tuning.trials import METRICS, best_of, chosen_trial, counts, trades_of

if TYPE_CHECKING:
    import optuna

OUTPUT_NAMES = {
    "best": art.TUNING_BEST_PARAMS_NAME,
    "history": art.TUNING_HISTORY_PLOT_NAME,
    "importance": art.TUNING_IMPORTANCE_PLOT_NAME,
    "top": art.TUNING_TOP_TRIALS_NAME,
    "command": art.TUNING_COMMAND_NAME,
    "summary": art.TUNING_SUMMARY_NAME,
}
"""The output files' names (``tune.py`` hands them to :func:`write_outputs`)."""


def best_params_text(
    study: optuna.Study, stage: str, dataset: str, space: SearchSpace, base: Sequence[str] = ()
) -> str:
    """The best trial's parameters as a ``--set-file`` (``[training]`` / ``[ppo]`` sections)."""
    best = chosen_trial(study)
    by_section: dict[str, list[str]] = {"training": [], "ppo": []}
    for name, value in best.params.items():
        section, _, key = name.partition(".")
        p = space.get(name)
        text = _format_param(value, p.kind if p is not None else "")
        by_section.setdefault(section, []).append(f"{key} = {text}")
    lines = [
        f"# best parameters of tune.py --stage {stage} on {dataset} (study {study.study_name!r}):",
        f"# trial {best.number}, {METRICS[stage]} {best.value:.6g}",
        "# use: python runpod_main.py --dataset NAME --set-file THIS_FILE (every step takes it)",
    ]
    if base:
        lines.append(f"# tuned on top of: {' '.join(base)}")
    # The run that uses these settings deflates its agent's Sharpe for every trial tried.
    from optuna.trial import TrialState

    tried = sum(t.state == TrialState.COMPLETE for t in study.trials)
    by_section.setdefault("ppo", []).append(f"configurations_tried = {max(tried, 1)}")
    for section, items in by_section.items():
        if items:
            lines += ["", f"[{section}]", *items]
    return "\n".join(lines) + "\n"


def _format_param(value: Any, kind: str) -> str:
    if kind == "float" and isinstance(value, float):
        return repr(value)
    return format_value(value) if not isinstance(value, str) else value


def top_trials_table(study: optuna.Study, stage: str, n: int = 10) -> str:
    """The ``n`` best complete trials as a Markdown table (value, parameters, duration)."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    done.sort(  # as chosen_trial: ties by the most trades, then the earliest
        key=lambda t: (t.value if t.value is not None else -math.inf, trades_of(t) or 0, -t.number),
        reverse=True,
    )
    names = sorted({k for t in done for k in t.params})
    trades = stage == "agent"
    head = ["rank", "trial", METRICS[stage], *(["trades"] if trades else []), *names, "seconds"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rank, t in enumerate(done[:n], start=1):
        secs = t.duration.total_seconds() if t.duration is not None else float("nan")
        cells = [str(rank), str(t.number), f"{t.value:.5g}"]
        if trades:
            cells.append("?" if trades_of(t) is None else str(trades_of(t)))
        cells += [_short(t.params.get(k, "")) for k in names]
        cells.append(f"{secs:.1f}")
        rows.append("| " + " | ".join(cells) + " |")
    c = counts(study)
    tally = ", ".join(f"{v} {k.lower()}" for k, v in sorted(c.items()))
    return (
        "\n".join([f"Top {min(n, len(done))} of the study's trials ({tally}).", "", *rows]) + "\n"
    )


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def plot_study(study: optuna.Study, history: Path, importance: Path) -> list[str]:
    """Optuna's matplotlib optimisation history and parameter importances as PNGs; returns
    notes for plots that could not be made (e.g. importances need two complete trials with
    different values)."""
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    notes = []
    for path, fn in (
        (history, ovm.plot_optimization_history),
        (importance, ovm.plot_param_importances),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning of optuna's matplotlib API
                fn(study)
            fig = plt.gcf()
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            tmp = path.with_name(f".{path.name}.tmp.png")
            fig.savefig(tmp, dpi=100)
            plt.close(fig)
            tmp.replace(path)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            plt.close("all")
            notes.append(f"{path.name}: not drawn ({exc})")
    return notes


def full_run_command(dataset: str, best_params: Path, extra: Sequence[str] = ()) -> str:
    """The command that runs the whole pipeline with the best parameters. ``dataset`` is what
    the tuner was given (a path made absolute), not the artifact stem, which names a file only
    in ``datasets/``."""
    return shlex.join(
        ["python", "runpod_main.py", "--dataset", dataset, *extra, "--set-file", str(best_params)]
    )


def write_outputs(
    study: optuna.Study,
    out_dir: Path,
    stage: str,
    dataset: str,
    space: SearchSpace,
    base_args: Sequence[str],
    names: dict[str, str],
    run_dataset: str | None = None,
    run_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Write the best-parameter file, the PNGs, the top-trials table, the command and a summary
    JSON into ``out_dir``; ``names`` maps ``best``, ``history``, ``importance``, ``top``,
    ``command``, ``summary`` to file names. ``run_dataset`` (default ``dataset``) and
    ``run_args`` (``--root``) go into the command. Returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    best_value, best_number = best_of(study)
    summary: dict[str, Any] = {
        "stage": stage,
        "dataset": dataset,
        "study": study.study_name,
        "metric": METRICS[stage],
        "direction": "maximize",
        "trials": counts(study),
        "best_value": best_value,
        "best_trial": best_number,
        "search_space": str(space.path),
    }
    if best_number is None:
        summary["note"] = "no complete trial yet: no best parameters"
        atomic_write_json(out_dir / names["summary"], summary)
        return summary
    best_path = out_dir / names["best"]
    atomic_write_text(best_path, best_params_text(study, stage, dataset, space, base_args))
    command = full_run_command(run_dataset or dataset, best_path, [*base_args, *run_args])
    best = chosen_trial(study)
    summary["best_trades"] = trades_of(best)
    atomic_write_text(out_dir / names["command"], command + "\n")
    atomic_write_text(out_dir / names["top"], top_trials_table(study, stage))
    notes = plot_study(study, out_dir / names["history"], out_dir / names["importance"])
    summary.update(
        {
            "best_params": best.params,
            "best_params_file": str(best_path),
            "command": command,
            "plot_notes": notes,
        }
    )
    atomic_write_json(out_dir / names["summary"], summary)
    return summary


def summary_lines(summary: dict[str, Any], out_dir: Path) -> list[str]:
    """What the console shows at the end."""
    c = summary["trials"]
    lines = [
        f"study {summary['study']}: " + ", ".join(f"{v} {k.lower()}" for k, v in sorted(c.items())),
    ]
    if summary.get("best_trial") is None:
        return [*lines, "no complete trial: nothing to report yet"]
    lines += [
        f"{summary['metric']}: {summary['best_value']:.5g} at best (trial {summary['best_trial']}"
        + (
            f", {summary['best_trades']} trades at its best evaluation)"
            if summary.get("best_trades") is not None
            else ")"
        ),
        f"best parameters: {summary['best_params_file']}",
        f"outputs: {out_dir}",
        f"full pipeline with them: {summary['command']}",
    ]
    if summary.get("best_trades") == 0:
        lines.append(
            "note: the best trial never trades at its best evaluation: its score is that of "
            "staying flat, not of a strategy"
        )
    return lines
