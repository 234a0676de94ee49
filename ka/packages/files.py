"""Reading kernel packages member by member, without unpacking them: pacman's (``.pkg.tar.zst``)
and Debian's (``.deb``).

A pacman package is decompressed by ``zstd`` (through ka/io/runner.py) and read as a tar stream, so a
kernel package of hundreds of megabytes costs one member's worth of memory at a time.  A ``.deb``
is an ``ar`` archive of ``control.tar.*`` and ``data.tar.*`` (xz, gzip or none): both are read as
tar streams straight out of the file; control members are named ``DEBIAN/<name>`` (as
``dpkg-deb --raw-extract`` lays them out), data members without their leading ``./``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ka.errors import BadInput
from ka.fleet.formats import of_file
from ka.io.runner import reading

AR_MAGIC = b"!<arch>\n"
_TAR_MODES = {"": "r|", ".xz": "r|xz", ".gz": "r|gz", ".bz2": "r|bz2"}

#: lines that say when and where a package was built, not what it holds
_BUILD_LINES = {".PKGINFO": re.compile(rb"^builddate = .*$", re.M),
                ".BUILDINFO": re.compile(rb"^(builddate|builddir|startdir) = .*$", re.M)}
_MTREE_TIME = re.compile(rb" time=\S+")
#: .MTREE lists the metadata files with their digests; those are compared (normalised) on their own
_MTREE_META = re.compile(rb"^\./\.(BUILDINFO|PKGINFO) .*\n?", re.M)


@dataclass(frozen=True)
class Member:
    """One archive member, as compared: everything but its mtime."""

    name: str
    kind: str  # file, dir, link, hardlink, other
    mode: int
    owner: str  # uid:gid uname:gname
    link: str
    size: int
    digest: str  # sha256 of the content (for metadata files: without the build time and place)
    data: bytes | None = field(default=None, compare=False)  # the content, when it was asked for


def _kind(info: tarfile.TarInfo) -> str:
    if info.isdir():
        return "dir"
    if info.issym():
        return "link"
    if info.islnk():
        return "hardlink"
    return "file" if info.isfile() else "other"


def _normalised(name: str, data: bytes) -> bytes:
    if name in _BUILD_LINES:
        return _BUILD_LINES[name].sub(b"", data)
    if name == ".MTREE":
        return _MTREE_META.sub(b"", _MTREE_TIME.sub(b"", gzip.decompress(data)))
    return data


class _Slice(io.RawIOBase):
    """``size`` bytes of ``fh`` from where it stands: one member of an ar archive, as a file."""

    def __init__(self, fh: IO[bytes], size: int) -> None:
        self.fh, self.left = fh, size

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray) -> int:  # type: ignore[override]
        data = self.fh.read(min(len(buf), self.left))
        self.left -= len(data)
        buf[:len(data)] = data
        return len(data)


def _ar_members(fh: IO[bytes], path: Path) -> Iterator[tuple[str, int]]:
    """(name, size) of each member of an ar archive; ``fh`` stands at the member's data when it is yielded."""
    if fh.read(8) != AR_MAGIC:
        raise BadInput(f"{path}: not a Debian package (no ar archive)")
    while header := fh.read(60):
        if len(header) < 60 or header[58:60] != b"`\n":
            raise BadInput(f"{path}: a damaged ar member header")
        name, size = header[:16].decode("ascii", "replace").strip().rstrip("/"), int(header[48:58])
        start = fh.tell()
        yield name, size
        fh.seek(start + size + (size & 1))


@contextmanager
def _tars(path: Path) -> Iterator[Iterator[tuple[str, tarfile.TarFile]]]:
    """The control and data tar streams of a ``.deb``, as (member prefix, tar)."""
    with open(path, "rb") as fh:
        def walk() -> Iterator[tuple[str, tarfile.TarFile]]:
            for name, size in _ar_members(fh, path):
                kind, _, ext = name.partition(".tar")
                if kind not in ("control", "data"):
                    continue
                if ext not in _TAR_MODES:
                    raise BadInput(f"{path}: {name}: a compression ka cannot read (xz, gzip or none)")
                stream: IO[bytes] = io.BufferedReader(_Slice(fh, size))  # type: ignore[type-var]
                with tarfile.open(fileobj=stream, mode=_TAR_MODES[ext]) as tar:  # type: ignore[call-overload]
                    yield ("DEBIAN/" if kind == "control" else ""), tar
        yield walk()


def _deb_members(path: Path, keep: Callable[[str], bool]) -> Iterator[Member]:
    with _tars(path) as tars:
        for prefix, tar in tars:
            for info in tar:
                name = info.name.removeprefix("./")
                if name in ("", "."):
                    continue
                yield _member(tar, info, prefix + name, keep)


def members(path: Path, keep: Callable[[str], bool] = lambda name: False) -> Iterator[Member]:
    """Every member of a package, in archive order; with the content of the small files ``keep`` names."""
    yield from MEMBERS[of_file(path.name).name](path, keep)


def _pacman_members(path: Path, keep: Callable[[str], bool]) -> Iterator[Member]:
    try:
        with reading(["zstd", "-dcq", "--", path]) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                yield _member(tar, info, info.name, keep)
    except tarfile.ReadError as exc:
        raise BadInput(f"{path}: not a pacman package (not a zstd-compressed tar archive: {exc})") from None


def _member(tar: tarfile.TarFile, info: tarfile.TarInfo, name: str, keep: Callable[[str], bool]) -> Member:
    digest = hashlib.sha256()
    kept = None
    if info.isfile():
        fh = tar.extractfile(info)
        assert fh is not None
        small = name in (".PKGINFO", ".BUILDINFO", ".MTREE") or (info.size <= 65536 and keep(name))
        data = fh.read() if small else None
        if data is not None:
            kept = data if keep(name) else None
            digest.update(_normalised(name, data))
        else:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return Member(name, _kind(info), info.mode, f"{info.uid}:{info.gid} {info.uname}:{info.gname}",
                  info.linkname, info.size, digest.hexdigest(), kept)


def pkginfo(path: Path) -> dict[str, list[str]]:
    """The ``.PKGINFO`` of a pacman package: key → values (a ``.deb``'s fields: :func:`deb_control`)."""
    with reading(["zstd", "-dcq", "--", path]) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            if info.name == ".PKGINFO":
                fh = tar.extractfile(info)
                assert fh is not None
                found: dict[str, list[str]] = {}
                for line in fh.read().decode("utf-8", "replace").splitlines():
                    key, sep, value = line.partition(" = ")
                    if sep and not key.startswith("#"):
                        found.setdefault(key.strip(), []).append(value.strip())
                return found
    return {}


def deb_control(path: Path) -> dict[str, str]:
    """The ``control`` file of a ``.deb``: field → value (continuation lines joined)."""
    for m in _deb_members(path, keep=lambda name: name == "DEBIAN/control"):
        if m.name == "DEBIAN/control" and m.data is not None:
            fields: dict[str, str] = {}
            key = ""
            for line in m.data.decode("utf-8", "replace").splitlines():
                if line[:1] in (" ", "\t") and key:
                    fields[key] += "\n" + line.strip()
                elif ":" in line:
                    key, _, value = line.partition(":")
                    fields[key.strip()] = value.strip()
            return fields
    return {}


MEMBERS = {"pacman": _pacman_members, "deb": _deb_members}  # each package format's archive, member by member
