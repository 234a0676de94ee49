"""Repository paths and views."""

from __future__ import annotations

from pathlib import Path

import pytest

from ka.errors import BadInput
from ka.fleet.repo import DIR, FILE, GitTree, WorkTree, clean_relpath, find_repo
from tests.support.fleet import MakeRepo, manifest


@pytest.mark.parametrize(("path", "clean"), [
    ("a/b", "a/b"), ("a/./b", "a/b"), ("a/../b", "b"), ("../a", None), ("a/../../b", None),
    ("/etc/passwd", None), ("", None), ("a\0b", None), ("..", None), ("a/b/", "a/b"),
])
def test_clean_relpath(path: str, clean: str | None) -> None:
    assert clean_relpath(path) == clean


def test_find_repo_walks_up(make_repo: MakeRepo) -> None:
    root = make_repo({"h": manifest(["soc/x"])}, {"patches/soc/x.patch": "x"})
    assert find_repo(root / "patches" / "soc") == root.resolve()
    with pytest.raises(BadInput, match="no kernel-agent repository"):
        find_repo(root.parent)


def test_views_agree(make_repo: MakeRepo) -> None:
    root = make_repo({"h": manifest(["soc/x"])}, {"patches/soc/x.patch": "x", "patches/soc/d/1.patch": "1"})
    for view in (WorkTree(root), GitTree(root, "HEAD")):
        assert view.kind("patches/soc") == DIR
        assert view.kind("patches/soc/x.patch") == FILE
        assert view.kind("patches/none") is None
        assert view.listdir("patches/soc") == ["d", "x.patch"]
        assert view.read("patches/soc/d/1.patch") == b"1"


def test_git_view_display_names_commit(make_repo: MakeRepo, tmp_path: Path) -> None:
    root = make_repo({"h": manifest(["soc/x"])}, {"patches/soc/x.patch": "x"})
    view = GitTree(root, "HEAD")
    assert view.display("fleet/h.yaml") == f"{view.rev[:12]}:fleet/h.yaml"


def test_the_blob_cache_of_a_commit_view_has_a_byte_budget(make_repo: MakeRepo) -> None:
    """A push whose hosts include thousands of distinct mid-size patches must not keep them all."""
    files = {f"patches/soc/p{n}.patch": bytes([65 + n % 26]) * (200 * 1024) + str(n).encode() for n in range(100)}
    root = make_repo({"h": manifest(["soc/p0"])}, files)
    view = GitTree(root, "HEAD")
    for path in files:
        assert view.read(path) == files[path]
    assert view._cached <= 8 * 1024 * 1024 and len(view._cache) < 100
    assert view.read("fleet/h.yaml") == view.read("fleet/h.yaml")  # still served, from the cache
