"""A local bare mirror of the kernel-agent repository, fed by fetching pushed commits."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

from ka.errors import KaError
from ka.io.runner import CommandTimedOut, Completed, run

if TYPE_CHECKING:
    from bot.config import Config

log = logging.getLogger(__name__)
_URL = re.compile(r"^(https?://|ssh://|git://|file://|/|[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:)")
_REMOTE = re.compile(r"^(https?://|ssh://|git://|[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:)")


class FetchError(KaError):
    """The commit could not be fetched (its message says why, in public words: no token, no stack)."""


def redact(url: str) -> str:
    """``url`` without a password or token in it, for logs, pages and statuses."""
    parts = urlsplit(url)
    if parts.password is None and not (parts.username and parts.scheme in ("http", "https")):
        return url
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, f"***@{host}" + (f":{parts.port}" if parts.port else ""), parts.path,
                       parts.query, parts.fragment))


@contextmanager
def _locked(mirror: Path, shared: bool = False, wait: float | None = None) -> Iterator[bool]:
    """Fetches hold the mirror shared (they run side by side); creating it and tidying it, alone.

    With ``wait``, give up after that many seconds and yield False (the lock is not held).
    """
    mirror.parent.mkdir(parents=True, exist_ok=True)
    with open(mirror.parent / f"{mirror.name}.lock", "a") as fh:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if wait is None:
            fcntl.flock(fh, mode)
            yield True
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fh, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.5)
        yield True


def clone_url(configured: str | None, delivered: str | None) -> str:
    """Where to fetch from: ``KA_REPO_URL``, else the delivery's clone URL, which must be a network URL."""
    url = configured or delivered
    if not isinstance(url, str) or not url:
        raise FetchError("no clone URL: the delivery had none and KA_REPO_URL is unset")
    if not configured and not is_remote(url):
        raise FetchError(f"the delivery's clone URL {redact(url)!r} is not a remote URL; "
                         "set KA_REPO_URL to fetch from a local path")
    return url


def is_remote(url: str) -> bool:
    """True for network URLs; local paths and file:// come only from the bot's own settings."""
    return bool(_REMOTE.match(url))


def fetch(mirror: Path, url: str, ref: str, sha: str, idle_timeout: float = 30, timeout: float = 300) -> None:
    """Make ``sha`` present in ``mirror``, with every object it needs, fetching ``ref`` (then ``sha``
    itself) from ``url``; pin it, so that it stays for at least :data:`PIN_DAYS` after this call.

    A commit counts as present only when its pin exists: git writes a ref only once every object
    under it is in and checked, while the objects of a fetch still running appear one by one,
    the commit first.  Fetches for different commits run side by side (each into a ref of its
    own), so one slow or hanging remote delays only its own job.  An http(s) remote that moves
    less than a byte a second for ``idle_timeout`` seconds is given up, and any fetch is stopped
    after ``timeout``.
    """
    if not _URL.match(url) or any(ord(c) < 0x20 for c in url):
        raise FetchError(f"refusing to fetch from {redact(url)!r}: not a git URL or absolute path")
    _init(mirror)
    with _locked(mirror, shared=True):
        if has_commit(mirror, sha):
            _pin(mirror, sha)  # fetched for another job, perhaps: this one needs it kept from now on
            return
        scratch = f"refs/ka/fetch/{uuid.uuid4().hex}"
        errors = []
        try:
            for refspec in (f"+{ref}:{scratch}", f"+{sha}:{scratch}"):
                res = _git_fetch(mirror, url, refspec, idle_timeout, timeout, sha)
                if _reaches(mirror, scratch, sha):
                    _pin(mirror, sha)
                    return
                errors.append(res.err().strip().splitlines()[-1:] or ["fetched, but the commit is not there"])
        finally:
            run(["git", "-C", mirror, "update-ref", "-d", scratch], check=False)
    raise FetchError(f"cannot fetch {sha[:12]} ({ref}) from {redact(url)}: {redact_text(errors[-1][0], url)}")


def _init(mirror: Path) -> None:
    """Create the mirror once, whole: made aside and renamed into place, so nobody sees half of it."""
    if (mirror / "HEAD").exists():
        return
    with _locked(mirror):
        if (mirror / "HEAD").exists():
            return
        scratch = mirror.with_name(f"{mirror.name}.{uuid.uuid4().hex}.new")
        run(["git", "init", "--quiet", "--bare", scratch])
        scratch.rename(mirror)


