"""The bot's mirror: fetching pinned commits, and letting go of them."""

from __future__ import annotations

import base64
import fcntl
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot import mirror
from ka.fleet.repo import GitTree
from ka.io.runner import run
from tests.support.fleet import MakeRepo, manifest
from tests.support.kernel import git


def test_maintain_unpins_what_no_job_needs(make_repo: MakeRepo, tmp_path: Path) -> None:
    root = make_repo({"h": manifest(["soc/x"])}, {"patches/soc/x.patch": "x"})
    first = git(root, "rev-parse", "HEAD").decode().strip()
    (root / "patches/soc/x.patch").write_text("y")
    git(root, "commit", "-qam", "second")
    second = git(root, "rev-parse", "HEAD").decode().strip()
    bare = tmp_path / "mirror.git"
    for sha in (first, second):
        mirror.fetch(bare, str(root), "refs/heads/main", sha)
    pins = git(bare, "for-each-ref", "--format=%(refname)", "refs/ka/").decode().split()
    assert pins == [f"refs/ka/commits/{first}", f"refs/ka/commits/{second}"]  # no scratch ref left
    assert mirror.maintain(bare, keep={second}) == 0  # fetched a moment ago: kept for a day
    assert mirror.maintain(bare, keep={second}, now=time.time() + 2 * 86400) == 1
    assert git(bare, "for-each-ref", "--format=%(refname)", "refs/ka/").decode().split() == \
        [f"refs/ka/commits/{second}"]
    assert mirror.has_commit(bare, second)


def _big_commit(root: Path, n: int) -> str:
    """A commit whose objects take a while to arrive: a 4 MiB patch that does not compress."""
    (root / "patches/soc/x.patch").write_bytes(os.urandom(2 << 20).hex().encode() + f"\n{n}\n".encode())
    git(root, "commit", "-qam", f"big {n}")
    return git(root, "rev-parse", "HEAD").decode().strip()


def _fetch_twice_at_once(bare: Path, root: Path, sha: str) -> list[BaseException]:
    """A job fetches ``sha`` while a command finds the commit there, fetches it too and reads it."""
    failures: list[BaseException] = []
    fetched = threading.Event()

    def job() -> None:
        mirror.fetch(bare, str(root), "refs/heads/main", sha)
        fetched.set()

    def command() -> None:  # what the acceptance does: fetch (or find) the commit, then read it
        while not fetched.is_set():
            if run(["git", "-C", bare, "cat-file", "-e", sha], check=False).ok:
                try:
                    mirror.fetch(bare, str(root), "refs/heads/main", sha)
                    GitTree(bare, sha).read("patches/soc/x.patch")
                except BaseException as exc:
                    failures.append(exc)
                return

    threads = [threading.Thread(target=job), threading.Thread(target=command)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return failures


def test_a_commit_is_read_only_once_all_its_objects_are_in(make_repo: MakeRepo, tmp_path: Path) -> None:
    """Found in CI: a command accepted while a job fetched the same commit read a missing object.

    Objects of a small fetch are written loose one by one, the commit first: a second fetcher
    that took "the commit exists" for "the commit is here" read its tree or blobs too early
    (before the fix, every round of this loop failed).
    """
    root = make_repo({"h": manifest(["soc/x"])}, {"patches/soc/x.patch": "x"})
    bare = tmp_path / "mirror.git"
    mirror.fetch(bare, str(root), "refs/heads/main", git(root, "rev-parse", "HEAD").decode().strip())
    for n in range(6):
        failures = _fetch_twice_at_once(bare, root, _big_commit(root, n))
        assert not failures, f"round {n}: {failures[0]!r}"


def test_maintain_keeps_a_commit_fetched_lately_even_with_no_job(make_repo: MakeRepo, tmp_path: Path) -> None:
    """A command reads the commit it fetched before its job exists: the hourly tidy must not take it away."""
    root = make_repo({"h": manifest(["soc/x"])}, {"patches/soc/x.patch": "x"})
    sha = git(root, "rev-parse", "HEAD").decode().strip()
    bare = tmp_path / "mirror.git"
    mirror.fetch(bare, str(root), "refs/heads/main", sha)
    assert mirror.maintain(bare, keep=set()) == 0
    assert git(bare, "for-each-ref", "--format=%(refname)", "refs/ka/").decode().split() == [f"refs/ka/commits/{sha}"]
    assert mirror.maintain(bare, keep=set(), now=time.time() + 2 * 86400) == 1


def _argv_holding(secret: bytes) -> list[str]:
    """The command lines of this machine's processes that hold ``secret`` (anyone may read them)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if secret in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_the_forge_token_reaches_git_through_its_environment_never_its_command_line(tmp_path: Path) -> None:
    """KA_REPO_URL may carry a token: git gets it as a header from the environment, not in argv (ps shows argv)."""
    token = f"tok-{uuid.uuid4().hex}"
    seen: dict[str, list[str]] = {"auth": [], "argv": []}

    class Forge(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # git waits for this answer: its processes are alive while we look
            seen["auth"].append(self.headers.get("Authorization", ""))
            seen["argv"] += _argv_holding(token.encode())
            asked = not self.headers.get("Authorization")
            self.send_response(401 if asked else 404)  # as Forgejo: ask for credentials, then no such repository
            if asked:
                self.send_header("WWW-Authenticate", 'Basic realm="Gitea"')
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://ka-bot:{token}@127.0.0.1:{server.server_address[1]}/fleet/kernel-agent.git"
        with pytest.raises(mirror.FetchError) as failed:
            mirror.fetch(tmp_path / "mirror.git", url, "refs/heads/main", "a" * 40, idle_timeout=5, timeout=30)
    finally:
        server.shutdown()
    assert seen["auth"], "git never asked the server"
    assert f"Basic {base64.b64encode(f'ka-bot:{token}'.encode()).decode()}" in seen["auth"]  # the token did arrive
    assert seen["argv"] == []
    assert token not in str(failed.value)


def test_maintain_leaves_the_mirror_alone_while_a_fetch_holds_it(make_repo: MakeRepo, tmp_path: Path) -> None:
    """gc never runs beside a fetch: a tidy that cannot have the mirror alone waits, then leaves it for later."""
    root = make_repo({"h": manifest(["soc/x"])}, {"patches/soc/x.patch": "x"})
    sha = git(root, "rev-parse", "HEAD").decode().strip()
    bare = tmp_path / "mirror.git"
    mirror.fetch(bare, str(root), "refs/heads/main", sha)
    with open(tmp_path / "mirror.git.lock", "a") as fetching:
        fcntl.flock(fetching, fcntl.LOCK_SH)
        assert mirror.maintain(bare, keep=set(), now=time.time() + 2 * 86400, wait=0.5) == 0
    assert mirror.has_commit(bare, sha)
    assert mirror.maintain(bare, keep=set(), now=time.time() + 2 * 86400, wait=0.5) == 1
