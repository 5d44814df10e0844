"""Past runs of a dataset: nothing a run wrote is lost when the next run writes.

The seed's paths (``results/``, ``models/``, ``ppo_approach/models/``, ...) always hold the current
run's files. Before a new driver run on a dataset writes anything, :func:`archive_previous_run`
puts the previous run's files into a numbered folder ``runs/{dataset}/{n}/`` (RL-Zoo's
``get_latest_run_id`` habit: ``n`` is one more than the highest number there), under the same
relative paths, with the run summary, the run manifest and an ``archive.json`` that says which run
it was (started, status, config hash, files). A ``--resume`` continues the same run and archives
nothing; neither does a second start after a run that is already archived.

The previous run's files are the entries of the dataset's run manifest (the push step's list) plus
the summary and the manifest, less resume-only state (per-epoch classifier checkpoints, PPO
checkpoints). Files that a run only ever replaces through an atomic rename (models, reports,
tables, plots) are hard-linked: the archive costs no disk, and the next run's rename gives the
current path a new file while the archive keeps the old one. Files written in place (logs,
TensorBoard event files, the summary) are copied. Where a hard link is impossible (another file
system, a file system without links) the file is copied. The folder is built under a temporary
name and renamed into place, so an interrupted archive never looks like a run.

:func:`archived_runs` lists them; :func:`run_row` and :func:`compare_rows` give the numbers the
``runs.py`` command prints.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.common import Paths, PipelineError, atomic_write_json
from pipeline.run.summary import read_json
from pipeline.store.artifacts import Artifacts
from pipeline.tables import format_table

ARCHIVE_INFO = "archive.json"
RESUME_ONLY_KINDS = frozenset({"classifier_ckpt", "ppo_checkpoint"})
"""Manifest kinds left out of an archive: state to resume an interrupted run, not its results."""
COPIED_KINDS = frozenset({"log", "tensorboard", "run_summary"})
"""Kinds written in place (appended or rewritten without a rename): copied, never hard-linked."""
CURRENT = "current"
"""The run whose files are in the seed's paths now (``runs.py --compare 3 current``)."""


class RunArchiveError(PipelineError):
    """A run number that does not exist, or an archive that cannot be read."""


@dataclass(frozen=True)
class ArchivedRun:
    """One folder ``runs/{dataset}/{n}/``."""

    number: int
    folder: Path
    info: dict[str, Any]
    """``archive.json``: the run's started / finished / status / config hash, files archived."""

    def summary(self) -> dict[str, Any]:
        """The run's ``run_summary_{dataset}.json`` as archived (``{}`` if it had none)."""
        found = sorted(self.folder.glob("results/run_summary_*.json"))
        return _json(found[0]) if found else {}


def runs_folder(paths: Paths, dataset: str) -> Path:
    """``runs/{dataset}/`` under the artifact root (``dataset``: the artifact name)."""
    return Artifacts(paths, dataset).run_archive


def _json(path: Path) -> dict[str, Any]:
    return read_json(path) or {}


def archived_runs(paths: Paths, dataset: str) -> list[ArchivedRun]:
    """Every complete archive of ``dataset`` (a numbered folder with ``archive.json``), oldest
    first. Folders of other names (a temporary one left by a crash) are not runs."""
    folder = runs_folder(paths, dataset)
    if not folder.is_dir():
        return []
    found = []
    for sub in folder.iterdir():
        if sub.is_dir() and sub.name.isdigit() and (sub / ARCHIVE_INFO).is_file():
            found.append(ArchivedRun(int(sub.name), sub, _json(sub / ARCHIVE_INFO)))
    return sorted(found, key=lambda r: r.number)


def latest_run_number(paths: Paths, dataset: str) -> int:
    """The highest archive number of ``dataset`` (0: none yet)."""
    folder = runs_folder(paths, dataset)
    if not folder.is_dir():
        return 0
    return max((int(p.name) for p in folder.iterdir() if p.name.isdigit()), default=0)


def _same_run(info: dict[str, Any], summary: dict[str, Any]) -> bool:
    return info.get("started") == summary.get("started") and info.get("pid") == summary.get("pid")


