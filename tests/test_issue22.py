"""Defects found running the pipeline as a new user, under faults and hostile input: the unit-tier
checks. The ones that run a subprocess or train are in test_issue22_integration.py."""

from __future__ import annotations

from pathlib import Path

import pytest

import tune

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------- study names


@pytest.mark.parametrize("study", ["/tmp/x/victim", "../victim", "a/b", "", ".hidden", "a..b"])
def test_study_name_must_be_a_name_not_a_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], study: str
) -> None:
    victim = tmp_path / "x" / "victim_trial_0"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("keep", encoding="utf-8")
    if study == "/tmp/x/victim":
        study = str(tmp_path / "x" / "victim")
    code = tune.main(
        ["--dataset", "NOPE", "--stage", "agent", "--trials", "1", "--study", study]
        + ["--root", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1, err
    assert err[0].startswith(f"error: --study {study!r}: expected a name")
    assert (victim / "keep.txt").read_text(encoding="utf-8") == "keep"


def test_remove_inside_refuses_a_folder_outside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "trials"
    (root / "s_trial_0").mkdir(parents=True)
    outside = tmp_path / "victim_trial_0"
    outside.mkdir()
    with pytest.raises(AssertionError, match="not inside"):
        tune.remove_inside(root / ".." / "victim_trial_0", root)
    with pytest.raises(AssertionError, match="not inside"):
        tune.remove_inside(root, root)
    assert outside.is_dir()
    tune.remove_inside(root / "s_trial_0", root)
    assert not (root / "s_trial_0").exists()
    assert tune.check_study_name("agent_BTC-EUR_1H.v2") == "agent_BTC-EUR_1H.v2"


# ---------------------------------------------------------------- a folder for a file


def test_a_folder_given_as_a_config_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.config.files import load_config
    from pipeline.config.schema import ConfigError
    from pipeline.tuning.space import read_search_space

    for kwargs in ({"set_files": [tmp_path]}, {"training_path": tmp_path}, {"ppo_path": tmp_path}):
        with pytest.raises(ConfigError) as info:
            load_config(**kwargs)  # type: ignore[arg-type]
        assert str(info.value).startswith(f"{tmp_path}: is a folder; expected a ")
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"is a folder; expected a search space file"):
        read_search_space(tmp_path)
    code = tune.main(
        ["--dataset", "NOPE", "--stage", "agent", "--trials", "1", "--space", str(tmp_path)]
        + ["--root", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [f"error: {tmp_path}: is a folder; expected a search space file (a text file)"]


# ---------------------------------------------------------------- capped error lines


def test_every_row_on_one_timestamp_is_a_short_error_line(tmp_path: Path) -> None:
    from pipeline.data.csv_layout import DatasetError
    from pipeline.data.load import load_dataset

    rows = [f"2024-01-01T00:00:00Z,1,2,0.5,{1 + i / 1e5},1" for i in range(5000)]
    rows += [f"2024-01-02T00:00:00Z,1,2,0.5,{c},1" for c in (1.2, 1.25)]
    path = tmp_path / "same.csv"
    path.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(str(path))
    msg = str(info.value)
    assert len(msg) < 600, msg
    assert "2024-01-01T00:00:00+00:00 on lines 2, 3, 4, 5, 6 and 4995 more" in msg
    assert "2024-01-02T00:00:00+00:00 on lines 5002, 5003" in msg
    assert msg.count("2024-01-01T00:00:00+00:00") == 1


# ---------------------------------------------------------------- disk full names a path


def test_disk_full_inside_an_atomic_write_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import shutil
    from collections import namedtuple

    from pipeline import common

    target = tmp_path / "results" / "metrics_gru_X.json"

    def body() -> int:
        with common.atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")  # what f.write() raises

    assert common.run_cli(body) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: no space left on the device writing {target} (")

    # torch.save on a full disk raises RuntimeError("... file write failed"), no errno.
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10, 10, 0))
    model = tmp_path / "models" / "gru_X.pt"

    def torch_body() -> int:
        with common.atomic_path(model):
            raise RuntimeError("[enforce fail] PytorchStreamWriter: file write failed")

    assert common.run_cli(torch_body) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: no space left on the device writing {model} (0.00 GB free there); a run needs "
        "about min_disk_gb (training_config.txt, default 10 GB) free: free some space and rerun "
        "with --resume (the artifacts written so far are intact)"
    ]
    assert not list(model.parent.iterdir())


# ---------------------------------------------------------------- exit codes of signals


def test_signal_deaths_and_late_signals_map_to_the_documented_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import signal
    import time

    import runpod_main
    from pipeline.run import driver_output

    assert driver_output.exit_code_of(-signal.SIGHUP) == 130
    assert driver_output.exit_code_of(-signal.SIGTERM) == 130
    assert driver_output.exit_code_of(-signal.SIGKILL) == 137
    assert driver_output.exit_code_of(3) == 3

    def run_then_hangup(_args: object) -> int:  # a hangup in the run's last lines
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(1)
        return 0

    monkeypatch.setattr(runpod_main, "run", run_then_hangup)
    previous = signal.getsignal(signal.SIGHUP)
    assert runpod_main.main(["--dataset", "X", "--no-push"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted"
    assert signal.getsignal(signal.SIGHUP) is previous


# ---------------------------------------------------------------- logs


@pytest.mark.parametrize("script", ["runpod_main", "runpod_train"])
@pytest.mark.parametrize(
    "usage", [["--set", "no_such_key=1"], ["--preset", "nonexist"], ["--set", "epochs=-3"]]
)
def test_a_usage_error_leaves_no_log_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], script: str, usage: list[str]
) -> None:
    import importlib

    from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv

    (tmp_path / "datasets").mkdir()
    write_ohlcv_csv(generate_ohlcv(50, seed=1), tmp_path / "datasets" / "U.csv")
    main = importlib.import_module(script).main
    try:
        code = main(["--dataset", "U", "--root", str(tmp_path), "--no-push", *usage])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert "error: " in err[-1]
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").iterdir())


def test_a_dataset_note_is_a_warning_once_per_file_not_per_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from pipeline.data.load import load_dataset

    rows = [f"2024-01-01T{h:02d}:00:00Z,1,2,0.5,1,1" for h in range(24)]
    path = tmp_path / "export.csv"
    path.write_text(",open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    caplog.set_level(logging.DEBUG, logger="pipeline.data.load")
    for _ in range(5):  # steps 4, 5, 6, 7 and the agent's blocks each load the file
        load_dataset(str(path))
    notes = [r for r in caplog.records if "timestamps taken from the unnamed" in r.getMessage()]
    assert [r.levelname for r in notes] == ["WARNING"] + ["DEBUG"] * 4
    caplog.clear()
    path.write_text(",open,high,low,close,volume\n" + "\n".join(rows[:20]) + "\n")
    load_dataset(str(path))  # another file content: said again
    notes = [r for r in caplog.records if "timestamps taken from the unnamed" in r.getMessage()]
    assert [r.levelname for r in notes] == ["WARNING"]


# ---------------------------------------------------------------- an older run's agent


def test_resume_after_a_fresh_run_stopped_before_step_7_does_not_judge_the_old_agent(
    tmp_path: Path,
) -> None:
    import json
    import os
    import time

    from pipeline.common import Paths
    from ppo_approach import run_folder

    paths = Paths.from_root(tmp_path)
    checkpoint_dir = paths.ppo_checkpoints / "dlstm_D"
    checkpoint_dir.mkdir(parents=True)
    old = checkpoint_dir / "checkpoint_1000.zip"
    old.write_bytes(b"old run")
    (checkpoint_dir / run_folder.RUN_CONFIG_NAME).write_text(json.dumps({"ppo.gamma": 0.9}))
    now = {"ppo.gamma": 0.99}
    # Without a fresh run in between: the README's refusal naming the changed key stands.
    with pytest.raises(run_folder.ResumeMismatchError, match=r"ppo.gamma = 0.9 \(now 0.99\)"):
        run_folder.resume_candidates(paths, checkpoint_dir, "dlstm", "D", now)
    past = time.time() - 100
    os.utime(old, (past, past))
    run_folder.mark_fresh_run(paths, "D")  # the fresh run with new settings started after it
    assert run_folder.resume_candidates(paths, checkpoint_dir, "dlstm", "D", now) == []
    # A checkpoint this (fresh) run wrote, later resumed with changed settings: still refused.
    (checkpoint_dir / "checkpoint_2000.zip").write_bytes(b"this run")
    with pytest.raises(run_folder.ResumeMismatchError):
        run_folder.resume_candidates(paths, checkpoint_dir, "dlstm", "D", now)


def test_a_fresh_driver_run_with_step_7_marks_older_agents_and_a_resume_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runpod_train
    from pipeline.common import Paths
    from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
    from ppo_approach import run_folder
    from runpod_train import StepOutcome

    (tmp_path / "datasets").mkdir()
    write_ohlcv_csv(generate_ohlcv(50, seed=1), tmp_path / "datasets" / "F.csv")
    for n in runpod_train.STEP_NAMES:
        monkeypatch.setitem(runpod_train.STEP_FUNCTIONS, n, lambda ctx: StepOutcome(result="x"))
    marker = run_folder.fresh_run_path(Paths.from_root(tmp_path), "F")
    base = ["--dataset", "F", "--root", str(tmp_path), "--no-log-file", "--no-push"]
    assert runpod_train.main([*base, "--steps", "5"]) == 0
    assert not marker.exists()  # step 7 not part of it
    assert runpod_train.main([*base, "--resume"]) == 0
    assert not marker.exists()
    assert runpod_train.main(base) == 0
    first = run_folder.fresh_run_started(Paths.from_root(tmp_path), "F")
    assert first is not None
    assert runpod_train.main([*base, "--resume"]) == 0
    assert run_folder.fresh_run_started(Paths.from_root(tmp_path), "F") == first


# ---------------------------------------------------------------- no network


def test_a_dns_failure_is_final_not_retried() -> None:
    import socket

    import ccxt

    from pipeline.data import exchange as dl

    sleeps: list[float] = []
    retry = dl.Retry(sleep=sleeps.append)
    calls = []

    def no_dns() -> None:
        calls.append(1)
        raise ccxt.NetworkError(
            "binance GET https://api.binance.com/api/v3/exchangeInfo "
            "[Errno -3] Temporary failure in name resolution"
        )

    with pytest.raises(dl.DownloadError) as info:
        retry.call("binance: loading markets", no_dns)
    assert calls == [1] and sleeps == [] and retry.retries == 0
    msg = str(info.value)
    assert msg.startswith(
        "binance: loading markets: cannot resolve the exchange's host name (no network or no "
        "DNS), not retried: NetworkError: binance GET"
    )
    assert "\n" not in msg and msg.endswith("check the network and rerun the same command")

    def wrapped() -> None:  # ccxt wrapping the socket error, with a text of its own
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as exc:
            raise ccxt.ExchangeNotAvailable("binance unreachable") from exc

    with pytest.raises(dl.DownloadError, match="not retried"):
        retry.call("binance: page 3", wrapped)
    assert sleeps == []
    # An ordinary timeout is still retried.
    assert not dl.is_name_resolution_failure(ccxt.RequestTimeout("timed out"))


def test_the_makefile_gives_up_on_an_unreachable_cpu_index_fast() -> None:
    text = (Path(__file__).resolve().parent.parent / "Makefile").read_text(encoding="utf-8")
    assert "PIP_NET_OPTS ?= --retries 1 --timeout 15" in text
    (line,) = [ln for ln in text.splitlines() if "--extra-index-url $(TORCH_CPU_INDEX)" in ln]
    assert "$(PIP_NET_OPTS)" in line


# ---------------------------------------------------------------- an ETA at the start


def test_the_estimate_follows_the_measured_runs_and_the_network_sizes() -> None:
    """The start-of-run estimate matches what bench/bench_estimate.py and bench_end_to_end.py
    measured on the 2-core CPU (the demo 45 s end to end: it used to say 7 min) and charges for
    the networks' size (the default config's 0.16-1.3 M-parameter networks train for an hour on
    that CPU: it used to say 22 min, the same per epoch as the demo's 15 k-parameter ones)."""
    from pipeline.config.files import load_config
    from pipeline.run.estimate import duration_text, estimate_seconds

    demo = estimate_seconds(load_config(preset="demo"), 17_544, range(1, 9), cuda=False)
    assert 30 < demo["total"] < 90
    assert 15 < demo["5"] < 45 and 10 < demo["7"] < 30
    default = estimate_seconds(load_config(), 17_544, range(1, 9), cuda=False)
    assert default["5"] > 30 * 60
    wide = load_config(preset="demo", overrides=["lstm_units=256", "lstm_layers=3"])
    bigger = estimate_seconds(wide, 17_544, [5], cuda=False)["5"]
    assert bigger > 2 * demo["5"]
    assert [duration_text(s) for s in (51, 4040, 9000)] == ["51 s", "67 min", "2.5 h"]


def test_no_estimate_without_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The estimate builds the networks to count their parameters; without torch it is skipped
    (step 2 names the missing module in one line) instead of failing the run before step 2."""
    from pipeline.common import Paths
    from pipeline.config.files import load_config
    from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
    from pipeline.run import estimate

    def no_torch(cfg: object) -> dict[str, int]:
        raise ImportError("No module named 'torch'")

    (tmp_path / "datasets").mkdir()
    write_ohlcv_csv(generate_ohlcv(500, seed=1), tmp_path / "datasets" / "E.csv")
    paths = Paths.from_root(tmp_path)
    cfg = load_config(preset="demo")
    assert estimate.log_estimate(cfg, "E", paths, [5, 7]) is not None
    monkeypatch.setattr(estimate, "network_parameters", no_torch)
    assert estimate.log_estimate(cfg, "E", paths, [5, 7]) is None


def test_the_driver_logs_an_estimated_duration_at_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import runpod_train
    from pipeline.config.files import load_config
    from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
    from pipeline.run.estimate import estimate_seconds
    from runpod_train import StepOutcome

    demo = load_config(preset="demo")
    est = estimate_seconds(demo, 17_544, range(1, 9), cuda=False)
    assert 0 < est["5"] and 0 < est["7"] and est["total"] < 15 * 60
    assert est["total"] == pytest.approx(est["5"] + est["7"] + est["other"])
    longer = load_config(preset="demo", overrides=["total_timesteps=400000", "epochs=30"])
    est2 = estimate_seconds(longer, 2 * 17_544, range(1, 9), cuda=False)
    assert est2["7"] > est["7"] and est2["5"] > est["5"]
    only7 = estimate_seconds(demo, 17_544, [7], cuda=False)
    assert only7["5"] == 0.0

    (tmp_path / "datasets").mkdir()
    write_ohlcv_csv(generate_ohlcv(500, seed=1), tmp_path / "datasets" / "E.csv")
    for n in runpod_train.STEP_NAMES:
        monkeypatch.setitem(runpod_train.STEP_FUNCTIONS, n, lambda ctx: StepOutcome(result="x"))
    base = ["--dataset", "E", "--root", str(tmp_path), "--no-log-file", "--no-push"]
    assert runpod_train.main([*base, "--preset", "demo"]) == 0
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if "estimated duration: about" in ln]
    assert "(step 5 ~" in line and ", step 7 ~" in line and "500 rows" in line
    assert "a rough guide from the settings for an idle machine" in line
