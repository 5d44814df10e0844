"""End to end: ``runpod_main.py`` as a subprocess on a small generated dataset.

One smoke run (module fixture, ~30-60 s on 2 cores) trains everything and pushes to a local bare
remote; the tests below check its exit code, artifacts, summary values, pushed files and that the
token never reaches the log. Its dataset is a CSV outside the project and the artifact root,
given as a path relative to a working directory elsewhere; a second, shorter run gives the same CSV
as an absolute path. Two fast runs check preflight failures (broken CSV, held lock).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.common import PROJECT_ROOT
from pipeline.config.schema import MODEL_NAMES
from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv

pytestmark = pytest.mark.integration

DATASET = "SYNTH-E2E-BTC-EUR_1H"
MODELS = MODEL_NAMES  # the default config's models: the four networks and logreg


def agent_model(root: Path) -> str:
    """What fed the agent: ``prediction_model = auto`` picks the best validation macro-F1 of the
    training summary, or the ensemble step 5 found better than every model alone
    (pipeline.classifiers.model_choice), so the test asks the same rule."""
    from pipeline.classifiers.model_choice import resolve_prediction_model
    from pipeline.common import Paths
    from pipeline.config.files import load_config

    cfg, _ = resolve_prediction_model(load_config(), Paths.from_root(root), DATASET)
    return cfg.ppo.prediction_model


N_BARS = 2000

GITIGNORE = """\
/datasets/
/models/
/scalers/
/results/
/logs/
/ppo_approach/
"""


@dataclass
class Run:
    """One finished runpod_main.py process and where it worked."""

    root: Path
    bare: Path
    csv: Path
    token: str
    code: int
    stdout: str
    stderr: str
    seconds: float


def _git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATASET_NAME", "RESUME_TRAINING", "RUNPOD_PUSH_TO_GITHUB", "PIPELINE_HOME")
    }
    env.update(extra)
    return env


def _runpod_main(
    root: Path, dataset: str, *extra: str, env: dict[str, str], cwd: Path | None = None
) -> tuple:
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "runpod_main.py"),
        "--dataset",
        dataset,
        "--root",
        str(root),
        "--set",
        "min_disk_gb=0",
        "--set",
        "min_memory_gb=0",
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A git work tree whose ``origin`` is a bare repo, a dataset, and one full smoke run."""
    base = tmp_path_factory.mktemp("e2e")
    root, bare = base / "work", base / "remote.git"
    _git("init", "-q", "--bare", str(bare))
    _git("init", "-q", "-b", "main", str(root))
    (root / ".gitignore").write_text(GITIGNORE)
    _git("add", ".gitignore", cwd=root)
    _git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init", cwd=root)
    _git("remote", "add", "origin", str(bare), cwd=root)
    _git("push", "-q", "origin", "main", cwd=root)
    # The CSV lives outside the project and outside the artifact root, and is given relative to
    # the user's working directory: every step, step 6 included, must find it (step 6 used to get
    # the bare name and fail after all classifiers had trained).
    elsewhere = base / "elsewhere"
    csv = elsewhere / "data" / f"{DATASET}.csv"
    write_ohlcv_csv(generate_ohlcv(N_BARS, signal=1.0, seed=11), csv)
    token = f"ghp_e2e_{uuid.uuid4().hex}"
    env = _clean_env(GITHUB_TOKEN=token, RUNPOD_PUSH_TO_GITHUB="true")
    code, out, err, secs = _runpod_main(
        root, f"data/{DATASET}.csv", "--preset", "smoke", env=env, cwd=elsewhere
    )
    return Run(root, bare, csv, token, code, out, err, secs)


