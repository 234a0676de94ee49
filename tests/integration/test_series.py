"""Series resolution: quilt series files, natural order, and every way a series can be wrong."""

from __future__ import annotations

import os

import pytest

from ka.errors import ManifestError
from tests.support.fleet import PATCH, MakeRepo, manifest, resolved
from tests.support.kernel import git


def test_order_scopes_then_manifest_then_series(make_repo: MakeRepo) -> None:
    root = make_repo({"h": manifest(["board/b", "soc/s2", "soc/s1.patch", "driver/d"], order="soc, driver, board")},
                     {"patches/board/b.patch": PATCH, "patches/soc/s1.patch": PATCH, "patches/soc/s2/2.patch": PATCH,
                      "patches/soc/s2/10.patch": PATCH, "patches/soc/s2/notes.txt": "x",
                      "patches/driver/d/series": "# order\nz.patch\na.patch -p1\n",
                      "patches/driver/d/z.patch": PATCH, "patches/driver/d/a.patch": PATCH,
                      "patches/driver/d/unlisted.patch": PATCH})
    assert resolved(root) == ["patches/soc/s2/2.patch", "patches/soc/s2/10.patch", "patches/soc/s1.patch",
                              "patches/driver/d/z.patch", "patches/driver/d/a.patch", "patches/board/b.patch"]
    assert resolved(root, rev="HEAD") == resolved(root)


def test_symlinks_inside_patches_are_followed(make_repo: MakeRepo) -> None:
    root = make_repo({"h": manifest(["driver/d", "board/b"])}, {"patches/driver/d/1.patch": PATCH}, commit=False)
    (root / "patches/board").mkdir()
    os.symlink("../driver/d/1.patch", root / "patches/board/b.patch")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "links")
    assert resolved(root) == ["patches/driver/d/1.patch", "patches/board/b.patch"]
    assert resolved(root, rev="HEAD") == resolved(root)


def test_symlink_leaving_patches_is_refused_at_a_commit(make_repo: MakeRepo) -> None:
    root = make_repo({"h": manifest(["driver/d"])}, {"outside.patch": PATCH}, commit=False)
    (root / "patches/driver/d").mkdir(parents=True)
    os.symlink("../../../outside.patch", root / "patches/driver/d/1.patch")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "escape")
    with pytest.raises(ManifestError, match="symlink that leaves patches/"):
        resolved(root, rev="HEAD")
