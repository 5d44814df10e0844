"""The eight-step driver (runpod_train.py) and runpod_main's plumbing, with fake steps (fast)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import runpod_main
import runpod_train
from pipeline.common import (
    EXIT_INTERRUPTED,
    EXIT_PUSH,
    PROJECT_ROOT,
    PipelineError,
    TrainingInterrupted,
)
from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
from pipeline.run import process
from pipeline.run.lock import lock_path, read_owner
from runpod_train import (
    STEP_NAMES,
    StepFailed,
    StepOutcome,
    agent_line,
    classifier_line,
    parse_steps,
)

DATASET = "SYNTH-DRV_1H"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Artifact root with a small dataset; the pipeline's env variables cleared."""
    for var in ("DATASET_NAME", "RESUME_TRAINING", "RUNPOD_PUSH_TO_GITHUB", "PIPELINE_HOME"):
        monkeypatch.delenv(var, raising=False)
    write_ohlcv_csv(generate_ohlcv(400, seed=3), tmp_path / "datasets" / f"{DATASET}.csv")
    return tmp_path


@pytest.fixture
def fake_steps(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[runpod_train.RunContext]]:
    """Replace every step with a recorder that returns ok (tests override single steps)."""
    calls: dict[int, list[runpod_train.RunContext]] = {n: [] for n in STEP_NAMES}

    def make(n: int):
        def fake(ctx: runpod_train.RunContext) -> StepOutcome:
            calls[n].append(ctx)
            if n == 5:  # what the real step 5 hands the driver (its TrainingSummary)
                ctx.classifiers = {
                    "dataset": DATASET,
                    "dataset_sha256": "0" * 64,
                    "device": "cpu",
                    "prediction_source": "walk_forward",
                    "models": {"dlstm": {"status": "trained", "test_macro_f1": 0.4}},
                    "prediction_tables": {},
                }
            return StepOutcome(result=f"fake {n}")

        return fake

    for n in STEP_NAMES:
        monkeypatch.setitem(runpod_train.STEP_FUNCTIONS, n, make(n))
    return calls


def _summary(root: Path) -> dict:
    return json.loads((root / "results" / f"run_summary_{DATASET}.json").read_text())


def _run(root: Path, *extra: str) -> int:
    return runpod_train.main(["--dataset", DATASET, "--root", str(root), "--no-log-file", *extra])


# ---------------------------------------------------------------- --steps / --from-step


@pytest.mark.unit
@pytest.mark.parametrize(
    ("steps", "from_step", "expected"),
    [
        (None, None, [1, 2, 3, 4, 5, 6, 7, 8]),
        ("5,6", None, [5, 6]),
        ("6, 5,5", None, [5, 6]),
        ("5-7", None, [5, 6, 7]),
        ("1,7-8", None, [1, 7, 8]),
        (None, 7, [7, 8]),
        (None, 1, [1, 2, 3, 4, 5, 6, 7, 8]),
    ],
)
def test_parse_steps(steps: str | None, from_step: int | None, expected: list[int]) -> None:
    assert parse_steps(steps, from_step) == expected


