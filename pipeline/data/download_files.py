"""The files of a download: the resumable partial candles with their JSON state, and the final
dataset written atomically once :func:`pipeline.data.load.load_dataset` accepts it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.common import atomic_path, atomic_write_json
from pipeline.data.download_request import DownloadError, DownloadRequest

STATE_FORMAT = 1


def _read_partial(path: Path) -> list[list[float]]:
    """The candles of a partial file; a line cut short by a crash (and anything after it) is
    left out, so the download continues from the last whole candle."""
    rows: list[list[float]] = []
    if not path.is_file():
        return rows
    with open(path, encoding="utf-8", newline="") as f:
        for raw in f:
            if not raw.endswith("\n"):
                break
            cells = raw.strip().split(",")
            try:
                values = [float(c) for c in cells]
            except ValueError:
                break
            if len(values) != 6:
                break
            rows.append(values)
    return rows


def _append_rows(path: Path, rows: Sequence[Sequence[Any]]) -> None:
    """Append candles to the partial file and flush them to disk."""
    with open(path, "a", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        for r in rows:
            w.writerow([int(r[0]), *(repr(float(v)) for v in r[1:6])])
        f.flush()
        os.fsync(f.fileno())


def _load_state(state_path: Path, partial: Path, request: DownloadRequest) -> list[list[float]]:
    """The candles of a partial download of this same request (empty when there is none)."""
    if not state_path.is_file():
        if partial.is_file():
            partial.unlink()  # no state: not ours to continue
        return []
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise DownloadError(
            f"{state_path}: cannot read the partial download's state; rerun with --restart to "
            "discard the partial download and start over"
        )
    mine = request.identity()
    theirs = {k: state.get(k) for k in mine}
    if theirs != mine:
        diff = ", ".join(f"{k} {theirs[k]} (now {mine[k]})" for k in mine if theirs[k] != mine[k])
        raise DownloadError(
            f"{partial}: a partial download of {request.name} with other settings is there "
            f"({diff}); rerun with those settings to continue it, or with --restart to discard "
            "it"
        )
    return _read_partial(partial)


def _save_state(
    state_path: Path, request: DownloadRequest, rows: int, requests: int, retries: int
) -> None:
    atomic_write_json(
        state_path,
        {
            "format": STATE_FORMAT,
            **request.identity(),
            "rows": rows,
            "requests": requests,
            "retries": retries,
            "updated_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


def _write_dataset(df: pd.DataFrame, path: Path, datasets_dir: Path) -> None:
    """The canonical CSV, validated by :func:`pipeline.data.load.load_dataset` before it appears."""
    from pipeline.data.load import load_dataset

    out = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(df["ts"], unit="ms", utc=True).dt.strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            **{c: df[c].astype("float64") for c in ("open", "high", "low", "close", "volume")},
        }
    )
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False, lineterminator="\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a dataset is meant to be shared
        # Raises DatasetError (one line naming the row) before the file appears.
        load_dataset(str(tmp), datasets_dir)
