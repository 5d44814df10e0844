"""Export the trained agent of a dataset for inference without torch: ``exports/{dataset}/``.

    python export.py --dataset SYNTH-BTC-EUR_1H_20240101-20251231
    python paper_trade.py --export exports/SYNTH-BTC-EUR_1H_20240101-20251231 \\
        --replay datasets/SYNTH-BTC-EUR_1H_20240101-20251231.csv

The folder holds the classifier(s) and the policy as ONNX graphs and ``export.json`` (hashes,
versions, features, scalers, actions, fee model, the config it came from, and the parity
measured here over the whole test block); :class:`ppo_approach.runtime.Decider` runs it with
numpy, pandas and onnxruntime only. Step 7 of the driver writes the same folder after training,
and step 8 pushes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.common import EXIT_OK, CliParser, Paths, run_cli
from pipeline.config.files import add_config_args, config_from_args


def build_parser() -> argparse.ArgumentParser:
    """The command line (``--help`` explains each flag; bad input exits 1)."""
    p = CliParser(
        prog="export.py",
        description="Export the final PPO agent of a dataset and the classifier(s) it reads as "
        "ONNX graphs plus export.json, for paper_trade.py or any program with onnxruntime. "
        "Exit codes: 0 ok, 1 bad input (no trained agent, a diagnostic agent).",
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="dataset name or CSV path as given to runpod_main.py (its agent must be trained)",
    )
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="artifact root (default: $PIPELINE_HOME or the project folder)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder to write (default: exports/{dataset}/ under the root); replaced only once "
        "the new export is complete",
    )
    add_config_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the export and print where, with its parity line."""
    from ppo_approach.export_bundle import export_agent, parity_line

    cfg = config_from_args(args)
    result = export_agent(cfg, args.dataset, Paths.from_root(args.root), args.out)
    print(f"export written: {result.folder}")
    print(parity_line(result.manifest))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and export; one ``error:`` line (exit 1) for bad input."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
