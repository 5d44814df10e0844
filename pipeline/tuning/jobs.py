"""``tune.py --jobs N``: N worker processes on this machine (one device), each a ``tune.py`` run
as a worker of the same study, and the study's progress shown by the parent."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
from typing import Any

from pipeline.common import EXIT_INTERRUPTED, EXIT_OK, PipelineError
from pipeline.tuning.study import python_command
from pipeline.tuning.trials import StudyProgress, best_of, finished


def worker_argv(argv: list[str], index: int) -> list[str]:
    """``argv`` of one ``--jobs`` worker: without ``--jobs``, as a worker."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--jobs":
            skip = True
            continue
        if a.startswith("--jobs="):
            continue
        out.append(a)
    return [*out, "--jobs", "1", "--worker-index", str(index)]


def run_jobs(args: argparse.Namespace, argv: list[str], study: Any) -> None:
    """``--jobs N``: N worker processes on this machine (one device), the progress here."""
    env = dict(os.environ)
    env.setdefault("PIPELINE_PROGRESS", "log")
    procs = [
        subprocess.Popen(python_command(worker_argv(argv, i + 1)), env=env)
        for i in range(args.jobs)
    ]
    progress = StudyProgress(args.trials, finished(study))
    last = -1
    try:
        while any(p.poll() is None for p in procs):
            done = finished(study)
            if done != last:
                progress.update(done, *best_of(study))
                last = done
            time.sleep(2.0)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        raise
    finally:
        progress.close()
    progress.update(finished(study), *best_of(study))
    codes = [p.returncode for p in procs]
    if any(c == EXIT_INTERRUPTED for c in codes):
        raise KeyboardInterrupt("a worker was interrupted")
    bad = [f"worker {i + 1} exit {c}" for i, c in enumerate(codes) if c != EXIT_OK]
    if bad:
        raise PipelineError(f"--jobs {args.jobs}: {', '.join(bad)} (see its error line above)")
