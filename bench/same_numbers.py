"""Same numbers before and after a refactoring: the README demo at two commits, compared.

A refactoring (code moved, files renamed, save/load rewritten) must not change what the pipeline
computes. This runs the demo (``runpod_main.py --preset demo --no-push``) once in a clean
``git worktree`` of each commit, each from an empty artifact root, and compares every number in
``results/run_summary_{dataset}.json`` and ``results/backtest_*.json`` except timings, paths,
process ids and clock times.

    python bench/same_numbers.py --before 74243f3 --after HEAD
    python bench/same_numbers.py --before 74243f3 --after WORKTREE   # uncommitted changes
    python bench/same_numbers.py --before 74243f3 --after HEAD --no-demo \
        --ladder-rows real_MOM-DEV,noisy_0.45,oracle,noisy_0.55,real_MR-DEV

``--ladder-rows`` also runs the learnability ladder (``bench/bench_agent_ladder.py``, one seed,
20,000 timesteps: the rows' real step 5 and step 7) in each tree and compares its table row by
row (written to ``bench/results/same_numbers_ladder.md``).

Writes ``bench/results/same_numbers.md`` (a table of what differs, and how many values agree)
and exits 1 when any compared value differs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import cpu_model, gpu_description

ROOT = Path(__file__).resolve().parent.parent
DATASET = "SYNTH-BTC-EUR_1H_20240101-20251231"
WORKTREE = "WORKTREE"
"""``--after WORKTREE``: the project folder as it is now, uncommitted changes included."""

# Keys whose values legitimately differ between two runs of the same code.
VOLATILE = (
    "seconds",
    "time",
    "pid",
    "path",
    "dir",
    "file",
    "started",
    "finished",
    "created",
    "host",
    "commit",
    "version",
    "sha256",
    "root",
    "python",
    "torch",
    "elapsed",
    "duration",
    "per_s",
    "throughput",
    "_at",
)


def _volatile(key: str) -> bool:
    k = key.lower()
    return any(v in k for v in VOLATILE)


def flatten(value: Any, root: str, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.0.c": leaf}`` of a JSON value, volatile keys dropped, the artifact root in strings
    written as ``ROOT`` (each run has its own)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            if _volatile(str(k)):
                continue
            out.update(flatten(v, root, f"{prefix}{k}."))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.update(flatten(v, root, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = value.replace(root, "ROOT") if isinstance(value, str) else value
    return out


def source_tree(ref: str, into: Path) -> Path:
    """A copy of the project at ``ref`` (``WORKTREE``: the current files, via ``git ls-files``)."""
    if ref == WORKTREE:
        files = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        for name in files:
            src = ROOT / name
            if src.is_file():
                (into / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, into / name)
        return into
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(into), ref],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return into


def run_demo(src: Path, root: Path) -> dict[str, Any]:
    """Run the demo from ``src`` into ``root``; the flattened numbers of its result files."""
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [
        sys.executable,
        str(src / "runpod_main.py"),
        "--dataset",
        DATASET,
        "--preset",
        "demo",
        "--no-push",
        "--root",
        str(root),
    ]
    proc = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: the demo failed in {src} (exit {proc.returncode}): {proc.stderr[-2000:]}")
    # The datasets folder of the root is the source's (bundled dataset).
    found: dict[str, Any] = {}
    for path in sorted((root / "results").glob("*.json")):
        if path.name.startswith(("run_summary_", "backtest_")):
            found.update(flatten(json.loads(path.read_text()), str(root), f"{path.stem}."))
    return found


LADDER_TIMESTEPS = 20_000


def run_ladder(src: Path, rows: str, out: Path) -> list[str]:
    """The ladder's table rows (``| ...`` lines below the header) for ``rows`` run from ``src``."""
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [
        sys.executable,
        str(src / "bench" / "bench_agent_ladder.py"),
        "--rows",
        rows,
        "--seeds",
        "1",
        "--timesteps",
        str(LADDER_TIMESTEPS),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(
            f"error: the ladder failed in {src} (exit {proc.returncode}): {proc.stderr[-2000:]}"
        )
    return [ln for ln in out.read_text().splitlines() if ln.startswith("|")]  # header, rule, rows


def ladder_report(args: argparse.Namespace, before: list[str], after: list[str]) -> str:
    """Markdown: the two ladders' rows and whether they are the same."""
    same = before == after
    lines = [
        "## Same learnability ladder before and after (`bench/same_numbers.py --ladder-rows`)",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores, {gpu_description()}, "
        f"Python {platform.python_version()}",
        f"- Command: `python bench/same_numbers.py --before {args.before} --after {args.after} "
        f"--no-demo --ladder-rows {args.ladder_rows}` (`bench/bench_agent_ladder.py`, 1 seed, "
        f"{LADDER_TIMESTEPS:,} timesteps per row, demo preset otherwise)",
        f"- Result: **{'every row identical' if same else 'rows differ'}** "
        f"({len(before)} table lines before, {len(after)} after).",
        "",
        "Before and after (identical rows are shown once):" if same else "Before:",
        "",
        *before,
    ]
    if not same:
        lines += ["", "After:", "", *after]
    return "\n".join(lines) + "\n"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="commit of the reference run")
    parser.add_argument(
        "--after", default=WORKTREE, help=f"commit to compare, or {WORKTREE} (default)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "same_numbers.md")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo comparison")
    parser.add_argument(
        "--ladder-rows", default=None, help="also compare these rows of the agent ladder"
    )
    args = parser.parse_args(argv)
    ladders: dict[str, list[str]] = {}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="same-numbers-") as tmp:
        for label, ref in (("before", args.before), ("after", args.after)):
            src = source_tree(ref, Path(tmp) / f"src-{label}")
            root = Path(tmp) / f"root-{label}"
            shutil.copytree(src / "datasets", root / "datasets")
            try:
                if not args.no_demo:
                    print(f"{label}: {ref}: running the demo ...", flush=True)
                    results[label] = run_demo(src, root)
                if args.ladder_rows:
                    print(f"{label}: {ref}: running the ladder ...", flush=True)
                    out = Path(tmp) / f"ladder-{label}.md"
                    ladders[label] = run_ladder(src, args.ladder_rows, out)
            finally:
                if ref != WORKTREE:
                    subprocess.run(
                        ["git", "worktree", "remove", "--force", str(src)],
                        cwd=ROOT,
                        capture_output=True,
                    )
    code = 0
    if args.ladder_rows:
        text = ladder_report(args, ladders["before"], ladders["after"])
        (args.out.parent / "same_numbers_ladder.md").write_text(text)
        print(text)
        code = 0 if ladders["before"] == ladders["after"] else 1
    if args.no_demo:
        return code
    before, after = results["before"], results["after"]
    keys = sorted(set(before) | set(after))
    differ = [k for k in keys if k in before and k in after and not _same(before[k], after[k])]
    only = [k for k in keys if (k in before) != (k in after)]
    lines = [
        "## Same numbers before and after (`bench/same_numbers.py`)",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores, {gpu_description()}, "
        f"Python {platform.python_version()}",
        f"- Command: `python bench/same_numbers.py --before {args.before} --after {args.after}`"
        f" (the demo: `runpod_main.py --dataset {DATASET} --preset demo --no-push`, once per "
        "commit, from an empty root)",
        f"- Compared: {len(keys) - len(only)} values of `results/run_summary_*.json` and "
        "`results/backtest_*.json` (timings, paths, versions and hashes left out): "
        f"**{len(keys) - len(only) - len(differ)} identical, {len(differ)} differ**; "
        f"{len(only)} present in one run only.",
        "",
    ]
    if differ or only:
        lines += ["| value | before | after |", "|---|---:|---:|"]
        for k in differ + only:
            lines.append(f"| `{k}` | {before.get(k, '-')} | {after.get(k, '-')} |")
        lines.append("")
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 1 if differ or code else 0


if __name__ == "__main__":
    raise SystemExit(main())
