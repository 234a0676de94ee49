"""Series resolution: quilt series files, natural order, and every way a series can be wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ka.errors import ManifestError
from ka.fleet.manifest import load_manifest
from ka.fleet.repo import GitTree, WorkTree
from ka.fleet.series import resolve_series
from tests.support.fleet import MakeRepo, manifest
from tests.support.kernel import git

P = "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n"


def _resolve(root: Path, host: str = "h", rev: str | None = None) -> list[str]:
    view = GitTree(root, rev) if rev else WorkTree(root)
    series = resolve_series(view, load_manifest(view, host))
    return [p.path for s in series for p in s.patches]



def test_order_scopes_then_manifest_then_series(make_repo: MakeRepo) -> None:
    root = make_repo({"h": manifest(["board/b", "soc/s2", "soc/s1.patch", "driver/d"], order="soc, driver, board")},
                     {"patches/board/b.patch": P, "patches/soc/s1.patch": P, "patches/soc/s2/2.patch": P,
                      "patches/soc/s2/10.patch": P, "patches/soc/s2/notes.txt": "x",
                      "patches/driver/d/series": "# order\nz.patch\na.patch -p1\n",
                      "patches/driver/d/z.patch": P, "patches/driver/d/a.patch": P,
                      "patches/driver/d/unlisted.patch": P})
    assert _resolve(root) == ["patches/soc/s2/2.patch", "patches/soc/s2/10.patch", "patches/soc/s1.patch",
                              "patches/driver/d/z.patch", "patches/driver/d/a.patch", "patches/board/b.patch"]
    assert _resolve(root, rev="HEAD") == _resolve(root)


def test_symlinks_inside_patches_are_followed(make_repo: MakeRepo) -> None:
    root = make_repo({"h": manifest(["driver/d", "board/b"])}, {"patches/driver/d/1.patch": P}, commit=False)
    (root / "patches/board").mkdir()
    os.symlink("../driver/d/1.patch", root / "patches/board/b.patch")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "links")
    assert _resolve(root) == ["patches/driver/d/1.patch", "patches/board/b.patch"]
    assert _resolve(root, rev="HEAD") == _resolve(root)


def test_symlink_leaving_patches_is_refused_at_a_commit(make_repo: MakeRepo) -> None:
    root = make_repo({"h": manifest(["driver/d"])}, {"outside.patch": P}, commit=False)
    (root / "patches/driver/d").mkdir(parents=True)
    os.symlink("../../../outside.patch", root / "patches/driver/d/1.patch")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "escape")
    with pytest.raises(ManifestError, match="symlink that leaves patches/"):
        _resolve(root, rev="HEAD")
