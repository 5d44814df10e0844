"""Secrets: which values count, masking them in text and log records, finding them in files.

Used by the entry points and preflight (masked log records and rows) and by the push step
(:mod:`pipeline.publish.push`: URL passwords, refusing to commit a file that holds a secret). A leaf
module with no third-party imports, so preflight can use it where GitPython is missing. Moved
here from ``pipeline/run/preflight.py`` and the script ``runpod_github.py`` (library code lives
in ``pipeline/``, nothing there imports a script).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY)", re.IGNORECASE)
MIN_SECRET_LEN = 6
"""Shorter values (``"1"``, ``"true"``) would mask ordinary words; real tokens are much longer."""


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of ``GITHUB_TOKEN`` and of any variable named like a secret, longest first."""
    env = os.environ if environ is None else environ
    found = {
        value
        for name, value in env.items()
        if (name == "GITHUB_TOKEN" or _SECRET_NAME.search(name)) and len(value) >= MIN_SECRET_LEN
    }
    return sorted(found, key=len, reverse=True)


_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/\s?#]*@")
"""The ``user:password@`` part of a URL, up to its last ``@`` before the host (a password may
hold a raw ``@``); the scheme is kept."""


def mask_url_userinfo(text: str) -> str:
    """``text`` with the userinfo of every URL replaced: ``https://bob:pw@host/r`` ->
    ``https://***@host/r`` (a password in ``git_remote`` once reached the logs)."""
    return _URL_USERINFO.sub(r"\1***@", text) if "@" in text else text


def mask_secrets(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret and the userinfo of every URL replaced by ``***``."""
    for s in secrets:
        if s in text:
            text = text.replace(s, "***")
    return mask_url_userinfo(text)


# A URL that carries a password (``scheme://user:password@``); a masked one (``***@``) has none.
_URL_PASSWORD = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s/@:'\"<>]+:([^\s/@'\"<>]+)@")
# Files read as text when looking for a URL password (binary files are searched for the exact
# secrets only, so random bytes never look like a URL).
_TEXT_SUFFIXES = frozenset({".log", ".json", ".csv", ".txt", ".yaml", ".yml", ".md", ".toml"})
_SCAN_CHUNK = 8 * 1024 * 1024
"""Bytes read per step when scanning a file (8 MiB)."""


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries: ``user:password`` and the password (raw and percent-decoded).

    A password shorter than ``MIN_SECRET_LEN`` is listed only as part of ``user:password`` (the
    bare word would match ordinary text); the ``scheme://user:password@`` form is masked by
    the git side's userinfo masking whatever its length.
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


def file_leaks(path: Path, needles: Sequence[tuple[bytes, str]]) -> str | None:
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
