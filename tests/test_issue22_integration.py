"""Defects found running the pipeline as a new user, under faults and hostile input: the
integration-tier checks (training, subprocesses, signals)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

import train_models

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------- kill before metrics


def test_a_kill_between_model_file_and_metrics_resumes_from_the_last_epoch(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_dataset: Any,
) -> None:
    """The classifier's verdict (a finding, not a fault) is logged at INFO."""
    import logging

    write_dataset(tmp_path, "TINY", signal=0.5, seed=3, n=1500)
    args = ["--dataset", "TINY", "--root", str(tmp_path), "--preset", "smoke", "--models", "gru"]
    args += ["--set", "num_threads=1", "--set", "training.device=cpu", "--set", "epochs=2"]
    args += ["--set", "patience=5", "--set", "ppo_prediction_source=in_sample"]
    real_write = train_models.atomic_write_json

    class Killed(BaseException):
        """Stands for kill -9 right before the metrics file is written."""

    def dying_write(path: Path, obj: Any) -> Path:
        if Path(path).name.startswith("metrics_"):
            raise Killed
        return real_write(path, obj)

    monkeypatch.setattr(train_models, "atomic_write_json", dying_write)
    with pytest.raises(Killed):
        train_models.main(args)
    ckpts = list((tmp_path / "models" / "checkpoints").glob("*gru*"))
    assert ckpts, "the finished model's checkpoint must survive until its metrics are written"
    monkeypatch.setattr(train_models, "atomic_write_json", real_write)
    records: list[logging.LogRecord] = []
    catch = logging.Handler()
    catch.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("train_models").addHandler(catch)
    try:
        assert train_models.main([*args, "--resume"]) == 0
    finally:
        logging.getLogger("train_models").removeHandler(catch)
    verdicts = [r for r in records if r.getMessage().startswith("gru: test macro-F1")]
    assert len(verdicts) == 1 and verdicts[0].levelno == logging.INFO
    metrics = json.loads(next((tmp_path / "results").glob("metrics_gru*.json")).read_text())
    assert metrics["resumed_from_epoch"] == 2
    assert not list((tmp_path / "models" / "checkpoints").glob("*gru*"))


# ---------------------------------------------------------------- process life

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATASET = "LIFE-TEST_1H"


def _tiny_root(root: Path) -> Path:
    from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv

    (root / "datasets").mkdir(parents=True)
    write_ohlcv_csv(generate_ohlcv(50, seed=1), root / "datasets" / f"{DATASET}.csv")
    return root


def _env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), PYTHONUNBUFFERED="1", **extra)
    return env


SLOW_DRIVER = """
import sys, time
import runpod_train
from runpod_train import StepOutcome

def slow(ctx):
    print("slow step started", file=sys.stderr, flush=True)
    time.sleep(60)
    return StepOutcome(result="finished")

for n in runpod_train.STEP_NAMES:
    runpod_train.STEP_FUNCTIONS[n] = lambda ctx: StepOutcome(result="fake")
runpod_train.STEP_FUNCTIONS[5] = slow
raise SystemExit(runpod_train.main(sys.argv[1:]))
"""

QUICK_PARENT = """
import os, pathlib, subprocess, sys
env = dict(os.environ, PIPELINE_PARENT_PID=str(os.getpid()))
child = subprocess.Popen([sys.executable, "-c", sys.argv[2], *sys.argv[3:]], env=env,
                         start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
pathlib.Path(sys.argv[1]).write_text(str(child.pid))
os._exit(0)  # killed right after `starting runpod_train.py`
"""


def test_a_driver_whose_parent_died_before_it_looked_stops_at_once(tmp_path: Path) -> None:
    """Item 1: the entry point gone before the driver started watching it: no orphan run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = _tiny_root(tmp_path)
    pid_file = tmp_path / "driver.pid"
    args = ["--dataset", DATASET, "--root", str(root), "--no-log-file"]
    middle = subprocess.run(
        [sys.executable, "-c", QUICK_PARENT, str(pid_file), SLOW_DRIVER, *args],
        cwd=PROJECT_ROOT,
        env=_env(),
        timeout=60,
    )
    assert middle.returncode == 0
    driver_pid = int(pid_file.read_text())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(driver_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(driver_pid, signal.SIGKILL)
        pytest.fail("the driver trained on alone after its parent died")
    (orphan,) = (root / "logs").glob(f"train_{DATASET}_*_parent_gone.log")
    text = orphan.read_text(encoding="utf-8")
    assert "runpod_main.py) exited before this run started; nothing was run" in text, text
    assert not (root / "logs" / f"run_{DATASET}.lock").exists()
    assert not (root / "results" / f"run_summary_{DATASET}.json").exists()


LATE_HANGUP = """
import atexit, os, pathlib, runpy, signal, sys, time
lock, seen = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def teardown():  # the interpreter winding down after the run: slow, and then a hangup
    seen.write_text(f"lock held during teardown: {lock.exists()}")
    os.kill(os.getpid(), signal.SIGHUP)
    time.sleep(0.5)
