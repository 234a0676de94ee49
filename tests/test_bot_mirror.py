"""The bot's mirror: fetching pinned commits, and letting go of them."""

from __future__ import annotations

from pathlib import Path

from conftest import MakeRepo, manifest
from kernel import git

from bot import mirror


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
    assert mirror.maintain(bare, keep={second}) == 1
    assert git(bare, "for-each-ref", "--format=%(refname)", "refs/ka/").decode().split() == \
        [f"refs/ka/commits/{second}"]
    assert mirror.has_commit(bare, second)
