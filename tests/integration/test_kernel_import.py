"""ka baseline import: a source tarball becomes a packed git tree with a tag, every file included."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from ka.cli.main import main
from ka.promote.kernel_import import version_from_makefile
from tests.support.kernel import git


def _tarball(path: Path, sublevel: str = "7") -> Path:
    members = {
        "linux-source-6.12/.gitignore": b"*\n",  # Debian's: ignores everything
        "linux-source-6.12/Makefile": f"VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = {sublevel}\n".encode(),
        "linux-source-6.12/scripts/setlocalversion": b"#!/bin/sh\necho\n",
        "linux-source-6.12/drivers/a.c": b"int a;\n",
        'linux-source-6.12/odd "name"\\.txt': b"quoted\n",
    }
    with tarfile.open(path, "w:xz") as tar:
        tar.addfile(tarfile.TarInfo("linux-source-6.12/"))
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith("setlocalversion") else 0o644
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("linux-source-6.12/drivers/b.c")
        link.type, link.linkname = tarfile.SYMTYPE, "a.c"
        tar.addfile(link)
    return path


def test_import_takes_every_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tar = _tarball(tmp_path / "linux.tar.xz")
    tree = tmp_path / "kernel.git"
    assert main(["baseline", "import", str(tar), "--tree", str(tree)]) == 0
    assert "tag v6.12.7 ->" in capsys.readouterr().out
    listing = git(tree, "ls-tree", "-r", "v6.12.7").decode()
    assert ".gitignore" in listing and "drivers/a.c" in listing and 'odd \\"name\\"\\\\.txt' in listing
    assert "100755 blob" in next(ln for ln in listing.splitlines() if "setlocalversion" in ln)
    assert "120000 blob" in next(ln for ln in listing.splitlines() if "drivers/b.c" in ln)
    assert git(tree, "show", "v6.12.7:drivers/b.c") == b"a.c"
    assert b"packs: 1" in git(tree, "count-objects", "-v")
    assert git(tree, "for-each-ref", "--format=%(refname)").decode().split() == ["refs/tags/v6.12.7"]


def test_same_tarball_same_commit(tmp_path: Path) -> None:
    tar = _tarball(tmp_path / "linux.tar.xz")
    for name in ("one.git", "two.git"):
        assert main(["baseline", "import", str(tar), "--tree", str(tmp_path / name), "--ref", "base"]) == 0
    assert git(tmp_path / "one.git", "rev-parse", "base") == git(tmp_path / "two.git", "rev-parse", "base")


def test_second_baseline_into_the_same_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = tmp_path / "kernel.git"
    assert main(["baseline", "import", str(_tarball(tmp_path / "a.tar.xz", "7")), "--tree", str(tree)]) == 0
    assert main(["baseline", "import", str(_tarball(tmp_path / "b.tar.xz", "8")), "--tree", str(tree)]) == 0
    assert main(["baseline", "import", str(_tarball(tmp_path / "c.tar.xz", "8")), "--tree", str(tree)]) == 2
    assert "tag 'v6.12.8' exists already" in capsys.readouterr().err


def test_a_tag_that_exists_stops_the_import_at_the_makefile(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    tree = tmp_path / "kernel.git"
    assert main(["baseline", "import", str(_tarball(tmp_path / "a.tar.xz", "8")), "--tree", str(tree)]) == 0
    # the same release again, cut short after its Makefile: read to the end, it could not be imported
    whole = tmp_path / "whole.tar"
    with tarfile.open(whole, "w") as tar:
        for name, data in (("linux-6.12.8/Makefile", b"VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 8\n"),
                           ("linux-6.12.8/big.bin", bytes(range(256)) * 4096)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:len(whole.read_bytes()) // 2])
    assert main(["baseline", "import", str(cut), "--tree", str(tree)]) == 2
    err = capsys.readouterr().err
    assert "tag 'v6.12.8' exists already" in err and "cannot read" not in err, err


@pytest.mark.parametrize(("argv", "fragment"), [
    (["{tmp}/none.tar.xz", "--tree", "{tmp}/t"], "no such tarball"),
    (["{tmp}/bad.tar.xz", "--tree", "{tmp}/t"], "cannot read the tarball"),
    (["{tmp}/bad.tar.xz", "--tree", "{tmp}/plain"], "exists and is not a git repository"),
])
def test_import_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    (tmp_path / "bad.tar.xz").write_bytes(b"not a tarball")
    (tmp_path / "plain").mkdir()
    assert main(["baseline", "import", *[a.format(tmp=tmp_path) for a in argv]]) == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize(("makefile", "version"), [
    (b"VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\n", "v6.12.117"),
    (b"VERSION = 6\nPATCHLEVEL = 13\nSUBLEVEL = 0\nEXTRAVERSION = -rc1\n", "v6.13"),
    (b"# no version\n", None),
])
def test_version_from_makefile(makefile: bytes, version: str | None) -> None:
    assert version_from_makefile(makefile) == version
