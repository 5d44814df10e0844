"""List and compare the past runs of a dataset (``runs/{dataset}/{n}/``).

    python runs.py --dataset SYNTH-BTC-EUR_1H_20240101-20251231
    python runs.py --dataset SYNTH-BTC-EUR_1H_20240101-20251231 --compare 2 current

Every driver run (``runpod_main.py`` / ``runpod_train.py``, not ``--resume``) first archives the
previous run's files there (:mod:`pipeline.run.archive`); the seed's paths hold the current run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.common import EXIT_OK, CliParser, Paths, PipelineError, run_cli
from pipeline.run.archive import (
    CURRENT,
    archived_runs,
    compare_rows,
    find_run,
    list_table,
    run_row,
    runs_folder,
)
from pipeline.run.summary import read_json
from pipeline.store.artifacts import Artifacts, dataset_name


def build_parser() -> argparse.ArgumentParser:
    """The command line (``--help`` explains each flag; bad input exits 1)."""
    p = CliParser(
        prog="runs.py",
        description="List the archived runs of a dataset (runs/{dataset}/{n}/, written before "
        "each new run replaces the files in results/, models/ and ppo_approach/) and the current "
        "one, or compare two of them value by value. Exit codes: 0 ok, 1 bad input.",
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="dataset name as given to runpod_main.py (with or without .csv)",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        default=None,
        help=f"two runs to compare: archive numbers, or {CURRENT} for the files in place now",
    )
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="artifact root (default: $PIPELINE_HOME or the project folder)",
    )
    return p


def show(root: Path | None, dataset: str, compare: list[str] | None) -> int:
    """Print the list of runs, or the comparison of two."""
    paths = Paths.from_root(root)
    name = dataset_name(dataset)
    if compare:
        a, b = (run_row(*find_run(paths, name, which)) for which in compare)
        print(compare_rows(a, b))
        return EXIT_OK
    rows = [run_row(str(r.number), r.summary()) for r in archived_runs(paths, name)]
    current = read_json(Artifacts(paths, name).run_summary)
    if current:
        rows.append(run_row(CURRENT, current))
    if not rows:
        raise PipelineError(
            f"no runs of {name}: neither {Artifacts(paths, name).run_summary} nor archives under "
            f"{runs_folder(paths, name)}"
        )
    print(list_table(rows))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and print; one ``error:`` line (exit 1) for a run that is not there."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: show(args.root, args.dataset, args.compare))


if __name__ == "__main__":
    raise SystemExit(main())