def _summary(run: Run) -> dict:
    return json.loads((run.root / "results" / f"run_summary_{DATASET}.json").read_text())


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_smoke_run_exit_code_and_console(smoke_run: Run) -> None:
    assert smoke_run.code == 0, (smoke_run.stdout[-3000:], smoke_run.stderr[-3000:])
    console = smoke_run.stdout + smoke_run.stderr
    # Preflight table, then the driver's step banners, summary table and the closing lines.
    assert "preflight:" in console
    for check in ("disk", "memory", "gpu", "network", "dataset", "dependencies", "write access"):
        assert f"\n{check} " in console, check
    for n in range(1, 9):
        assert f"STEP {n}/8:" in console
    assert "step                     status" in console  # the summary table header
    assert "run finished." in console
    assert f"plots:             {smoke_run.root / 'results'}/*{DATASET}*.png" in console
    assert f"PPO models:        {smoke_run.root / 'ppo_approach' / 'models'}" in console


def test_smoke_run_artifacts(smoke_run: Run) -> None:
    r = smoke_run.root
    agent = agent_model(r)
    expected = [
        r / "scalers" / f"scaler_{DATASET}.json",
        r / "results" / f"training_summary_{DATASET}.json",
        r / "results" / f"predictions_{agent}_{DATASET}.csv",
        r / "results" / f"backtest_{agent}_{DATASET}.json",
        r / "results" / f"backtest_{agent}_{DATASET}.png",
        r / "results" / f"run_summary_{DATASET}.json",
        r / "ppo_approach" / "models" / f"ppo_{agent}_{DATASET}.zip",
    ]
    for m in MODELS:
        expected += [
            r / "models" / f"{m}_{DATASET}_classification.pth",
            r / "results" / f"metrics_{m}_{DATASET}.json",
        ]
    missing = [str(p) for p in expected if not p.is_file() or p.stat().st_size == 0]
    assert missing == []
    logs = sorted((r / "logs").glob(f"run_{DATASET}_*.log"))
    assert len(logs) == 1
    assert not (r / "logs" / f"run_{DATASET}.lock").exists()  # released at the end
    leftovers = [p for p in r.rglob("*.tmp")] + [p for p in r.rglob("*.probe")]
    assert leftovers == []


def test_smoke_run_summary_values(smoke_run: Run) -> None:
    summary = _summary(smoke_run)
    assert summary["dataset"] == DATASET and summary["exit_code"] == 0
    statuses = [s["status"] for s in summary["steps"]]
    assert statuses[:2] == ["ok", "ok"] and statuses[2] in ("ok", "warn")
    # Step 5 warns: the planted signal (1.0) is stronger than any market's, so the direction
    # plausibility alarm fires on it (direction 81-89 %); step 7 warns when the classifier rule of
    # the model auto chose has a Sharpe ratio above alarm_sharpe (dlstm's ~9, logreg's 2.3: auto's
    # one-standard-error rule picks logreg on this 305-row validation block). No structural check
    # (split, scaler, lookahead, env probe) fires.
    checks = {a["check"] for a in summary["alarms"]}
    assert "direction" in checks and checks <= {"direction", "sharpe"}
    step7 = "warn" if "sharpe" in checks else "ok"
    assert statuses[3:] == ["ok", "warn", "ok", step7, "ok"]
    assert [s["name"] for s in summary["steps"]] == [
        "paths and environment",
        "dependencies",
        "GPU",
        "dataset",
        "train classifiers",
        "validate models",
        "train PPO agent",
        "push",
    ]
    assert all(s["seconds"] >= 0 for s in summary["steps"])
    assert summary["steps"][3]["details"]["rows"] == N_BARS
    assert summary["config_overrides"]["training.epochs"] == "preset smoke"

    # Classifier numbers are the training summary's, and each is shown in the key result.
    training = _read(smoke_run.root / "results" / f"training_summary_{DATASET}.json")
    assert summary["classifiers"] == training["models"]
    assert set(training["models"]) == set(MODELS)
    for m in MODELS:
        entry = training["models"][m]
        assert 0.0 <= entry["test_macro_f1"] <= 1.0
        # The step line quotes each model's headline, which carries its test macro-F1; without one,
        # the older "test F1 ... vs majority" text.
        if entry.get("headline"):
            shown = f"{m} {' '.join(entry['headline'].split())}"
        else:
            shown = f"{m} test F1 {entry['test_macro_f1']:.3f}"
        assert f"{entry['test_macro_f1']:.3f}" in shown
        assert shown in summary["steps"][4]["result"]

    # Agent numbers are the backtest report's.
    chosen = agent_model(smoke_run.root)
    report = _read(smoke_run.root / "results" / f"backtest_{chosen}_{DATASET}.json")
    agent, bh = report["strategies"]["agent"], report["strategies"]["buy_and_hold"]
    assert summary["agent"]["agent_total_return"] == agent["total_return"]
    assert summary["agent"]["agent_sharpe"] == agent["sharpe"]
    assert summary["agent"]["buy_and_hold_total_return"] == bh["total_return"]
    assert summary["agent"]["prediction_source"] == "walk_forward"
    assert f"vs buy-and-hold {bh['total_return']:+.2%}" in summary["steps"][6]["result"]
    assert any(p.endswith(f"backtest_{chosen}_{DATASET}.png") for p in summary["plots"])


