"""A local bare mirror of the kernel-agent repository, fed by fetching pushed commits."""

from __future__ import annotations

import fcntl
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ka.runner import run

_URL = re.compile(r"^(https?://|ssh://|git://|file://|/|[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:)")
_SAFE_REF = re.compile(r"[^A-Za-z0-9._/-]")


class FetchError(Exception):
    """The commit could not be fetched."""


@contextmanager
def _locked(mirror: Path) -> Iterator[None]:
    mirror.parent.mkdir(parents=True, exist_ok=True)
    with open(mirror.parent / f"{mirror.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # one init or fetch at a time: parallel ones race on files and refs
        yield


def has_commit(mirror: Path, sha: str) -> bool:
    """True when ``sha`` is a commit in the mirror."""
    return run(["git", "-C", mirror, "cat-file", "-e", f"{sha}^{{commit}}"], check=False).ok


def fetch(mirror: Path, url: str, ref: str, sha: str) -> None:
    """Make ``sha`` present in ``mirror``, fetching ``ref`` (then ``sha`` itself) from ``url``."""
    if not _URL.match(url):
        raise FetchError(f"refusing to fetch from {url!r}: not a git URL or absolute path")
    with _locked(mirror):
        if not mirror.exists():
            run(["git", "init", "--quiet", "--bare", mirror])
        if has_commit(mirror, sha):
            return
        local = "refs/ka/" + _SAFE_REF.sub("_", ref.removeprefix("refs/"))
        attempts = [f"+{ref}:{local}", sha]
        errors = []
        for refspec in attempts:
            res = run(["git", "-C", mirror, "-c", "protocol.ext.allow=never", "fetch", "--quiet", "--no-tags",
                       "--", url, refspec], check=False, timeout=600)
            if has_commit(mirror, sha):
                return
            errors.append(res.err().strip().splitlines()[-1:] or ["fetched, but the commit is not there"])
        raise FetchError(f"cannot fetch {sha[:12]} ({ref}) from {url}: {errors[-1][0]}")
