"""Turn a kernel source tarball into a packed git tree with a baseline tag.

A newcomer without a kernel mirror can still run the real baseline check:
Debian's ``linux-source-6.12`` ships a tarball of the tree.  The tarball is
streamed straight into ``git fast-import`` (no extraction, one pack), so
every member lands in the commit, including those that the tarball's own
top-level ``.gitignore`` would hide from ``git add``.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ka.errors import BadInput, KernelTreeError
from ka.io.runner import feed, run

#: Fixed identity and date, so the same tarball always gives the same commit.
_IDENT = "kernel-agent <kernel-agent@localhost> 0 +0000"
_VERSION_RE = re.compile(rb"^(VERSION|PATCHLEVEL|SUBLEVEL)\s*=\s*(\d+)\s*$", re.M)


@dataclass(frozen=True)
class ImportResult:
    """What an import produced."""

    tree: Path
    ref: str
    commit: str
    files: int


def _quote_path(path: str) -> str:
    """Quote a path for fast-import when it needs it (C-style)."""
    if not any(c in path for c in '"\\\n') and not path.startswith('"'):
        return path
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def version_from_makefile(data: bytes) -> str | None:
    """``v6.12.117`` from a top-level kernel Makefile, or None."""
    found: dict[bytes, bytes] = {m.group(1): m.group(2) for m in _VERSION_RE.finditer(data[:4096])}
    try:
        ver = [found[k].decode() for k in (b"VERSION", b"PATCHLEVEL", b"SUBLEVEL")]
    except KeyError:
        return None
    return "v" + ".".join(ver[:2] if ver[2] == "0" else ver)


def _strip_top(name: str) -> str | None:
    """Drop the tarball's top folder (``linux-source-6.12/``)."""
    parts = name.split("/", 1)
    return parts[1] if len(parts) == 2 and parts[1] else None


def _member_mode(member: tarfile.TarInfo) -> str | None:
    if member.issym():
        return "120000"
    if member.isfile():
        return "100755" if member.mode & 0o111 else "100644"
    return None  # folders are implied by paths; devices and hard links are not kernel sources


class _Stream:
    """Writes one commit to a running ``git fast-import``."""

    def __init__(self, pipe: IO[bytes], ref_branch: str, message: str) -> None:
        self.pipe = pipe
        msg = message.encode()
        self._write(f"commit {ref_branch}\nauthor {_IDENT}\ncommitter {_IDENT}\n".encode())
        self._write(b"data %d\n%s\n" % (len(msg), msg))

    def _write(self, data: bytes) -> None:
        self.pipe.write(data)

    def add(self, path: str, mode: str, data: bytes) -> None:
        self._write(f"M {mode} inline {_quote_path(path)}\n".encode())
        self._write(b"data %d\n" % len(data))
        self._write(data)
        self._write(b"\n")


def _stream_tar(tarball: Path, stream: _Stream,
                progress: Callable[[int], None] | None) -> tuple[int, str | None]:
    files, version = 0, None
    with tarfile.open(tarball, mode="r|*") as tar:
        for member in tar:
            path, mode = _strip_top(member.name), _member_mode(member)
            if path is None or mode is None:
                continue
            if mode == "120000":
                data = member.linkname.encode()
            else:
                fh = tar.extractfile(member)
                data = fh.read() if fh else b""
            if path == "Makefile":
                version = version_from_makefile(data)
            stream.add(path, mode, data)
            files += 1
            if progress and files % 5000 == 0:
                progress(files)
    return files, version


def _ensure_repo(tree: Path) -> None:
    if not tree.exists():
        run(["git", "init", "--quiet", "--bare", tree])
    elif run(["git", "-C", tree, "rev-parse", "--git-dir"], check=False).returncode:
        raise BadInput(f"{tree}: exists and is not a git repository; give a new path or a kernel git tree")


def import_tarball(tarball: Path, tree: Path, ref: str | None = None,
                   progress: Callable[[int], None] | None = None) -> ImportResult:
    """Import ``tarball`` into the git repository ``tree`` and tag it ``ref``.

    ``ref`` defaults to the version in the tarball's Makefile.  The tree is
    created (bare) when it does not exist.  An existing tag is never moved.
    """
    if not tarball.is_file():
        raise BadInput(f"{tarball}: no such tarball (Debian: apt-get install linux-source-6.12; it lands in /usr/src)")
    _ensure_repo(tree)
    named = ref or _peek_version(tarball)  # a tag that exists stops the import before 86,000 files are read
    if named and _tag_exists(tree, named):
        raise BadInput(f"{tree}: tag '{named}' exists already; it is never moved")
    branch = "refs/ka-import/incoming"
    child = feed(["git", "-C", tree, "-c", "fastimport.unpackLimit=0", "fast-import", "--quiet", "--done"])
    try:
        stream = _Stream(child.stdin, branch, f"Import {tarball.name}")
        files, version = _stream_tar(tarball, stream, progress)
        child.stdin.write(b"done\n")
    except (tarfile.TarError, OSError, EOFError) as exc:
        child.abort()
        raise BadInput(f"{tarball}: cannot read the tarball: {exc}") from exc
    if child.finish() != 0:
        raise BadInput(f"{tarball}: git fast-import failed")
    return _finish(tree, branch, ref or version, files, tarball)


def _peek_version(tarball: Path) -> str | None:
    """The version in the tarball's top Makefile, reading members only as far as it (Debian's 6.12: the
    10,866th of 86,000, a tenth of the work); None when there is none or the tarball cannot be read (the
    import then says why)."""
    try:
        with tarfile.open(tarball, mode="r|*") as tar:
            for member in tar:
                if _strip_top(member.name) == "Makefile" and member.isfile():
                    fh = tar.extractfile(member)
                    return version_from_makefile(fh.read(65536)) if fh else None
    except (tarfile.TarError, OSError, EOFError):
        return None
    return None


def _tag_exists(tree: Path, ref: str) -> bool:
    return run(["git", "-C", tree, "rev-parse", "--verify", "--quiet", f"refs/tags/{ref}"],
               check=False).ok


def _finish(tree: Path, branch: str, ref: str | None, files: int, tarball: Path) -> ImportResult:
    commit = run(["git", "-C", tree, "rev-parse", branch]).text().strip()
    run(["git", "-C", tree, "update-ref", "-d", branch])
    if not ref:
        raise BadInput(f"{tarball}: no kernel Makefile version found; name the tag with --ref")
    if _tag_exists(tree, ref):
        raise BadInput(f"{tree}: tag '{ref}' exists already; it is never moved")
    run(["git", "-C", tree, "tag", ref, commit])
    listed = run(["git", "-C", tree, "ls-tree", "-r", "--name-only", "-z", commit]).stdout.count(b"\0")
    if listed != files:
        raise BadInput(f"{tarball}: imported {files} members but the commit holds {listed} files")
    return ImportResult(tree=tree, ref=ref, commit=commit, files=files)


def fetch_tag(tree: Path, remote: str, tag: str) -> None:
    """Fetch ``tag`` (its commit alone: ``--depth=1``) from ``remote`` into the kernel tree."""
    _ensure_repo(tree)
    res = run(["git", "-C", tree, "fetch", "--quiet", "--no-tags", "--depth=1", "--", remote,
               f"refs/tags/{tag}:refs/tags/{tag}"], check=False, timeout=3600)
    if not res.ok:
        raise KernelTreeError(f"cannot fetch tag {tag} from {remote} into {tree}: {res.err().strip()[-300:]}")