def test_smoke_run_pushed_commit(smoke_run: Run) -> None:
    summary = _summary(smoke_run)
    agent = agent_model(smoke_run.root)
    remote_head = _git("rev-parse", "main", cwd=smoke_run.bare).strip()
    assert summary["push"]["commit"] == remote_head
    assert summary["steps"][7]["result"].startswith(f"commit {remote_head[:12]} -> origin/main")
    files = set(_git("ls-tree", "-r", "--name-only", "main", cwd=smoke_run.bare).split())
    expected = {
        ".gitignore",
        f"scalers/scaler_{DATASET}.json",
        f"results/training_summary_{DATASET}.json",
        f"results/backtest_{agent}_{DATASET}.json",
        f"results/backtest_{agent}_{DATASET}.png",
        f"results/run_summary_{DATASET}.json",
        f"ppo_approach/models/ppo_{agent}_{DATASET}.zip",
        # the agent's input travels whole: the table and its .json (what step 7 reads)
        f"results/predictions_{agent}_{DATASET}.csv",
        f"results/predictions_{agent}_{DATASET}.json",
    } | {f"models/{m}_{DATASET}_classification.pth" for m in MODELS}
    expected |= {f"models/{m}_{DATASET}_config.txt" for m in MODELS}
    if agent == "ensemble":  # auto chose the ensemble of every model
        expected |= {f"models/walkforward/{m}_{DATASET}_fold1.pth" for m in MODELS}
        expected.add(f"results/ensemble_{DATASET}.json")
    else:
        expected.add(f"models/walkforward/{agent}_{DATASET}_fold1.pth")
    # step 7 exported the agent it backtested; step 8 pushed the folder
    expected |= {f"exports/{DATASET}/{n}" for n in ("export.json", "policy.onnx", "backtest.csv")}
    members = MODELS if agent == "ensemble" else [agent]
    expected |= {f"exports/{DATASET}/classifier_{m}.onnx" for m in members}
    assert f"exported to {DATASET}/" in summary["steps"][6]["result"]
    assert expected <= files, expected - files
    assert any(f.startswith(f"logs/run_{DATASET}_") and f.endswith(".log") for f in files)
    assert f"datasets/{DATASET}.csv" not in files
    assert not any(f.endswith(".lock") for f in files)
    assert set(summary["push"]["files"]) <= files


def test_smoke_run_never_logs_the_token(smoke_run: Run) -> None:
    assert smoke_run.token not in smoke_run.stdout + smoke_run.stderr
    for f in (smoke_run.root / "logs").iterdir():
        assert smoke_run.token not in f.read_text(errors="replace"), f
    assert smoke_run.token not in (smoke_run.root / ".git" / "config").read_text()
    pushed_log = next(
        f
        for f in _git("ls-tree", "-r", "--name-only", "main", cwd=smoke_run.bare).split()
        if f.startswith("logs/")
    )
    assert smoke_run.token not in _git("show", f"main:{pushed_log}", cwd=smoke_run.bare)


