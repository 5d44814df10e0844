"""Download exchange candles into a dataset the pipeline reads.

    python download_data.py --exchange binance --symbol ADA/EUR --timeframe 1h \\
        --start 2024-01-01 --end 2025-12-31

writes ``datasets/ADA-EUR_1H_20240101-20251231.csv`` (UTC timestamps, open, high, low, close,
volume), ready for ``runpod_main.py --dataset ADA-EUR_1H_20240101-20251231``. A thin command line
over :func:`pipeline.data.download.download` (ccxt; paging, rate limit, retries, resume, checks).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.common import EXIT_OK, CliParser, run_cli, setup_logging
from pipeline.data.download import default_datasets_dir, download, make_request
from pipeline.data.exchange import DEFAULT_BACKOFF_CAP_S, DEFAULT_MAX_RETRIES, Retry

log = logging.getLogger("download_data")


def build_parser() -> argparse.ArgumentParser:
    """The command line (``--help`` explains each flag; usage errors exit 1)."""
    p = CliParser(
        prog="download_data.py",
        description="Download OHLCV candles from an exchange with ccxt into "
        "datasets/{BASE}-{QUOTE}_{TF}_{YYYYMMDD}-{YYYYMMDD}.csv (the end day included), checked "
        "and named the way runpod_main.py --dataset expects. An interrupted download continues "
        "when the same command is run again (the partial candles are kept beside the file); the "
        "file appears only when complete. Exit codes: 0 ok, 1 bad input or a permanent exchange "
        "error, 130 interrupted.",
    )
    _add_request_args(p)
    _add_run_args(p)
    return p


def _add_request_args(p: argparse.ArgumentParser) -> None:
    """What to download: exchange, symbol, timeframe and the first and last day."""
    p.add_argument(
        "--exchange",
        required=True,
        help="ccxt exchange id, e.g. binance, bitvavo, kraken (ccxt.exchanges lists them all)",
    )
    p.add_argument(
        "--symbol", required=True, help="market as ccxt writes it, BASE/QUOTE, e.g. ADA/EUR"
    )
    p.add_argument(
        "--timeframe",
        required=True,
        help="candle length in ccxt's notation, e.g. 1m, 15m, 1h, 4h, 1d (must be one the "
        "exchange offers)",
    )
    p.add_argument("--start", required=True, help="first day, YYYY-MM-DD (UTC), included")
    p.add_argument("--end", required=True, help="last day, YYYY-MM-DD (UTC), included; up to today")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """Where the file goes and how the download runs."""
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="artifact root whose datasets/ folder receives the file (default: $PIPELINE_HOME "
        "or the project folder)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="candles per request (default: the exchange's own page size)",
    )
    p.add_argument(
        "--max-retries",
        type=int,
        default=DEFAULT_MAX_RETRIES,
        help="retries in a row of a transient error (network, rate limit, timeout) before "
        f"giving up; the waits double from 1 s up to {DEFAULT_BACKOFF_CAP_S:g} s "
        f"(default {DEFAULT_MAX_RETRIES})",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="download again when the file exists (the old file is replaced only once the new "
        "download is complete)",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard a partial download of the same file instead of continuing it",
    )
    p.add_argument("--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    """Download; print the check report; returns the exit code."""
    setup_logging(args.verbose)
    request = make_request(args.exchange, args.symbol, args.timeframe, args.start, args.end)
    if args.limit is not None and args.limit < 1:
        build_parser().error(f"--limit {args.limit}: expected a positive number")
    if args.max_retries < 0:
        build_parser().error(f"--max-retries {args.max_retries}: expected 0 or more")
    log.info(
        "downloading %s %s %s from %s to %s (both days included) into %s",
        request.exchange,
        request.symbol,
        request.timeframe,
        args.start,
        args.end,
        request.name,
    )
    result = download(
        request,
        default_datasets_dir(args.root),
        limit=args.limit,
        retry=Retry(max_retries=args.max_retries),
        force=args.force,
        restart=args.restart,
    )
    for line in result.report_lines():
        log.info("%s", line)
    root = f" --root {args.root}" if args.root is not None else ""
    log.info("train on it: python runpod_main.py --dataset %s%s", result.name, root)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and download; exit code 0, 1 (bad input, exchange error) or 130."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
