"""Step 8's library: commit this run's artifacts for one dataset and push them to the git remote.

The artifact folders are git-ignored (a plain ``git add -A`` must never sweep a 2 GB checkpoint into
a commit), so this step force-adds exactly the files the dataset's run manifest lists
(:func:`collect_artifacts`). Three rules shape the code:

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

Running one git command (askpass, masking, timeouts) lives in :mod:`pipeline.publish.git`, finding
secrets in :mod:`pipeline.secrets`. The CLI is the script ``runpod_github.py``; the driver
``runpod_train.py`` calls :func:`push_artifacts` (library code lives in ``pipeline/``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import git

from pipeline.common import Paths
from pipeline.publish.git import (
    GitRunner,
    PushError,
    identity_config,
    mask_text,
    one_line,
    open_repo,
    remote_urls,
    require_remote,
)
from pipeline.secrets import MIN_SECRET_LEN, file_leaks, url_secrets
from pipeline.store.artifacts import Artifacts
from pipeline.store.manifest import ManifestEntry, ManifestError

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
"""GitHub's per-file limit is 100 MiB, so "MB" here means MiB."""


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


def collect_artifacts(root: Path, dataset: str) -> list[Path]:
    """The files step 8 commits for ``dataset`` under the project root ``root``: sorted, absolute.

    Exactly what the dataset's run manifest lists
    (:meth:`pipeline.store.manifest.Manifest.push_files`:
    the existing files of pushed kinds, plus the manifest itself) instead of globbing the artifact
    folders. Symlinks are left out, as the glob did. Entries whose file is gone or was rewritten
    since it was recorded are logged, not fatal.

    Raises:
        PushError: no manifest yet, or one no step has recorded an artifact in, or an unreadable
            one (the message says how to get a manifest).
    """
    manifest = Artifacts(Paths.from_root(root), dataset).manifest()
    try:
        files = manifest.push_files()
        missing, changed = manifest.missing(), manifest.changed()
    except ManifestError as exc:
        raise PushError(str(exc)) from None
    for entry in missing:
        logger.warning("%s: listed in %s but gone; not pushed", entry.path, manifest.path.name)
    for entry in changed:
        logger.warning(
            "%s: changed since step %s recorded it; pushing the file as it is now",
            entry.path,
            entry.step,
        )
    files = [f for f in files if not f.is_symlink()]
    _refuse_oracle_agents(manifest.entries(kind="ppo_meta"), Path(root))
    return files


def _refuse_oracle_agents(meta_entries: list[ManifestEntry], root: Path) -> None:
    """An agent trained on the oracle source saw the future (a diagnostic of the RL setup only):
    refuse to publish it, in one line naming the model file's meta."""
    for entry in meta_entries:
        path = root / entry.path
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("prediction_source") == "oracle":
            raise PushError(
                f"refusing to push {path.name}: its agent was trained on the oracle source "
                "(ORACLE: uses future data, diagnostic only); rerun step 7 with "
                "ppo_prediction_source = walk_forward before pushing"
            )


# ---------------------------------------------------------------- committing and pushing


def _lfs_ready(g: GitRunner) -> bool:
    """True when ``git lfs env`` runs in this repo (git-lfs installed)."""
    status, _, _ = g.run(["lfs", "env"])
    return status == 0


def _tracked_by_lfs(g: GitRunner, rel: str) -> bool:
    """True when ``.gitattributes`` gives ``rel`` the ``filter=lfs`` attribute."""
    status, out, _ = g.run(["check-attr", "filter", "--", rel])
    return status == 0 and out.strip().endswith(": filter: lfs")


def _split_by_size(
    g: GitRunner, root: Path, artifacts: list[Path], max_file_mb: float
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


def _refuse_secret_files(
    root: Path, files: Sequence[str], token: tuple[str, str | None], urls: Sequence[str]
) -> None:
    """:class:`PushError` naming every file about to be committed that holds a secret.

    ``token`` is (env variable name, value); its value counts when at least ``MIN_SECRET_LEN``
    long. The remote's URLs contribute their ``user:password`` (and a long password alone).
    Called before ``git add``, so a refusal leaves nothing committed or pushed.
    """
    label = "a password from the remote's URL"
    needles = [(s.encode("utf-8"), label) for u in urls for s in url_secrets(u)]
    name, value = token
    if value and len(value) >= MIN_SECRET_LEN:
        needles.insert(0, (value.encode("utf-8"), f"the token ${name}"))
    found = []
    for rel in files:
        leak = file_leaks(root / rel, needles)
        if leak is not None:
            found.append(f"{rel} (holds {leak})")
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


def _commit(g: GitRunner, files: list[str], message: str, identity: list[str]) -> bool:
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
    g: GitRunner, config: PushConfig, identity: list[str], protected: set[str]
) -> None:
    """Fetch the branch and rebase onto it once, refusing if that could change local artifacts.

    ``protected`` are this run's artifact paths (committed or skipped). The rebase would check out
    the remote's version of every path its new commits touch, so we stop when one of those is a
    protected path or an untracked file on disk: git treats ignored files as expendable and would
    silently overwrite e.g. a skipped oversized checkpoint.
    """
    status, _, err = g.network(["fetch", config.remote, config.branch])
    if status != 0:
        raise PushError(f"git fetch {config.remote} {config.branch} failed: {one_line(err)}")
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
        raise PushError(f"rebase onto {config.remote}/{config.branch} failed: {one_line(err)}")


