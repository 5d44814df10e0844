"""Write a seeded synthetic OHLCV CSV (see pipeline/data/synthetic.py for the model and planted
signal).

Example (the bundled dataset):
    python datasets/make_synthetic.py --rows 17544 --signal 0.3 --seed 7 --start 2024-01-01 \\
        --out datasets/SYNTH-BTC-EUR_1H_20240101-20251231.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The project is imported as an installed project (`make install` or `pip install -e .`), not
# through a sys.path patch; without it, one line says how to install (issue 9 item 7).
try:
    from pipeline.common import PipelineError, run_cli
    from pipeline.data.synthetic import KINDS, generate_ohlcv, write_ohlcv_csv
except ModuleNotFoundError as exc:
    if exc.name != "pipeline":
        raise
    sys.exit(
        f"error: the project is not installed in this Python ({sys.executable}): cannot import "
        "pipeline; run `make install` or `pip install -e .` in the project folder first"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; every flag says what it does and its default."""
    p = argparse.ArgumentParser(
        prog="make_synthetic.py",
        description=(
            "Generate synthetic hourly crypto candles (GARCH volatility, Student-t tails, "
            "intraday volume) with an optional planted, documented drift-regime signal, and "
            "write them as timestamp,open,high,low,close,volume CSV."
        ),
    )
    p.add_argument(
        "--rows",
        type=int,
        default=17544,
        help="number of bars (default 17544 = 2024-01-01..2025-12-31 hourly)",
    )
    p.add_argument(
        "--signal",
        type=float,
        default=0.3,
        help="strength of the planted drift regime: 0 = pure random walk, 0.3 = weak "
        "(demo, default), 1.0 = clearly learnable",
    )
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument(
        "--kind",
        default="momentum",
        choices=KINDS,
        help="kind of planted signal (the module docstring of pipeline/data/synthetic.py says "
        "what each plants): momentum (default), regime (momentum switched on and off), "
        "mean_reversion, vol_trend, echo, echo_blip, echo_ar (signal < 1.25) or vol_echo",
    )
    p.add_argument(
        "--start", default="2024-01-01", help="first timestamp, UTC (default 2024-01-01)"
    )
    p.add_argument("--freq", default="1h", help="pandas bar frequency (default 1h)")
    p.add_argument(
        "--start-price", type=float, default=40000.0, help="open of the first bar (default 40000)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("datasets/SYNTH-BTC-EUR_1H_20240101-20251231.csv"),
        help="output CSV path (written atomically; default "
        "datasets/SYNTH-BTC-EUR_1H_20240101-20251231.csv)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, generate the candles and write the CSV."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.rows < 1:
            raise PipelineError(f"--rows must be >= 1, got {args.rows}")
        if args.signal < 0:
            raise PipelineError(f"--signal must be >= 0, got {args.signal}")
        if args.start_price <= 0:
            raise PipelineError(f"--start-price must be > 0, got {args.start_price}")
        try:
            df = generate_ohlcv(
                args.rows,
                signal=args.signal,
                kind=args.kind,
                seed=args.seed,
                start=args.start,
                freq=args.freq,
                start_price=args.start_price,
            )
        except ValueError as exc:  # e.g. echo_ar's bound on --signal: one line, not a traceback
            raise PipelineError(f"--signal {args.signal} --kind {args.kind}: {exc}") from None
        path = write_ohlcv_csv(df, args.out)
        first, last = df["timestamp"].iloc[0], df["timestamp"].iloc[-1]
        print(f"wrote {path} ({len(df)} rows, {first} .. {last}, signal={args.signal})")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
