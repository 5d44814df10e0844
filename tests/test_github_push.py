"""Step 8 against real git: a work repo and a bare remote in tmp_path.

The library (``pipeline.publish.push``, ``pipeline.publish.git``) is called directly; the CLI tests
call ``runpod_github.main`` (the git plumbing lives in the library, not in the script).

No network. Every test gets its own repo with the artifact folders git-ignored, as in the
project, and an isolated git configuration (no global/system config, no credential helpers). The
artifacts are recorded in the dataset's run manifest through the Manifest API, as the steps do;
the push step pushes what it lists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import git
import pytest

import runpod_github
from pipeline.common import Paths
from pipeline.publish import push as git_push
from pipeline.publish.git import ASKPASS_TOKEN_VAR, askpass_env
from pipeline.publish.push import (
    PushConfig,
    PushError,
    check_remote_reachable,
    collect_artifacts,
    push_artifacts,
)
from pipeline.store.artifacts import Artifacts
from pipeline.store.manifest import KINDS, STEP_AGENT, STEP_CLASSIFIERS, STEP_DRIVER

DATASET = "BTC_1h"
METRICS: dict[str, object] = {"dlstm macro-F1": 0.41, "agent test return": "3.2%"}

GITIGNORE = """\
/models/*
/scalers/*
/results/*
/logs/*
/ppo_approach/models/*
/ppo_approach/checkpoints/*
/ppo_approach/logs/*
"""

# What this dataset's steps recorded in its run manifest: (path, kind, step). Step 8 pushes the
# entries of pushed kinds plus the manifest itself, and nothing else.
RECORDED = [
    ("logs/train_BTC_1h.log", "log", STEP_DRIVER),
    ("models/dlstm_BTC_1h_classification.pth", "classifier_model", STEP_CLASSIFIERS),
    ("models/dlstm_BTC_1h_config.txt", "config", STEP_CLASSIFIERS),
    ("models/gru_BTC_1h_classification.pth", "classifier_model", STEP_CLASSIFIERS),
    ("models/walkforward/dlstm_BTC_1h_fold1.pth", "fold_model", STEP_CLASSIFIERS),
    (
        "ppo_approach/logs/ppo_dlstm_BTC_1h_1/events.out.tfevents.1700000000.pod.1.0",
        "tensorboard",
        STEP_AGENT,
    ),
    ("ppo_approach/models/ppo_dlstm_BTC_1h.zip", "ppo_model", STEP_AGENT),
    ("ppo_approach/models/ppo_dlstm_BTC_1h_config.txt", "config", STEP_AGENT),
    ("results/backtest_dlstm_BTC_1h.png", "plot", STEP_AGENT),
    ("results/metrics_dlstm_BTC_1h.json", "metrics", STEP_CLASSIFIERS),
    ("results/predictions_dlstm_BTC_1h.csv", "prediction_table", STEP_CLASSIFIERS),
    ("scalers/scaler_BTC_1h.json", "scaler", STEP_CLASSIFIERS),
    # recorded, but of kinds that stay local
    ("ppo_approach/checkpoints/dlstm_BTC_1h/checkpoint_1000.zip", "ppo_checkpoint", STEP_AGENT),
    ("ppo_approach/checkpoints/dlstm_BTC_1h/best_model.zip", "ppo_best_model", STEP_AGENT),
    ("models/checkpoints/dlstm_BTC_1h_main.ckpt.pt", "classifier_ckpt", STEP_CLASSIFIERS),
]

MANIFEST = "results/run_manifest_BTC_1h.json"

EXPECTED = sorted([path for path, kind, _ in RECORDED if KINDS[kind].pushed] + [MANIFEST])

# Recorded in the manifests of other datasets: (dataset, path, kind, step).
OTHER_DATASETS = [
    ("ETH_1h", "models/gru_ETH_1h_classification.pth", "classifier_model", STEP_CLASSIFIERS),
    ("ETH_1h", "scalers/scaler_ETH_1h.json", "scaler", STEP_CLASSIFIERS),
    ("ETH_1h", "logs/train_ETH_1h.log", "log", STEP_DRIVER),
    (
        "ETH_1h",
        "ppo_approach/logs/ppo_dlstm_ETH_1h_1/events.out.tfevents.1700000001.pod.1.0",
        "tensorboard",
        STEP_AGENT,
    ),
    ("WBTC_1h", "results/backtest_dlstm_WBTC_1h.png", "plot", STEP_AGENT),
]

NOT_EXPECTED = [
    *(path for path, kind, _ in RECORDED if not KINDS[kind].pushed),  # checkpoints stay local
    *(path for _, path, _, _ in OTHER_DATASETS),  # other datasets, their own manifests
    "results/run_manifest_ETH_1h.json",
    "scalers/scaler_BTC_1h.pkl",  # an old pickled scaler: never recorded, never pushed
    "results/notes_BTC_1h.txt",  # on disk but recorded by no step
    "results/backtest_BTC_1h.png",  # ditto: the dataset's name in a file name is not enough
    "results/.predictions_dlstm_BTC_1h.csv.x1y2.tmp",  # an unfinished atomic write
]


def record(work: Path, rel: str, kind: str, step: str, dataset: str = DATASET) -> None:
    """Record ``rel`` in ``dataset``'s run manifest, as the step that wrote it does."""
    Artifacts(Paths.from_root(work), dataset).manifest().record(work / rel, kind, step)


def run_git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd``; returns stdout, fails the test on a non-zero exit."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"git {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every file under the artifact folders (tracked or not)."""
    out = {}
    for top in ("models", "scalers", "results", "logs", "ppo_approach"):
        for p in sorted((root / top).rglob("*")):
            if p.is_file():
                out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def remote_files(bare: Path, ref: str = "main") -> list[str]:
    """Files in ``ref`` of the bare repo."""
    return sorted(run_git(bare, "ls-tree", "-r", "--name-only", ref).split())


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No global/system git config, no token, and a private temp dir we can inspect."""
    (tmp_path / "gitconfig").write_text("", encoding="utf-8")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    return tmpdir


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path]:
    """(work repo with artifacts, bare remote 'origin'); main already pushed once."""
    bare = tmp_path / "remote.git"
    run_git(tmp_path, "init", "--bare", "-q", "-b", "main", str(bare))
    work = tmp_path / "work"
    work.mkdir()
    run_git(work, "init", "-q", "-b", "main")
    run_git(work, "config", "user.name", "Test")
    run_git(work, "config", "user.email", "test@example.com")
    (work / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    (work / "README.md").write_text("project\n", encoding="utf-8")
    run_git(work, "add", ".gitignore", "README.md")
    run_git(work, "commit", "-q", "-m", "initial")
    run_git(work, "remote", "add", "origin", str(bare))
    run_git(work, "push", "-q", "origin", "main")
    manifests = (MANIFEST, "results/run_manifest_ETH_1h.json")
    for i, rel in enumerate(EXPECTED + NOT_EXPECTED):
        if rel in manifests:
            continue  # written by recording
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{rel} {i}\n".encode() * 3)
    for rel, kind, step in RECORDED:
        record(work, rel, kind, step)
    for dataset, rel, kind, step in OTHER_DATASETS:
        record(work, rel, kind, step, dataset)
    assert run_git(work, "status", "--porcelain") == "", "artifacts must be git-ignored"
    return work, bare


def other_clone_commits(tmp_path: Path, bare: Path, files: dict[str, bytes], force: bool) -> str:
    """Another machine pushes a commit with ``files`` to origin/main first; returns its sha."""
    other = tmp_path / "other"
    run_git(tmp_path, "clone", "-q", str(bare), str(other))
    run_git(other, "config", "user.name", "Other")
    run_git(other, "config", "user.email", "other@example.com")
    for rel, data in files.items():
        (other / rel).parent.mkdir(parents=True, exist_ok=True)
        (other / rel).write_bytes(data)
        run_git(other, "add", *(["--force"] if force else []), rel)
    run_git(other, "commit", "-q", "-m", "commit from another pod")
    run_git(other, "push", "-q", "origin", "main")
    return run_git(other, "rev-parse", "HEAD").strip()


def reject_pushes(bare: Path, script: str = "echo 'push refused by policy' >&2\nexit 1\n") -> Path:
    """Install a pre-receive hook in the bare repo that refuses every push."""
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    hook.chmod(0o755)
    return hook


# ---------------------------------------------------------------- collecting


@pytest.mark.integration
def test_collect_artifacts_picks_exactly_this_datasets_files(repos: tuple[Path, Path]) -> None:
    work, _ = repos
    found = [p.relative_to(work).as_posix() for p in collect_artifacts(work, DATASET)]
    assert found == EXPECTED


@pytest.mark.integration
@pytest.mark.parametrize("logs_only", [False, True])
def test_no_manifest_yet_is_one_push_error_saying_how_to_get_one(
    repos: tuple[Path, Path], capsys: pytest.CaptureFixture[str], logs_only: bool
) -> None:
    """Artifacts from before the run manifest (no manifest, or one listing only the driver's
    log): nothing is committed or pushed, one error line says to rerun the steps (exit 3)."""
    work, bare = repos
    (work / MANIFEST).unlink()
    if logs_only:
        record(work, "logs/train_BTC_1h.log", "log", STEP_DRIVER)
    head = run_git(work, "rev-parse", "HEAD").strip()
    remote_head = run_git(bare, "rev-parse", "main").strip()
    with pytest.raises(PushError) as info:
        collect_artifacts(work, DATASET)
    assert info.value.exit_code == 3
    assert f"rerun the steps that write them (python runpod_train.py --dataset {DATASET}" in (
        str(info.value)
    )

    code = runpod_github.main(["--dataset", DATASET, "--root", str(work)])

    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert code == 3 and len(errors) == 1
    assert str(work / MANIFEST) in errors[0] and "nothing to push for dataset BTC_1h" in errors[0]
    assert run_git(work, "rev-parse", "HEAD").strip() == head
    assert run_git(bare, "rev-parse", "main").strip() == remote_head


@pytest.mark.integration
def test_entries_whose_file_is_gone_are_left_out(
    repos: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    work, bare = repos
    gone = "results/predictions_dlstm_BTC_1h.csv"
    (work / gone).unlink()
    with caplog.at_level(logging.WARNING, logger="pipeline.publish.push"):
        result = push_artifacts(work, DATASET, METRICS, PushConfig())
    assert result.files == [f for f in EXPECTED if f != gone]
    assert gone not in remote_files(bare)
    assert any(gone in r.getMessage() and "gone" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- pushing


@pytest.mark.integration
def test_push_commits_exactly_the_artifacts_and_names_dataset_and_metrics(
    repos: tuple[Path, Path],
) -> None:
    work, bare = repos
    before = snapshot(work)

    result = push_artifacts(work, DATASET, METRICS, PushConfig())

    assert result.pushed and not result.rebased
    assert result.files == EXPECTED and result.skipped == []
    assert result.commit == run_git(bare, "rev-parse", "main").strip()
    assert remote_files(bare) == sorted([".gitignore", "README.md", *EXPECTED])
    message = run_git(bare, "log", "-1", "--format=%B", "main")
    subject = message.splitlines()[0]
    assert DATASET in subject and "dlstm macro-F1=0.41" in subject
    assert "agent test return=3.2%" in subject
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", subject)  # UTC timestamp
    assert f"artifact files: {len(EXPECTED)}" in message
    assert snapshot(work) == before  # nothing trained was modified or deleted
    # the work tree is clean: everything committed is what is on disk
    assert run_git(work, "status", "--porcelain") == ""


@pytest.mark.integration
def test_second_push_without_changes_makes_no_new_commit(repos: tuple[Path, Path]) -> None:
    work, bare = repos
    first = push_artifacts(work, DATASET, METRICS, PushConfig())
    second = push_artifacts(work, DATASET, {"x": 1.0}, PushConfig())
    assert second.commit == first.commit
    assert second.files == EXPECTED
    assert run_git(bare, "rev-list", "--count", "main").strip() == "2"


@pytest.mark.integration
def test_retry_after_rejected_push_pushes_the_existing_local_commit(
    repos: tuple[Path, Path],
) -> None:
    work, bare = repos
    hook = reject_pushes(bare)
    with pytest.raises(PushError):
        push_artifacts(work, DATASET, METRICS, PushConfig())
    local = run_git(work, "rev-parse", "HEAD").strip()
    hook.unlink()

    result = push_artifacts(work, DATASET, METRICS, PushConfig())

    assert result.commit == local  # nothing new to commit, the old commit is pushed
    assert run_git(bare, "rev-parse", "main").strip() == local


@pytest.mark.integration
def test_other_staged_changes_are_not_swept_into_the_commit(repos: tuple[Path, Path]) -> None:
    work, bare = repos
    (work / "README.md").write_text("edited on the pod\n", encoding="utf-8")
    run_git(work, "add", "README.md")

    push_artifacts(work, DATASET, METRICS, PushConfig())

    assert run_git(bare, "show", "main:README.md") == "project\n"
    assert run_git(work, "diff", "--cached", "--name-only").split() == ["README.md"]


@pytest.mark.integration
def test_remote_ahead_fetches_and_rebases_once(repos: tuple[Path, Path], tmp_path: Path) -> None:
    work, bare = repos
    theirs = other_clone_commits(tmp_path, bare, {"NOTES.md": b"from elsewhere\n"}, force=False)
    before = snapshot(work)

    result = push_artifacts(work, DATASET, METRICS, PushConfig())

    assert result.rebased and result.pushed
    assert result.commit == run_git(bare, "rev-parse", "main").strip()
    history = run_git(bare, "log", "--format=%H %s", "main")
    assert theirs in history and result.commit in history
    assert f"Run artifacts: {DATASET}" in history
    assert remote_files(bare) == sorted([".gitignore", "README.md", "NOTES.md", *EXPECTED])
    assert snapshot(work) == before
    assert (work / "NOTES.md").read_bytes() == b"from elsewhere\n"


@pytest.mark.integration
@pytest.mark.parametrize(
    "path",
    [
        "models/dlstm_BTC_1h_classification.pth",  # this run's artifact, other bytes upstream
        "ppo_approach/checkpoints/dlstm_BTC_1h/checkpoint_1000.zip",  # ignored, untracked here
    ],
)
def test_rebase_is_refused_when_the_remote_would_overwrite_local_files(
    repos: tuple[Path, Path], tmp_path: Path, path: str
) -> None:
    work, bare = repos
    other_clone_commits(tmp_path, bare, {path: b"someone else's bytes\n"}, force=True)
    before = snapshot(work)
    remote_head = run_git(bare, "rev-parse", "main").strip()

    with pytest.raises(PushError) as info:
        push_artifacts(work, DATASET, METRICS, PushConfig())

    assert info.value.exit_code == 3
    assert path in str(info.value) and "stay local" in str(info.value)
    assert snapshot(work) == before
    assert run_git(bare, "rev-parse", "main").strip() == remote_head
    assert DATASET in run_git(work, "log", "-1", "--format=%s")  # the local commit exists


@pytest.mark.integration
def test_rejected_push_raises_exit_3_and_keeps_commit_and_files(
    repos: tuple[Path, Path],
) -> None:
    work, bare = repos
    reject_pushes(bare)
    before = snapshot(work)
    remote_head = run_git(bare, "rev-parse", "main").strip()

    with pytest.raises(PushError) as info:
        push_artifacts(work, DATASET, METRICS, PushConfig())

    exc = info.value
    assert exc.exit_code == 3
    text = str(exc)
    assert "push refused by policy" in text and "stay local" in text
    assert f"python runpod_train.py --dataset {DATASET} --steps 8" in text and "\n" not in text
    assert run_git(bare, "rev-parse", "main").strip() == remote_head
    local_head = run_git(work, "rev-parse", "HEAD").strip()
    assert local_head[:12] in text
    assert DATASET in run_git(work, "log", "-1", "--format=%s")
    assert sorted(run_git(work, "show", "--name-only", "--format=", "HEAD").split()) == EXPECTED
    assert snapshot(work) == before


@pytest.mark.integration
def test_missing_remote_names_it_and_lists_configured_ones(repos: tuple[Path, Path]) -> None:
    work, _ = repos
    head = run_git(work, "rev-parse", "HEAD").strip()
    with pytest.raises(PushError) as info:
        push_artifacts(work, DATASET, METRICS, PushConfig(remote="upstream"))
    assert info.value.exit_code == 3
    assert "'upstream'" in str(info.value) and "configured remotes: origin" in str(info.value)
    assert run_git(work, "rev-parse", "HEAD").strip() == head  # nothing committed


@pytest.mark.unit
def test_not_a_git_repo_raises_push_error(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    (plain / "models").mkdir(parents=True)
    with pytest.raises(PushError, match="not the root of a git repository") as info:
        push_artifacts(plain, DATASET, METRICS, PushConfig())
    assert info.value.exit_code == 3


@pytest.mark.integration
def test_files_over_the_size_limit_are_skipped_and_reported(
    repos: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    work, bare = repos
    big = "models/dlstm_BTC_1h_classification.pth"
    # > 0.01 MiB = 10485 bytes; the others (the run manifest included) are smaller
    (work / big).write_bytes(b"\x01" * 20_000)
    data = (work / big).read_bytes()

    with caplog.at_level(logging.WARNING, logger="pipeline.publish.push"):
        result = push_artifacts(work, DATASET, METRICS, PushConfig(max_file_mb=0.01))

    assert result.skipped == [big]
    assert result.files == [f for f in EXPECTED if f != big]
    assert big not in remote_files(bare)
    assert any(big in r.getMessage() and "git-lfs" in r.getMessage() for r in caplog.records)
    assert big in run_git(bare, "log", "-1", "--format=%B", "main")  # listed as skipped
    assert (work / big).read_bytes() == data


@pytest.mark.integration
@pytest.mark.parametrize("tracked", [True, False])
def test_big_files_go_through_lfs_only_when_gitattributes_tracks_them(
    repos: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tracked: bool
) -> None:
    work, _ = repos
    big = "models/dlstm_BTC_1h_classification.pth"
    (work / big).write_bytes(b"\x01" * 20_000)
    if tracked:
        # the lfs filter itself is not configured here, so git stores the bytes as a plain blob;
        # what is under test is the decision to send the file instead of skipping it
        (work / ".gitattributes").write_text("*.pth filter=lfs diff=lfs merge=lfs -text\n")
    monkeypatch.setattr(git_push, "_lfs_ready", lambda g: True)

    result = push_artifacts(work, DATASET, METRICS, PushConfig(max_file_mb=0.01))

    assert (big in result.files) is tracked
    assert (big in result.skipped) is not tracked


@pytest.mark.integration
def test_commit_works_without_a_git_identity(repos: tuple[Path, Path]) -> None:
    work, bare = repos
    run_git(work, "config", "--unset", "user.name")
    run_git(work, "config", "--unset", "user.email")
    result = push_artifacts(work, DATASET, METRICS, PushConfig())
    assert run_git(bare, "log", "-1", "--format=%an <%ae>", "main").strip() == (
        "runpod-pipeline <runpod@localhost>"
    )
    assert result.files == EXPECTED
    assert "runpod-pipeline" not in (work / ".git" / "config").read_text()


# ---------------------------------------------------------------- secrets and config hygiene


@pytest.mark.integration
def test_token_never_leaks_to_logs_config_or_git_dir(
    repos: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    isolated_git: Path,
) -> None:
    work, bare = repos
    token = "ghp_UNIQUE_test_token_4f9a2c71e0"
    monkeypatch.setenv("GITHUB_TOKEN", token)
    log_file = tmp_path / "push.log"
    handler = logging.FileHandler(log_file, encoding="utf-8")
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)  # GitPython's own debug lines (argv) included
    try:
        push_artifacts(work, DATASET, METRICS, PushConfig())
        # a failing push whose remote echoes the secret back must be masked in the error text
        reject_pushes(bare, f'echo "remote says ${ASKPASS_TOKEN_VAR}" >&2\nexit 1\n')
        (work / "logs" / "train_BTC_1h.log").write_text("more\n")
        with pytest.raises(PushError) as info:
            push_artifacts(work, DATASET, METRICS, PushConfig())
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(old_level)
        handler.close()

    assert token not in str(info.value) and "remote says ***" in str(info.value)
    assert log_file.read_text(encoding="utf-8"), "the log captured something"
    assert token not in log_file.read_text(encoding="utf-8")
    assert token not in (work / ".git" / "config").read_text()
    assert token not in git.Repo(work).remote("origin").url
    leaked = [
        p
        for base in (work / ".git", bare)
        for p in base.rglob("*")
        if p.is_file()
        if token.encode() in p.read_bytes()
    ]
    assert leaked == []
    assert os.environ.get(ASKPASS_TOKEN_VAR) is None
    assert list(isolated_git.iterdir()) == []  # the askpass dir (and pathspec files) are gone


@pytest.mark.integration
def test_askpass_helper_answers_git_and_is_removed(tmp_path: Path) -> None:
    token = "ghp_askpass_only_7d1e"
    with askpass_env(token) as env:
        script = Path(env["GIT_ASKPASS"])
        assert stat.S_IMODE(script.stat().st_mode) == 0o700
        assert stat.S_IMODE(script.parent.stat().st_mode) == 0o700
        assert token not in script.read_text()  # the secret lives only in the env
        # git itself asks the helper (no network: `credential fill` only prompts)
        done = subprocess.run(
            ["git", "credential", "fill"],
            input="protocol=https\nhost=github.com\n\n",
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            cwd=tmp_path,
            check=True,
        )
        assert f"password={token}" in done.stdout.splitlines()
        assert "username=x-access-token" in done.stdout.splitlines()
    assert not script.exists() and not script.parent.exists()
    with askpass_env(None) as env:
        assert env == {"GIT_TERMINAL_PROMPT": "0"}


@pytest.mark.integration
def test_large_file_settings_go_on_the_command_line_not_in_config(
    repos: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    work, _ = repos
    seen: list[list[str]] = []
    original = git.cmd.Git.execute

    def spy(self: git.cmd.Git, command: list[str], **kwargs: object) -> object:
        seen.append(list(command))
        return original(self, command, **kwargs)

    monkeypatch.setattr(git.cmd.Git, "execute", spy)
    push_artifacts(work, DATASET, METRICS, PushConfig())

    pushes = [argv for argv in seen if "push" in argv]
    assert pushes and all("http.postBuffer=524288000" in argv for argv in pushes)
    assert all(argv[argv.index("http.postBuffer=524288000") - 1] == "-c" for argv in pushes)
    config_text = (work / ".git" / "config").read_text()
    assert "postBuffer" not in config_text and "lowSpeed" not in config_text
    assert (
        subprocess.run(
            ["git", "config", "--get", "http.postBuffer"], cwd=work, check=False
        ).returncode
        == 1
    )


# ---------------------------------------------------------------- preflight and CLI


@pytest.mark.integration
def test_check_remote_reachable(repos: tuple[Path, Path], tmp_path: Path) -> None:
    work, _ = repos
    ok, message = check_remote_reachable(work, "origin")
    assert ok and "origin" in message and "1 branch heads" in message

    ok, message = check_remote_reachable(work, "nope")
    assert not ok and "'nope'" in message

    run_git(work, "remote", "add", "gone", str(tmp_path / "does-not-exist.git"))
    ok, message = check_remote_reachable(work, "gone")
    assert not ok and "not reachable" in message

    ok, message = check_remote_reachable(tmp_path / "plain", "origin")
    assert not ok and "not the root of a git repository" in message


@pytest.mark.integration
def test_check_remote_reachable_times_out(repos: tuple[Path, Path]) -> None:
    work, _ = repos
    # a remote that hangs: the local transport runs this upload-pack command
    run_git(work, "config", "remote.origin.uploadpack", "sleep 20; git-upload-pack")
    start = time.monotonic()
    ok, message = check_remote_reachable(work, "origin", timeout_s=1)
    assert not ok and "not reachable" in message
    assert time.monotonic() - start < 10


@pytest.mark.integration
def test_main_pushes_and_returns_0(repos: tuple[Path, Path]) -> None:
    work, bare = repos
    code = runpod_github.main(
        ["--dataset", DATASET, "--root", str(work), "--metric", "dlstm macro-F1=0.41"]
    )
    assert code == 0
    assert remote_files(bare) == sorted([".gitignore", "README.md", *EXPECTED])
    assert "dlstm macro-F1=0.41" in run_git(bare, "log", "-1", "--format=%s", "main")


@pytest.mark.integration
def test_main_missing_remote_prints_one_error_line_and_returns_3(
    repos: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    work, _ = repos
    code = runpod_github.main(["--dataset", DATASET, "--root", str(work), "--remote", "backup"])
    assert code == 3
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "'backup'" in errors[0]


# ---------------------------------------------------------------- secrets


@pytest.mark.integration
def test_password_in_remote_url_is_masked_in_the_error_line_and_logs(
    repos: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`--set git_remote=https://bob:pw@host/repo.git` must never print the password."""
    work, bare = repos
    head = run_git(work, "rev-parse", "HEAD").strip()
    url = "https://bob:pw@host/repo.git"
    with caplog.at_level(logging.DEBUG):
        code = runpod_github.main(["--dataset", DATASET, "--root", str(work), "--remote", url])
        with pytest.raises(PushError) as info:  # what step 8 of the driver raises and records
            push_artifacts(work, DATASET, METRICS, PushConfig(remote=url))
    captured = capsys.readouterr()
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("error:")]
    assert code == 3 and len(errors) == 1
    assert "'https://***@host/repo.git' is a URL" in errors[0]
    assert "git remote add <name> <url>" in errors[0]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (captured.err, captured.out, str(info.value), logged):
        assert "bob:pw" not in text and ":pw@" not in text
    assert run_git(work, "rev-parse", "HEAD").strip() == head  # nothing committed


@pytest.mark.integration
def test_password_in_the_configured_remote_url_is_masked_in_git_errors(
    repos: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    work, _ = repos
    # Nothing listens on port 9: git fails fast, and whatever it prints is masked.
    run_git(work, "remote", "set-url", "origin", "https://bob:pw-s3cret-77@127.0.0.1:9/r.git")
    with caplog.at_level(logging.DEBUG), pytest.raises(PushError) as info:
        push_artifacts(work, DATASET, METRICS, PushConfig(timeout_s=20))
    assert info.value.exit_code == 3 and "git push of" in str(info.value)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (str(info.value), logged):
        assert "pw-s3cret-77" not in text and "bob:pw" not in text

    ok, message = check_remote_reachable(work, "origin", timeout_s=20)
    assert not ok and "pw-s3cret-77" not in message and "https://***@127.0.0.1:9" in message


@pytest.mark.integration
@pytest.mark.parametrize(
    ("rel", "content", "holds"),
    [
        # the token of this run in the run summary
        (
            "results/run_summary_BTC_1h.json",
            b'{"note": "ghp_UNIQUE_leak_token_91b2"}\n',
            "the token $GITHUB_TOKEN",
        ),
        # the token inside a binary model file
        (
            "models/gru_BTC_1h_classification.pth",
            b"\x00\x01ghp_UNIQUE_leak_token_91b2\x02",
            "the token $GITHUB_TOKEN",
        ),
        # the password of the remote's URL, as an unmasked log line would hold it
        (
            "logs/train_BTC_1h.log",
            b"push to https://bob:pw@host/x.git failed\n",
            "a password from the remote's URL",
        ),
        # a URL password from an earlier remote (not configured any more) in a text file
        (
            "logs/train_BTC_1h.log",
            b"error: git remote 'https://alice:hunter2@example.com/x.git' is not configured\n",
            "a URL with a password",
        ),
    ],
)
def test_a_file_holding_a_secret_is_never_committed(
    repos: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    rel: str,
    content: bytes,
    holds: str,
) -> None:
    work, bare = repos
    token = "ghp_UNIQUE_leak_token_91b2"
    monkeypatch.setenv("GITHUB_TOKEN", token)
    # The push URL carries a password; the fetch URL (the bare repo) is what `git ls-remote`
    # would use. The refusal must come before any network command.
    run_git(work, "remote", "set-url", "--push", "origin", "https://bob:pw@host/x.git")
    (work / rel).parent.mkdir(parents=True, exist_ok=True)
    (work / rel).write_bytes(content)
    if rel == "results/run_summary_BTC_1h.json":
        record(work, rel, "run_summary", STEP_DRIVER)
    head = run_git(work, "rev-parse", "HEAD").strip()
    remote_head = run_git(bare, "rev-parse", "main").strip()

    code = runpod_github.main(["--dataset", DATASET, "--root", str(work)])

    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 3 and len(errors) == 1
    assert f"refusing to commit {rel} (holds {holds})" in errors[0]
    assert "nothing was committed or pushed" in errors[0]
    assert token not in err and "bob:pw" not in err and "hunter2" not in err
    assert run_git(work, "rev-parse", "HEAD").strip() == head
    assert run_git(work, "diff", "--cached", "--name-only") == ""  # nothing staged either
    assert run_git(bare, "rev-parse", "main").strip() == remote_head
    assert (work / rel).read_bytes() == content  # the file itself is left alone


@pytest.mark.integration
def test_masked_urls_and_short_tokens_do_not_block_the_push(
    repos: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    work, bare = repos
    monkeypatch.setenv("GITHUB_TOKEN", "1")  # too short to be a real token: not searched for
    (work / "logs" / "train_BTC_1h.log").write_text(
        "remote https://***@host/x.git (masked); port http://localhost:8080/path; 1 1 1\n"
    )
    result = push_artifacts(work, DATASET, METRICS, PushConfig())
    assert result.pushed and "logs/train_BTC_1h.log" in remote_files(bare)


# ---------------------------------------------------------------- CLI: usage errors, run lock


@pytest.mark.unit
@pytest.mark.parametrize(
    "argv",
    [[], ["--dataset", DATASET, "--max-file-mb", "lots"], ["--dataset", DATASET, "--bogus"]],
)
def test_usage_errors_exit_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Exit code 2 is reserved for "preflight failed"."""
    with pytest.raises(SystemExit) as info:
        runpod_github.main(argv)
    assert info.value.code == 1
    assert "error:" in capsys.readouterr().err


@pytest.mark.integration
def test_push_by_hand_refuses_while_another_live_run_holds_the_lock(
    repos: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """No commit of artifacts a live run may still be writing."""
    from pipeline.run.lock import lock_path, step_lock

    work, bare = repos
    paths = Paths.from_root(work)
    lock = lock_path(paths, DATASET)
    head = run_git(work, "rev-parse", "HEAD").strip()
    remote_head = run_git(bare, "rev-parse", "main").strip()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.05)
        owner = {
            "pid": sleeper.pid,
            "host": socket.gethostname(),
            "started": "now",
            "started_epoch": time.time(),
            "nonce": "other-run",
        }
        lock.write_text(json.dumps(owner), encoding="utf-8")

        code = runpod_github.main(["--dataset", DATASET, "--root", str(work)])

        errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
        assert code == 1 and len(errors) == 1
        assert f"in progress (pid {sleeper.pid}" in errors[0] and str(lock) in errors[0]
        assert json.loads(lock.read_text())["nonce"] == "other-run"  # their lock is untouched
        assert run_git(work, "rev-parse", "HEAD").strip() == head
        assert run_git(bare, "rev-parse", "main").strip() == remote_head
    finally:
        sleeper.kill()
        sleeper.wait()

    # The owner is gone: the stale lock is taken over, the push runs and releases the lock.
    assert runpod_github.main(["--dataset", DATASET, "--root", str(work)]) == 0
    assert not lock.exists()
    assert remote_files(bare) == sorted([".gitignore", "README.md", *EXPECTED])

    # Called while this process holds the lock (the driver's case), the push is not refused.
    (work / "logs" / "train_BTC_1h.log").write_text("second run\n")
    with step_lock(paths, DATASET):
        assert runpod_github.main(["--dataset", f"{DATASET}.csv", "--root", str(work)]) == 0
    assert run_git(bare, "show", "main:logs/train_BTC_1h.log") == "second run\n"
