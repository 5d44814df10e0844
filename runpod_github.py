"""Step 8: commit this run's artifacts for one dataset and push them to the git remote.

The artifact folders are git-ignored (a plain ``git add -A`` must never sweep a 2 GB checkpoint into
a commit), so this step force-adds exactly the files it collects. Three rules shape the code:

* The token (env ``GITHUB_TOKEN``) reaches git only through a ``GIT_ASKPASS`` helper script that
  echoes it from an environment variable set in the network subprocess alone; the script holds no
  secret, lives in a 0700 temp dir and is removed afterwards. Nothing secret goes into
  ``.git/config``, the remote URL, argv or a log line, and every error text is masked: the token
  and any ``user:password@`` part of a URL (a password put into ``git_remote`` or into the
  remote's URL) are shown as ``***``. A file that contains the token or such a password is never
  committed: the step refuses with exit code 3 before anything is committed or pushed.
* Large-transfer settings travel as ``git -c key=value`` on the command line, never in config.
* Nothing trained is deleted or modified: no ``clean``, ``reset --hard`` or checkout of artifact
  paths; before the one rebase we refuse if the remote's new commits would overwrite an untracked or
  ignored file (git treats ignored files as expendable and would silently replace them).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

import git

from pipeline.common import (
    EXIT_OK,
    EXIT_PUSH,
    CliParser,
    Paths,
    PipelineError,
    run_cli,
    setup_logging,
)
from pipeline.preflight import MIN_SECRET_LEN
from pipeline.runlock import dataset_name, step_lock

logger = logging.getLogger("runpod_github")

MIB = 1024 * 1024
"""GitHub's per-file limit is 100 MiB, so "MB" here means MiB."""

# Large pushes over HTTPS: a 500 MiB post buffer avoids chunked-encoding failures on big packs,
# and the low-speed pair aborts a stalled transfer instead of hanging until the step timeout.
PUSH_CONFIG: tuple[str, ...] = (
    "http.postBuffer=524288000",
    "http.lowSpeedLimit=1000",
    "http.lowSpeedTime=120",
)

ASKPASS_TOKEN_VAR = "RUNPOD_GIT_ASKPASS_TOKEN"
"""The variable the askpass script echoes; set only in the environment of one git subprocess."""

_ASKPASS_SCRIPT = f"""#!/bin/sh
# Answers git's credential prompts; the secret comes from the caller's environment only.
case "$1" in
  Username*|username*) echo "x-access-token" ;;
  *) printf '%s\\n' "${ASKPASS_TOKEN_VAR}" ;;
esac
"""

_RESULT_SUFFIXES = frozenset({".png", ".json", ".csv"})
_CONFIG_SUFFIXES = frozenset({".txt", ".json", ".yaml", ".yml"})
_URL_USERINFO = re.compile(r"(\w+://)[^/@\s]+@")
# A URL that carries a password (``scheme://user:password@``); a masked one (``***@``) has none.
_URL_PASSWORD = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s/@:'\"<>]+:([^\s/@'\"<>]+)@")
# Files read as text when looking for a URL password (binary files are searched for the exact
# secrets only, so random bytes never look like a URL).
_TEXT_SUFFIXES = frozenset({".log", ".json", ".csv", ".txt", ".yaml", ".yml", ".md", ".toml"})
_SCAN_CHUNK = 8 * MIB


class PushError(PipelineError):
    """Committing or pushing the artifacts failed; they stay on local disk (exit code 3)."""

    exit_code = EXIT_PUSH


@dataclass
class PushConfig:
    """Where and how to push. ``max_file_mb`` is the host's per-file limit in MiB."""

    remote: str = "origin"
    branch: str = "main"
    max_file_mb: float = 100.0
    token_env: str = "GITHUB_TOKEN"
    timeout_s: int = 600


@dataclass
class PushResult:
    """What step 8 did: the pushed commit, the artifact files in it and those left out."""

    commit: str
    pushed: bool
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rebased: bool = False


# ---------------------------------------------------------------- collecting artifacts


