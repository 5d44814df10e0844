"""runpod_main.py (the entry point) and the driver's process plumbing: user paths, exit codes,
signals, parent death, progress relay, secret masking and the run lock. Fast."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import runpod_main
import runpod_train
from pipeline.common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PREFLIGHT, PROJECT_ROOT, Paths
from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
from pipeline.run import driver_output, process
from pipeline.run.lock import LockHeldError, absolute_dataset, lock_path, step_lock
from pipeline.run.preflight import CheckResult
from pipeline.store.artifacts import Artifacts
from pipeline.store.manifest import STEP_ENTRY

DATASET = "SYNTH-ENTRY_1H"


@pytest.fixture(autouse=True)
def _close_child_log() -> Iterator[None]:
    """main() adds the driver-output log file to ``child_log`` (the root logger is restored by
    tests/conftest.py); close it."""
    yield
    for h in list(runpod_main.child_log.handlers):
        runpod_main.child_log.removeHandler(h)
        h.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "DATASET_NAME",
        "RESUME_TRAINING",
        "RUNPOD_PUSH_TO_GITHUB",
        "PIPELINE_HOME",
        "PIPELINE_PROGRESS",
        "PIPELINE_PARENT_PID",
        "PIPELINE_RUN_LOG",
    ):
        monkeypatch.delenv(var, raising=False)


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PIPELINE_")
        and k not in ("DATASET_NAME", "RESUME_TRAINING", "RUNPOD_PUSH_TO_GITHUB")
    }
    env.update(extra)
    return env


# ---------------------------------------------------------------- user paths


@pytest.mark.unit
def test_absolute_dataset_keeps_names_and_makes_paths_absolute(tmp_path: Path) -> None:
    datasets = tmp_path / "root" / "datasets"
    write_ohlcv_csv(generate_ohlcv(50, seed=1), datasets / "NAMED.csv")
    elsewhere = tmp_path / "elsewhere"
    write_ohlcv_csv(generate_ohlcv(50, seed=1), elsewhere / "data" / "mine.csv")
    assert absolute_dataset("NAMED", datasets, cwd=elsewhere) == "NAMED"
    assert absolute_dataset("NAMED.csv", datasets, cwd=elsewhere) == "NAMED.csv"
    expected = str((elsewhere / "data" / "mine.csv").resolve())
    assert absolute_dataset("data/mine.csv", datasets, cwd=elsewhere) == expected
    assert absolute_dataset("data/mine", datasets, cwd=elsewhere) == expected
    assert absolute_dataset(expected, datasets, cwd=tmp_path) == expected
    assert absolute_dataset("missing.csv", datasets, cwd=elsewhere) == "missing.csv"


@pytest.mark.unit
def test_entry_point_resolves_every_user_path_against_the_users_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_ohlcv_csv(generate_ohlcv(50, seed=1), elsewhere / "ok.csv")
    (elsewhere / "my.txt").write_text((PROJECT_ROOT / "training_config.txt").read_text())
    monkeypatch.chdir(elsewhere)
    args = runpod_main.build_parser().parse_args(
        ["--dataset", "ok.csv", "--training-config", "my.txt", "--root", "art"]
    )
    runpod_main.resolve_user_paths(args)
    assert args.root == elsewhere.resolve() / "art"
    assert args.dataset == str((elsewhere / "ok.csv").resolve())
    assert args.training_config == (elsewhere / "my.txt").resolve()
    assert args.ppo_config.is_absolute()
    cmd = runpod_main.driver_command(args, Paths.from_root(args.root))
    assert cmd[cmd.index("--dataset") + 1] == str((elsewhere / "ok.csv").resolve())
    assert cmd[cmd.index("--training-config") + 1] == str((elsewhere / "my.txt").resolve())
    assert cmd[cmd.index("--root") + 1] == str(elsewhere.resolve() / "art")


@pytest.mark.integration
def test_entry_point_passes_absolute_paths_to_the_driver_from_another_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    """``cd elsewhere && runpod_main.py --dataset ok.csv``: the driver (project cwd) finds it."""
    elsewhere = tmp_path / "elsewhere"
    write_ohlcv_csv(generate_ohlcv(300, seed=5), elsewhere / "ok.csv")
    seen: dict[str, list[str]] = {}

    def fake_stream(cmd: list[str], env: dict[str, str], secrets: list[str]) -> int:
        seen["cmd"] = list(cmd)
        # What the driver does with it, run from the project folder like the real one.
        out = subprocess.run(
            [*cmd, "--steps", "4", "--no-push"],
            cwd=PROJECT_ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        seen["out"] = [out.stdout + out.stderr]
        return out.returncode

    monkeypatch.setattr(runpod_main, "stream_driver", fake_stream)
    monkeypatch.chdir(elsewhere)
    code = runpod_main.main(
        ["--dataset", "ok.csv", "--root", str(tmp_path / "art"), "--skip-validation", "--no-push"]
    )
    assert code == 0, seen.get("out")
    summary = json.loads((tmp_path / "art" / "results" / "run_summary_ok.json").read_text())
    assert summary["steps"][3]["status"] == "ok"
    assert summary["dataset_source"] == str((elsewhere / "ok.csv").resolve())


@pytest.mark.unit
def test_the_run_log_is_listed_in_the_run_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    """The entry point records its log before the driver starts, so this run's step 8 pushes it; a
    damaged manifest is only warned about here."""
    write_ohlcv_csv(generate_ohlcv(300, seed=5), tmp_path / "datasets" / f"{DATASET}.csv")
    monkeypatch.setattr(runpod_main, "stream_driver", lambda cmd, env, secrets: 0)
    argv = ["--dataset", DATASET, "--root", str(tmp_path), "--skip-validation", "--no-push"]
    assert runpod_main.main(argv) == 0
    artifacts = Artifacts(Paths.from_root(tmp_path), DATASET)
    (entry,) = artifacts.manifest().entries()
    (log_file,) = (tmp_path / "logs").glob(f"run_{DATASET}_*.log")
    assert (entry.path, entry.kind, entry.step) == (
        log_file.relative_to(tmp_path).as_posix(),
        "log",
        STEP_ENTRY,
    )

    artifacts.run_manifest.write_text("{not json", encoding="utf-8")
    assert runpod_main.main(argv) == 0
    assert artifacts.run_manifest.read_text(encoding="utf-8") == "{not json"


# ---------------------------------------------------------------- usage errors exit 1


@pytest.mark.unit
@pytest.mark.parametrize(
    ("module", "argv"),
    [
        (runpod_main, ["--dataset", "D", "--preset", "nonexist"]),
        (runpod_main, []),  # no --dataset
        (runpod_main, ["--dataset", "D", "--bogus"]),
        (runpod_train, ["--dataset", "D", "--preset", "nonexist"]),
        (runpod_train, ["--from-step", "seven"]),
    ],
)
def test_usage_errors_exit_1_not_2(
    module: object, argv: list[str], capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as info:
        module.main(argv)  # type: ignore[attr-defined]
    assert info.value.code == EXIT_ERROR
    assert "error:" in capsys.readouterr().err


# ---------------------------------------------------------------- masked error line


@pytest.mark.unit
def test_preflight_error_line_is_masked(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    clean_env: None,
) -> None:
    token = "ghp_preflight_0123456789abcdef"
    monkeypatch.setenv("GITHUB_TOKEN", token)
    rows = [
        CheckResult("disk", "1 GB", ">= 0 GB", "pass"),
        CheckResult("network", f"https://x:{token}@host/repo.git unreachable", "reachable", "fail"),
    ]
    monkeypatch.setattr(runpod_main, "run_preflight", lambda *a, **k: rows)
    code = runpod_main.main(["--dataset", DATASET, "--root", str(tmp_path)])
    assert code == EXIT_PREFLIGHT
    err = capsys.readouterr().err
    assert token not in err
    line = next(x for x in err.splitlines() if x.startswith("error: preflight failed: "))
    assert line.startswith("error: preflight failed: network: https://")
    assert "***@host/repo.git unreachable (required: reachable)" in line


# ---------------------------------------------------------------- unwritable --root


@pytest.mark.integration
def test_skip_validation_with_unwritable_root_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    root = blocker / "root"  # cannot be created: its parent is a regular file (root can't either)
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "runpod_main.py"),
            "--dataset",
            DATASET,
            "--root",
            str(root),
            "--skip-validation",
            "--no-push",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == EXIT_ERROR
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert f"--root {root}: cannot write" in errors[0] and "writable folder" in errors[0]


@pytest.mark.unit
def test_skip_validation_permission_denied_names_the_path(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    clean_env: None,
) -> None:
    # Tests run as root, which bypasses chmod: simulate EACCES where the lock folder is made.
    real_mkdir = Path.mkdir

    def denied(self: Path, *args: object, **kwargs: object) -> None:
        if self == tmp_path / "logs":
            raise PermissionError(13, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", denied)
    started: list[object] = []
    monkeypatch.setattr(runpod_main, "stream_driver", lambda *a: started.append(a) or 0)
    code = runpod_main.main(["--dataset", DATASET, "--root", str(tmp_path), "--skip-validation"])
    assert code == EXIT_ERROR and started == []
    err = capsys.readouterr().err
    assert f"error: --root {tmp_path}: cannot write {tmp_path / 'logs'} (Permission denied)" in err
    # The driver on its own: the same one line, from run_cli, naming the lock's folder.
    code = runpod_train.main(["--dataset", DATASET, "--root", str(tmp_path), "--no-log-file"])
    assert code == EXIT_ERROR
    err = capsys.readouterr().err
    assert f"error: cannot write {tmp_path / 'logs'}: Permission denied" in err
    assert "Traceback" not in err


@pytest.mark.unit
def test_driver_root_under_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("x")
    root = tmp_path / "a-file" / "root"
    code = runpod_train.main(["--dataset", DATASET, "--root", str(root), "--no-log-file"])
    assert code == EXIT_ERROR
    err = capsys.readouterr().err
    assert f"error: cannot create the run lock {root / 'logs' / f'run_{DATASET}.lock'}" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------- progress relay


@pytest.mark.unit
def test_driver_env_forwards_terminalness(monkeypatch: pytest.MonkeyPatch, clean_env: None) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert runpod_main.driver_env("D", False, False)["PIPELINE_PROGRESS"] == "log"
    monkeypatch.setattr(sys, "stdout", Tty())
    monkeypatch.setattr(sys, "stderr", Tty())
    env = runpod_main.driver_env("D", False, False, log_file=Path("/x/run.log"))
    assert env["PIPELINE_PROGRESS"] == "bar"
    assert int(env["COLUMNS"]) > 0  # tqdm's width, as the pipe cannot tell it
    assert env["PIPELINE_PARENT_PID"] == str(os.getpid())
    assert env["PIPELINE_RUN_LOG"] == "/x/run.log"
    monkeypatch.setenv("PIPELINE_PROGRESS", "log")  # the user's choice wins
    assert runpod_main.driver_env("D", False, False)["PIPELINE_PROGRESS"] == "log"


@pytest.mark.unit
def test_relay_passes_carriage_return_updates_to_the_console_only() -> None:
    console = io.StringIO()
    lines: list[str] = []
    relay = driver_output._Relay(["tok-SECRET-42"], lines.append, console)
    # A tqdm-like bar in pieces (a chunk boundary inside the secret and inside "\r\n"), then a
    # normal line; the final bar state ends with "\n" and is logged once.
    for chunk in [
        b"start\n\r 10%|#   | tok-SEC",
        b"RET-42\r 50%|##  |\r100%|####|\r",
        b"\ndone \xc3",
        b"\xa9\n",
        b"tail",
    ]:
        relay.feed(chunk)
    relay.feed(b"", final=True)
    assert lines == ["start", "100%|####|", "done \u00e9", "tail"]
    shown = console.getvalue()
    assert "\r 10%|#   | ***\r 50%|##  |" in shown
    assert "tok-SECRET-42" not in shown


# ---------------------------------------------------------------- signals, parent death


CHILD = """
import signal, sys, time
def stop(signum, frame):
    print("child got", signal.Signals(signum).name, flush=True)
    sys.exit(130)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, stop)
