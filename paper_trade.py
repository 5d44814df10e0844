"""Paper-trade an exported agent: a CSV replayed as if live, or an exchange's public candles.

    python paper_trade.py --export exports/SYNTH-BTC-EUR_1H_20240101-20251231 \\
        --replay datasets/SYNTH-BTC-EUR_1H_20240101-20251231.csv
    python paper_trade.py --export exports/SYNTH-BTC-EUR_1H_20240101-20251231 \\
        --exchange bitvavo --symbol BTC/EUR --timeframe 1h

Writes ``paper/{dataset}/``: ``journal.jsonl`` (one record per candle), ``state.json`` (a
restart goes on from it: no decision lost, none repeated, even after kill -9) and
``equity.png``. A replay over the export's backtest range ends with the comparison against
``backtest.csv``, candle by candle. No API keys are read and no order is ever sent: the exchange
is used for its public candles only. Runs with numpy, pandas and onnxruntime (matplotlib for the
PNG and ccxt for an exchange, both optional); a thin command line over
:mod:`ppo_approach.paper`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.common import EXIT_OK, CliParser, run_cli, setup_logging
from pipeline.run.process import interrupt_on_signals
from ppo_approach.paper import PaperTrader, load_decider
from ppo_approach.paper_sources import ExchangeSource, PaperError, ReplaySource, Source

log = logging.getLogger("paper_trade")


def build_parser() -> argparse.ArgumentParser:
    """The command line (``--help`` explains each flag; bad input exits 1)."""
    p = CliParser(
        prog="paper_trade.py",
        description="Run an exported agent (export.py) on candles as they close, with the "
        "backtest's fills and fees, a journal and a resumable state; no order is ever sent. "
        "Give either --replay CSV or --exchange ID --symbol S --timeframe T. "
        "Exit codes: 0 ok, 1 bad input, 130 interrupted (Ctrl-C, SIGTERM; rerun to go on).",
    )
    p.add_argument(
        "--export",
        type=Path,
        required=True,
        metavar="DIR",
        help="the export folder (exports/{dataset}/)",
    )
    add_source_args(p)
    add_run_args(p)
    return p


def add_source_args(p: argparse.ArgumentParser) -> None:
    """Where the candles come from: a replayed CSV or an exchange."""
    p.add_argument(
        "--replay",
        metavar="CSV",
        default=None,
        help="play this candle CSV (a path or a dataset name) as if live, one candle at a time",
    )
    p.add_argument(
        "--exchange",
        metavar="ID",
        default=None,
        help="poll this ccxt exchange's public candles (e.g. binance, bitvavo, kraken)",
    )
    p.add_argument("--symbol", default=None, help="with --exchange: the market, e.g. BTC/EUR")
    p.add_argument(
        "--timeframe",
        default=None,
        help="with --exchange: ccxt's candle size, e.g. 1h (must be the agent's)",
    )
    p.add_argument(
        "--start",
        default=None,
        help="with --replay: the first candle to decide on, an ISO time in UTC (default: the "
        "export's backtest start when the file has it, else the first candle with history_bars "
        "candles up to it)",
    )
    p.add_argument(
        "--end",
        default=None,
        help="with --replay: the last candle, an ISO time in UTC (default: the file's last)",
    )


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Where the files go, when to stop, how fast to go."""
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for journal.jsonl, state.json and equity.png (default: paper/{dataset}/ "
        "under the current folder); a state there is resumed",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start over: an earlier state, journal and PNG are moved to {out}/previous/",
    )
    p.add_argument(
        "--max-candles",
        type=int,
        default=None,
        metavar="N",
        help="stop after N decisions of this run",
    )
    p.add_argument(
        "--replay-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --replay: seconds to wait between candles (default 0)",
    )
    p.add_argument(
        "--poll",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="with --exchange: seconds between polls once a candle is due (default 10)",
    )
    p.add_argument("--verbose", action="store_true", help="debug logging")


def check_args(args: argparse.Namespace) -> None:
    """One error line for a combination of flags that cannot work."""
    if (args.replay is None) == (args.exchange is None):
        raise PaperError(
            "give either --replay CSV or --exchange ID --symbol S --timeframe T "
            f"({'not both' if args.replay else 'neither was given'})"
        )
    if args.exchange is not None:
        if args.symbol is None or args.timeframe is None:
            raise PaperError("--exchange needs --symbol and --timeframe, e.g. BTC/EUR and 1h")
        if args.start is not None or args.end is not None:
            raise PaperError("--start/--end apply to --replay only")
    elif args.symbol is not None or args.timeframe is not None:
        raise PaperError("--symbol/--timeframe apply to --exchange only")
    if args.max_candles is not None and args.max_candles < 1:
        raise PaperError(f"--max-candles {args.max_candles}: expected 1 or more")
    if args.replay_delay < 0:
        raise PaperError(f"--replay-delay {args.replay_delay}: expected 0 or more")
    if args.poll <= 0:
        raise PaperError(f"--poll {args.poll}: expected more than 0")


def run(args: argparse.Namespace) -> int:
    """Paper-trade until the replay ends, --max-candles, Ctrl-C or SIGTERM."""
    setup_logging(args.verbose)
    check_args(args)
    decider = load_decider(args.export)
    dataset = decider.manifest.get("dataset", {}).get("dataset", Path(args.export).name)
    out = args.out if args.out is not None else Path("paper") / dataset
    source: Source
    if args.replay is not None:
        source = ReplaySource(args.replay, decider, args.start, args.end, args.replay_delay)
    else:
        source = ExchangeSource.open(args.exchange, args.symbol, args.timeframe, decider, args.poll)
    with interrupt_on_signals():  # SIGTERM/SIGHUP stop like Ctrl-C: the PNG is still written
        PaperTrader(decider, source, out).run(args.fresh, args.max_candles)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and paper-trade; exit code 0, 1 (bad input) or 130 (interrupted)."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
