"""Running git for the push step: one git command at a time, masked, with the token via askpass.

The token reaches git only through a ``GIT_ASKPASS`` helper script that echoes it from an
environment variable set in the network subprocess alone (:func:`askpass_env`); large-transfer
settings travel as ``git -c key=value`` (:data:`PUSH_CONFIG`), never in config; every text git
prints is masked (:func:`mask_text`). Split out of ``pipeline/publish/push.py`` (the git plumbing
moved out of the script ``runpod_github.py`` into ``pipeline/``; one file stays under ~500 lines).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import git

from pipeline.common import EXIT_PUSH, PipelineError
from pipeline.secrets import url_secrets

logger = logging.getLogger(__name__)

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

_URL_USERINFO = re.compile(r"(\w+://)[^/@\s]+@")
"""The ``user:pass@`` part of a URL, up to its first ``@``. Kept apart from
:func:`pipeline.secrets.mask_url_userinfo` on purpose: this one also masks a userinfo that holds a
raw ``?`` or ``#`` (a password character that ``urlsplit`` cuts off, so :func:`url_secrets` misses
it)."""


class PushError(PipelineError):
    """Committing or pushing the artifacts failed; they stay on local disk (exit code 3)."""

    exit_code = EXIT_PUSH


def mask_text(text: str, *secrets: str | None) -> str:
    """``text`` with each secret and any ``user:pass@`` part of a URL replaced by ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _URL_USERINFO.sub(r"\1***@", text)


def remote_urls(repo: git.Repo, remote: str) -> list[str]:
    """``remote`` itself when it is a URL, else its configured fetch and push URLs."""
    if "://" in remote:
        return [remote]
    urls = []
    reader = repo.config_reader()
    for key in ("url", "pushurl"):
        with contextlib.suppress(Exception):  # missing section/option: no URL of that kind
            urls += list(reader.get_values(f'remote "{remote}"', key))
    return [str(u) for u in urls]


def one_line(stderr: str, limit: int = 600) -> str:
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
class GitRunner:
    """Runs git in one repo with masking, optional ``-c`` settings, env and a timeout."""

    repo: git.Repo
    token: str | None
    timeout_s: float | None
    secrets: tuple[str, ...] = ()
    """Besides the token, what to mask in git's output (URL passwords)."""

    def mask(self, text: str) -> str:
        """``text`` with the token, :attr:`secrets` and URL userinfo masked."""
        return mask_text(text, self.token, *self.secrets)

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
        # Our own wait rather than GitPython's kill_after_timeout: its watchdog is a non-daemon
        # timer that an interrupt never cancels, so Ctrl-C during a push left the process alive
        # for the whole timeout (600 s). Here an interrupt stops git at once.
        try:
            # A process group of its own: stopping it also stops what git started (ssh, a
            # remote helper), which would otherwise hold the output pipes open.
            handle = self.repo.git.execute(
                argv, env=dict(env or {}), as_process=True, start_new_session=True
            )
        except git.GitCommandError as exc:  # git not found
            return 1, "", self.mask(str(exc))
        proc = handle.proc
        assert proc is not None
        timeout = self.timeout_s if network else None
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return 1, "", self.mask(f"git {args[0]}: no answer within {timeout:g} s (stopped)")
        except BaseException:  # Ctrl-C, SIGTERM: stop git now and pass the interrupt on
            _stop(proc)
            raise
        return int(proc.returncode or 0), _text(out), self.mask(_text(err))

    def check(self, args: Sequence[str], what: str, *, config: Sequence[str] = ()) -> str:
        """Like :meth:`run` but raise :class:`PushError` (``what`` failed: stderr) on failure."""
        status, out, err = self.run(args, config=config)
        if status != 0:
            raise PushError(f"{what} failed in {self.repo.working_tree_dir}: {one_line(err)}")
        return out

    def network(self, args: Sequence[str]) -> tuple[int, str, str]:
        """Run a command that talks to the remote, with the askpass env alive only meanwhile."""
        with askpass_env(self.token) as env:
            return self.run(args, env=env, network=True)


def _text(data: bytes | str | None) -> str:
    """git's output as text without its final newline (as GitPython returns it)."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else (data or "")
    return text[:-1] if text.endswith("\n") else text


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` (git) and reap it; never waits more than a few seconds."""
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)  # git and its children (its own session)
    with contextlib.suppress(OSError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        proc.communicate(timeout=5)


def open_repo(repo_dir: Path) -> git.Repo:
    """The git repo whose work tree root is ``repo_dir``, or :class:`PushError`."""
    try:
        return git.Repo(repo_dir)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise PushError(
            f"{repo_dir} is not the root of a git repository (no .git there); clone the project "
            "with git or run `git init` and add a remote before pushing artifacts"
        ) from None


def require_remote(repo: git.Repo, remote: str) -> None:
    """Raise :class:`PushError` naming ``remote`` and the configured ones when it is missing.

    ``remote`` is shown masked: a URL given as the remote may carry a password.
    """
    names = [r.name for r in repo.remotes]
    if remote in names:
        return
    listed = ", ".join(names) if names else "none"
    shown = mask_text(remote, *url_secrets(remote))
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


def identity_config(g: GitRunner) -> list[str]:
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