print("ready", flush=True)
time.sleep(20)
"""


@pytest.mark.integration
def test_stream_driver_forwards_sighup(tmp_path: Path) -> None:
    lines: list[str] = []
    previous_handler = signal.getsignal(signal.SIGHUP)

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())
            if record.getMessage() == "ready":
                main_thread = threading.main_thread().ident
                threading.Timer(0.2, signal.pthread_kill, (main_thread, signal.SIGHUP)).start()

    handler = Collect()
    child = runpod_main.child_log
    child.addHandler(handler)
    child.setLevel(logging.INFO)
    child.propagate = False
    try:
        code = runpod_main.stream_driver([sys.executable, "-c", CHILD], dict(os.environ), [])
    finally:
        child.removeHandler(handler)
    assert code == EXIT_INTERRUPTED
    assert lines == ["ready", "child got SIGHUP"]
    assert signal.getsignal(signal.SIGHUP) is previous_handler


@pytest.mark.unit
def test_nohup_keeps_sighup_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``nohup`` a hangup must not stop the run (it is not forwarded)."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert signal.SIGHUP not in driver_output.forwarded_signals()
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        assert signal.SIGHUP in driver_output.forwarded_signals()
    finally:
        signal.signal(signal.SIGHUP, previous)


@pytest.mark.unit
def test_watch_parent_signals_when_the_parent_changes() -> None:
    got: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
    answers = iter([100, 100, 1])
    try:
        process.stop_reasons.clear()
        stop = process.watch_parent(100, interval_s=0.01, getppid=lambda: next(answers, 1))
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert got == [signal.SIGTERM]
    assert process.stop_reasons == ["parent process (pid 100) exited"]
    process.stop_reasons.clear()


ORPHAN_DRIVER = """
import sys, time
import runpod_train
from pipeline.common import TrainingInterrupted
from runpod_train import StepOutcome