def test_smoke_run_used_the_csv_outside_the_project(smoke_run: Run) -> None:
    """Items 1 and 2: the relative path reached every step as one absolute path."""
    summary = _summary(smoke_run)
    assert summary["dataset_source"] == str(smoke_run.csv.resolve())
    assert summary["steps"][5]["status"] == "ok"  # step 6 found the CSV too
    assert not (smoke_run.root / "datasets" / f"{DATASET}.csv").exists()


def test_driver_with_an_absolute_csv_path_runs_steps_4_to_6(smoke_run: Run, tmp_path: Path) -> None:
    """Item 1: ``--dataset /abs/path.csv`` (outside the project) through steps 4-6."""
    # A copy of the smoke run's artifacts, so the other tests keep reading the original.
    root = tmp_path / "copy"
    shutil.copytree(smoke_run.root, root, ignore=shutil.ignore_patterns(".git"))
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "runpod_train.py"),
            "--dataset",
            str(smoke_run.csv),
            "--root",
            str(root),
            "--steps",
            "4-6",
            "--no-push",
            "--preset",
            "smoke",
            "--set",
            "min_disk_gb=0",
            "--set",
            "min_memory_gb=0",
        ],
        cwd=smoke_run.csv.parent,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((root / "results" / f"run_summary_{DATASET}.json").read_text())
    assert [s["status"] for s in summary["steps"][3:6]] == ["ok", "warn", "ok"]  # see above
    assert summary["dataset_source"] == str(smoke_run.csv)
    # The smoke run's files went to runs/{dataset}/1 before this run wrote.
    archive = root / "runs" / DATASET / "1"
    info = json.loads((archive / "archive.json").read_text())
    assert info["started"] == _summary(smoke_run)["started"] and info["files_missing"] == []
    for rel in (
        f"results/run_summary_{DATASET}.json",
        f"results/backtest_{agent_model(root)}_{DATASET}.json",
        f"ppo_approach/models/ppo_{agent_model(root)}_{DATASET}.zip",
    ):
        assert (archive / rel).read_bytes() == (smoke_run.root / rel).read_bytes(), rel


def test_pushed_commit_is_complete_without_a_second_push(smoke_run: Run) -> None:
    """Item 25: the pushed summary and log are final but for the push, and say it was on."""
    pushed = json.loads(
        _git("show", f"main:results/run_summary_{DATASET}.json", cwd=smoke_run.bare)
    )
    assert pushed["status"] == "pushing" and pushed["exit_code"] == 0
    statuses = [s["status"] for s in pushed["steps"]]
    assert statuses[:2] == ["ok", "ok"] and statuses[2] in ("ok", "warn")
    step7 = "warn" if any(a["check"] == "sharpe" for a in pushed["alarms"]) else "ok"
    assert statuses[3:] == ["ok", "warn", "ok", step7, "in progress"]  # plausibility alarms
    assert pushed["push"]["status"] == "in progress"
    assert pushed["classifiers"] and pushed["agent"]
    files = _git("ls-tree", "-r", "--name-only", "main", cwd=smoke_run.bare).split()
    (pushed_log,) = [f for f in files if f.startswith(f"logs/run_{DATASET}_")]
    text = _git("show", f"main:{pushed_log}", cwd=smoke_run.bare)
    assert "run summary before the push" in text
    assert "push in progress: this log and the run summary are final" in text
    assert "STEP 7/8" in text and f"step 7 (train PPO agent) {step7}" in text  # Sharpe alarm


def test_broken_csv_fails_preflight_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "BROKEN.csv").write_text(
        "timestamp,open,high,low,close,volume\n"
        "2024-01-01T00:00:00Z,100,101,99,100.5,3\n"
        "2024-01-01T01:00:00Z,100.5,abc,99,100,4\n"
    )
    code, out, err, secs = _runpod_main(tmp_path, "BROKEN", "--no-push", env=_clean_env())
    assert code == 2
    rows = [line for line in (out + err).splitlines() if line.startswith("dataset ")]
    assert len(rows) == 1 and rows[0].rstrip().endswith("FAIL")
    assert "BROKEN.csv" in rows[0]
    assert "error: preflight failed: dataset: " in err and "line 3" in err
    assert "STEP 1/8" not in out + err  # nothing started
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())
    log_file = next((tmp_path / "logs").glob("run_BROKEN_*.log"))
    assert "FAIL" in log_file.read_text()


