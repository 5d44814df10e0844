"""paper_trade.py and ppo_approach/paper.py: a replay of the test block reproduces backtest.csv on
every candle; kill -9 and restart lose and repeat no decision; the live source (a fake exchange
and a fake clock) decides as the replay, resumes, records gaps and late candles; one-line errors;
no keys, no orders; it runs with torch, SB3, scikit-learn, ta and LightGBM blocked."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from test_ppo_agent import DATASET, trained  # noqa: F401  (the module-scoped smoke agent)

import paper_trade
from pipeline.common import Paths
from pipeline.config.files import load_config
from pipeline.data.load import load_dataset
from ppo_approach import paper
from ppo_approach.paper_sources import ExchangeSource

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3600.0


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def paper_log() -> Iterator[list[str]]:
    """The messages of ``ppo_approach.paper`` inside the block (root logging restored after:
    paper_trade.main sets it up)."""
    handler, logger, root = _Lines(), logging.getLogger("ppo_approach.paper"), logging.getLogger()
    before = (list(root.handlers), root.level, logger.level)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        root.handlers[:], root.level = before[0], before[1]
        logger.setLevel(before[2])


@pytest.fixture(scope="module")
def exported(trained: dict[str, Any], ppo_source_root: Path) -> dict[str, Any]:  # noqa: F811
    """The smoke agent exported (with the classifier files of the run behind its table)."""
    from ppo_approach.export_bundle import export_agent

    root = Path(trained["root"])
    for folder in ("models", "scalers"):
        shutil.copytree(ppo_source_root / folder, root / folder, dirs_exist_ok=True)
    result = export_agent(load_config(None, None, "smoke", []), DATASET, Paths.from_root(root))
    csv = root / "datasets" / f"{DATASET}.csv"
    return {
        "folder": result.folder,
        "csv": csv,
        "candles": load_dataset(str(csv), root / "datasets")[0],
        "curve": pd.read_csv(result.folder / "backtest.csv"),
        "manifest": result.manifest,
    }


def _args(exported: dict[str, Any], out: Path) -> list[str]:
    return [
        "--export",
        str(exported["folder"]),
        "--replay",
        str(exported["csv"]),
        "--out",
        str(out),
    ]


@pytest.fixture(scope="module")
def replayed(exported: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted replay of the whole test block through ``paper_trade.main``."""
    out = tmp_path_factory.mktemp("paper") / "replay"
    with paper_log() as lines:
        code = paper_trade.main(_args(exported, out))
    return {"code": code, "out": out, "records": paper.read_journal(out / "journal.jsonl"),
            "log": lines}  # fmt: skip


@pytest.mark.integration
def test_a_replay_of_the_test_block_matches_the_backtest_on_every_candle(
    exported: dict[str, Any], replayed: dict[str, Any]
) -> None:
    curve, records, out = exported["curve"], replayed["records"], replayed["out"]
    n = len(curve)
    assert replayed["code"] == 0
    assert len(records) == n == exported["manifest"]["backtest"]["bars"]
    assert [r["timestamp"] for r in records] == curve["timestamp"].tolist()
    assert [r["decision"] for r in records] == list(range(1, n + 1))
    equity = np.array([r["equity"] for r in records])
    assert np.abs(equity - curve["equity"].to_numpy()).max() < 0.005
    assert [r["action"] for r in records[:-1]] == curve["action"].iloc[:-1].astype(int).tolist()
    assert len({r["action"] for r in records}) > 1  # the agent trades: the match is not vacuous
    assert abs(records[-1]["liquidation_equity"] - curve["liquidation_equity"].iloc[-1]) < 0.005
    # each fill is the decision before it, filled at this candle's open
    assert records[0]["fill"] is None
    pairs = zip(records[:-1], records[1:], strict=True)
    assert all(r["fill"]["action"] == p["action_name"] for p, r in pairs)
    assert f"matches the backtest: {n} of {n} candles to the cent" in "\n".join(replayed["log"])
    assert any(line.startswith("final liquidation value") for line in replayed["log"])
    state = json.loads((out / "state.json").read_text())
    assert state["decisions"] == n and state["last_record"] == records[-1]
    assert (out / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _start(exported: dict[str, Any], out: Path, end: str) -> subprocess.Popen[bytes]:
    with open(out.parent / f"{out.name}.log", "ab") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "paper_trade.py", *_args(exported, out)]
            + ["--end", end, "--replay-delay", "0.05"],
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )


def _kill_after(proc: subprocess.Popen[bytes], journal: Path, lines: int) -> None:
    """SIGKILL ``proc`` once ``journal`` has ``lines`` lines."""
    deadline = time.monotonic() + 90
    while not (journal.is_file() and journal.read_bytes().count(b"\n") >= lines):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.integration