def _mentions(name: str, dataset: str) -> bool:
    """True when ``dataset`` appears in ``name`` as a whole token (not inside a longer word).

    Token boundaries stop ``BTC`` from matching ``WBTC``; a dataset that is a ``_``-separated
    prefix of another (``BTC`` vs ``BTC_USDT``) still matches both, as the issue's globs do.
    """
    pattern = rf"(?<![A-Za-z0-9]){re.escape(dataset)}(?![A-Za-z0-9])"
    return re.search(pattern, name) is not None


def _is_candidate(path: Path) -> bool:
    """A regular file that is not hidden and not an atomic-write temp (``.name.xyz.tmp``)."""
    return (
        path.is_file()
        and not path.is_symlink()
        and not path.name.startswith(".")
        and not path.name.endswith(".tmp")
    )


def _files(folder: Path) -> list[Path]:
    """Candidate files directly inside ``folder`` (empty when it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _is_candidate(p))


def _with_sidecars(folder_files: list[Path], stems: set[str]) -> list[Path]:
    """Files whose name is one of ``stems`` followed by ``.`` or ``_`` (the sidecars)."""
    return [p for p in folder_files if any(p.name.startswith((s + ".", s + "_")) for s in stems)]


def collect_artifacts(root: Path, dataset: str) -> list[Path]:
    """Every artifact of ``dataset`` under the project root ``root``, sorted, absolute.

    Prediction models ``models/*_{dataset}_classification.pth`` plus sidecars sharing their stem,
    their ``*_{dataset}_config.txt`` and the walk-forward fold models under ``models/walkforward/``;
    PPO models ``ppo_approach/models/ppo_*_{dataset}.zip`` plus files sharing their stem and
    config files mentioning the dataset; ``scalers/scaler_{dataset}.json``; PNG/JSON/CSV results
    and ``.log`` files mentioning the dataset; TensorBoard event files below a run folder whose name
    mentions the dataset.
    """
    paths = Paths.from_root(root)
    found: set[Path] = set()

    model_re = re.compile(rf"^(?P<stem>.+_{re.escape(dataset)}_classification)\.pth$")
    model_files = _files(paths.models)
    model_stems = {m["stem"] for p in model_files if (m := model_re.match(p.name))}
    found.update(_with_sidecars(model_files, model_stems))
    # Each classifier's resolved config ({model}_{dataset}_config.txt) and the walk-forward fold
    # models (models/walkforward/{model}_{dataset}_fold{i}.pth) that produced the agent's inputs.
    found.update(
        p
        for p in model_files
        if p.suffix in _CONFIG_SUFFIXES and p.name.endswith(f"_{dataset}_config{p.suffix}")
    )
    found.update(
        p
        for p in _files(paths.models / "walkforward")
        if re.fullmatch(rf".+_{re.escape(dataset)}_fold\d+\.pth", p.name)
    )

    ppo_re = re.compile(rf"^(?P<stem>ppo_.+_{re.escape(dataset)})\.zip$")
    ppo_files = _files(paths.ppo_models)
    ppo_stems = {m["stem"] for p in ppo_files if (m := ppo_re.match(p.name))}
    found.update(_with_sidecars(ppo_files, ppo_stems))
    found.update(p for p in ppo_files if p.name.endswith(".zip") and p.stem in ppo_stems)
    found.update(
        p for p in ppo_files if p.suffix in _CONFIG_SUFFIXES and _mentions(p.name, dataset)
    )

    # The scaler is JSON data; an old pickled scaler_*.pkl is never loaded and so never pushed
    # (issue 8 item 7).
    scaler = paths.scalers / f"scaler_{dataset}.json"
    if _is_candidate(scaler):
        found.add(scaler)

    found.update(
        p
        for p in _files(paths.results)
        if p.suffix.lower() in _RESULT_SUFFIXES and _mentions(p.name, dataset)
    )
    found.update(p for p in _files(paths.logs) if p.suffix == ".log" and _mentions(p.name, dataset))

    if paths.ppo_logs.is_dir():
        for event in paths.ppo_logs.rglob("events.out.tfevents.*"):
            run_dirs = event.relative_to(paths.ppo_logs).parts[:-1]
            if _is_candidate(event) and any(_mentions(d, dataset) for d in run_dirs):
                found.add(event)
    return sorted(found)


# ---------------------------------------------------------------- git plumbing


def _mask(text: str, *secrets: str | None) -> str:
    """``text`` with each secret and any ``user:pass@`` part of a URL replaced by ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _URL_USERINFO.sub(r"\1***@", text)


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries: ``user:password`` and the password (raw and percent-decoded).

    A password shorter than ``MIN_SECRET_LEN`` is listed only as part of ``user:password`` (the
    bare word would match ordinary text); the ``scheme://user:password@`` form is masked by
    :data:`_URL_USERINFO` whatever its length (issue 8 item 8).
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return []
    if not parts.scheme or "@" not in parts.netloc:
        return []
    userinfo = parts.netloc.rpartition("@")[0]
    user, sep, password = userinfo.partition(":")
    if not sep or not password:
        return []
    found = {userinfo, f"{unquote(user)}:{unquote(password)}"}
    found |= {p for p in (password, unquote(password)) if len(p) >= MIN_SECRET_LEN}
    return sorted(found, key=len, reverse=True)


def _remote_urls(repo: git.Repo, remote: str) -> list[str]:
    """``remote`` itself when it is a URL, else its configured fetch and push URLs."""
    if "://" in remote:
        return [remote]
    urls = []
    reader = repo.config_reader()
    for key in ("url", "pushurl"):
        with contextlib.suppress(Exception):  # missing section/option: no URL of that kind
            urls += list(reader.get_values(f'remote "{remote}"', key))
    return [str(u) for u in urls]


def _one_line(stderr: str, limit: int = 600) -> str:
    """git's stderr squeezed onto one line (progress noise dropped), at most ``limit`` chars."""
    noise = ("Enumerating", "Counting", "Compressing", "Writing", "Delta", "Total", "To ")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    kept = [ln for ln in lines if not ln.startswith(noise)] or lines
    text = " | ".join(kept)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def askpass_env(token: str | None) -> Iterator[dict[str, str]]:
    """Yield the extra environment for one network git command; clean up the helper afterwards.

    With a token: a 0700 temp dir holding a 0700 ``askpass.sh`` that echoes
    ``$RUNPOD_GIT_ASKPASS_TOKEN``; the yielded env sets ``GIT_ASKPASS`` and that variable (pass it
    to the subprocess only). Without one: just ``GIT_TERMINAL_PROMPT=0`` so git fails fast instead
    of waiting for a terminal that a pod does not have.
    """
    env = {"GIT_TERMINAL_PROMPT": "0"}
    if not token:
        yield env
        return
    tmp = Path(tempfile.mkdtemp(prefix="runpod-askpass-"))  # mkdtemp creates it 0700
    try:
        script = tmp / "askpass.sh"
        script.write_text(_ASKPASS_SCRIPT, encoding="utf-8")
        script.chmod(stat.S_IRWXU)
        env.update({"GIT_ASKPASS": str(script), ASKPASS_TOKEN_VAR: token})
        yield env
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class _Git:
    """Runs git in one repo with masking, optional ``-c`` settings, env and a timeout."""

    repo: git.Repo
    token: str | None
    timeout_s: float | None
    secrets: tuple[str, ...] = ()
    """Besides the token, what to mask in git's output (URL passwords)."""

    def mask(self, text: str) -> str:
        """``text`` with the token, :attr:`secrets` and URL userinfo masked."""
        return _mask(text, self.token, *self.secrets)

    def run(
        self,
        args: Sequence[str],
        *,
        config: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        network: bool = False,
    ) -> tuple[int, str, str]:
        """Run ``git [-c k=v ...] args``; returns (status, stdout, masked stderr); never raises."""
        argv = ["git"]
        settings = list(config)
        if network:
            settings += PUSH_CONFIG
            if self.token:
                # An empty helper resets the list, so no configured helper (e.g. "store") gets
                # the chance to write the token into ~/.git-credentials after a successful push.
                settings.append("credential.helper=")
        for kv in settings:
            argv += ["-c", kv]
        argv += list(args)
        try:
            status, out, err = self.repo.git.execute(
                argv,
                env=dict(env or {}),
                kill_after_timeout=self.timeout_s if network else None,
                with_extended_output=True,
                with_exceptions=False,
            )
        except git.GitCommandError as exc:  # raised e.g. when the timeout killed git
            return 1, "", self.mask(str(exc))
        return int(status or 0), str(out), self.mask(str(err))

    def check(self, args: Sequence[str], what: str, *, config: Sequence[str] = ()) -> str:
        """Like :meth:`run` but raise :class:`PushError` (``what`` failed: stderr) on failure."""
        status, out, err = self.run(args, config=config)
        if status != 0:
            raise PushError(f"{what} failed in {self.repo.working_tree_dir}: {_one_line(err)}")
        return out

    def network(self, args: Sequence[str]) -> tuple[int, str, str]:
        """Run a command that talks to the remote, with the askpass env alive only meanwhile."""
        with askpass_env(self.token) as env:
            return self.run(args, env=env, network=True)


def _open_repo(repo_dir: Path) -> git.Repo:
    """The git repo whose work tree root is ``repo_dir``, or :class:`PushError`."""
    try:
        return git.Repo(repo_dir)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise PushError(
            f"{repo_dir} is not the root of a git repository (no .git there); clone the project "
            "with git or run `git init` and add a remote before pushing artifacts"
        ) from None


def _require_remote(repo: git.Repo, remote: str) -> None:
    """Raise :class:`PushError` naming ``remote`` and the configured ones when it is missing.

    ``remote`` is shown masked: a URL given as the remote may carry a password (issue 8 item 8).
    """
    names = [r.name for r in repo.remotes]
    if remote in names:
        return
    listed = ", ".join(names) if names else "none"
    shown = _mask(remote, *url_secrets(remote))
    if "://" in remote or "@" in remote:
        raise PushError(
            f"git remote '{shown}' is a URL, not the name of a remote configured in "
            f"{repo.working_tree_dir} (configured remotes: {listed}); add it with "
            "`git remote add <name> <url>` and set git_remote (or --remote) to that name; keep "
            "passwords out of the URL (the push authenticates with $GITHUB_TOKEN)"
        )
    raise PushError(
        f"git remote '{shown}' is not configured in {repo.working_tree_dir} "
        f"(configured remotes: {listed}); add it with `git remote add {shown} <url>` "
        "or pass --remote"
    )


def _identity_config(g: _Git) -> list[str]:
    """``-c user.*`` fallbacks when the pod's git has no identity, so the commit does not fail.

    Asked of git itself (not GitPython's reader) so $GIT_CONFIG_GLOBAL and includes count.
    """
    extra = []
    for key, fallback in (("user.name", "runpod-pipeline"), ("user.email", "runpod@localhost")):
        status, out, _ = g.run(["config", "--get", key])
        if status != 0 or not out.strip():
            extra.append(f"{key}={fallback}")
    if extra:
        logger.warning("git user.name/email not set; committing as runpod-pipeline")
    return extra


def _lfs_ready(g: _Git) -> bool:
    """True when ``git lfs env`` runs in this repo (git-lfs installed)."""
    status, _, _ = g.run(["lfs", "env"])
    return status == 0


def _tracked_by_lfs(g: _Git, rel: str) -> bool:
    """True when ``.gitattributes`` gives ``rel`` the ``filter=lfs`` attribute."""
    status, out, _ = g.run(["check-attr", "filter", "--", rel])
    return status == 0 and out.strip().endswith(": filter: lfs")


def _split_by_size(
    g: _Git, root: Path, artifacts: list[Path], max_file_mb: float
) -> tuple[list[str], list[str]]:
    """(files to add, files skipped) as repo-relative POSIX paths; big files need LFS or are out."""
    limit = max_file_mb * MIB
    keep: list[str] = []
    skipped: list[str] = []
    lfs: bool | None = None
    for path in artifacts:
        rel = path.relative_to(root).as_posix()
        size = path.stat().st_size
        if size <= limit:
            keep.append(rel)
            continue
        if lfs is None:
            lfs = _lfs_ready(g)
        if lfs and _tracked_by_lfs(g, rel):
            logger.info("%s is %.1f MiB: sending it through git-lfs", rel, size / MIB)
            keep.append(rel)
            continue
        why = (
            "git-lfs is not installed"
            if not lfs
            else ".gitattributes does not track it with filter=lfs"
        )
        logger.warning(
            "skipping %s: %.1f MiB is over the %.0f MiB per-file limit and %s; it stays local",
            rel,
            size / MIB,
            max_file_mb,
            why,
        )
        skipped.append(rel)
    return keep, skipped


def _file_leaks(path: Path, needles: Sequence[tuple[bytes, str]]) -> str | None:
    """Which secret ``path`` holds (the label of its first needle found), or ``None``.

    Read in chunks with an overlap so that a secret split across two chunks is still found.
    Text files are also searched for any URL with a password (``scheme://user:pw@``), which
    catches the password of an earlier remote that is no longer configured; binary files only
    for the exact secrets, so that random bytes never pass for a URL.
    """
    text = path.suffix.lower() in _TEXT_SUFFIXES
    overlap = max([len(n) for n, _ in needles] + [4096 if text else 1]) - 1
    tail = b""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_SCAN_CHUNK), b""):
            window = tail + chunk
            for needle, label in needles:
                if needle in window:
                    return label
            urls = _URL_PASSWORD.finditer(window) if text and b"://" in window else ()
            if any(m.group(1) != b"***" for m in urls):
                return "a URL with a password"
            tail = window[-overlap:] if overlap > 0 else b""
    return None


def _refuse_secret_files(
    root: Path, files: Sequence[str], token: tuple[str, str | None], urls: Sequence[str]
) -> None:
    """:class:`PushError` naming every file about to be committed that holds a secret.

    ``token`` is (env variable name, value); its value counts when at least ``MIN_SECRET_LEN``
    long. The remote's URLs contribute their ``user:password`` (and a long password alone).
    Called before ``git add``, so a refusal leaves nothing committed or pushed (issue 8 item 8).
    """
    label = "a password from the remote's URL"
    needles = [(s.encode("utf-8"), label) for u in urls for s in url_secrets(u)]
    name, value = token
    if value and len(value) >= MIN_SECRET_LEN:
        needles.insert(0, (value.encode("utf-8"), f"the token ${name}"))
    found = []
    for rel in files:
        label = _file_leaks(root / rel, needles)
        if label is not None:
            found.append(f"{rel} (holds {label})")
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise PushError(
            f"refusing to commit {shown}: a secret would be published in the repository; "
            "remove it from the file (or delete the file) and rerun; nothing was committed "
            "or pushed"
        )


def _format_metric(value: object) -> str:
    """Floats to 4 significant digits; everything else as ``str``."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def commit_message(
    dataset: str,
    metrics: Mapping[str, object],
    files: Sequence[str],
    skipped: Sequence[str],
    when: datetime,
) -> str:
    """Subject names dataset, UTC time and metrics; the body lists every metric and file count."""
    stamp = when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    summary = ", ".join(f"{k}={_format_metric(v)}" for k, v in metrics.items())
    subject = f"Run artifacts: {dataset} @ {stamp}" + (f" ({summary})" if summary else "")
    body = [f"dataset: {dataset}", f"time (UTC): {stamp}"]
    body += [f"{k}: {_format_metric(v)}" for k, v in metrics.items()]
    body.append(f"artifact files: {len(files)}")
    if skipped:
        body.append("skipped (over the per-file limit, kept locally): " + ", ".join(skipped))
    return subject + "\n\n" + "\n".join(body) + "\n"


@contextlib.contextmanager
def _pathspec_file(paths: Sequence[str]) -> Iterator[Path]:
    """A temp NUL-separated pathspec file (no argv length limit for thousands of event files)."""
    fd, name = tempfile.mkstemp(prefix="runpod-pathspec-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0".join(p.encode("utf-8") for p in paths))
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _commit(g: _Git, files: list[str], message: str, identity: list[str]) -> bool:
    """Force-add ``files`` and commit only them; False when they are all unchanged."""
    if not files:
        return False
    literal = ["--literal-pathspecs"]  # file names are names, never glob patterns
    with _pathspec_file(files) as spec:
        g.check(
            [*literal, "add", "--force", f"--pathspec-from-file={spec}", "--pathspec-file-nul"],
            "git add --force of the artifacts",
        )
        staged = set(g.check(["diff", "--cached", "--name-only", "-z"], "git diff").split("\0"))
        if not staged & set(files):
            return False
        # --only (implied by pathspecs): anything else the user staged stays staged, uncommitted.
        g.check(
            [
                *literal,
                "commit",
                "--only",
                "-m",
                message,
                f"--pathspec-from-file={spec}",
                "--pathspec-file-nul",
            ],
            "git commit of the artifacts",
            config=identity,
        )
    return True


def _is_non_fast_forward(stderr: str) -> bool:
    """True when git rejected the push because the remote has commits we lack."""
    return any(s in stderr for s in ("non-fast-forward", "fetch first"))


def _rebase_onto_remote(
    g: _Git, config: PushConfig, identity: list[str], protected: set[str]
) -> None:
    """Fetch the branch and rebase onto it once, refusing if that could change local artifacts.

    ``protected`` are this run's artifact paths (committed or skipped). The rebase would check out
    the remote's version of every path its new commits touch, so we stop when one of those is a
    protected path or an untracked file on disk: git treats ignored files as expendable and would
    silently overwrite e.g. a skipped oversized checkpoint.
    """
    status, _, err = g.network(["fetch", config.remote, config.branch])
    if status != 0:
        raise PushError(f"git fetch {config.remote} {config.branch} failed: {_one_line(err)}")
    upstream = g.check(["rev-parse", "FETCH_HEAD"], "git rev-parse FETCH_HEAD").strip()
    status, out, _ = g.run(["merge-base", "HEAD", upstream])
    if status != 0:
        raise PushError(
            f"{config.remote}/{config.branch} shares no history with the local HEAD; not rebasing"
        )
    diff = ["diff", "--no-renames", "--name-only", "-z", out.strip(), upstream]
    incoming = [p for p in g.check(diff, "git diff").split("\0") if p]
    tracked = set(g.check(["ls-files", "-z"], "git ls-files").split("\0"))
    root = Path(str(g.repo.working_tree_dir))
    clash = [p for p in incoming if p in protected or (p not in tracked and (root / p).exists())]
    if clash:
        shown = ", ".join(clash[:5]) + (f" and {len(clash) - 5} more" if len(clash) > 5 else "")
        raise PushError(
            f"the new commits on {config.remote}/{config.branch} change files that exist here "
            f"({shown}); not rebasing so that the local files stay as they are"
        )
    status, _, err = g.run(["rebase", "--no-autostash", upstream], config=identity)
    if status != 0:
        g.run(["rebase", "--abort"])  # puts HEAD and the tracked files back as they were
        raise PushError(f"rebase onto {config.remote}/{config.branch} failed: {_one_line(err)}")


def push_artifacts(
    repo_dir: Path, dataset: str, metrics: dict[str, object], config: PushConfig
) -> PushResult:
    """Commit this run's artifacts for ``dataset`` and push ``HEAD`` to the configured branch.

    ``repo_dir`` is the git work tree root that also holds the artifact folders. With nothing new
    to commit it still pushes and reports the current ``HEAD``. Any failure raises
    :class:`PushError` (exit code 3); the commit and the files stay local.

    Secrets (issue 8 item 8): the error text is masked (token, URL passwords of ``config.remote``
    and of the remote's configured URLs, any URL userinfo), and a file that holds the token or
    such a password is refused before anything is committed.
    """
    repo_dir = Path(repo_dir).resolve()
    token = os.environ.get(config.token_env) or None
    repo = _open_repo(repo_dir)
    urls = _remote_urls(repo, config.remote)
    secrets = tuple(s for u in {config.remote, *urls} for s in url_secrets(u))
    try:
        return _commit_and_push(repo, repo_dir, dataset, metrics, config, token, urls, secrets)
    except PushError as exc:
        # Whatever a message quotes (git's stderr, a remote, a path), no secret reaches the
        # error line, the run log or the run summary.
        raise PushError(_mask(str(exc), token, *secrets)) from None


def _commit_and_push(
    repo: git.Repo,
    repo_dir: Path,
    dataset: str,
    metrics: dict[str, object],
    config: PushConfig,
    token: str | None,
    urls: Sequence[str],
    secrets: tuple[str, ...],
) -> PushResult:
    """The body of :func:`push_artifacts` (which masks the secrets in whatever this raises)."""
    _require_remote(repo, config.remote)
    g = _Git(repo, token, config.timeout_s, secrets)
    identity = _identity_config(g)

    artifacts = collect_artifacts(repo_dir, dataset)
    if not artifacts:
        logger.warning("no artifacts found for dataset %r under %s", dataset, repo_dir)
    files, skipped = _split_by_size(g, repo_dir, artifacts, config.max_file_mb)
    _refuse_secret_files(repo_dir, files, (config.token_env, token), urls)
    message = commit_message(dataset, metrics, files, skipped, datetime.now(timezone.utc))
    if _commit(g, files, message, identity):
        logger.info("committed %d artifact files for %s", len(files), dataset)
    else:
        logger.info("artifacts for %s already committed and unchanged; pushing HEAD", dataset)
    if not repo.head.is_valid():
        raise PushError(
            f"nothing to push: {repo_dir} has no commits and no artifacts for {dataset}"
        )

    refspec = f"HEAD:refs/heads/{config.branch}"
    kept = (
        f"The commit and its {len(files)} artifact files stay local; "
        f"retry with `python runpod_train.py --dataset {dataset} --steps 8`"
    )
    rebased = False
    status, _, err = g.network(["push", config.remote, refspec])
    if status != 0 and _is_non_fast_forward(err):
        logger.info("%s/%s moved on; fetching and rebasing once", config.remote, config.branch)
        try:
            _rebase_onto_remote(g, config, identity, set(files) | set(skipped))
        except PushError as exc:
            raise PushError(f"{exc}. {kept}") from None
        rebased = True
        status, _, err = g.network(["push", config.remote, refspec])
    sha = repo.head.commit.hexsha
    if status != 0:
        raise PushError(
            f"git push of {sha[:12]} to {config.remote} {config.branch} failed: "
            f"{_one_line(err)}. {kept}"
        )
    logger.info(
        "pushed %s to %s/%s (%d artifact files, %d skipped%s)",
        sha,
        config.remote,
        config.branch,
        len(files),
        len(skipped),
        ", after a rebase" if rebased else "",
    )
    return PushResult(commit=sha, pushed=True, files=files, skipped=skipped, rebased=rebased)


def check_remote_reachable(
    repo_dir: Path, remote: str, timeout_s: int = 10, token_env: str = "GITHUB_TOKEN"
) -> tuple[bool, str]:
    """Preflight: can ``git ls-remote`` reach ``remote`` within ``timeout_s``? (ok, message).

    Uses the same askpass route as the push; never raises (a broken repo or network is a False).
    """
    token = os.environ.get(token_env) or None
    try:
        repo = _open_repo(Path(repo_dir).resolve())
        _require_remote(repo, remote)
        url = _mask(repo.remote(remote).url, token)
    except PushError as exc:
        return False, _mask(str(exc), token)
    secrets = tuple(s for u in _remote_urls(repo, remote) for s in url_secrets(u))
    g = _Git(repo, token, timeout_s, secrets)
    status, out, err = g.network(["ls-remote", "--heads", remote])
    if status != 0:
        return False, f"remote {remote} ({url}) not reachable: {_one_line(err)}"
    heads = len([ln for ln in out.splitlines() if ln.strip()])
    return True, f"remote {remote} ({url}) reachable ({heads} branch heads)"


# ---------------------------------------------------------------- CLI


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
    """Arguments of ``python runpod_github.py`` (usage errors exit 1: issue 8 item 12)."""
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
        # live run is still writing (issue 8 item 14); a no-op when the driver already holds it.
        with step_lock(paths, name):
            push_artifacts(paths.root, name, dict(args.metric or []), config)
        return EXIT_OK

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
