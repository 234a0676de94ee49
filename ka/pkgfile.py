"""Reading pacman packages (``.pkg.tar.zst``) member by member, without unpacking them.

The package is decompressed by ``zstd`` (through ka/runner.py) and read as a tar stream, so a
kernel package of hundreds of megabytes costs one member's worth of memory at a time.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ka.runner import reading

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


def members(path: Path, keep: Callable[[str], bool] = lambda name: False) -> Iterator[Member]:
    """Every member of a package, in archive order; with the content of the small files ``keep`` names."""
    with reading(["zstd", "-dcq", "--", path]) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            digest = hashlib.sha256()
            kept = None
            if info.isfile():
                fh = tar.extractfile(info)
                assert fh is not None
                small = info.name in (".PKGINFO", ".BUILDINFO", ".MTREE") or (info.size <= 65536 and keep(info.name))
                data = fh.read() if small else None
                if data is not None:
                    kept = data if keep(info.name) else None
                    digest.update(_normalised(info.name, data))
                else:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
            yield Member(info.name, _kind(info), info.mode, f"{info.uid}:{info.gid} {info.uname}:{info.gname}",
                         info.linkname, info.size, digest.hexdigest(), kept)


def pkginfo(path: Path) -> dict[str, list[str]]:
    """The ``.PKGINFO`` of a package: key → values."""
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
