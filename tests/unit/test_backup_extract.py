"""A backup's boot files are extracted as tarfile's "data" filter would, on every Python Debian 12 has."""

from __future__ import annotations

import contextlib
import io
import tarfile
from pathlib import Path

import pytest

from ka.install.backup import BackupError, extract_data


def _tar(*members: tuple[str, bytes | None, str]) -> tarfile.TarFile:
    """(name, data, link target) members: data for a file, a target for a symlink, neither for a device."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if data is not None:
                info.size, info.mode = len(data), 0o4755
                tar.addfile(info, io.BytesIO(data))
            elif link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.type = tarfile.CHRTYPE
                tar.addfile(info)
    buf.seek(0)
    return tarfile.open(fileobj=buf)


@pytest.fixture(params=["filter", "checked here"])
def python(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways: a Python with tarfile's filters, and Debian 12's 3.11.2 without them."""
    if request.param == "checked here":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return str(request.param)


def test_the_boot_files_are_extracted_without_their_set_uid_bit(tmp_path: Path, python: str) -> None:
    extract_data(_tar(("Image", b"kernel", ""), ("dtbs/rk3566.dtb", b"dtb", ""), ("dtbs/now", None, "rk3566.dtb")),
                 tmp_path)
    assert (tmp_path / "Image").read_bytes() == b"kernel" and (tmp_path / "dtbs/now").read_bytes() == b"dtb"
    assert (tmp_path / "Image").stat().st_mode & 0o7000 == 0


@pytest.mark.parametrize("member", [("../escape", b"x", ""), ("/abs", b"x", ""), ("out", None, "../../etc/passwd"),
                                    ("abs-link", None, "/etc/passwd"), ("dev", None, "")])
def test_a_member_that_leaves_the_folder_or_is_a_device_is_refused(tmp_path: Path, python: str,
                                                                   member: tuple[str, bytes | None, str]) -> None:
    dest = tmp_path / "boot"
    dest.mkdir()
    if python == "checked here":  # refused, before anything is written
        with pytest.raises(BackupError, match="leaves it"):
            extract_data(_tar(member), dest)
        assert not list(dest.iterdir())
    else:  # tarfile's own filter refuses it, or brings it inside (a leading / stripped)
        with contextlib.suppress(tarfile.TarError, BackupError):
            extract_data(_tar(member), dest)
        assert all(p.resolve().is_relative_to(dest) and (p.is_file() or p.is_dir()) for p in dest.rglob("*"))
    assert not (tmp_path / "escape").exists()
