"""Preflight checks, the table, secret masking and the run lock (no training, all fast)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.common import Paths
from pipeline.config.files import load_config
from pipeline.data.synthetic import generate_ohlcv, write_ohlcv_csv
from pipeline.run.lock import LockHeldError, RunLock, lock_path, pid_alive, read_owner
from pipeline.run.preflight import (
    FAIL,
    PASS,
    WARN,
    CheckResult,
    check_dataset,
    check_dependencies,
    check_disk,
    check_gpu,
    check_lock,
    check_memory,
    check_remote,
    check_write_permissions,
    failed,
    format_checks,
    format_table,
    install_secret_masking,
    run_preflight,
)
from pipeline.secrets import mask_secrets, secret_values

DATASET = "SYNTH-TEST_1H"


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    """An artifact root with a valid 600-bar dataset."""
    p = Paths.from_root(tmp_path)
    write_ohlcv_csv(generate_ohlcv(600, seed=1), p.datasets / f"{DATASET}.csv")
    return p


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid() -> int:
    """The pid of a process that runs for the whole test."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


# ---------------------------------------------------------------- checks


@pytest.mark.unit
def test_disk_threshold_pass_and_fail(paths: Paths) -> None:
    ok = check_disk(paths, 0)
    assert ok.status == PASS and ok.check == "disk" and ok.required == ">= 0 GB"
    assert "GB free at" in ok.found
    too_much = check_disk(paths, 1e9)
    assert too_much.status == FAIL and too_much.required == ">= 1e+09 GB"


@pytest.mark.unit
def test_disk_measures_nearest_existing_folder(tmp_path: Path) -> None:
    result = check_disk(Paths.from_root(tmp_path / "not" / "yet"), 0)
    assert result.status == PASS
    assert str(tmp_path) in result.found


@pytest.mark.unit
def test_memory_threshold() -> None:
    assert check_memory(0).status == PASS
    low = check_memory(1e6)
    assert low.status == FAIL and "GB total" in low.found


@pytest.mark.unit
def test_gpu_missing_is_a_warning_with_slowdown() -> None:
    import torch

    result = check_gpu()
    if torch.cuda.is_available():
        assert result.status == PASS and "GB" in result.found
    else:
        assert result.status == WARN
        assert "no CUDA GPU: training runs on CPU, roughly 10-50x slower" in result.found


@pytest.mark.unit
def test_dataset_valid_and_broken(paths: Paths) -> None:
    ok = check_dataset(DATASET, paths)
    assert ok.status == PASS and "600 rows" in ok.found
    (paths.datasets / "BAD.csv").write_text(
        "timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,oops,3\n"
    )
    bad = check_dataset("BAD", paths)
    assert bad.status == FAIL
    assert "BAD.csv" in bad.found and "close" in bad.found
    missing = check_dataset("NOPE", paths)
    assert missing.status == FAIL and "NOPE" in missing.found


@pytest.mark.unit
@pytest.mark.parametrize("n_rows", [1, 100])
def test_dataset_too_short_for_the_split_fails_in_preflight(paths: Paths, n_rows: int) -> None:
    # "needs at least N rows" came only in step 5, after preflight passed.
    from pipeline.classifiers.prepare import arrays_from_config
    from pipeline.data.splits import SplitError

    cfg = load_config(None, None, preset="smoke")
    name = f"SHORT-{n_rows}"
    df = generate_ohlcv(n_rows, seed=2)
    write_ohlcv_csv(df, paths.datasets / f"{name}.csv")
    row = check_dataset(name, paths, cfg.training)
    assert row.status == FAIL, row
    # the same minimum as step 5's error (pipeline.data.splits.make_splits via prepare)
    loaded = pytest.importorskip("pipeline.data.load").load_dataset(name, paths.datasets)[0]
    with pytest.raises(SplitError) as step5:
        arrays_from_config(loaded, cfg.training)
    needed = int(str(step5.value).split("needs at least ")[-1].split()[0])
    assert f">= {needed} rows" in row.required, row
    assert f"needs at least {needed} rows" in row.found, row
    assert f"{name}.csv" in row.found or name in row.found
    # the full 600-row dataset passes, and says how many rows the config needs
    ok = check_dataset(DATASET, paths, cfg.training)
    assert ok.status == PASS and f">= {needed} rows" in ok.required, ok


