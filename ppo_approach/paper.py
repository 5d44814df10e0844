"""Paper trading: the exported agent over candles that arrive one at a time, with the backtest's
own accounting, a journal and a state that survive kill -9. Nothing is ever sent to an exchange.

A source (:mod:`ppo_approach.paper_sources`: a CSV replayed as if live, or an exchange's public
candles) yields each new closed candle with the history the agent needs. For each candle
:class:`PaperTrader` decides (:class:`ppo_approach.runtime.Decider`: the decision at candle ``t``
fills at the next candle's open and the account is marked at its close, exactly as the backtest
env), logs a status line, saves ``state.json`` and appends one line to ``journal.jsonl``.

Exactly once across kill -9: the state (with this candle's journal record) is written atomically
BEFORE the journal line is appended. A restart appends the state's record when the journal lacks
it, then continues with the first candle after the state's: no decision lost, none repeated (a
decision recomputed after a kill is the same: the state before it is the same).

Imports numpy, pandas and onnxruntime only (through the runtime); matplotlib only inside
:func:`write_equity_png`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.common import atomic_path, atomic_write_bytes, atomic_write_json
from ppo_approach.env_actions import Actions
from ppo_approach.paper_sources import Candle, PaperError, Source, iso
from ppo_approach.runtime import BACKTEST_CURVE_NAME, MANIFEST_NAME, Decider, sha256_bytes

log = logging.getLogger(__name__)

STATE_NAME = "state.json"
JOURNAL_NAME = "journal.jsonl"
PNG_NAME = "equity.png"
STATE_FORMAT = "paper-state/1"
CENT = 0.005
"""The largest difference from the backtest's equity that counts as "to the cent"."""


def load_decider(folder: Path) -> Decider:
    """The agent of export folder ``folder``; one error line when it is not there."""
    if not Path(folder).is_dir():
        raise PaperError(
            f"--export {folder}: no such folder; write it with python export.py --dataset NAME"
        )
    return Decider.load(folder)


# ---------------------------------------------------------------- journal and state


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The journal's complete records (a torn last line, from a kill while writing, left out)."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]  # after the last newline: torn
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            raise PaperError(
                f"{path}: line {n} is not a JSON record; move the file aside"
            ) from None
    return out