def _reaches(mirror: Path, ref: str, sha: str) -> bool:
    """True when ``ref`` exists and ``sha`` is it or one of its ancestors: all its objects are in."""
    if not run(["git", "-C", mirror, "rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], check=False).ok:
        return False
    return run(["git", "-C", mirror, "merge-base", "--is-ancestor", sha, ref], check=False).ok


def fetch_commit(config: Config, delivered_url: str | None, ref: str, sha: str) -> Path:
    """:func:`fetch` into the bot's mirror (``<state>/mirror.git``) with the configured URL and time limits;
    the mirror's path."""
    path = config.state_dir / "mirror.git"
    fetch(path, clone_url(config.repo_url, delivered_url), ref, sha, idle_timeout=config.fetch_idle_timeout,
          timeout=config.fetch_timeout)
    return path


#: how long a fetched commit stays pinned after its last fetch, whatever the jobs say: a command
#: reads the commit it fetched before any job names it
PIN_DAYS = 1


def has_commit(mirror: Path, sha: str) -> bool:
    """True when ``sha`` is in ``mirror`` with every object it needs (its pin exists)."""
    return _reaches(mirror, f"refs/ka/commits/{sha}", sha)


def _pin(mirror: Path, sha: str) -> None:
    """Keep ``sha`` reachable while jobs need it, and say when it was last wanted (the ref file's time)."""
    run(["git", "-C", mirror, "update-ref", f"refs/ka/commits/{sha}", sha])
    with contextlib.suppress(OSError):
        os.utime(mirror / "refs" / "ka" / "commits" / sha)


def maintain(mirror: Path, keep: set[str], now: float | None = None, wait: float = 60.0) -> int:
    """Unpin the fetched commits no job needs any more, and let git pack and prune the rest.

    Every fetch pins its commit (``refs/ka/commits/<sha>``) so that a running job's objects
    stay reachable; pull requests from forks would otherwise grow the mirror for good.  A pin
    goes when no job in ``keep`` names its commit and nothing fetched it for :data:`PIN_DAYS`.
    This holds the mirror alone: it waits for running fetches (``wait`` seconds at most, then
    leaves it for the next time), and fetches wait for it.  Returns how many pins were dropped.
    """
    if not (mirror / "HEAD").exists():
        return 0
    since = (time.time() if now is None else now) - PIN_DAYS * 86400
    with _locked(mirror, wait=wait) as held:
        if not held:
            log.info("mirror busy with fetches for %gs: tidied at the next sweep", wait)
            return 0
        pins = run(["git", "-C", mirror, "for-each-ref", "--format=%(refname)", "refs/ka/commits/"]).text().split()
        stale = [p for p in pins if p.rsplit("/", 1)[-1] not in keep and _last_wanted(mirror, p) < since]
        if stale:
            run(["git", "-C", mirror, "update-ref", "--stdin"], input="".join(f"delete {p}\n" for p in stale).encode())
        # refs stay loose files, whose times say when a commit was last fetched (_last_wanted); gc runs
        # in the foreground, inside this lock, never beside a fetch (fetches run with gc.auto=0)
        run(["git", "-C", mirror, "-c", "gc.packRefs=false", "-c", "gc.autoDetach=false", "gc", "--auto", "--quiet"],
            check=False, timeout=3600)
    return len(stale)


def _last_wanted(mirror: Path, ref: str) -> float:
    try:
        return (mirror / ref).stat().st_mtime
    except OSError:
        return 0.0  # a packed ref (an older mirror): as old as can be


def _git_fetch(mirror: Path, url: str, refspec: str, idle_timeout: float, timeout: float, sha: str) -> Completed:
    config = ["-c", "protocol.ext.allow=never", "-c", "gc.auto=0", "-c", "fetch.writeCommitGraph=false",
              "-c", "http.lowSpeedLimit=1", "-c", f"http.lowSpeedTime={max(1, int(idle_timeout))}"]
    bare, env = git_credentials(url)
    try:
        return run(["git", "-C", mirror, *config, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                    "--", bare, refspec], env=env, check=False, timeout=timeout)
    except CommandTimedOut:
        raise FetchError(f"fetching {sha[:12]} from {redact(url)} took over {timeout:g}s") from None


def git_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without its user and password, and the environment that hands them to git instead.

    Any user on the machine can read a process's command line (``ps``), only its owner its
    environment: an http(s) URL's credentials become an ``Authorization`` header that git sends
    to that scheme, host and port alone (``http.<url>.extraHeader``, through ``GIT_CONFIG_*``).
    Git never prompts: a wrong token fails the fetch instead of waiting for a terminal.
    """
    env = {"GIT_TERMINAL_PROMPT": "0"}
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or (parts.username is None and parts.password is None):
        return url, env
    place = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    basic = base64.b64encode(f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()).decode()
    env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"http.{parts.scheme}://{place}/.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"})
    return urlunsplit((parts.scheme, place, parts.path, parts.query, parts.fragment)), env


def redact_text(text: str, url: str) -> str:
    """``text`` with ``url`` (as git may echo it) replaced by its redacted form."""
    return text.replace(url, redact(url))