@pytest.mark.unit
def test_dataset_directory_fails_with_is_a_directory(paths: Paths) -> None:
    row = check_dataset(str(paths.datasets), paths)
    assert row.status == FAIL and "is a directory" in row.found and "not found" not in row.found


@pytest.mark.unit
def test_runpod_main_exits_2_on_a_100_row_csv(
    paths: Paths, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import runpod_main

    write_ohlcv_csv(generate_ohlcv(100, seed=3), paths.datasets / "TINY.csv")
    monkeypatch.delenv("RUNPOD_PUSH_TO_GITHUB", raising=False)
    code = runpod_main.main(
        [
            "--dataset",
            "TINY",
            "--root",
            str(paths.root),
            "--no-push",
            "--preset",
            "smoke",
            "--set",
            "min_disk_gb=0",
            "--set",
            "min_memory_gb=0",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "dataset: " in err and "needs at least" in err and "rows" in err


@pytest.mark.unit
def test_dependencies_found_and_missing() -> None:
    ok = check_dependencies()
    assert ok.status == PASS and "torch" in ok.found and "sklearn" in ok.found
    bad = check_dependencies((("numpy", "numpy"), ("surely_not_a_module_xyz", "not-a-dist")))
    assert bad.status == FAIL
    assert "missing: not-a-dist" in bad.found


@pytest.mark.unit
def test_write_permissions_creates_folders_and_leaves_no_probe(tmp_path: Path) -> None:
    p = Paths.from_root(tmp_path / "root")
    result = check_write_permissions(p)
    assert result.status == PASS
    for d in p.output_dirs():
        assert d.is_dir()
        assert list(d.iterdir()) == []


@pytest.mark.unit
@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_write_permissions_read_only_folder(tmp_path: Path) -> None:
    p = Paths.from_root(tmp_path)
    p.ensure()
    p.results.chmod(0o500)
    try:
        result = check_write_permissions(p)
    finally:
        p.results.chmod(0o700)
    assert result.status == FAIL and str(p.results) in result.found


@pytest.mark.unit
def test_write_permissions_blocked_by_a_file(tmp_path: Path) -> None:
    # A plain file where a folder should be fails for root too.
    p = Paths.from_root(tmp_path)
    p.root.mkdir(exist_ok=True)
    (p.root / "results").write_text("not a folder")
    result = check_write_permissions(p)
    assert result.status == FAIL
    assert str(p.results) in result.found


@pytest.mark.integration
def test_remote_unreachable_is_a_warning(tmp_path: Path) -> None:
    result = check_remote(tmp_path, "origin", timeout_s=5)
    assert result.status == WARN
    assert result.found.endswith("the push step will fail")


@pytest.mark.integration
def test_remote_reachable_local_bare_repo(tmp_path: Path) -> None:
    bare, work = tmp_path / "remote.git", tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "remote", "add", "origin", str(bare)], check=True)
    result = check_remote(work, "origin", timeout_s=10)
    assert result.status == PASS, result.found


@pytest.mark.integration
def test_remote_check_imports_no_script(tmp_path: Path) -> None:
    # pipeline/ must not import the top-level script runpod_github.py; the push row
    # checks the remote with pipeline.publish.push's plumbing instead.
    code = (
        "import sys; from pathlib import Path; from pipeline.run.preflight import check_remote; "
        f"check_remote(Path({str(tmp_path)!r}), 'origin', timeout_s=5); "
        "assert 'runpod_github' not in sys.modules, 'preflight imported the script'; "
        "assert 'pipeline.publish.push' in sys.modules"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.integration
def test_remote_row_without_gitpython_is_one_row_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dependencies row reports a missing GitPython; the push row must still come out.
    for name in ("git", "pipeline.publish.push", "pipeline.publish.git"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: ImportError
    row = check_remote(tmp_path, "origin", timeout_s=5, required=True)
    assert row.status == FAIL
    assert "pipeline.publish.push not importable" in row.found


def _git_work(tmp_path: Path, url: str) -> Path:
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "remote", "add", "origin", url], check=True)
    return work


@pytest.mark.integration
def test_push_destination_row_shows_remote_url_and_branch(tmp_path: Path) -> None:
    # The table shows where the run pushes, checked with git ls-remote.
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    work = _git_work(tmp_path, str(bare))
    row = check_remote(work, "origin", timeout_s=10, branch="results", required=True)
    assert row.status == PASS, row
    assert row.check == "network"
    assert row.found.startswith(f"push to origin ({bare}), branch results: ")
    assert "reachable" in row.found


@pytest.mark.integration
@pytest.mark.parametrize(
    ("env", "status"),
    [({"RUNPOD_PUSH_TO_GITHUB": "true"}, FAIL), ({}, WARN), ({"RUNPOD_PUSH_TO_GITHUB": ""}, WARN)],
)
def test_unreachable_push_destination_fails_only_when_push_was_requested(
    paths: Paths,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    status: str,
) -> None:
    monkeypatch.delenv("RUNPOD_PUSH_TO_GITHUB", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # A password in the URL must not reach the table; port 9 refuses at once.
    root = _git_work(tmp_path / "w", "https://bob:hunter22@127.0.0.1:9/repo.git")
    write_ohlcv_csv(generate_ohlcv(600, seed=1), root / "datasets" / f"{DATASET}.csv")
    cfg = load_config(None, None, overrides=["min_disk_gb=0", "min_memory_gb=0"])
    rows = run_preflight(cfg, DATASET, Paths.from_root(root), push=True)
    net = next(r for r in rows if r.check == "network")
    assert net.status == status, net
    assert "https://***@127.0.0.1:9/repo.git" in net.found and "hunter22" not in net.found
    assert "branch main" in net.found and "the push step will fail" in net.found
    assert [r.check for r in failed(rows)] == (["network"] if status == FAIL else [])
    # --no-push (push=False): no push row at all, whatever the environment says
    assert "network" not in [r.check for r in run_preflight(cfg, DATASET, paths, push=False)]


@pytest.mark.integration
def test_push_destination_checked_with_the_push_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The remote refuses the credentials: git ls-remote must have offered the token (through
    # pipeline.publish.git's askpass helper, as the push does), and the row must fail without
    # leaking it.
    import base64
    import http.server
    import threading

    seen: list[str] = []

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        token = "ghp_preflightTOKEN1234567"
        monkeypatch.setenv("GITHUB_TOKEN", token)
        monkeypatch.setenv("RUNPOD_PUSH_TO_GITHUB", "true")
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        url = f"http://127.0.0.1:{server.server_address[1]}/repo.git"
        work = _git_work(tmp_path, url)
        row = check_remote(work, "origin", timeout_s=20)
    finally:
        server.shutdown()
        server.server_close()
    expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
    assert expected in seen, seen
    assert row.status == FAIL, row
    assert token not in row.found and url in row.found


@pytest.mark.integration
def test_run_preflight_rows_and_network_only_when_pushing(paths: Paths) -> None:
    cfg = load_config(None, None, overrides=["min_disk_gb=0", "min_memory_gb=0"])
    rows = run_preflight(cfg, DATASET, paths, push=False)
    names = [r.check for r in rows]
    assert names == [
        "disk",
        "memory",
        "gpu",
        "dataset",
        "dependencies",
        "write access",
        "run lock",
    ]
    assert failed(rows) == []
    with_push = run_preflight(cfg, DATASET, paths, push=True)
    assert "network" in [r.check for r in with_push]
    strict = load_config(None, None, overrides=["min_memory_gb=100000"])
    bad = failed(run_preflight(strict, DATASET, paths, push=False))
    assert [r.check for r in bad] == ["memory"]


@pytest.mark.unit
def test_table_format_wraps_and_marks_status() -> None:
    rows = [
        CheckResult("disk", "5.0 GB free", ">= 10 GB", FAIL),
        CheckResult("gpu", "x " * 60, "CUDA GPU (optional)", WARN),
        CheckResult("memory", "16 GB", ">= 8 GB", PASS),
    ]
    text = format_checks(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["check", "found", "required", "status"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split()[0] == "disk" and lines[2].rstrip().endswith("FAIL")
    assert "WARN" in lines[3]
    assert lines[4].startswith(" ")  # continuation line of the wrapped gpu cell
    assert lines[-1].split()[0] == "memory" and lines[-1].endswith("pass")
    assert max(len(line) for line in lines) < 120
    assert format_table(("a", "b"), [(1, 2)]).splitlines()[2].split() == ["1", "2"]


# ---------------------------------------------------------------- secrets


@pytest.mark.unit
def test_secret_values_and_masking() -> None:
    env = {
        "GITHUB_TOKEN": "ghp_abcdef123456",
        "MY_API_KEY": "k-0123456789",
        "HOME": "/root",
        "SHORT_TOKEN": "1",
    }
    secrets = secret_values(env)
    assert secrets == ["ghp_abcdef123456", "k-0123456789"]
    assert mask_secrets("x ghp_abcdef123456 y k-0123456789", secrets) == "x *** y ***"


@pytest.mark.unit
def test_log_records_are_masked_in_every_handler(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "tok-SECRET-4242-xyz"
    old_factory = logging.getLogRecordFactory()
    install_secret_masking([secret])
    try:
        handler = logging.FileHandler(tmp_path / "x.log")
        lg = logging.getLogger("test_mask")
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.info("url https://%s@github.com", secret)
        try:
            raise RuntimeError(f"push failed with {secret}")
        except RuntimeError:
            lg.exception("failure")
        handler.close()
        lg.removeHandler(handler)
    finally:
        logging.setLogRecordFactory(old_factory)
    text = (tmp_path / "x.log").read_text()
    assert secret not in text
    assert "https://***@github.com" in text
    assert "push failed with ***" in text


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://bob:pw@host/repo.git", "https://***@host/repo.git"),
        ("push to https://bob:pw@host/repo.git failed", "push to https://***@host/repo.git failed"),
        ("git_remote = 'http://tok@h:8080/r'", "git_remote = 'http://***@h:8080/r'"),
        (
            "ssh://git:p@ss@host/r.git and https://a:b@c/d",
            "ssh://***@host/r.git and https://***@c/d",
        ),
        (
            "https://host/repo.git mail bob@example.org",
            "https://host/repo.git mail bob@example.org",
        ),
        ("https://***@host/repo.git", "https://***@host/repo.git"),
    ],
)
def test_mask_secrets_masks_url_userinfo(text: str, expected: str) -> None:
    # A password inside git_remote leaked into the log, summary and error line.
    assert mask_secrets(text, []) == expected


@pytest.mark.unit
def test_log_records_mask_url_userinfo_without_any_secret_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name == "GITHUB_TOKEN" or any(s in name.upper() for s in ("TOKEN", "SECRET", "PASS")):
            monkeypatch.delenv(name)
    old_factory = logging.getLogRecordFactory()
    install_secret_masking()  # no secret in the environment: URLs must still be masked
    try:
        handler = logging.FileHandler(tmp_path / "x.log")
        lg = logging.getLogger("test_mask_url")
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.error("git push to %s failed", "https://bob:hunter22@host/repo.git")
        handler.close()
        lg.removeHandler(handler)
    finally:
        logging.setLogRecordFactory(old_factory)
    text = (tmp_path / "x.log").read_text()
    assert "hunter22" not in text and "bob" not in text
    assert "git push to https://***@host/repo.git failed" in text


# ---------------------------------------------------------------- lock


@pytest.mark.unit
def test_lock_create_contents_and_release(paths: Paths) -> None:
    path = lock_path(paths, DATASET)
    assert path == paths.logs / f"run_{DATASET}.lock"
    with RunLock(path) as lock:
        data = json.loads(path.read_text())
        assert data["pid"] == os.getpid()
        assert data["host"] == socket.gethostname()
        assert data["started"] and data["nonce"] == lock.owner.nonce
        assert check_lock(paths, DATASET).status == FAIL
        with pytest.raises(LockHeldError, match=rf"pid {os.getpid()}"):
            RunLock(path).acquire()
    assert not path.exists()
    assert check_lock(paths, DATASET).status == PASS


@pytest.mark.unit
def test_lock_released_on_error(paths: Paths) -> None:
    path = lock_path(paths, DATASET)
    with pytest.raises(ValueError), RunLock(path):
        raise ValueError("boom")
    assert not path.exists()


def _write_lock(path: Path, pid: int, host: str | None = None, started: float | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = time.time() if started is None else started
    path.write_text(
        json.dumps(
            {
                "pid": pid,
                "host": host or socket.gethostname(),
                "started": "then",
                "started_epoch": t,
                "nonce": "n1",
            }
        )
    )


@pytest.mark.integration
def test_live_lock_fails_fast_naming_pid(paths: Paths, live_pid: int) -> None:
    path = lock_path(paths, DATASET)
    _write_lock(path, live_pid)
    t0 = time.perf_counter()
    with pytest.raises(LockHeldError, match=rf"pid {live_pid} on host") as info:
        RunLock(path).acquire()
    assert time.perf_counter() - t0 < 1.0
    assert str(path) in str(info.value)
    assert read_owner(path).pid == live_pid  # untouched


@pytest.mark.integration
def test_stale_lock_taken_over_with_warning(
    paths: Paths, dead_pid: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = lock_path(paths, DATASET)
    _write_lock(path, dead_pid)
    assert not pid_alive(dead_pid)
    with caplog.at_level(logging.WARNING), RunLock(path) as lock:
        assert lock.took_over is not None and lock.took_over.pid == dead_pid
        assert read_owner(path).pid == os.getpid()
    assert f"stale lock from pid {dead_pid}" in caplog.text
    assert not path.exists()
    assert [p.name for p in path.parent.iterdir()] == []  # no .stale leftovers


@pytest.mark.integration
def test_reused_pid_counts_as_stale(paths: Paths, live_pid: int) -> None:
    # The lock claims a start long before the live process was created: the pid was reused.
    path = lock_path(paths, DATASET)
    _write_lock(path, live_pid, started=time.time() - 86400)
    with RunLock(path) as lock:
        assert lock.took_over is not None and lock.took_over.pid == live_pid


@pytest.mark.integration
def test_lock_from_other_host_is_respected(paths: Paths, dead_pid: int) -> None:
    path = lock_path(paths, DATASET)
    _write_lock(path, dead_pid, host="some-other-pod")
    with pytest.raises(LockHeldError, match="some-other-pod"):
        RunLock(path).acquire()


@pytest.mark.unit
def test_unreadable_lock_fresh_is_held_old_is_taken(paths: Paths) -> None:
    path = lock_path(paths, DATASET)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    with pytest.raises(LockHeldError):
        RunLock(path).acquire()
    old = time.time() - 3600
    os.utime(path, (old, old))
    with RunLock(path) as lock:
        assert read_owner(path).pid == os.getpid()
        assert lock.owner is not None


@pytest.mark.integration
def test_release_never_deletes_someone_elses_lock(paths: Paths, live_pid: int) -> None:
    path = lock_path(paths, DATASET)
    lock = RunLock(path).acquire()
    _write_lock(path, live_pid)  # someone replaced it (e.g. after deleting ours by hand)
    lock.release()
    assert read_owner(path).pid == live_pid