def append_line(path: Path, record: dict[str, Any]) -> None:
    """One JSON line, flushed to disk before returning."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


@dataclass
class PaperResult:
    """What one run did: decisions made now and in all, and the comparison with the backtest."""

    decisions: int
    total: int
    out: Path
    comparison: dict[str, Any] | None = None


class PaperTrader:
    """The loop: decide on each candle of ``source``, save the state, append the journal."""

    def __init__(self, decider: Decider, source: Source, out: Path) -> None:
        self.decider, self.source, self.out = decider, source, Path(out)
        self.export_sha = sha256_bytes(decider.folder / MANIFEST_NAME)
        self.interval = float(decider.manifest["dataset"]["interval_seconds"])
        self.capital = float(decider.manifest["agent"]["env"]["initial_capital"])
        self.decisions = 0
        self.state_path = self.out / STATE_NAME
        self.journal_path = self.out / JOURNAL_NAME

    def _refuse(self, why: str) -> PaperError:
        return PaperError(
            f"{self.state_path}: {why}; use --fresh to start over (the old files are moved "
            "aside) or another --out"
        )

    def _move_aside(self) -> None:
        """--fresh: the earlier run's files go to ``previous/{UTC time}/``, never deleted."""
        old = [p for p in (self.state_path, self.journal_path, self.out / PNG_NAME) if p.exists()]
        if not old:
            return
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        dest, n = self.out / "previous" / stamp, 1
        while dest.exists():
            dest, n = self.out / "previous" / f"{stamp}-{n}", n + 1
        dest.mkdir(parents=True)
        for p in old:
            os.replace(p, dest / p.name)
        log.info("--fresh: the earlier run's %s moved to %s", ", ".join(p.name for p in old), dest)

    def resume(self, fresh: bool) -> pd.Timestamp | None:
        """Restore the state of an earlier run (None: a fresh start) and repair its journal."""
        self.out.mkdir(parents=True, exist_ok=True)
        if fresh:
            self._move_aside()
        if not self.state_path.is_file():
            if self.journal_path.is_file() and self.journal_path.stat().st_size:
                raise self._refuse(f"missing, but {self.journal_path.name} is there")
            return None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise self._refuse(f"unreadable ({exc})") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise self._refuse(f"not a {STATE_FORMAT} file")
        if state.get("export_sha256") != self.export_sha:
            raise self._refuse(
                f"belongs to another export (export.json SHA-256 "
                f"{str(state.get('export_sha256'))[:12]}..., this one's {self.export_sha[:12]}...)"
            )
        if state.get("source") != self.source.source:
            raise self._refuse(f"written for another source ({state.get('source')})")
        d = self.decider
        d.account.restore(state["account"])
        d.pending, d.last_timestamp = state["pending"], pd.Timestamp(state["last_timestamp"])
        self.decisions = int(state["decisions"])
        self._repair_journal(state["last_record"])
        log.info(
            "resuming %s: %d decisions so far, the last at %s; going on with the next candle",
            self.out,
            self.decisions,
            state["last_timestamp"],
        )
        return d.last_timestamp

    def _repair_journal(self, record: dict[str, Any]) -> None:
        """Drop a torn last line; append the state's last record when the journal lacks it."""
        path = self.journal_path
        data = path.read_bytes() if path.is_file() else b""
        if data and not data.endswith(b"\n"):
            log.warning("%s: dropping a torn last line (a stop while it was written)", path)
            atomic_write_bytes(path, data[: data.rfind(b"\n") + 1])
        records = read_journal(path)
        last = pd.Timestamp(records[-1]["timestamp"]) if records else None
        want = pd.Timestamp(record["timestamp"])
        if last is not None and last > want:
            raise self._refuse(f"{path.name} goes on past the state's last candle {iso(want)}")
        if last != want:
            append_line(path, record)
            records.append(record)
            log.info(
                "%s: added the record of %s (saved in the state before the stop)", path, iso(want)
            )
        if len(records) != self.decisions:
            log.warning("%s: %d records, the state counts %d", path, len(records), self.decisions)

    # ------------------------------------------------------------ one candle

    def step(self, candle: Candle) -> dict[str, Any]:
        """Decide on ``candle``; save the state, then append the journal; the record."""
        d = self.decider
        before, pending = d.last_timestamp, d.pending
        decision = d.decide(candle.window)
        gap = 0
        if before is not None:
            gap = max(0, round((decision.timestamp - before).total_seconds() / self.interval) - 1)
        self.decisions += 1
        row = candle.window.iloc[-1]
        fill = None
        if d.last_fill is not None:
            order, valid, fee = d.last_fill
            name = d.action_names[pending or 0]
            fill = {"action": name, "order": Actions(order).name, "valid": valid, "fee": fee}
        account = d.account
        record = {
            "decision": self.decisions,
            "timestamp": iso(decision.timestamp),
            "open": float(row["open"]),
            "close": float(row["close"]),
            "fill": fill,
            "cash": account.cash,
            "units": account.units,
            "equity": account.equity,
            "liquidation_equity": account.liquidation()["liquidation_equity"],
            "trades": int(account.state()["_trades"]),
            "action": decision.action,
            "action_name": decision.action_name,
            "target_position": decision.target_position,
            "probabilities": [float(p) for p in decision.probabilities],
            "gap_bars": int(gap),
            "late_seconds": candle.late_seconds,
        }
        self._save(record)  # the state first: a kill before the append is repaired on restart
        append_line(self.journal_path, record)
        self._status(record)
        return record

    def _save(self, record: dict[str, Any]) -> None:
        d = self.decider
        atomic_write_json(
            self.state_path,
            {
                "format": STATE_FORMAT,
                "export": str(d.folder.resolve()),
                "export_sha256": self.export_sha,
                "source": self.source.source,
                "decisions": self.decisions,
                "last_timestamp": record["timestamp"],
                "pending": d.pending,
                "pending_name": None if d.pending is None else d.action_names[d.pending],
                "account": d.account.state(),
                "last_record": record,
                "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )

    def _status(self, r: dict[str, Any]) -> None:
        """The status line of one candle (and a warning for a gap or a late candle)."""
        if r["gap_bars"]:
            log.warning(
                "%s: %d candle(s) missing before it (a gap): nothing filled in, the pending "
                "order fills at this candle's open",
                r["timestamp"],
                r["gap_bars"],
            )
        if r["late_seconds"]:
            log.warning(
                "%s: received %.0f s after its close (late)", r["timestamp"], r["late_seconds"]
            )
        fill = r["fill"]
        filled = ""
        if fill is not None:
            invalid = "" if fill["valid"] else " invalid"
            filled = f" | filled {fill['action']}: {fill['order']}{invalid} fee {fill['fee']:.2f}"
        pf, ps, pr = r["probabilities"]
        log.info(
            "%s close %.8g%s | decided %s (p fall %.3f stat %.3f rise %.3f) | equity %.2f "
            "(%+.2f%%) | trades %d",
            r["timestamp"],
            r["close"],
            filled,
            r["action_name"],
            pf,
            ps,
            pr,
            r["equity"],
            100.0 * (r["equity"] / self.capital - 1.0),
            r["trades"],
        )

    # ------------------------------------------------------------ the run

    def run(self, fresh: bool = False, max_candles: int | None = None) -> PaperResult:
        """Resume (or start), decide on each new candle until the source ends, ``max_candles``
        decisions or Ctrl-C; the equity PNG in any case, the backtest comparison at the end."""
        after = self.resume(fresh)
        done = 0
        try:
            for candle in self.source.candles(after):
                self.step(candle)
                done += 1
                if max_candles is not None and done >= max_candles:
                    break
        finally:
            records, curve = self._plot()
        result = PaperResult(done, self.decisions, self.out)
        if curve is not None:
            result.comparison = compare_with_backtest(records, curve)
        elif self.source.source["kind"] == "replay":
            bt = self.decider.manifest["backtest"]
            log.info(
                "the journal does not cover the backtest's candles (%s to %s from its first "
                "one): no comparison",
                bt["start"],
                bt["end"],
            )
        log.info("%d decision(s) now, %d in all; files in %s", done, self.decisions, self.out)
        return result

    def _plot(self) -> tuple[list[dict[str, Any]], pd.DataFrame | None]:
        """The journal, backtest.csv when the journal covers it, and the PNG of both; at the end
        of any run, so a failure here is a warning: it must not hide the run's own outcome."""
        try:
            records = read_journal(self.journal_path)
            curve = backtest_curve(self.decider, records)
            write_equity_png(self.out / PNG_NAME, records, curve, self._title())
            return records, curve
        except Exception as exc:
            log.warning("%s: not written (%s: %s)", PNG_NAME, type(exc).__name__, exc)
            return [], None

    def _title(self) -> str:
        s = self.source.source
        where = Path(s["csv"]).name if s["kind"] == "replay" else f"{s['exchange']} {s['symbol']}"
        return f"paper trading {self.decider.manifest['dataset']['dataset']}: {where}"


# ---------------------------------------------------------------- the backtest and the plot


def backtest_curve(decider: Decider, records: list[dict[str, Any]]) -> pd.DataFrame | None:
    """backtest.csv when the journal starts at the backtest's first candle and holds its last,
    else None."""
    path = decider.folder / BACKTEST_CURVE_NAME
    if not records or not path.is_file():
        return None
    curve = pd.read_csv(path)
    stamps = pd.to_datetime(curve["timestamp"], utc=True)
    seen = {pd.Timestamp(r["timestamp"]) for r in records}
    if pd.Timestamp(records[0]["timestamp"]) != stamps.iloc[0] or stamps.iloc[-1] not in seen:
        return None
    return curve


def compare_with_backtest(records: list[dict[str, Any]], curve: pd.DataFrame) -> dict[str, Any]:
    """The journal's equity vs backtest.csv's candle by candle, and the final liquidation
    value; logged and returned."""
    by_time = {pd.Timestamp(r["timestamp"]): r for r in records}
    stamps = pd.to_datetime(curve["timestamp"], utc=True)
    rows = [by_time.get(t) for t in stamps]
    paper = np.array([np.nan if r is None else r["equity"] for r in rows])  # (n,)
    diff = np.abs(paper - curve["equity"].to_numpy(dtype=np.float64))
    ok = diff < CENT  # NaN (a candle missing from the journal) is not ok
    same = int(ok.sum())
    out: dict[str, Any] = {"candles": len(ok), "to_the_cent": same, "max_abs_diff": None}
    if ok.all():
        out["max_abs_diff"] = float(diff.max())
        log.info(
            "matches the backtest: %d of %d candles to the cent (largest difference %.2e)",
            same,
            len(ok),
            out["max_abs_diff"],
        )
    else:
        i = int(np.argmin(ok))
        out["first_difference"] = iso(stamps.iloc[i])
        log.warning(
            "differs from the backtest: %d of %d candles to the cent; the first that differs: "
            "%s, paper %.2f, backtest %.2f",
            same,
            len(ok),
            iso(stamps.iloc[i]),
            paper[i],
            curve["equity"].iloc[i],
        )
    last = rows[-1]
    want = float(curve["liquidation_equity"].iloc[-1])
    if last is not None:
        got = float(last["liquidation_equity"])
        out["liquidation"] = {"paper": got, "backtest": want}
        log.info(
            "final liquidation value %.2f, the backtest's %.2f (difference %.2e)",
            got,
            want,
            abs(got - want),
        )
    return out


def write_equity_png(
    path: Path, records: list[dict[str, Any]], curve: pd.DataFrame | None, title: str
) -> Path | None:
    """The paper equity by candle (and the backtest's curve), written atomically; None when
    there is nothing to draw or matplotlib is missing."""
    if not records:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.info("matplotlib is not installed: no %s (pip install matplotlib)", path.name)
        return None
    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    when = pd.to_datetime([r["timestamp"] for r in records], utc=True).tz_convert(None)
    if curve is not None:
        bt_when = pd.to_datetime(curve["timestamp"], utc=True).dt.tz_convert(None)
        ax.plot(bt_when, curve["equity"], color="0.6", lw=2.5, label="backtest")
    ax.plot(when, [r["equity"] for r in records], color="tab:blue", lw=1.0, label="paper")
    ax.set_title(title)
    ax.set_ylabel("equity")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.autofmt_xdate()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
