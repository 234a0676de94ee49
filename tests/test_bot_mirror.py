"""The bot's mirror: fetching pinned commits, and letting go of them."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from conftest import MakeRepo, manifest
from kernel import git

from bot import mirror
from ka.repo import GitTree
from ka.runner import run


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