def slow(ctx):
    print("slow step started", file=sys.stderr, flush=True)
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        for _ in range(50):  # plenty of output after the console is gone
            print("checkpoint being written", flush=True)
        raise TrainingInterrupted("stopped at epoch 1; checkpoint written", last_epoch=1) from None
    return StepOutcome(result="finished")

for n in runpod_train.STEP_NAMES:
    runpod_train.STEP_FUNCTIONS[n] = lambda ctx: StepOutcome(result="fake")
runpod_train.STEP_FUNCTIONS[5] = slow
raise SystemExit(runpod_train.main(sys.argv[1:]))
"""

MIDDLE = """
import os, pathlib, subprocess, sys, time
env = dict(os.environ, PIPELINE_PARENT_PID=str(os.getpid()))
child = subprocess.Popen([sys.executable, "-c", sys.argv[2], *sys.argv[3:]], env=env,
                         start_new_session=True)
pathlib.Path(sys.argv[1]).write_text(str(child.pid))
time.sleep(120)
"""


@pytest.mark.integration
def test_driver_stops_with_an_interrupted_summary_when_its_parent_dies(tmp_path: Path) -> None:
    """kill -9 of the entry point: the driver checkpoints, stops and says so in its summary.

    Its output pipe loses its reader as it would in real life; what it writes after that goes
    to ``logs/train_*_parent_gone.log`` instead of failing with a broken pipe.
    """
    write_ohlcv_csv(generate_ohlcv(50, seed=1), tmp_path / "datasets" / f"{DATASET}.csv")
    # The previous run's summary (exit 0) must not survive as if it were this run's.
    (tmp_path / "results").mkdir()
    summary_file = tmp_path / "results" / f"run_summary_{DATASET}.json"
    summary_file.write_text(json.dumps({"exit_code": 0, "status": "ok", "steps": []}))
    pid_file = tmp_path / "driver.pid"
    middle = subprocess.Popen(
        [
            sys.executable,
            "-c",
            MIDDLE,
            str(pid_file),
            ORPHAN_DRIVER,
            "--dataset",
            DATASET,
            "--root",
            str(tmp_path),
            "--no-log-file",
        ],
        cwd=PROJECT_ROOT,
        env=_env(PYTHONPATH=str(PROJECT_ROOT), PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert middle.stdout is not None
    seen = []
    for line in middle.stdout:
        seen.append(line)
        if "slow step started" in line:
            break
    driver_pid = int(pid_file.read_text())
    running = json.loads(summary_file.read_text())
    assert running["status"] == "running" and running["pid"] == driver_pid, seen
    middle.kill()  # like kill -9 of runpod_main.py
    middle.wait()
    middle.stdout.close()  # the pipe loses its reader, as when runpod_main dies
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(driver_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(driver_pid, signal.SIGKILL)
        pytest.fail("the driver outlived its parent by 30 s")
    summary = json.loads(summary_file.read_text())
    assert summary["status"] == "interrupted" and summary["exit_code"] == EXIT_INTERRUPTED
    assert summary["pid"] == driver_pid
    assert "parent process" in summary["stop_reason"]
    assert summary["steps"][4]["status"] == "interrupted"
    assert "checkpoint written" in summary["steps"][4]["result"]
    assert not lock_path(Paths.from_root(tmp_path), DATASET).exists()
    (after,) = (tmp_path / "logs").glob(f"train_{DATASET}_*_parent_gone.log")
    text = after.read_text()
    assert "the parent process (pid" in text and "writing a checkpoint" in text
    assert "checkpoint being written" in text  # a print after the pipe broke
    assert "interrupted: step 5 (train classifiers)" in text
    assert "BrokenPipeError" not in text


# ---------------------------------------------------------------- pipeline.run.lock.step_lock


@pytest.mark.integration
def test_step_lock_is_a_noop_for_the_holder_and_refuses_another_live_run(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    path = lock_path(paths, DATASET)
    with step_lock(paths, DATASET):
        assert json.loads(path.read_text())["pid"] == os.getpid()
        nonce = json.loads(path.read_text())["nonce"]
        with step_lock(paths, DATASET):  # the driver calling a step in-process
            assert json.loads(path.read_text())["nonce"] == nonce
        assert path.exists()  # the inner no-op did not release the outer lock
    assert not path.exists()

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.05)
        path.write_text(
            json.dumps(
                {
                    "pid": sleeper.pid,
                    "host": socket.gethostname(),
                    "started": "now",
                    "started_epoch": time.time(),
                    "nonce": "other",
                }
            )
        )
        with pytest.raises(LockHeldError, match=f"in progress \\(pid {sleeper.pid}"):
            with step_lock(paths, DATASET):
                pytest.fail("must not run while another live run holds the lock")
        assert json.loads(path.read_text())["nonce"] == "other"
    finally:
        sleeper.kill()
        sleeper.wait()
