"""The exchange downloader: ``download_data.py`` over ``pipeline.data.download``.

No network: a fake exchange object with ccxt's attributes and ``fetch_ohlcv(symbol, timeframe,
since, limit)`` signature serves pages cut from recorded candles (pagination, a rate-limit error
then success, a gap, a duplicate page, an interrupted download resumed, a still-open candle).
Unknown exchanges are checked against the real ``ccxt.exchanges`` list (no request is made).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd
import pytest

import download_data
import runpod_main
from pipeline.common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PREFLIGHT
from pipeline.data import download as dl
from pipeline.data import download_files
from pipeline.data.load import load_dataset
from pipeline.store.download_names import (
    download_partial,
    download_state,
    exchange_dataset_name,
    parse_exchange_dataset_name,
)

pytestmark = pytest.mark.unit  # no network, no subprocess, no training: all fast

H = 3_600_000
T0 = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
DAYS = 3
N = 24 * DAYS
NAME = "ADA-EUR_1H_20240101-20240103"
LATER = T0 + 30 * 24 * H  # "now" for the fake exchange: long after the range


def candles(n: int = N, skip: tuple[int, ...] = ()) -> list[list[float]]:
    """``n`` hourly candles from ``T0`` (index ``i`` has open price ``100 + i``)."""
    out = []
    for i in range(n):
        if i in skip:
            continue
        o = 100.0 + i
        out.append([T0 + i * H, o, o + 2.0, o - 1.0, o + 0.5, 10.0 + i])
    return out


class FakeExchange:
    """ccxt's surface as the downloader uses it; pages cut from ``data`` from ``since`` on.

    ``script`` maps a call number (1-based) to what that call does instead of a normal page: an
    exception to raise, or a function ``(normal page, previous page) -> page``.
    """

    id = "fakex"
    has = {"fetchOHLCV": True}
    timeframes = {"1m": "1", "1h": "60", "1d": "1440"}

    def __init__(
        self,
        data: list[list[float]] | None = None,
        page: int = 10,
        now: int = LATER,
        script: dict[int, Any] | None = None,
        rate_limit_ms: int = 50,
        self_throttled: bool = False,
    ) -> None:
        self.data = candles() if data is None else data
        self.page = page
        self.now = now
        self.script = dict(script or {})
        self.rateLimit = rate_limit_ms
        self.enableRateLimit = self_throttled
        self.calls: list[tuple[str, str, int | None, int | None]] = []
        self.markets: dict[str, dict[str, Any]] = {}
        self.symbols: list[str] = []
        self._previous: list[list[float]] = []

    def load_markets(self) -> dict[str, dict[str, Any]]:
        self.markets = {s: {"symbol": s} for s in ("ADA/EUR", "ADA/USD", "BTC/EUR", "ETH/EUR")}
        self.symbols = list(self.markets)
        return self.markets

    def milliseconds(self) -> int:
        return self.now

    def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str = "1m",
        since: int | None = None,
        limit: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[list[float]]:
        self.calls.append((symbol, timeframe, since, limit))
        start = since if since is not None else self.data[0][0]
        normal = [list(c) for c in self.data if c[0] >= start and c[0] <= self.now]
        normal = normal[: limit or self.page]
        action = self.script.pop(len(self.calls), None)
        if isinstance(action, BaseException):
            raise action
        page = action(normal, self._previous) if action is not None else normal
        self._previous = normal
        return page

    @property
    def since_calls(self) -> list[int | None]:
        return [c[2] for c in self.calls]


def request(**kw: str) -> dl.DownloadRequest:
    args = {"exchange": "fakex", "symbol": "ADA/EUR", "timeframe": "1h"}
    args.update(kw)
    return dl.make_request(
        args["exchange"],
        args["symbol"],
        args["timeframe"],
        kw.get("start", "2024-01-01"),
        kw.get("end", "2024-01-03"),
        today=datetime(2024, 2, 1, tzinfo=timezone.utc),
    )


@pytest.fixture
def sleeps() -> list[float]:
    return []


def run(tmp_path: Path, ex: FakeExchange, sleeps: list[float], **kw: Any) -> dl.DownloadResult:
    return dl.download(
        kw.pop("req", None) or request(),
        tmp_path / "datasets",
        exchange_factory=lambda _id: ex,
        sleep=sleeps.append,
        retry=dl.Retry(sleep=sleeps.append, **kw.pop("retry", {})),
        **kw,
    )


def frame(tmp_path: Path, name: str = NAME) -> pd.DataFrame:
    df, _info = load_dataset(name, tmp_path / "datasets")
    return df


# ---------------------------------------------------------------- names


def test_the_dataset_name_rule_both_ways() -> None:
    day = datetime(2024, 1, 1, tzinfo=timezone.utc)
    end = datetime(2025, 12, 31, tzinfo=timezone.utc)
    assert exchange_dataset_name("ADA/EUR", "1h", day, end) == "ADA-EUR_1H_20240101-20251231"
    assert exchange_dataset_name("BTC/USDT", "15m", day, end) == "BTC-USDT_15M_20240101-20251231"
    assert exchange_dataset_name("BTC/USDT", "1M", day, end) == "BTC-USDT_1MO_20240101-20251231"
    assert parse_exchange_dataset_name("ADA-EUR_1H_20240101-20251231") == {
        "symbol": "ADA/EUR",
        "timeframe": "1h",
        "start": "2024-01-01",
        "end": "2025-12-31",
    }
    assert parse_exchange_dataset_name("BTC-USDT_1MO_20240101-20251231")["timeframe"] == "1M"
    assert parse_exchange_dataset_name("SYNTH-BTC-EUR_1H_20240101-20251231") is None
    assert parse_exchange_dataset_name("ADA-EUR_1H") is None


# ---------------------------------------------------------------- fetching


def test_pagination_writes_the_canonical_dataset_and_keeps_the_rate_limit(
    tmp_path: Path, sleeps: list[float]
) -> None:
    ex = FakeExchange(page=10)
    result = run(tmp_path, ex, sleeps)
    path = tmp_path / "datasets" / f"{NAME}.csv"
    assert result.path == path and result.rows == N
    # Each page starts after the last candle of the one before.
    assert ex.since_calls[:8] == [T0 + k * 10 * H for k in range(8)]
    assert {c[:2] for c in ex.calls} == {("ADA/EUR", "1h")}
    # No self-throttling on this exchange: we pause rateLimit (50 ms) between requests.
    assert sleeps == [0.05] * (result.requests - 1)
    assert path.read_text().splitlines()[:2] == [
        "timestamp,open,high,low,close,volume",
        "2024-01-01T00:00:00Z,100.0,102.0,99.0,100.5,10.0",
    ]
    df = frame(tmp_path)
    assert len(df) == N and str(df["timestamp"].dt.tz) == "UTC"
    assert df["timestamp"].iloc[-1] == pd.Timestamp("2024-01-03 23:00", tz="UTC")
    assert df["open"].tolist() == [100.0 + i for i in range(N)]
    assert (result.missing, result.duplicates_dropped, result.out_of_order) == (0, 0, 0)
    # The partial files are gone once the dataset is complete.
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == [f"{NAME}.csv"]


def test_a_self_throttling_exchange_gets_no_extra_pause(
    tmp_path: Path, sleeps: list[float]
) -> None:
    run(tmp_path, FakeExchange(self_throttled=True), sleeps)
    assert sleeps == []


def test_a_rate_limit_error_is_retried_after_a_backoff(tmp_path: Path, sleeps: list[float]) -> None:
    ex = FakeExchange(
        script={2: ccxt.RateLimitExceeded("429 too many requests")}, rate_limit_ms=3000
    )
    result = run(tmp_path, ex, sleeps)
    assert result.retries == 1 and result.rows == N
    # The retried call asks for the same page; the wait is at least the exchange's rate limit.
    assert ex.since_calls[1] == ex.since_calls[2] == T0 + 10 * H
    assert 3.0 in sleeps
    assert frame(tmp_path)["open"].tolist() == [100.0 + i for i in range(N)]


def test_transient_errors_back_off_exponentially_then_stop_with_one_line(
    tmp_path: Path, sleeps: list[float], capsys: pytest.CaptureFixture
) -> None:
    script = {k: ccxt.RequestTimeout("timed out") for k in range(2, 12)}
    ex = FakeExchange(script=script, self_throttled=True)
    with pytest.raises(dl.DownloadError) as info:
        run(tmp_path, ex, sleeps, retry={"max_retries": 4, "base_s": 1.0, "cap_s": 5.0})
    assert sleeps == [1.0, 2.0, 4.0, 5.0]
    msg = str(info.value)
    assert "still failing after 4 retries: RequestTimeout: timed out" in msg
    assert "rerun the same command to continue" in msg
    # The first page is kept for the rerun; no final file.
    assert not (tmp_path / "datasets" / f"{NAME}.csv").exists()
    assert len(download_files._read_partial(download_partial(tmp_path / "datasets", NAME))) == 10


def test_a_gap_is_reported_never_filled(tmp_path: Path, sleeps: list[float]) -> None:
    missing = (30, 31, 32, 33, 34, 50)
    result = run(tmp_path, FakeExchange(data=candles(skip=missing)), sleeps)
    assert result.rows == N - len(missing)
    assert result.missing == len(missing)
    assert [(g.after, g.missing) for g in result.gaps] == [
        (pd.Timestamp(T0 + 29 * H, unit="ms", tz="UTC"), 5),
        (pd.Timestamp(T0 + 49 * H, unit="ms", tz="UTC"), 1),
    ]
    report = "\n".join(result.report_lines())
    assert "missing candles (not filled): 6 inside the range" in report
    assert "5 candles after 2024-01-02 05:00 (next 2024-01-02 11:00)" in report
    assert len(frame(tmp_path)) == N - len(missing)


def test_a_duplicate_page_and_candles_out_of_order_are_cleaned(
    tmp_path: Path, sleeps: list[float]
) -> None:
    # Call 2 sends the previous page again, then the new one, all in reverse order.
    script = {2: lambda page, previous: list(reversed(previous + page))}
    result = run(tmp_path, FakeExchange(script=script), sleeps)
    assert result.duplicates_dropped == 10
    assert result.out_of_order > 0
    df = frame(tmp_path)
    assert df["open"].tolist() == [100.0 + i for i in range(N)]
    assert df["timestamp"].is_monotonic_increasing


def test_the_still_open_last_candle_is_excluded(tmp_path: Path, sleeps: list[float]) -> None:
    # "Now" is 30 minutes into the range's last hour: that candle is not finished.
    ex = FakeExchange(now=T0 + (N - 1) * H + 30 * 60_000)
    result = run(tmp_path, ex, sleeps)
    assert result.open_candle_excluded
    assert result.rows == N - 1 and result.missing_at_end == 0
    assert frame(tmp_path)["timestamp"].iloc[-1] == pd.Timestamp("2024-01-03 22:00", tz="UTC")


def test_an_interrupted_download_continues_where_it_stopped(
    tmp_path: Path, sleeps: list[float]
) -> None:
    datasets = tmp_path / "datasets"
    first = FakeExchange(script={3: KeyboardInterrupt()})
    with pytest.raises(dl.DownloadError) as info:
        run(tmp_path, first, sleeps)
    assert info.value.exit_code == EXIT_INTERRUPTED
    assert "rerun the same command to continue" in str(info.value)
    assert not (datasets / f"{NAME}.csv").exists()
    partial, state = download_partial(datasets, NAME), download_state(datasets, NAME)
    assert len(download_files._read_partial(partial)) == 20
    assert json.loads(state.read_text())["symbol"] == "ADA/EUR"
    # A line cut short by the crash is ignored: the rerun continues after the last whole candle.
    with open(partial, "a") as f:
        f.write("17041")

    second = FakeExchange()
    result = run(tmp_path, second, sleeps)
    assert second.since_calls[0] == T0 + 20 * H
    assert result.resumed_from == pd.Timestamp(T0 + 19 * H, unit="ms", tz="UTC")
    assert frame(tmp_path)["open"].tolist() == [100.0 + i for i in range(N)]
    assert not partial.exists() and not state.exists()


def test_a_partial_download_of_other_settings_is_not_mixed_in(
    tmp_path: Path, sleeps: list[float]
) -> None:
    with pytest.raises(dl.DownloadError):
        run(tmp_path, FakeExchange(script={2: KeyboardInterrupt()}), sleeps)
    other = request(exchange="otherx")
    with pytest.raises(dl.DownloadError, match="exchange fakex \\(now otherx\\).*--restart"):
        run(tmp_path, FakeExchange(), sleeps, req=other)
    result = run(tmp_path, FakeExchange(), sleeps, req=other, restart=True)
    assert result.rows == N and result.resumed_from is None


def test_an_existing_dataset_is_replaced_only_with_force(
    tmp_path: Path, sleeps: list[float]
) -> None:
    run(tmp_path, FakeExchange(), sleeps)
    with pytest.raises(dl.DownloadError, match="exists already; pass --force"):
        run(tmp_path, FakeExchange(), sleeps)
    data = [[c[0], *(v * 2 for v in c[1:])] for c in candles()]
    run(tmp_path, FakeExchange(data=data), sleeps, force=True)
    assert frame(tmp_path)["open"].iloc[0] == 200.0


# ---------------------------------------------------------------- permanent errors (CLI)


@pytest.fixture
def fake_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeExchange]]:
    made: list[FakeExchange] = []

    def factory(exchange_id: str) -> FakeExchange:
        made.append(FakeExchange(self_throttled=True))
        return made[-1]

    monkeypatch.setattr(dl, "make_exchange", factory)
    yield made


def cli(tmp_path: Path, *args: str) -> list[str]:
    base = {"--exchange": "fakex", "--symbol": "ADA/EUR", "--timeframe": "1h"}
    base |= {"--start": "2024-01-01", "--end": "2024-01-03"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = [x for k, v in (base | given).items() for x in (k, v)]
    return [*argv, "--root", str(tmp_path)]


def error_lines(capsys: pytest.CaptureFixture) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]


def test_cli_downloads_into_the_roots_datasets(
    tmp_path: Path, fake_factory: list[FakeExchange]
) -> None:
    assert download_data.main(cli(tmp_path)) == 0
    assert len(frame(tmp_path)) == N


def test_unknown_symbol_suggests_close_matches(
    tmp_path: Path, fake_factory: list[FakeExchange], capsys: pytest.CaptureFixture
) -> None:
    assert download_data.main(cli(tmp_path, "--symbol", "ADA/EURO")) == EXIT_ERROR
    (line,) = error_lines(capsys)
    assert line.startswith("error: --symbol ADA/EURO: fakex has no such market")
    assert "(did you mean: ADA/EUR" in line
    assert fake_factory[0].calls == []


def test_a_timeframe_the_exchange_does_not_offer_is_one_line(
    tmp_path: Path, fake_factory: list[FakeExchange], capsys: pytest.CaptureFixture
) -> None:
    assert download_data.main(cli(tmp_path, "--timeframe", "4h")) == EXIT_ERROR
    (line,) = error_lines(capsys)
    assert line == "error: --timeframe 4h: fakex does not offer it; expected one of: 1m, 1h, 1d"


def test_unknown_exchange_lists_close_matches_from_ccxt(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert download_data.main(cli(tmp_path, "--exchange", "krakn")) == EXIT_ERROR
    (line,) = error_lines(capsys)
    assert line.startswith("error: --exchange 'krakn': not an exchange ccxt knows")
    assert "did you mean: kraken" in line
    assert not (tmp_path / "datasets").exists() or not any((tmp_path / "datasets").iterdir())


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--start", "01/01/2024", "--start '01/01/2024': expected a date YYYY-MM-DD (UTC)"),
        ("--end", "2023-12-31", "--end 2023-12-31 is before --start 2024-01-01"),
        ("--end", "2999-01-01", "--end 2999-01-01 is in the future"),
        ("--timeframe", "hourly", "--timeframe 'hourly': expected ccxt's notation"),
        ("--symbol", "ADAEUR", "--symbol 'ADAEUR': expected a ccxt symbol BASE/QUOTE"),
    ],
)
def test_bad_arguments_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, value: str, expected: str
) -> None:
    assert download_data.main(cli(tmp_path, flag, value)) == EXIT_ERROR
    (line,) = error_lines(capsys)
    assert line.startswith(f"error: {expected}")


# ---------------------------------------------------------------- the runpod_main hint


@pytest.fixture
def _close_child_log() -> Iterator[None]:
    """runpod_main.main() adds its run log to ``child_log``; close it (as test_entry_point)."""
    yield
    for h in list(runpod_main.child_log.handlers):
        runpod_main.child_log.removeHandler(h)
        h.close()


@pytest.mark.usefixtures("_close_child_log")
def test_runpod_main_names_the_download_command_for_a_missing_exchange_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("PIPELINE_HOME", "DATASET_NAME", "RUNPOD_PUSH_TO_GITHUB"):
        monkeypatch.delenv(var, raising=False)
    common = ["--root", str(tmp_path), "--no-push", "--set", "min_disk_gb=0"]
    common += ["--set", "min_memory_gb=0"]
    argv = ["--dataset", "ADA-EUR_1H_20240101-20251231", *common]
    assert runpod_main.main(argv) == EXIT_PREFLIGHT
    (line,) = error_lines(capsys)
    expected = (
        "download it with: python download_data.py --exchange <EXCHANGE> --symbol ADA/EUR "
        f"--timeframe 1h --start 2024-01-01 --end 2025-12-31 --root {tmp_path.resolve()}"
    )
    assert expected in line
    # Any other missing name gets no download hint.
    assert runpod_main.main(["--dataset", "MISSING_1H", *common]) == EXIT_PREFLIGHT
    assert "download_data.py" not in capsys.readouterr().err


def test_download_command_for_the_default_root() -> None:
    assert dl.download_command("ADA-EUR_1H_20240101-20251231") == (
        "python download_data.py --exchange <EXCHANGE> --symbol ADA/EUR --timeframe 1h "
        "--start 2024-01-01 --end 2025-12-31"
    )
    assert dl.download_command("my_data") is None


def test_progress_without_a_terminal_is_a_log_line_with_eta(
    tmp_path: Path,
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PIPELINE_PROGRESS", "log")
    with caplog.at_level("INFO", logger="pipeline.data.download"):
        run(tmp_path, FakeExchange(), sleeps)
    lines = [r.getMessage() for r in caplog.records if "candles (" in r.getMessage()]
    assert lines and lines[-1].startswith(f"download {NAME}: {N}/{N} candles (100%)")
    assert "ETA" in lines[-1]