def test_kill_9_and_restart_lose_and_repeat_no_decision(
    exported: dict[str, Any], replayed: dict[str, Any], tmp_path: Path
) -> None:
    want = replayed["records"][:30]
    out = tmp_path / "killed"
    out.mkdir()
    journal = out / "journal.jsonl"
    _kill_after(_start(exported, out, want[-1]["timestamp"]), journal, 5)
    # the worst moment: killed after the state was saved, with the journal line half written
    state = json.loads((out / "state.json").read_text())
    kept = [r for r in paper.read_journal(journal) if r["timestamp"] < state["last_timestamp"]]
    torn = json.dumps(state["last_record"])[:40]
    journal.write_text("".join(json.dumps(r) + "\n" for r in kept) + torn)
    _kill_after(_start(exported, out, want[-1]["timestamp"]), journal, 15)
    assert _start(exported, out, want[-1]["timestamp"]).wait(timeout=120) == 0
    got = paper.read_journal(journal)
    assert [r["timestamp"] for r in got] == [r["timestamp"] for r in want]  # none lost or twice
    assert got == want  # the same decisions, fills and equity as the uninterrupted run


@pytest.mark.integration
def test_ctrl_c_and_sigterm_exit_130_with_the_png_written(
    exported: dict[str, Any], replayed: dict[str, Any], tmp_path: Path
) -> None:
    out, end = tmp_path / "stopped", replayed["records"][40]["timestamp"]
    out.mkdir()
    for signum, lines in ((signal.SIGINT, 3), (signal.SIGTERM, 6)):
        proc = _start(exported, out, end)
        journal = out / "journal.jsonl"
        while not (journal.is_file() and journal.read_bytes().count(b"\n") >= lines):
            assert proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == 130
        assert (out / "equity.png").read_bytes()[:4] == b"\x89PNG"
    got = paper.read_journal(out / "journal.jsonl")
    assert got == replayed["records"][: len(got)]  # the second run went on from the first