MessageFor = Callable[[list[str], list[str]], str]
"""``(files committed, files skipped) -> commit message``."""


def push_artifacts(
    repo_dir: Path, dataset: str, metrics: dict[str, object], config: PushConfig
) -> PushResult:
    """Commit this run's artifacts for ``dataset`` and push ``HEAD`` to the configured branch.

    ``repo_dir`` is the git work tree root that also holds the artifact folders. With nothing new
    to commit it still pushes and reports the current ``HEAD``. Any failure raises
    :class:`PushError` (exit code 3); the commit and the files stay local.

    Secrets: the error text is masked (token, URL passwords of ``config.remote`` and of the
    remote's configured URLs, any URL userinfo), and a file that holds the token or such a password
    is refused before anything is committed.
    """

    def message(files: list[str], skipped: list[str]) -> str:
        return commit_message(dataset, metrics, files, skipped, datetime.now(timezone.utc))

    return push_datasets(repo_dir, [dataset], config, message)


def push_datasets(
    repo_dir: Path,
    datasets: Sequence[str],
    config: PushConfig,
    message_for: MessageFor,
    extra_files: Sequence[Path] = (),
) -> PushResult:
    """:func:`push_artifacts` over several datasets in ONE commit (one run over many datasets):
    what each dataset's run manifest lists, plus ``extra_files`` (e.g. the cross-dataset table),
    with the commit message ``message_for(files, skipped)``. The same rules: masked errors, secret
    files refused, oversized files left out, one rebase; a failed push's retry hint names the first
    dataset (its ``--steps 8`` pushes ``HEAD``, this commit)."""
    repo_dir = Path(repo_dir).resolve()
    token = os.environ.get(config.token_env) or None
    repo = open_repo(repo_dir)
    urls = remote_urls(repo, config.remote)
    secrets = tuple(s for u in {config.remote, *urls} for s in url_secrets(u))
    try:
        return _commit_and_push(
            repo, repo_dir, datasets, extra_files, message_for, config, token, urls, secrets
        )
    except PushError as exc:
        # Whatever a message quotes (git's stderr, a remote, a path), no secret reaches the
        # error line, the run log or the run summary.
        raise PushError(mask_text(str(exc), token, *secrets)) from None


def _commit_and_push(
    repo: git.Repo,
    repo_dir: Path,
    datasets: Sequence[str],
    extra_files: Sequence[Path],
    message_for: MessageFor,
    config: PushConfig,
    token: str | None,
    urls: Sequence[str],
    secrets: tuple[str, ...],
) -> PushResult:
    """The body of :func:`push_datasets` (which masks the secrets in whatever this raises)."""
    require_remote(repo, config.remote)
    g = GitRunner(repo, token, config.timeout_s, secrets)
    identity = identity_config(g)
    files, skipped = _commit_artifacts(
        g, repo_dir, datasets, extra_files, message_for, config, urls, identity
    )
    return _push_head(g, datasets[0], config, identity, files, skipped)


def _commit_artifacts(
    g: GitRunner,
    repo_dir: Path,
    datasets: Sequence[str],
    extra_files: Sequence[Path],
    message_for: MessageFor,
    config: PushConfig,
    urls: Sequence[str],
    identity: list[str],
) -> tuple[list[str], list[str]]:
    """Phase 1 of the push: commit the artifacts that fit; (files committed, files skipped).

    Refuses (before ``git add``) a dataset whose steps recorded nothing in its run manifest, a file
    holding a secret, and a repo with nothing to push.
    """
    found: set[Path] = set()
    for dataset in datasets:
        found.update(collect_artifacts(repo_dir, dataset))
    found.update(Path(p).resolve() for p in extra_files if Path(p).is_file())
    files, skipped = _split_by_size(g, repo_dir, sorted(found), config.max_file_mb)
    _refuse_secret_files(repo_dir, files, (config.token_env, g.token), urls)
    what = datasets[0] if len(datasets) == 1 else f"{len(datasets)} datasets"
    if _commit(g, files, message_for(files, skipped), identity):
        logger.info("committed %d artifact files for %s", len(files), what)
    else:
        logger.info("artifacts for %s already committed and unchanged; pushing HEAD", what)
    if not g.repo.head.is_valid():
        raise PushError(f"nothing to push: {repo_dir} has no commits and no artifacts for {what}")
    return files, skipped


def _push_head(
    g: GitRunner,
    dataset: str,
    config: PushConfig,
    identity: list[str],
    files: list[str],
    skipped: list[str],
) -> PushResult:
    """Phase 2 of the push: push ``HEAD``; when the remote moved on, rebase once and retry."""
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
    sha = g.repo.head.commit.hexsha
    if status != 0:
        raise PushError(
            f"git push of {sha[:12]} to {config.remote} {config.branch} failed: "
            f"{one_line(err)}. {kept}"
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
        repo = open_repo(Path(repo_dir).resolve())
        require_remote(repo, remote)
        url = mask_text(repo.remote(remote).url, token)
    except PushError as exc:
        return False, mask_text(str(exc), token)
    secrets = tuple(s for u in remote_urls(repo, remote) for s in url_secrets(u))
    g = GitRunner(repo, token, timeout_s, secrets)
    status, out, err = g.network(["ls-remote", "--heads", remote])
    if status != 0:
        return False, f"remote {remote} ({url}) not reachable: {one_line(err)}"
    heads = len([ln for ln in out.splitlines() if ln.strip()])
    return True, f"remote {remote} ({url}) reachable ({heads} branch heads)"