@pytest.mark.unit
@pytest.mark.parametrize(
    ("steps", "from_step", "message"),
    [
        ("9", None, "'9' is out of range"),
        ("0,1", None, "'0' is out of range"),
        ("7-5", None, "'7-5' is out of range"),
        ("five", None, "'five' is not a step number"),
        ("5,", None, "'' is not a step number"),
        (None, 9, "--from-step 9: expected a step number 1..8"),
        ("5", 7, "cannot be combined"),
    ],
)
def test_parse_steps_errors(steps: str | None, from_step: int | None, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        parse_steps(steps, from_step)


@pytest.mark.unit
def test_steps_selects_what_runs(root: Path, fake_steps: dict) -> None:
    assert _run(root, "--steps", "5,6") == 0
    assert [n for n, c in fake_steps.items() if c] == [5, 6]
    statuses = {s["number"]: s["status"] for s in _summary(root)["steps"]}
    assert statuses == {1: "not selected", 2: "not selected", 3: "not selected",
                        4: "not selected", 5: "ok", 6: "ok", 7: "not selected",
                        8: "not selected"}  # fmt: skip


@pytest.mark.unit
def test_from_step_and_earlier_results_kept(root: Path, fake_steps: dict) -> None:
    assert _run(root) == 0
    assert all(len(c) == 1 for c in fake_steps.values())
    assert _run(root, "--from-step", "7") == 0
    assert [len(fake_steps[n]) for n in STEP_NAMES] == [1, 1, 1, 1, 1, 1, 2, 2]
    steps = _summary(root)["steps"]
    assert [s["earlier_run"] for s in steps] == [True] * 6 + [False] * 2
    assert steps[4]["result"] == "fake 5" and steps[4]["status"] == "ok"
    assert _summary(root)["steps_selected"] == [7, 8]


# ---------------------------------------------------------------- failures


@pytest.mark.unit
@pytest.mark.parametrize(
    ("step", "error", "line", "traceback"),
    [
        # Bad input: one clear line, no traceback.
        (
            5,
            PipelineError("models/lstm_X.pth: shape mismatch (expected 26 features, got 25)"),
            "error: step 5 (train classifiers) failed: models/lstm_X.pth: shape mismatch "
            "(expected 26 features, got 25)",
            False,
        ),
        # A bug: the step's name and the exception, and its traceback (in the log too).
        (
            6,
            RuntimeError("CUDA error: device-side assert triggered"),
            "error: step 6 (validate models) failed: RuntimeError: CUDA error: device-side "
            "assert triggered",
            True,
        ),
    ],
)
def test_failing_step_reports_its_name_and_stops(
    root: Path,
    fake_steps: dict,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    step: int,
    error: Exception,
    line: str,
    traceback: bool,
) -> None:
    # Reports of an older run are on disk; a failed run must not show them as its own.
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"training_summary_{DATASET}.json").write_text(
        json.dumps({"models": {"dlstm": {"test_macro_f1": 0.9}}})
    )
    (results / f"backtest_dlstm_{DATASET}.json").write_text(
        json.dumps({"strategies": {"agent": {"total_return": 0.5}}})
    )

    def boom(ctx: runpod_train.RunContext) -> StepOutcome:
        raise error

    monkeypatch.setitem(runpod_train.STEP_FUNCTIONS, step, boom)
    assert _run(root) == 1
    err = capsys.readouterr().err
    assert line in err
    assert ("Traceback" in err) is traceback
    assert all(len(fake_steps[n]) == 0 for n in range(step + 1, 9))
    summary = _summary(root)
    assert summary["exit_code"] == 1
    assert [s["status"] for s in summary["steps"]] == (
        ["ok"] * (step - 1) + ["failed"] + ["not run"] * (8 - step)
    )
    assert str(error).split(":")[-1].strip() in summary["steps"][step - 1]["result"]
    assert summary["agent"] is None
    assert (summary["classifiers"] is None) is (step == 5)
    assert not lock_path(runpod_train.Paths.from_root(root), DATASET).exists()