class FakeClock:
    """Seconds since the epoch that move only when the trader sleeps."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class FakeExchange:
    """ccxt's public ``fetch_ohlcv`` over the dataset's candles that have started by the fake
    clock's time (the still-open one included, as exchanges return it), ``skip`` left out;
    anything else the trader touched would fail the test."""

    def __init__(self, candles: pd.DataFrame, clock: FakeClock, skip: tuple[str, ...] = ()) -> None:
        ms = [int(t.value // 1_000_000) for t in candles["timestamp"]]
        cols = candles[["open", "high", "low", "close", "volume"]].to_numpy().tolist()
        gone = {int(pd.Timestamp(s).value // 1_000_000) for s in skip}
        self._rows = [[m, *c] for m, c in zip(ms, cols, strict=True) if m not in gone]
        self._ms = np.array([r[0] for r in self._rows])
        self._clock = clock

    def fetch_ohlcv(
        self, symbol: str, timeframe: str, since: int | None = None, limit: int | None = None
    ) -> list[list[float]]:
        assert (symbol, timeframe) == ("BTC/EUR", "1h")
        hi = int(np.searchsorted(self._ms, self._clock() * 1000, side="right"))
        lo = max(0, hi - (limit or hi)) if since is None else int(np.searchsorted(self._ms, since))
        return [list(r) for r in self._rows[lo:hi][: limit or None]]

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"exchange.{name}: paper trading may call fetch_ohlcv only")


def _live(
    exported: dict[str, Any], out: Path, clock: FakeClock, n: int, skip: tuple[str, ...] = ()
) -> paper.PaperResult:
    decider = paper.load_decider(exported["folder"])
    exchange = FakeExchange(exported["candles"], clock, skip)
    source = ExchangeSource(
        exchange, "fake", "BTC/EUR", "1h", decider, 600.0, clock=clock, sleep=clock.sleep
    )
    return paper.PaperTrader(decider, source, out).run(False, n)


SAME = ("timestamp", "action", "equity", "cash", "units", "fill", "probabilities", "gap_bars")


@pytest.mark.integration
def test_live_decides_as_the_replay_resumes_and_records_late_candles(
    exported: dict[str, Any], replayed: dict[str, Any], tmp_path: Path
) -> None:
    want = replayed["records"][:12]
    # half an hour into the candle after the backtest's first: that one is open, so dropped
    clock = FakeClock(pd.Timestamp(want[0]["timestamp"]).timestamp() + 1.5 * HOUR)
    assert _live(exported, tmp_path, clock, 6).decisions == 6
    clock.now += 3 * HOUR  # the trader is down for three hours
    with paper_log() as lines:
        assert _live(exported, tmp_path, clock, 6).total == 12
    got = paper.read_journal(tmp_path / "journal.jsonl")
    assert [{k: r[k] for k in SAME} for r in got] == [{k: r[k] for k in SAME} for r in want]
    assert [r["decision"] for r in got] == list(range(1, 13))
    # caught up after the restart: candle 6 closed two hours before it was received
    assert [r["late_seconds"] for r in got] == [0.0] * 6 + [2 * HOUR] + [0.0] * 5
    assert any("received 7200 s after its close (late)" in line for line in lines)


@pytest.mark.integration
def test_a_gap_is_recorded_and_the_order_fills_at_the_next_candles_open(
    exported: dict[str, Any], replayed: dict[str, Any], tmp_path: Path
) -> None:
    want = replayed["records"]
    k = next(i for i in range(2, len(want) - 1) if want[i]["fill"]["order"] != "HOLD")
    clock = FakeClock(pd.Timestamp(want[0]["timestamp"]).timestamp() + HOUR)
    with paper_log() as lines:
        _live(exported, tmp_path, clock, k + 1, skip=(want[k]["timestamp"],))
    got = paper.read_journal(tmp_path / "journal.jsonl")
    assert [r["timestamp"] for r in got] == [r["timestamp"] for r in want[:k] + want[k + 1 : k + 2]]
    assert [r["gap_bars"] for r in got] == [0] * k + [1]
    assert any(f"{got[-1]['timestamp']}: 1 candle(s) missing" in line for line in lines)
    before, after, env = got[-2], got[-1], exported["manifest"]["agent"]["env"]
    assert after["fill"] == {**want[k]["fill"], "fee": after["fill"]["fee"]}  # the same order
    bought = after["units"] - before["units"]  # filled at the open after the gap
    price = after["open"] * (1 + env["slippage"] * np.sign(bought))
    fee = env["transaction_cost"] * abs(bought) * price
    assert after["fill"]["fee"] == pytest.approx(fee, rel=1e-9)
    assert after["cash"] == pytest.approx(before["cash"] - bought * price - fee, abs=1e-6)
    assert after["equity"] == pytest.approx(after["cash"] + after["units"] * after["close"])


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.unit
@pytest.mark.parametrize("sources", [[], ["--replay", "x.csv", "--exchange", "binance"]])
def test_both_or_neither_source_is_one_error_line(
    sources: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert paper_trade.main(["--export", str(tmp_path), *sources]) == 1
    (line,) = _error_lines(capsys)
    assert line.startswith("error: give either --replay CSV or --exchange ID")


@pytest.mark.unit
def test_a_missing_export_folder_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert paper_trade.main(["--export", str(tmp_path / "nope"), "--replay", "x.csv"]) == 1
    (line,) = _error_lines(capsys)
    assert line == f"error: --export {tmp_path / 'nope'}: no such folder; write it with python " \
        "export.py --dataset NAME"  # fmt: skip


@pytest.mark.integration
def test_a_state_of_another_export_is_refused_until_fresh(
    exported: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    shutil.copytree(exported["folder"], other)
    manifest = json.loads((other / "export.json").read_text())
    (other / "export.json").write_text(json.dumps({**manifest, "created": "another time"}))
    out = tmp_path / "out"
    assert paper_trade.main([*_args(exported, out), "--max-candles", "1"]) == 0
    again = ["--export", str(other), *_args(exported, out)[2:], "--max-candles", "1"]
    assert paper_trade.main(again) == 1
    (line,) = _error_lines(capsys)
    assert line.startswith(f"error: {out / 'state.json'}: belongs to another export")
    assert "use --fresh" in line and "another --out" in line
    assert paper_trade.main([*again, "--fresh"]) == 0
    (old,) = (out / "previous").iterdir()  # moved aside, not deleted
    assert {p.name for p in old.iterdir()} >= {"state.json", "journal.jsonl"}
    assert len(paper.read_journal(out / "journal.jsonl")) == 1


@pytest.mark.unit
def test_no_orders_and_no_keys_in_the_source() -> None:
    for name in ("ppo_approach/paper.py", "ppo_approach/paper_sources.py", "paper_trade.py"):
        text = (ROOT / name).read_text(encoding="utf-8").lower()
        for word in ("create_order", "apikey", "secret", "private"):
            assert word not in text, f"{name}: {word}"


BLOCKER = """
import importlib.abc, runpy, sys
BLOCKED = {"torch", "sklearn", "gymnasium", "stable_baselines3", "sb3_contrib", "ta", "lightgbm"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
sys.argv = ["paper_trade.py", *sys.argv[1:]]
code = 0
try:
    runpy.run_path("paper_trade.py", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("exit", code, sorted({m.split(".")[0] for m in sys.modules} & BLOCKED))
sys.exit(code)
"""


@pytest.mark.integration
def test_paper_trade_runs_with_torch_sklearn_sb3_ta_lightgbm_blocked(
    exported: dict[str, Any], tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, *_args(exported, tmp_path / "out"), "--max-candles", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "exit 0 []"
    assert len(paper.read_journal(tmp_path / "out" / "journal.jsonl")) == 5