atexit.register(teardown)
sys.argv = ["runpod_train.py", *sys.argv[3:]]
runpy.run_path("runpod_train.py", run_name="__main__")
"""


def test_the_lock_is_held_until_exit_and_a_late_hangup_exits_130(tmp_path: Path) -> None:
    """Items 9 and 12: the lock outlives the interpreter's wind-down; a SIGHUP then is 130."""
    import subprocess
    import sys

    root = _tiny_root(tmp_path)
    lock = root / "logs" / f"run_{DATASET}.lock"
    seen = tmp_path / "seen.txt"
    args = ["--dataset", DATASET, "--root", str(root), "--no-log-file", "--steps", "1"]
    proc = subprocess.run(
        [sys.executable, "-c", LATE_HANGUP, str(lock), str(seen), *args],
        cwd=PROJECT_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert seen.read_text() == "lock held during teardown: True"
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "interrupted: SIGHUP after the run finished (its summary is final)" in proc.stderr
    summary = json.loads((root / "results" / f"run_summary_{DATASET}.json").read_text())
    assert summary["status"] == "ok"
    assert not lock.exists()


def test_a_signal_before_the_driver_exists_is_forwarded_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Item 1: Ctrl-C between `starting runpod_train.py` and the driver's start is passed on
    once the driver exists; the entry point does not die and leave the driver alone."""
    import os
    import signal
    import subprocess

    import runpod_main
    from pipeline.run import driver_output

    real_popen = subprocess.Popen
    started: list[subprocess.Popen[bytes]] = []

    def popen_after_a_signal(*a: Any, **k: Any) -> subprocess.Popen[bytes]:
        os.kill(os.getpid(), signal.SIGINT)  # arrives before the driver exists
        started.append(real_popen(*a, **k))
        return started[0]

    monkeypatch.setattr(driver_output.subprocess, "Popen", popen_after_a_signal)
    code = runpod_main.stream_driver([sys.executable, "-c", READY_DRIVER], _env(), [])
    assert code == 130
    assert started[0].returncode == -signal.SIGINT


READY_DRIVER = """
import sys, time
print("starting", flush=True)
try:
    time.sleep(1.0)  # like the interpreter's own start-up: an interrupt here ends it with 1
except KeyboardInterrupt:
    print("interrupted while starting", flush=True)
    sys.exit(1)
from pipeline.run.process import interrupt_on_signals
with interrupt_on_signals():  # like runpod_train.main(): the held Ctrl-C arrives here
    print("ready", flush=True)
    time.sleep(30)
"""


def test_a_ctrl_c_while_the_driver_starts_up_is_held_until_its_handlers_are_in() -> None:
    """A Ctrl-C in the first milliseconds of the driver (its interpreter still starting, where
    Python ends with status 1 and a traceback) was reported as a failure, not 130: the driver now
    starts with SIGINT held and takes it once its handlers are in."""
    import logging
    import signal
    import threading

    import runpod_main

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())
            if record.getMessage() == "starting":  # Ctrl-C at runpod_main, mid start-up
                main_thread = threading.main_thread().ident
                threading.Timer(0.2, signal.pthread_kill, (main_thread, signal.SIGINT)).start()

    child = runpod_main.child_log
    old = (child.level, child.propagate)
    handler = Collect()
    child.addHandler(handler)
    child.setLevel(logging.INFO)
    child.propagate = False
    try:
        code = runpod_main.stream_driver([sys.executable, "-c", READY_DRIVER], _env(), [])
    finally:
        child.removeHandler(handler)
        child.setLevel(old[0])
        child.propagate = old[1]
    assert lines[0] == "starting"
    assert "interrupted while starting" not in lines
    assert code == 130


def test_the_driver_takes_a_held_ctrl_c_as_one_line_and_130(tmp_path: Path) -> None:
    """The real driver, started the way runpod_main starts it and interrupted at once: exit 130
    and the one line "interrupted", not a traceback (nor status 1) from its start-up."""
    import signal
    import subprocess

    from pipeline.common import PROJECT_ROOT
    from pipeline.run.process import children_start_holding_interrupts

    with children_start_holding_interrupts():
        proc = subprocess.Popen(
            [sys.executable, "runpod_train.py", "--dataset", str(tmp_path / "x.csv")],
            cwd=PROJECT_ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    proc.send_signal(signal.SIGINT)  # while its interpreter starts
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert err.strip() == "interrupted"


# ---------------------------------------------------------------- tuner outputs (plots: ~4 s)


def test_tuner_best_breaks_ties_by_trades_reports_them_and_names_the_given_csv(
    tmp_path: Path,
) -> None:
    import optuna
    from optuna.distributions import FloatDistribution

    from pipeline.tuning import study as tuning
    from pipeline.tuning.space import read_search_space

    space_file = tmp_path / "space.txt"
    space_file.write_text("[ppo]\nlearning_rate = float 1e-5 1e-3 log\n", encoding="utf-8")
    space = read_search_space(space_file)
    study = optuna.create_study(direction="maximize", study_name="agent_X")
    dist = {"ppo.learning_rate": FloatDistribution(1e-5, 1e-3, log=True)}
    for value, trades, lr in ((0.0, 0, 1e-4), (-69.0, 40, 2e-4), (0.0, 5, 3e-4)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"ppo.learning_rate": lr},
                distributions=dist,
                value=value,
                user_attrs={"best_trades": trades},
            )
        )
    csv = tmp_path / "elsewhere" / "MY-DATA_1H.csv"
    out = tmp_path / "out"
    names = {k: f"{k}.out" for k in ("best", "history", "importance", "top", "command")}
    names["summary"] = "summary.json"
    summary = tuning.write_outputs(
        study, out, "agent", "MY-DATA_1H", space, ["--preset", "demo"], names,
        run_dataset=str(csv), run_args=["--root", str(tmp_path)],
    )  # fmt: skip
    assert summary["best_trial"] == 2 and summary["best_trades"] == 5
    command = (out / "command.out").read_text().strip()
    assert command.startswith(f"python runpod_main.py --dataset {csv} --preset demo --root ")
    assert "learning_rate = 0.0003" in (out / "best.out").read_text()
    table = (out / "top.out").read_text()
    assert "| 1 | 2 | 0 | 5 |" in table and "| 2 | 0 | 0 | 0 |" in table
    lines = tuning.summary_lines(summary, out)
    assert any("(trial 2, 5 trades at its best evaluation)" in line for line in lines)

    lonely = optuna.create_study(direction="maximize", study_name="agent_Y")
    for value, trades in ((0.0, 0), (-69.0, 40)):
        lonely.add_trial(
            optuna.trial.create_trial(
                params={"ppo.learning_rate": 1e-4},
                distributions=dist,
                value=value,
                user_attrs={"best_trades": trades},
            )
        )
    summary = tuning.write_outputs(lonely, tmp_path / "o2", "agent", "Y", space, [], names)
    assert summary["best_trades"] == 0
    assert tuning.summary_lines(summary, tmp_path / "o2")[-1].startswith(
        "note: the best trial never trades"
    )


# ---------------------------------------------------------------- a library module


@pytest.mark.parametrize(("argv", "code"), [(["--help"], 0), ([], 1), (["--dataset", "X"], 1)])
def test_pytorch_train_says_it_is_a_library_without_importing_torch(
    argv: list[str], code: int
) -> None:
    import subprocess
    import sys

    probe = (
        "import runpy, sys\n"
        "sys.argv = ['pytorch_train.py', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_path('pytorch_train.py', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    print('EXIT', exc.code, 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *argv],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == f"EXIT {code} False", out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("pytorch_train.py is a library module (the classifier training loop)")
    assert "python train_models.py --dataset NAME" in line


# ---------------------------------------------------------------- Ctrl-C during a push

PUSH_SCRIPT = """
import sys, git
from pipeline.common import run_cli
from pipeline.publish.git import GitRunner
g = GitRunner(git.Repo(sys.argv[1]), None, timeout_s=60)
print("pushing", flush=True)
raise SystemExit(run_cli(lambda: g.network(["push", "origin", "HEAD:refs/heads/main"])[0]))
"""


def test_ctrl_c_during_git_push_stops_within_seconds_with_130(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    def git_(*args: str, cwd: Path = tmp_path) -> None:
        subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)

    git_("init", "--bare", "-q", str(tmp_path / "bare.git"))
    work = tmp_path / "work"
    git_("init", "-q", str(work))
    (work / "a.txt").write_text("a")
    git_("add", "a.txt", cwd=work)
    git_("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a", cwd=work)
    git_("remote", "add", "origin", str(tmp_path / "bare.git"), cwd=work)
    # A remote that hangs: the local transport runs this receive-pack command.
    git_("config", "remote.origin.receivepack", "sleep 60; git-receive-pack", cwd=work)
    proc = subprocess.Popen(
        [sys.executable, "-c", PUSH_SCRIPT, str(work)],
        cwd=PROJECT_ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "pushing"
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    t0 = time.monotonic()
    try:
        _out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the push outlived Ctrl-C by 15 s")
    assert time.monotonic() - t0 < 8
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted"