@pytest.mark.unit
def test_push_failure_exit_code_3(
    root: Path, fake_steps: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def push(ctx: runpod_train.RunContext) -> StepOutcome:
        raise PipelineError("git push failed: remote rejected", exit_code=EXIT_PUSH)

    monkeypatch.setitem(runpod_train.STEP_FUNCTIONS, 8, push)
    assert _run(root) == EXIT_PUSH
    assert "error: step 8 (push) failed: git push failed: remote rejected" in (
        capsys.readouterr().err
    )


@pytest.mark.unit
def test_interrupted_step_exit_130(
    root: Path, fake_steps: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def ppo(ctx: runpod_train.RunContext) -> StepOutcome:
        raise TrainingInterrupted(
            "interrupted by SIGTERM at 1024 of 2048 timesteps; checkpoint written to c.zip",
            checkpoint_path=Path("c.zip"),
        )

    monkeypatch.setitem(runpod_train.STEP_FUNCTIONS, 7, ppo)
    assert _run(root, "--preset", "smoke") == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted: step 7 (train PPO agent): interrupted by SIGTERM at 1024" in err
    # the driver's own command continues the run (not the step script's)
    hint = err.split("resume with: ")[1].splitlines()[0]
    assert hint.startswith(f"python runpod_train.py --dataset {DATASET} --root {root} ")
    assert " --preset smoke " in hint and hint.endswith(" --resume")
    steps = _summary(root)["steps"]
    assert steps[6]["status"] == "interrupted" and steps[7]["status"] == "not run"


# ---------------------------------------------------------------- environment and flags


@pytest.mark.unit
def test_env_variables_and_flags(
    root: Path, fake_steps: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATASET_NAME", DATASET)
    monkeypatch.setenv("RESUME_TRAINING", "true")
    monkeypatch.setenv("RUNPOD_PUSH_TO_GITHUB", "true")
    code = runpod_train.main(
        [
            "--root",
            str(root),
            "--no-log-file",
            "--steps",
            "1",
            "--preset",
            "smoke",
            "--set",
            "epochs=1",
        ]  # fmt: skip
    )
    assert code == 0
    ctx = fake_steps[1][0]
    assert ctx.dataset == DATASET and ctx.resume and ctx.push
    joined = " ".join(ctx.config_args)  # passed on to the resume hint
    assert "--preset smoke" in joined and "--set epochs=1" in joined
    assert ctx.cfg.training.epochs == 1 and ctx.cfg.ppo.total_timesteps == 2048


@pytest.mark.unit
def test_flags_override_env(root: Path, fake_steps: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATASET_NAME", "OTHER")
    monkeypatch.setenv("RUNPOD_PUSH_TO_GITHUB", "true")
    assert _run(root, "--steps", "1", "--no-push") == 0
    ctx = fake_steps[1][0]
    assert ctx.dataset == DATASET and not ctx.push and ctx.push_reason == "--no-push"
    assert not ctx.resume


@pytest.mark.unit
def test_no_dataset_is_an_error(root: Path, capsys: pytest.CaptureFixture) -> None:
    assert runpod_train.main(["--root", str(root), "--no-log-file"]) == 1
    assert "error: no dataset: pass --dataset NAME or set DATASET_NAME" in capsys.readouterr().err


@pytest.mark.unit
def test_push_skipped_unless_enabled(root: Path) -> None:
    ctx = runpod_train.run_context(
        runpod_train.build_parser().parse_args(["--dataset", DATASET, "--root", str(root)])
    )
    outcome = runpod_train.step_push(ctx)
    assert outcome.status == "skipped"
    assert outcome.result == "skipped (RUNPOD_PUSH_TO_GITHUB is not true)"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("env", "flags", "push", "reason"),
    [
        # The retry the push error suggests (`--steps 8`) must push, not skip silently.
        (None, ["--steps", "8"], True, "--steps names step 8"),
        (None, ["--steps", "7-8"], True, "--steps names step 8"),
        (None, ["--steps", "5,6"], False, "RUNPOD_PUSH_TO_GITHUB is not true"),
        (None, ["--from-step", "7"], False, "RUNPOD_PUSH_TO_GITHUB is not true"),
        ("false", ["--steps", "8"], False, "RUNPOD_PUSH_TO_GITHUB=false"),
        ("true", ["--steps", "8", "--no-push"], False, "--no-push"),
        ("TRUE", [], True, "RUNPOD_PUSH_TO_GITHUB=true"),
    ],
)
def test_push_decision(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: str | None,
    flags: list[str],
    push: bool,
    reason: str,
) -> None:
    if env is not None:
        monkeypatch.setenv("RUNPOD_PUSH_TO_GITHUB", env)
    args = runpod_train.build_parser().parse_args(["--dataset", DATASET, *flags])
    ctx = runpod_train.run_context(args)
    assert (ctx.push, ctx.push_reason) == (push, reason)


# ---------------------------------------------------------------- real cheap steps


@pytest.mark.integration
def test_real_steps_1_to_4(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_install(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing is missing, so nothing may be installed")

    monkeypatch.setattr(runpod_train, "install_requirements", no_install)
    assert _run(root, "--steps", "1-4") == 0
    steps = _summary(root)["steps"]
    assert [s["status"] for s in steps[:2]] == ["ok", "ok"]
    assert steps[2]["status"] in ("ok", "warn")
    assert steps[3]["result"].startswith("400 rows, 2024-01-01 .. 2024-01-17")
    assert steps[3]["details"]["columns"] == ["timestamp", "open", "high", "low", "close", "volume"]
    assert steps[1]["details"]["installed"] is False
    for d in runpod_train.Paths.from_root(root).output_dirs():
        assert d.is_dir()


@pytest.mark.unit
def test_dependencies_install_only_when_missing(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = runpod_train.run_context(
        runpod_train.build_parser().parse_args(["--dataset", DATASET, "--root", str(root)])
    )
    answers = [[("ta", "ta")], []]
    monkeypatch.setattr(runpod_train, "missing_modules", lambda: answers.pop(0))
    commands: list[list[str]] = []

    def fake_run(cmd: list[str], check: bool) -> subprocess.CompletedProcess:
        commands.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runpod_train.subprocess, "run", fake_run)
    outcome = runpod_train.step_dependencies(ctx)
    assert commands == [
        [sys.executable, "-m", "pip", "install", "-r", str(PROJECT_ROOT / "requirements.txt")]
    ]
    assert outcome.details["installed"] is True

    ctx.install = False
    monkeypatch.setattr(runpod_train, "missing_modules", lambda: [("ta", "ta")])
    with pytest.raises(StepFailed, match="missing packages: ta; run pip install -r"):
        runpod_train.step_dependencies(ctx)


@pytest.mark.unit
def test_dataset_step_failure_names_the_file(root: Path, capsys: pytest.CaptureFixture) -> None:
    (root / "datasets" / "BROKEN.csv").write_text("timestamp,open\n2024-01-01,1\n")
    code = runpod_train.main(
        ["--dataset", "BROKEN", "--root", str(root), "--no-log-file", "--steps", "4"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "error: step 4 (dataset) failed: " in err and "BROKEN.csv" in err


@pytest.mark.unit
def test_key_result_lines() -> None:
    summary = {
        "models": {
            "dlstm": {"status": "trained", "test_macro_f1": 0.41234, "majority_test_macro_f1": 0.2},
            "gru": {"status": "failed", "reason": "diverged (loss nan at epoch 3)"},
        }
    }
    assert classifier_line(summary) == (
        "dlstm test F1 0.412 vs majority 0.200; gru failed: diverged (loss nan at epoch 3)"
    )
    line = agent_line(
        {
            "agent_total_return": 0.0123,
            "agent_sharpe": 0.5,
            "buy_and_hold_total_return": -0.05,
            "buy_and_hold_sharpe": None,
        }
    )
    assert line == "agent return +1.23% Sharpe 0.50 vs buy-and-hold -5.00% Sharpe n/a (test block)"
    flagged = agent_line({"agent_total_return": 0.5, "in_sample_predictions": True})
    assert flagged.endswith("(test block) [IN-SAMPLE predictions]")
    # seeds > 1: which seed was chosen, and the spread over all of them.
    spread = {"n": 3, "selected_seed": 43, "median": 0.1, "min": -0.02, "max": 0.25}
    line = agent_line({"agent_total_return": 0.25, "seeds": spread})
    assert line.endswith(
        "(test block); seed 43 of 3 chosen on validation, test return over the seeds: median "
        "+10.00% [-2.00%, +25.00%]"
    )


# ---------------------------------------------------------------- lock via the driver


@pytest.mark.integration
def test_driver_fails_fast_on_live_lock(root: Path, capsys: pytest.CaptureFixture) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.05)
        path = lock_path(runpod_train.Paths.from_root(root), DATASET)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "pid": sleeper.pid,
                    "host": os.uname().nodename,
                    "started": "now",
                    "started_epoch": time.time(),
                    "nonce": "other",
                }  # fmt: skip
            )
        )
        t0 = time.perf_counter()
        assert _run(root) == 1
        assert time.perf_counter() - t0 < 2.0
        err = capsys.readouterr().err
        assert f"another run on this dataset is in progress (pid {sleeper.pid}" in err
        assert read_owner(path).pid == sleeper.pid
        assert not (root / "results" / f"run_summary_{DATASET}.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.integration
def test_driver_takes_over_stale_lock(
    root: Path, fake_steps: dict, capsys: pytest.CaptureFixture
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = lock_path(runpod_train.Paths.from_root(root), DATASET)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "pid": dead.pid,
                "host": os.uname().nodename,
                "started": "earlier",
                "started_epoch": time.time() - 60,
                "nonce": "old",
            }  # fmt: skip
        )
    )
    assert _run(root, "--steps", "1") == 0
    assert f"stale lock from pid {dead.pid}" in capsys.readouterr().err
    assert not path.exists()


# ---------------------------------------------------------------- runpod_main plumbing


@pytest.mark.unit
def test_main_driver_env_and_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_PUSH_TO_GITHUB", raising=False)
    args = runpod_main.build_parser().parse_args(
        ["--dataset", "D", "--root", str(tmp_path), "--preset", "smoke", "--set", "epochs=1"]
    )
    assert runpod_main.push_enabled(args.no_push) is True
    assert runpod_main.push_enabled(True) is False
    monkeypatch.setenv("RUNPOD_PUSH_TO_GITHUB", "false")
    assert runpod_main.push_enabled(False) is False
    env = runpod_main.driver_env("D", resume=True, push=False)
    assert (env["DATASET_NAME"], env["RESUME_TRAINING"], env["RUNPOD_PUSH_TO_GITHUB"]) == (
        "D",
        "true",
        "false",
    )
    cmd = runpod_main.driver_command(args, runpod_main.Paths.from_root(tmp_path))
    assert cmd[:2] == [sys.executable, str(PROJECT_ROOT / "runpod_train.py")]
    assert cmd[cmd.index("--root") + 1] == str(tmp_path)
    assert "--no-log-file" in cmd and cmd[cmd.index("--preset") + 1] == "smoke"


@pytest.mark.integration
def test_main_masks_the_token_in_the_log_and_returns_the_drivers_code(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    secret = "ghp_main_log_0123456789abcdef"
    monkeypatch.setenv("GITHUB_TOKEN", secret)
    # A driver that echoes the token (as a git error might) and fails like a rejected push.
    child = "import os; print('git said', os.environ['GITHUB_TOKEN']); raise SystemExit(3)"
    monkeypatch.setattr(
        runpod_main, "driver_command", lambda args, paths: [sys.executable, "-c", child]
    )
    try:
        code = runpod_main.main(
            ["--dataset", DATASET, "--root", str(root), "--skip-validation", "--no-push"]
        )
    finally:
        for h in list(runpod_main.child_log.handlers):
            runpod_main.child_log.removeHandler(h)
            h.close()
    assert code == EXIT_PUSH
    (log_file,) = (root / "logs").glob(f"run_{DATASET}_*.log")
    text = log_file.read_text()
    assert secret not in text and "git said ***" in text
    assert (
        "run stopped with exit code 3 (push failed, the commit and artifacts are kept "
        f"locally; retry with `python runpod_train.py --dataset {DATASET} --steps 8`)" in text
    )
    assert f"results:           {root / 'results'}" in text
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err


CHILD = """
import signal, sys, time
def stop(signum, frame):
    print("child got", signal.Signals(signum).name, "-> checkpoint written", flush=True)
    sys.exit(130)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
print("token is tok-SECRET-987654", flush=True)
print("ready", flush=True)
time.sleep(20)
sys.exit(0)
"""


@pytest.mark.integration
def test_stream_driver_masks_and_forwards_sigterm(tmp_path: Path) -> None:
    lines: list[str] = []
    previous_handler = signal.getsignal(signal.SIGTERM)

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())
            if record.getMessage() == "ready":
                # Like `kill <runpod_main pid>`: the parent must pass it on. pthread_kill aims
                # at the main thread, where a single-threaded runpod_main receives signals.
                main_thread = threading.main_thread().ident
                threading.Timer(0.2, signal.pthread_kill, (main_thread, signal.SIGTERM)).start()

    handler = Collect()
    child = runpod_main.child_log
    old = (child.level, child.propagate)
    child.addHandler(handler)
    child.setLevel(logging.INFO)
    child.propagate = False
    try:
        t0 = time.perf_counter()
        code = runpod_main.stream_driver(
            [sys.executable, "-c", CHILD], dict(os.environ), ["tok-SECRET-987654"]
        )
    finally:
        child.removeHandler(handler)
        child.setLevel(old[0])
        child.propagate = old[1]
    assert code == EXIT_INTERRUPTED
    assert time.perf_counter() - t0 < 10
    assert lines == ["token is ***", "ready", "child got SIGTERM -> checkpoint written"]
    assert signal.getsignal(signal.SIGTERM) is previous_handler  # put back afterwards


@pytest.mark.unit
def test_standalone_log_file_has_everything_masked(
    root: Path, fake_steps: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "ghp_standalone_0123456789"
    monkeypatch.setenv("GITHUB_TOKEN", secret)

    def noisy(ctx: runpod_train.RunContext) -> StepOutcome:
        logging.getLogger("some.step").warning("using token %s", secret)
        print(f"plain print with {secret}")
        # A step module that reconfigures logging must not cut the log file short.
        logging.basicConfig(handlers=[logging.StreamHandler(sys.stderr)], force=True)
        logging.getLogger("some.step").warning("after reconfiguring")
        return StepOutcome(result="noisy done")

    monkeypatch.setitem(runpod_train.STEP_FUNCTIONS, 5, noisy)
    assert runpod_train.main(["--dataset", DATASET, "--root", str(root), "--steps", "5"]) == 0
    (log_file,) = (root / "logs").glob(f"train_{DATASET}_*.log")
    text = log_file.read_text()
    assert secret not in text
    assert "using token ***" in text and "plain print with ***" in text
    assert "after reconfiguring" in text
    assert "STEP 5/8: train classifiers" in text and "noisy done" in text
    assert sys.stdout is not None and not isinstance(sys.stdout, process.TeeStream)


@pytest.mark.unit
def test_lock_path_uses_the_dataset_name(tmp_path: Path) -> None:
    paths = runpod_train.Paths.from_root(tmp_path)
    assert lock_path(paths, "/data/BTC_1H.csv") == tmp_path / "logs" / "run_BTC_1H.lock"
    assert lock_path(paths, "BTC_1H") == tmp_path / "logs" / "run_BTC_1H.lock"


# ---------------------------------------------------------------- run summary, signals and faults


def _write_reports(root: Path, f1: float, ret: float) -> None:
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"training_summary_{DATASET}.json").write_text(
        json.dumps({"models": {"dlstm": {"status": "trained", "test_macro_f1": f1}}})
    )
    (results / f"backtest_dlstm_{DATASET}.json").write_text(
        json.dumps({"strategies": {"agent": {"total_return": ret}}})
    )


@pytest.mark.unit
def test_summary_describes_one_invocation_and_names_what_it_carries_over(
    root: Path, fake_steps: dict, capsys: pytest.CaptureFixture
) -> None:
    """Item 27: `--steps 4` with another config shows no earlier classifier/agent results."""
    _write_reports(root, 0.41, 0.05)
    assert _run(root) == 0
    first = _summary(root)
    # the value step 5 returned in this run; reports on disk are never read back
    assert first["classifiers"]["dlstm"]["test_macro_f1"] == 0.4
    assert first["carried_over"] is None and first["status"] == "ok"
    capsys.readouterr()

    assert _run(root, "--steps", "4", "--set", "epochs=1") == 0
    second = _summary(root)
    assert second["config_hash"] != first["config_hash"]
    assert second["classifiers"] is None and second["agent"] is None
    carried = second["carried_over"]
    assert carried["steps"] == [1, 2, 3, 5, 6, 7, 8]
    assert carried["config_hashes"] == [first["config_hash"]]
    assert carried["same_config"] is False
    assert carried["from_run_started"] == [first["started"]]
    assert carried["classifiers"] == first["classifiers"]
    assert carried["agent"] == first["agent"]
    rows = {s["number"]: s for s in second["steps"]}
    assert rows[4]["earlier_run"] is False and "earlier_config_hash" not in rows[4]
    assert rows[5]["earlier_run"] is True
    assert rows[5]["earlier_config_hash"] == first["config_hash"]
    out = capsys.readouterr().err
    assert f"ok (earlier run, config {first['config_hash']})" in out

    # A third run carries the rows over again: their origin stays the first run's config.
    _write_reports(root, 0.99, 0.9)  # rewritten on disk by something else: not this run's
    assert _run(root, "--steps", "1") == 0
    third = _summary(root)
    assert third["classifiers"] is None
    assert third["carried_over"]["classifiers"] == first["classifiers"]
    assert {s["number"]: s for s in third["steps"]}[5]["earlier_config_hash"] == first[
        "config_hash"
    ]
    assert third["carried_over"]["config_hashes"] == sorted(
        {first["config_hash"], second["config_hash"]}
    )


@pytest.mark.unit
def test_summary_says_running_while_the_run_goes_on(root: Path, fake_steps: dict) -> None:
    """Item 5: a run killed outright must not leave the previous run's summary standing."""
    (root / "results").mkdir(parents=True, exist_ok=True)
    (root / "results" / f"run_summary_{DATASET}.json").write_text(
        json.dumps({"status": "ok", "exit_code": 0, "steps": []})
    )
    seen: list[dict] = []

    def peek(ctx: runpod_train.RunContext) -> StepOutcome:
        seen.append(_summary(root))
        return StepOutcome(result="peeked")

    runpod_train.STEP_FUNCTIONS[3] = peek  # restored by fake_steps' monkeypatch
    assert _run(root) == 0
    (during,) = seen
    assert during["status"] == "running" and during["exit_code"] is None
    assert during["pid"] == os.getpid()
    assert [s["status"] for s in during["steps"]] == ["pending"] * 8
    assert _summary(root)["status"] == "ok"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("escape", "code"),
    [(KeyboardInterrupt, EXIT_INTERRUPTED), (SystemExit, 1)],
)
def test_summary_written_when_an_interrupt_or_exception_escapes_the_steps(
    root: Path,
    fake_steps: dict,
    monkeypatch: pytest.MonkeyPatch,
    escape: type[BaseException],
    code: int,
) -> None:
    """Item 5: every exit path writes a summary with status "interrupted"."""
    monkeypatch.setenv("RUNPOD_PUSH_TO_GITHUB", "true")

    def boom(*args: object) -> None:  # between step 7 and step 8
        raise escape("stop")

    monkeypatch.setattr(runpod_train, "before_push", boom)
    with contextlib.suppress(SystemExit):
        got = _run(root)
        assert got == code
    summary = _summary(root)
    assert summary["status"] == "interrupted" and summary["exit_code"] == code
    statuses = [s["status"] for s in summary["steps"]]
    assert statuses == ["ok"] * 7 + ["interrupted"]
    assert not lock_path(runpod_train.Paths.from_root(root), DATASET).exists()


@pytest.mark.unit
def test_sighup_stops_the_driver_like_sigterm(
    root: Path, fake_steps: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    def hangup(ctx: runpod_train.RunContext) -> StepOutcome:
        signal.raise_signal(signal.SIGHUP)  # the terminal closed
        return StepOutcome(result="not reached")

    monkeypatch.setitem(runpod_train.STEP_FUNCTIONS, 5, hangup)
    previous = signal.getsignal(signal.SIGHUP)
    assert _run(root) == EXIT_INTERRUPTED
    summary = _summary(root)
    assert summary["status"] == "interrupted" and summary["stop_reason"] == "SIGHUP"
    assert summary["steps"][4]["status"] == "interrupted"
    assert signal.getsignal(signal.SIGHUP) is previous

    # Under nohup (SIGHUP ignored at start) the hangup is ignored and the run goes on.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert _run(root) == 0
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert _summary(root)["status"] == "ok"


@pytest.mark.unit
def test_pushed_summary_and_log_are_final_but_for_the_push(
    root: Path, fake_steps: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 25: what step 8 commits already has steps 1-7 final and says the push was on."""
    monkeypatch.setenv("RUNPOD_PUSH_TO_GITHUB", "true")
    _write_reports(root, 0.4, 0.1)
    seen: dict[str, object] = {}

    def push(ctx: runpod_train.RunContext) -> StepOutcome:
        seen["summary"] = _summary(root)
        (log_file,) = (root / "logs").glob(f"train_{DATASET}_*.log")
        seen["log"] = log_file.read_text()
        return StepOutcome(result="commit abc -> origin/main, 3 files")

    monkeypatch.setitem(runpod_train.STEP_FUNCTIONS, 8, push)
    assert runpod_train.main(["--dataset", DATASET, "--root", str(root)]) == 0
    pushed = seen["summary"]
    assert isinstance(pushed, dict)
    assert pushed["status"] == "pushing" and pushed["exit_code"] == 0
    assert [s["status"] for s in pushed["steps"]] == ["ok"] * 7 + ["in progress"]
    assert pushed["push"]["status"] == "in progress"
    assert pushed["classifiers"]["dlstm"]["test_macro_f1"] == 0.4
    log_text = seen["log"]
    assert isinstance(log_text, str)
    assert "run summary before the push" in log_text
    assert "8 push" in log_text and "in progress" in log_text
    assert "push in progress: this log and the run summary are final" in log_text
    final = _summary(root)
    assert final["status"] == "ok" and final["steps"][7]["status"] == "ok"


@pytest.mark.unit
def test_wait_for_log_waits_for_the_entry_points_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_file = tmp_path / "run.log"
    log_file.write_text("STEP 8/8\n")
    monkeypatch.setenv("PIPELINE_RUN_LOG", str(log_file))
    threading.Timer(0.2, lambda: log_file.write_text("STEP 8/8\nMARK-1\n")).start()
    t0 = time.perf_counter()
    assert process.wait_for_log("MARK-1", timeout_s=5) is True
    assert 0.1 < time.perf_counter() - t0 < 4
    assert process.wait_for_log("MARK-2", timeout_s=0.2) is False
    monkeypatch.delenv("PIPELINE_RUN_LOG")
    assert process.wait_for_log("anything", timeout_s=0) is True


@pytest.mark.unit
def test_summary_masks_tokens_and_url_passwords(
    root: Path, fake_steps: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 8: the run summary never holds the token or a URL password."""
    token = "ghp_summary_0123456789abcdef"
    monkeypatch.setenv("GITHUB_TOKEN", token)

    def leaky(ctx: runpod_train.RunContext) -> StepOutcome:
        return StepOutcome(
            result=f"git said https://bob:{token}@host/repo.git",
            details={"remote": f"https://bob:{token}@host/repo.git", "list": [token]},
        )

    monkeypatch.setitem(runpod_train.STEP_FUNCTIONS, 8, leaky)
    assert _run(root) == 0
    text = (root / "results" / f"run_summary_{DATASET}.json").read_text()
    assert token not in text
    assert "***" in json.loads(text)["steps"][7]["result"]

    # A password inside a git_remote URL (not an environment secret) is masked as well.
    monkeypatch.delenv("GITHUB_TOKEN")

    def remote(ctx: runpod_train.RunContext) -> StepOutcome:
        ctx.info["push"] = {"remote": ctx.cfg.training.git_remote}
        return StepOutcome(result=f"commit abc -> {ctx.cfg.training.git_remote}/main")

    monkeypatch.setitem(runpod_train.STEP_FUNCTIONS, 8, remote)
    url = "https://bob:hunter2pw@host.example/repo.git"
    assert _run(root, "--set", f"git_remote={url}") == 0
    text = (root / "results" / f"run_summary_{DATASET}.json").read_text()
    assert "hunter2pw" not in text and "host.example/repo.git" in text


@pytest.mark.unit
def test_classifier_line_uses_the_headline_when_present() -> None:
    """Item 28: the step-5 line quotes the same block as the summary table (its headline)."""
    summary = {
        "models": {
            "dlstm": {
                "status": "trained",
                "test_macro_f1": 0.409,
                "majority_test_macro_f1": 0.2,
                "headline": "test macro-F1 0.409 vs chance 0.333 and logreg 0.412: no better "
                "than logreg",
            },
            "gru": {"status": "trained", "test_macro_f1": 0.5, "majority_test_macro_f1": 0.2},
        }
    }
    assert classifier_line(summary) == (
        "dlstm test macro-F1 0.409 vs chance 0.333 and logreg 0.412: no better than logreg; "
        "gru test F1 0.500 vs majority 0.200"
    )


@pytest.mark.unit
def test_step_6_gets_the_dataset_path_not_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 1: a CSV outside datasets/ reaches step 6 as the path the user gave."""
    csv = tmp_path / "elsewhere" / "ok.csv"
    write_ohlcv_csv(generate_ohlcv(60, seed=2), csv)
    ctx = runpod_train.run_context(
        runpod_train.build_parser().parse_args(
            ["--dataset", str(csv), "--root", str(tmp_path / "root")]
        )
    )
    seen: list[str] = []
    import ppo_approach.prediction_wrapper as pw

    monkeypatch.setattr(
        pw, "validate_models", lambda cfg, dataset, paths: seen.append(dataset) or {}
    )
    runpod_train.step_validate_models(ctx)
    assert seen == [str(csv)]
    assert ctx.name == "ok"


@pytest.mark.unit
def test_interrupt_line_says_what_the_step_says_not_a_promised_checkpoint(
    root: Path, fake_steps: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """An interrupt before the first checkpoint must not promise a resume."""
    msg = "lstm interrupted in epoch 1/150, before its first epoch; no checkpoint was written"

    def classifiers(ctx: runpod_train.RunContext) -> StepOutcome:
        raise TrainingInterrupted(msg)

    monkeypatch.setitem(runpod_train.STEP_FUNCTIONS, 5, classifiers)
    assert _run(root) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert f"interrupted: step 5 (train classifiers): {msg}" in err
    assert "--resume" not in err


@pytest.mark.unit
def test_full_disk_in_step_5_is_one_line_naming_the_path(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A full disk during step 5 used to say "step 5 crashed" plus a traceback."""
    import errno

    import train_models

    target = root / "models" / f"lstm_{DATASET}_classification.pth"

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(train_models, "_train_all", full_disk)
    assert _run(root, "--steps", "5", "--preset", "smoke") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "crashed" not in err
    assert f"step 5 (train classifiers) failed: no space left on the device writing {target}" in err
    assert _summary(root)["steps"][4]["status"] == "failed"


@pytest.mark.unit
def test_a_config_edited_during_the_run_does_not_change_later_steps(
    root: Path, fake_steps: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The config is parsed once per run; step 7 trains with the config the run started with even
    when the file is edited while step 5 runs (the driver used to rebuild argv and each step re-read
    the files)."""
    from pipeline.config.files import load_config, write_resolved
    from ppo_approach import train_ppo_agent

    training = tmp_path / "training_config.txt"
    write_resolved(load_config(None, None, "smoke"), training)
    training.write_text(training.read_text().split("[ppo]")[0])  # the training keys only
    assert "epochs = 2" in training.read_text()

    def step5(ctx: runpod_train.RunContext) -> StepOutcome:
        training.write_text(training.read_text().replace("epochs = 2", "epochs = 99"))
        return StepOutcome(result="edited the config file")

    seen: list[int] = []

    def fake_train_agent(cfg, dataset, paths, resume):  # the real step 7 calls this
        seen.append(cfg.training.epochs)
        raise PipelineError("stop here")

    monkeypatch.setitem(runpod_train.STEP_FUNCTIONS, 5, step5)
    monkeypatch.setitem(runpod_train.STEP_FUNCTIONS, 7, runpod_train.step_train_ppo)
    monkeypatch.setattr(train_ppo_agent, "train_agent", fake_train_agent)
    _run(root, "--training-config", str(training), "--steps", "5,7")
    assert "epochs = 99" in training.read_text()
    assert seen == [2]
