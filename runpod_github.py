"""Step 8 by hand: commit this run's artifacts for one dataset and push them to the git remote.

A thin command line over :func:`pipeline.publish.push.push_artifacts`, which holds the rules (token
via askpass and never on disk, masked errors, no file holding a secret committed, nothing trained
deleted or modified). This script adds only the arguments, logging and the dataset's run lock
(the git plumbing moved into ``pipeline/`` so that no library module imports a script).
"""

from __future__ import annotations

import argparse

from pipeline.common import (
    EXIT_OK,
    CliParser,
    Paths,
    run_cli,
    setup_logging,
)
from pipeline.publish.push import PushConfig, push_artifacts
from pipeline.run.lock import step_lock
from pipeline.store.artifacts import dataset_name


def _parse_metric(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> (key, float or str) for --metric."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), float(value)
    except ValueError:
        return key.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python runpod_github.py`` (usage errors exit 1; 2 means preflight failed)."""
    p = CliParser(
        description="Step 8: commit this run's artifacts for a dataset (force-adding the "
        "git-ignored files) and push them. The token comes from $GITHUB_TOKEN via GIT_ASKPASS "
        "and is never written to disk; a file holding the token or a password from a git URL is "
        "never committed. Exit code 3 when the push fails (artifacts stay local), 1 on bad "
        "input or while another run holds the dataset's lock."
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="dataset whose artifacts are pushed: its name or its CSV path (the file's stem)",
    )
    p.add_argument(
        "--root",
        default=None,
        help="project root = git work tree holding the artifact folders "
        "(default: $PIPELINE_HOME or the project folder)",
    )
    p.add_argument("--remote", default="origin", help="git remote to push to (default: origin)")
    p.add_argument("--branch", default="main", help="remote branch to push to (default: main)")
    p.add_argument(
        "--max-file-mb",
        type=float,
        default=100.0,
        help="per-file limit in MiB; bigger files go through git-lfs if .gitattributes tracks "
        "them, else they are skipped with a warning (default: 100, GitHub's limit)",
    )
    p.add_argument(
        "--timeout-s", type=int, default=600, help="timeout per network git command (default 600)"
    )
    p.add_argument(
        "--metric",
        action="append",
        type=_parse_metric,
        default=None,
        metavar="KEY=VALUE",
        help="a metric for the commit message (repeatable), e.g. --metric 'dlstm macro-F1=0.41'",
    )
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: push the artifacts of ``--dataset``; 0 on success, 3 on push failure."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        config = PushConfig(
            remote=args.remote,
            branch=args.branch,
            max_file_mb=args.max_file_mb,
            timeout_s=args.timeout_s,
        )
        paths = Paths.from_root(args.root)
        name = dataset_name(args.dataset)
        # Run by hand, the push holds the dataset's run lock, so it never commits artifacts a
        # live run is still writing; a no-op when the driver already holds it.
        with step_lock(paths, name):
            push_artifacts(paths.root, name, dict(args.metric or []), config)
        return EXIT_OK

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