def _place(src: Path, dst: Path, copy: bool) -> bool:
    """Hard-link ``src`` at ``dst`` (or copy it when ``copy`` or a link is impossible); returns
    whether it was linked."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        try:
            os.link(src, dst)
            return True
        except OSError:
            pass
    shutil.copy2(src, dst)
    return False


def archive_previous_run(paths: Paths, dataset: str) -> ArchivedRun | None:
    """Archive the run whose summary is in ``results/`` now into ``runs/{dataset}/{n}/``.

    ``None`` when there is no previous run (no summary) or it is archived already (the newest
    archive has the same start time and process id). ``dataset`` is the artifact name.
    """
    files = Artifacts(paths, dataset)
    summary = _json(files.run_summary)
    if not summary:
        return None
    runs = archived_runs(paths, dataset)
    if runs and _same_run(runs[-1].info, summary):
        return None
    remove_partial(paths, dataset)
    number = latest_run_number(paths, dataset) + 1
    target = runs_folder(paths, dataset) / str(number)
    tmp = target.with_name(f".{number}.partial")
    tmp.mkdir(parents=True)
    linked = copied = 0
    missing: list[str] = []
    try:
        entries = files.manifest().entries()
    except PipelineError:
        entries = []  # an unreadable manifest: the summary and the manifest file still go
    placed: set[str] = set()
    for entry in entries:
        if entry.kind in RESUME_ONLY_KINDS:
            continue
        src = entry.absolute(paths.root)
        if not src.is_file():
            missing.append(entry.path)
            continue
        if _place(src, tmp / entry.path, entry.kind in COPIED_KINDS):
            linked += 1
        else:
            copied += 1
        placed.add(entry.path)
    for path in (files.run_summary, files.run_manifest):
        rel = path.relative_to(paths.root).as_posix()
        if rel not in placed and path.is_file():
            _place(path, tmp / rel, copy=True)
            copied += 1
    info = {
        "number": number,
        "dataset": dataset,
        "started": summary.get("started"),
        "finished": summary.get("finished"),
        "pid": summary.get("pid"),
        "status": summary.get("status"),
        "config_hash": summary.get("config_hash"),
        "steps_selected": summary.get("steps_selected"),
        "archived_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files_linked": linked,
        "files_copied": copied,
        "files_missing": missing,
    }
    atomic_write_json(tmp / ARCHIVE_INFO, info)
    os.replace(tmp, target)
    return ArchivedRun(number, target, info)


def find_run(paths: Paths, dataset: str, which: str) -> tuple[str, dict[str, Any]]:
    """``(label, run summary)`` of archive ``which`` (a number) or of the current run."""
    if which == CURRENT:
        summary = _json(Artifacts(paths, dataset).run_summary)
        if not summary:
            raise RunArchiveError(
                f"{Artifacts(paths, dataset).run_summary}: no current run of {dataset}"
            )
        return CURRENT, summary
    runs = {str(r.number): r for r in archived_runs(paths, dataset)}
    if which not in runs:
        have = ", ".join([*runs, CURRENT]) if runs else f"none archived, only {CURRENT}"
        raise RunArchiveError(
            f"run {which!r} of {dataset} not found under {runs_folder(paths, dataset)}; "
            f"expected one of: {have}"
        )
    return which, runs[which].summary()


def run_row(label: str, summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers ``runs.py`` shows for one run, from its summary."""
    agent = summary.get("agent") or {}
    models = summary.get("classifiers") or {}
    f1 = {
        name: m.get("test_macro_f1")
        for name, m in sorted(models.items())
        if isinstance(m, dict) and isinstance(m.get("test_macro_f1"), (int, float))
    }
    return {
        "run": label,
        "started": summary.get("started"),
        "status": summary.get("status"),
        "steps": summary.get("steps_selected"),
        "config_hash": summary.get("config_hash"),
        "overrides": summary.get("config_overrides") or {},
        "test_macro_f1": f1,
        "agent_model": agent.get("model"),
        "agent_return": agent.get("agent_total_return"),
        "agent_sharpe": agent.get("agent_sharpe"),
        "buy_and_hold_return": agent.get("buy_and_hold_total_return"),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def list_table(rows: list[dict[str, Any]]) -> str:
    """One line per run: number, start, status, config hash, agent return vs buy-and-hold and
    the best classifier's test macro-F1."""
    head = ("run", "started", "status", "config", "agent", "return", "buy&hold", "best test F1")
    lines = []
    for r in rows:
        best = max(r["test_macro_f1"].items(), key=lambda kv: kv[1], default=None)
        ret, bh = r["agent_return"], r["buy_and_hold_return"]
        lines.append(
            (
                str(r["run"]),
                _fmt(r["started"]),
                _fmt(r["status"]),
                _fmt(r["config_hash"])[:10],
                _fmt(r["agent_model"]),
                f"{ret:+.2%}" if isinstance(ret, (int, float)) else "-",
                f"{bh:+.2%}" if isinstance(bh, (int, float)) else "-",
                f"{best[0]} {best[1]:.3f}" if best else "-",
            )
        )
    return format_table(head, lines, right=(5, 6))


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Two runs side by side: every value that differs, then how many agree."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    keys = [k for k in [*flat_a, *[k for k in flat_b if k not in flat_a]] if k != "run"]
    differ = [k for k in keys if flat_a.get(k) != flat_b.get(k)]
    lines = [(k, _fmt(flat_a.get(k)), _fmt(flat_b.get(k))) for k in differ]
    body = format_table(("value", f"run {a['run']}", f"run {b['run']}"), lines)
    return f"{body}\n{len(keys) - len(differ)} of {len(keys)} values the same"


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                out[f"{key}.{sub}"] = v
        else:
            out[key] = value
    return out


def remove_partial(paths: Paths, dataset: str) -> None:
    """Delete temporary folders a crash left in ``runs/{dataset}/`` (never a numbered run)."""
    folder = runs_folder(paths, dataset)
    if folder.is_dir():
        for sub in folder.glob(".*.partial"):
            with contextlib.suppress(OSError):
                shutil.rmtree(sub)