def test_lock_held_by_live_run_fails_fast_naming_pid(tmp_path: Path) -> None:
    write_ohlcv_csv(generate_ohlcv(300, seed=2), tmp_path / "datasets" / "LOCKED.csv")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        time.sleep(0.05)
        lock = tmp_path / "logs" / "run_LOCKED.lock"
        lock.parent.mkdir(parents=True)
        lock.write_text(
            json.dumps(
                {
                    "pid": sleeper.pid,
                    "host": socket.gethostname(),
                    "started": "now",
                    "started_epoch": time.time(),
                    "nonce": "x",
                }
            )
        )
        code, out, err, secs = _runpod_main(tmp_path, "LOCKED", "--no-push", env=_clean_env())
        assert code == 2
        assert f"run lock: held by pid {sleeper.pid} on host" in err
        assert secs < 30
        # The driver itself also refuses (when the preflight is skipped).
        code, out, err, secs = _runpod_main(
            tmp_path, "LOCKED", "--no-push", "--skip-validation", env=_clean_env()
        )
        assert code == 1
        assert f"another run on this dataset is in progress (pid {sleeper.pid}" in out + err
        assert json.loads(lock.read_text())["pid"] == sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_finishes(tmp_path: Path) -> None:
    """SIGTERM to runpod_main during PPO -> exit 130 with a checkpoint; --resume completes."""
    write_ohlcv_csv(generate_ohlcv(N_BARS, signal=1.0, seed=4), tmp_path / "datasets" / "SIG.csv")
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "runpod_main.py"),
        "--dataset",
        "SIG",
        "--root",
        str(tmp_path),
        "--no-push",
        "--preset",
        "smoke",
        "--set",
        "ppo.total_timesteps=6144",
    ]
    proc = subprocess.Popen(
        cmd, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if "ppo_approach.callbacks: checkpoint" in line:
            proc.send_signal(signal.SIGTERM)  # like a pod shutdown
            break
    seen += proc.stdout.readlines()
    code = proc.wait(timeout=120)
    text = "".join(seen)
    assert code == 130, text[-3000:]
    assert "SIGTERM received: asking the training process" in text
    assert "interrupted: step 7 (train PPO agent)" in text
    checkpoints = list((tmp_path / "ppo_approach" / "checkpoints").rglob("checkpoint_*.zip"))
    assert checkpoints
    summary = json.loads((tmp_path / "results" / "run_summary_SIG.json").read_text())
    assert summary["exit_code"] == 130 and summary["steps"][6]["status"] == "interrupted"
    assert not (tmp_path / "logs" / "run_SIG.lock").exists()

    code, out, err, _ = _runpod_main(
        tmp_path,
        "SIG",
        "--no-push",
        "--resume",
        "--preset",
        "smoke",
        "--set",
        "ppo.total_timesteps=6144",
        env=_clean_env(),
    )
    assert code == 0, (out + err)[-3000:]
    assert "resuming from" in out + err
    # prediction_model = auto: the classifier with the best validation F1 feeds the agent
    assert len(list((tmp_path / "ppo_approach" / "models").glob("ppo_*_SIG.zip"))) == 1
    summary = json.loads((tmp_path / "results" / "run_summary_SIG.json").read_text())
    # "warn", not "ok": the signal-1.0 series trips the plausibility alarms, and only those: the
    # resumed run's structural checks (split, scaler, lookahead, env probe) pass.
    assert summary["resume"] is True and summary["steps"][6]["status"] == "warn"
    assert {a["check"] for a in summary["alarms"]} <= {"direction", "sharpe"}
    assert any(a["check"] == "sharpe" for a in summary["alarms"])
