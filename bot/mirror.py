"""A local bare mirror of the kernel-agent repository, fed by fetching pushed commits."""

from __future__ import annotations

import fcntl
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ka.runner import run

_URL = re.compile(r"^(https?://|ssh://|git://|file://|/|[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:)")
_REMOTE = re.compile(r"^(https?://|ssh://|git://|[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:)")
_SAFE_REF = re.compile(r"[^A-Za-z0-9._/-]")


class FetchError(Exception):
    """The commit could not be fetched."""


def redact(url: str) -> str:
    """``url`` without a password or token in it, for logs, pages and statuses."""
    parts = urlsplit(url)
    if parts.password is None and not (parts.username and parts.scheme in ("http", "https")):
        return url
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, f"***@{host}" + (f":{parts.port}" if parts.port else ""), parts.path,
                       parts.query, parts.fragment))


@contextmanager
def _locked(mirror: Path) -> Iterator[None]:
    mirror.parent.mkdir(parents=True, exist_ok=True)
    with open(mirror.parent / f"{mirror.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # one init or fetch at a time: parallel ones race on files and refs
        yield


def is_remote(url: str) -> bool:
    """True for network URLs; local paths and file:// come only from the bot's own settings."""
    return bool(_REMOTE.match(url))


def has_commit(mirror: Path, sha: str) -> bool:
    """True when ``sha`` is a commit in the mirror."""
    return run(["git", "-C", mirror, "cat-file", "-e", f"{sha}^{{commit}}"], check=False).ok


def fetch(mirror: Path, url: str, ref: str, sha: str) -> None:
    """Make ``sha`` present in ``mirror``, fetching ``ref`` (then ``sha`` itself) from ``url``."""
    if not _URL.match(url):
        raise FetchError(f"refusing to fetch from {redact(url)!r}: not a git URL or absolute path")
    with _locked(mirror):
        if not mirror.exists():
            run(["git", "init", "--quiet", "--bare", mirror])
        if has_commit(mirror, sha):
            return
        local = "refs/ka/" + _SAFE_REF.sub("_", ref.removeprefix("refs/"))
        attempts = [f"+{ref}:{local}", sha]
        errors = []
        for refspec in attempts:
            try:
                res = run(["git", "-C", mirror, "-c", "protocol.ext.allow=never", "fetch", "--quiet", "--no-tags",
                           "--", url, refspec], check=False, timeout=600)
            except subprocess.TimeoutExpired:
                raise FetchError(f"fetching {sha[:12]} from {redact(url)} took over 10 minutes") from None
            if has_commit(mirror, sha):
                return
            errors.append(res.err().strip().splitlines()[-1:] or ["fetched, but the commit is not there"])
        raise FetchError(f"cannot fetch {sha[:12]} ({ref}) from {redact(url)}: {redact_text(errors[-1][0], url)}")


def redact_text(text: str, url: str) -> str:
    """``text`` with ``url`` (as git may echo it) replaced by its redacted form."""
    return text.replace(url, redact(url))
